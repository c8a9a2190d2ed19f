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

/// A real registry server and how to make clients of it and hurt it.
struct Real<S> {
    server: S,
    client: fn(&S, &str) -> Registry,
    predecessor: fn(&S, &str) -> Registry,
    /// Makes it lose everything and come back.
    wipe: fn(&mut S),
    stop: fn(&mut S),
    resume: fn(&mut S),
    marks_stale: bool,
}

impl<S> Subject for Real<S> {
    fn client(&self, node: &str) -> Registry {
        berth_e2e::crypto();
        (self.client)(&self.server, node)
    }

    fn lose_everything(&mut self) {
        (self.wipe)(&mut self.server);
    }

    fn stop(&mut self) {
        (self.stop)(&mut self.server);
    }

    fn start(&mut self) {
        (self.resume)(&mut self.server);
    }

    fn predecessor(&self, node: &str) -> Registry {
        berth_e2e::crypto();
        (self.predecessor)(&self.server, node)
    }

    fn marks_stale(&self) -> bool {
        self.marks_stale
    }
}

fn consul_client(s: &ConsulServer, node: &str) -> Registry {
    Registry::Consul(
        ConsulRegistry::new(ConsulConfig {
            addr: s.addr(),
            node: node.to_owned(),
            request_timeout: REQUEST_TIMEOUT,
            ..ConsulConfig::default()
        })
        .unwrap(),
    )
}

/// A Consul dev agent, which forgets everything when it restarts.
fn consul() -> Real<ConsulServer> {
    Real {
        server: ConsulServer::start(),
        client: consul_client,
        predecessor: consul_client,
        wipe: ConsulServer::restart,
        stop: ConsulServer::stop,
        resume: ConsulServer::resume,
        marks_stale: false,
    }
}

fn etcd_client(s: &EtcdServer, node: &str, ttl: Duration) -> Registry {
    Registry::Etcd(
        EtcdRegistry::new(EtcdConfig {
            endpoints: vec![s.endpoint()],
            node: node.to_owned(),
            ttl,
            request_timeout: REQUEST_TIMEOUT,
            ..EtcdConfig::default()
        })
        .unwrap(),
    )
}

/// A single-member etcd, wiped by deleting its data directory.
fn etcd() -> Real<EtcdServer> {
    Real {
        server: EtcdServer::start(),
        client: |s, node| etcd_client(s, node, Duration::from_secs(3)),
        // An agent that ran with another TTL: its lease is not taken over.
        predecessor: |s, node| etcd_client(s, node, Duration::from_secs(4)),
        wipe: EtcdServer::restart_wiped,
        stop: EtcdServer::stop,
        resume: EtcdServer::resume,
        // A new client writes on a new lease; what the predecessor wrote is on the old one.
        marks_stale: true,
    }
}

mod consul {
    berth_registry::registry_contract!(super::consul());
}

mod etcd {
    berth_registry::registry_contract!(super::etcd());
}
