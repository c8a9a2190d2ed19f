//! One module per scenario. Each starts its own registry and agent, makes its containers
//! (the caller removes them), and returns its rows and its raw data.

pub mod burst;
pub mod cold;
pub mod drain;
pub mod floor;
pub mod latency;
pub mod probes;
pub mod writes;

use crate::docker::Spec;
use crate::report::Rows;

/// What a scenario returns: its table rows and its raw data for the JSON.
pub type Outcome = anyhow::Result<(Rows, serde_json::Value)>;

/// A container registering service `service` on port 80, published (berth's default mode).
pub fn web(name: String, service: &str) -> Spec {
    Spec {
        name,
        labels: vec![("SERVICE_NAME".into(), service.into())],
        publish: vec![80],
        ..Spec::default()
    }
}
