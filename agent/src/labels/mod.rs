//! Labels → instances. Pure: no I/O, no clock.
//!
//! [`plan_container`] turns one [`ContainerView`] plus the agent's [`Settings`] into the
//! instances berth should register for it, with notes saying why (used in logs and by
//! `berth explain`). The contract is documented in `docs/labels.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_registry::Instance;

use crate::docker::view::ContainerView;

/// Agent-wide settings that shape what a container registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Node identity; first part of every default instance id.
    pub node: String,
    /// Address for published ports whose binding has no specific host IP.
    pub host_ip: IpAddr,
    /// `--internal`: register container IP and container port.
    pub internal: bool,
    /// `--network`: network to take the container IP from in internal mode.
    pub network: Option<String>,
    /// `--explicit`: only containers/ports with a service-name label register.
    pub explicit: bool,
}

/// How serious a note is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Explains a decision (why a port was skipped, which network was used).
    Info,
    /// Bad input the operator should fix; logged at WARN.
    Warn,
}

/// One line explaining a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub message: String,
}

/// Health-check keys found for one instance (`SERVICE_CHECK_*` and berth check labels),
/// kept raw for the health-probe work: lowercased key without prefix → value.
pub type CheckLabels = BTreeMap<String, String>;

/// Everything decided for one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Sorted by id, ids unique.
    pub instances: Vec<Instance>,
    /// Check keys per instance id (only ids that have any).
    pub checks: BTreeMap<String, CheckLabels>,
    pub notes: Vec<Note>,
}

/// Decides what `view` registers.
pub fn plan_container(view: &ContainerView, settings: &Settings) -> Outcome {
    let _ = (view, settings);
    Outcome::default()
}
