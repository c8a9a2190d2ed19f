//! Harness for berth's end-to-end tests: real processes, real Docker, real Consul and etcd.
//!
//! Every test starts its own registry on free ports — a Consul dev agent
//! ([`consul::ConsulServer`]) or a single-member etcd ([`etcd::EtcdServer`]) — so tests can
//! restart or kill it without disturbing each other. [`backend`] reads either one the same
//! way, for the contract suite that runs against both. [`docker`] builds the test image and
//! guards containers and networks; [`agent`] runs the berth binary and formats failures;
//! [`env`] is one test's world and its assertion steps; [`admin`] reads an agent's admin
//! server; [`proxy`] stands between berth and Docker or Consul to see, slow, hold or refuse
//! its requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

pub mod admin;
pub mod agent;
pub mod backend;
pub mod consul;
pub mod dns;
pub mod docker;
pub mod env;
pub mod etcd;
pub mod proxy;

use std::time::{Duration, Instant};

/// Instantiates scenarios `fn <name>(kind: Kind)` as `#[test]`s: `mod consul { fn <name>() }`
/// and `mod etcd { fn <name>() }`. Either one list for both backends, or
/// `consul: [..], etcd: [..]` for scenarios that only need one of them.
#[macro_export]
macro_rules! backend_tests {
    (consul: [$($c:ident),* $(,)?], etcd: [$($e:ident),* $(,)?] $(,)?) => {
        mod consul {
            $(
                #[test]
                fn $c() {
                    super::$c($crate::backend::Kind::Consul)
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $e() {
                    super::$e($crate::backend::Kind::Etcd)
                }
            )*
        }
    };
    ($($s:ident),* $(,)?) => {
        $crate::backend_tests!(consul: [$($s),*], etcd: [$($s),*]);
    };
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a small race is accepted in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A fresh directory `berth-<name>-<n>` under the system temp dir; the caller removes it.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-{name}-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// An error and its sources, one text per level, checked to say each thing once: no level's
/// text contains the next one's (berth's errors leave the cause to their source). Panics
/// when one does.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        texts.push(s.to_string());
        next = s.source();
    }
    for pair in texts.windows(2) {
        assert!(
            pair[1].is_empty() || !pair[0].contains(&pair[1]),
            "{:?} repeats its source {:?}; whole chain: {texts:?}",
            pair[0],
            pair[1]
        );
    }
    texts
}

/// Installs the ring crypto provider for rustls once per process (reqwest needs one).
pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A runtime for tests that drive an async client from blocking test code. It keeps driving
/// the client's connections between `block_on`s, as the agent's runtime does.
#[derive(Debug)]
pub struct Rt(pub tokio::runtime::Runtime);

impl Default for Rt {
    fn default() -> Rt {
        Rt::new()
    }
}

impl Rt {
    pub fn new() -> Rt {
        Rt(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap())
    }

    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }
}
