//! The registry contract (`berth_registry::contract`) against a real Consul dev agent and a
//! real etcd, one per test: the same cases the memory backend passes in its unit tests.
//! What only one backend does is in `consul_backend.rs` and `etcd_backend.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_e2e::consul::ConsulServer;
use berth_e2e::etcd::EtcdServer;
use berth_registry::Registry;
use berth_registry::consul::{ConsulConfig, ConsulRegistry};
use berth_registry::contract::Subject;
use berth_registry::etcd::{EtcdConfig, EtcdRegistry};

/// Each request gives up after this long, so a stopped registry fails fast.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

struct Consul(ConsulServer);

impl Subject for Consul {
    fn client(&self, node: &str) -> Registry {
        berth_e2e::crypto();
        Registry::Consul(
            ConsulRegistry::new(ConsulConfig {
                addr: self.0.addr(),
                node: node.to_owned(),
                request_timeout: REQUEST_TIMEOUT,
                ..ConsulConfig::default()
            })
            .unwrap(),
        )
    }

    fn lose_everything(&mut self) {
        self.0.restart();
    }

    fn stop(&mut self) {
        self.0.stop();
    }

    fn start(&mut self) {
        self.0.resume();
    }
}

struct Etcd(EtcdServer);

impl Subject for Etcd {
    fn client(&self, node: &str) -> Registry {
        berth_e2e::crypto();
        Registry::Etcd(
            EtcdRegistry::new(EtcdConfig {
                endpoints: vec![self.0.endpoint()],
                node: node.to_owned(),
                ttl: Duration::from_secs(3),
                request_timeout: REQUEST_TIMEOUT,
                ..EtcdConfig::default()
            })
            .unwrap(),
        )
    }

    fn lose_everything(&mut self) {
        self.0.restart_wiped();
    }

    fn stop(&mut self) {
        self.0.stop();
    }

    fn start(&mut self) {
        self.0.resume();
    }
}

mod consul {
    berth_registry::registry_contract!(super::Consul(berth_e2e::consul::ConsulServer::start()));
}

mod etcd {
    berth_registry::registry_contract!(super::Etcd(berth_e2e::etcd::EtcdServer::start()));
}
