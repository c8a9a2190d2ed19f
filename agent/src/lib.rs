//! The berth agent as a library, so in-process tests can drive it.
//!
//! Where to start: [`app`] wires the tasks; [`source`] is where Docker events enter, through
//! the [`docker`] seam; [`labels`] decides what a container registers; [`reconcile`] plans and
//! applies registry writes and runs the heartbeats; [`observe`] and [`admin`] tell operators
//! what it did; [`explain`] is `berth explain`. `docs/ARCHITECTURE.md` has the map.
pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod docker;
pub mod explain;
pub mod heal;
pub mod hostip;
pub mod labels;
pub mod lookup;
pub mod observe;
pub mod probe;
pub mod reconcile;
pub mod source;
pub mod telemetry;
