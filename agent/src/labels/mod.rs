//! Labels → instances. Pure: no I/O, no clock.
//!
//! [`plan_container`] turns one [`ContainerView`] plus the agent's [`Settings`] into the
//! instances berth should register for it, with notes saying why (used in logs and by
//! `berth explain`). The contract is documented in `docs/labels.md`.
//!
//! It is a pipeline whose stages each run once, in this order, each writing its [`Note`]s:
//! 1. [`keys`]: read the key layers (`SERVICE_*` labels and env, `berth.*` labels);
//! 2. the gate, here: does the container register at all (running, opted out, ignored,
//!    explicit mode);
//! 3. [`ports`]: choose the registrable ports and the address and port clients reach each at;
//! 4. [`specs`]: build a service spec per port or per `berth.service.<svc>`: name, id rule,
//!    tags, meta, check keys;
//! 5. [`checks`]: attach the probes of each endpoint;
//! 6. [`instances`]: one instance per endpoint, duplicates dropped, ids made unique.

mod checks;
mod instances;
mod keys;
mod notes;
mod ports;
mod sanitize;
mod specs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_registry::Instance;

use crate::docker::view::ContainerView;

pub use checks::{CheckSpec, ProbeKind, Probes, Target};
use instances::Planned;
use keys::{Keys, Raw, boolean};
use notes::Notes;
pub use notes::{Level, Note};

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

/// Health-check keys found for one instance (`SERVICE_CHECK_*` and berth check labels), as
/// written: lowercased key without prefix → value (for `berth explain`).
pub type CheckLabels = BTreeMap<String, String>;

/// Everything decided for one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Sorted by id, ids unique.
    pub instances: Vec<Instance>,
    /// Check keys per instance id (only ids that have any).
    pub checks: BTreeMap<String, CheckLabels>,
    /// The probes berth runs, per instance id (only ids that have any).
    pub probes: BTreeMap<String, Probes>,
    /// `berth.autoheal=true` or `autoheal=true`: restart the container when it fails.
    pub autoheal: bool,
    pub notes: Vec<Note>,
}

/// Decides what `view` registers.
///
/// Pure and deterministic: the same view and settings always give the same outcome.
/// Instances come back sorted by id with unique ids; every skipped port or ignored label
/// has a note.
pub fn plan_container(view: &ContainerView, settings: &Settings) -> Outcome {
    let mut notes = Notes::default();
    let (planned, autoheal) = plan(view, settings, &mut notes).unwrap_or_default();
    let mut outcome = Outcome {
        autoheal,
        ..Outcome::default()
    };
    for p in planned {
        if !p.checks.is_empty() {
            outcome.checks.insert(p.instance.id.clone(), p.checks);
        }
        if !p.probes.is_empty() {
            outcome.probes.insert(p.instance.id.clone(), p.probes);
        }
        outcome.instances.push(p.instance);
    }
    outcome.notes = notes.0;
    outcome
}

/// The instances of `view` and whether it asked for self-healing.
fn plan(
    view: &ContainerView,
    settings: &Settings,
    notes: &mut Notes,
) -> Option<(Vec<Planned>, bool)> {
    if !view.running {
        notes.info("container is not running");
        return None;
    }
    if view.paused {
        notes.info("container is paused");
        return None;
    }
    // Problems in the keys of a container that does not register are noise: keep them
    // apart until the gate has let the container through.
    let mut read_notes = Notes::default();
    let keys = keys::read(view, &mut read_notes);
    let opted_in = gate(settings, &keys, notes)?;
    notes.extend(read_notes);
    let ports = ports::choose(view, settings, &keys, notes)?;
    let specs = specs::build(view, settings, &keys, ports, opted_in, notes);
    let autoheal = autoheal(view, &keys, notes);
    let checked = checks::attach(view, settings, &keys, specs, notes);
    Some((
        instances::from_specs(view, settings, checked, notes),
        autoheal,
    ))
}

/// `berth.autoheal` or, failing that, the `autoheal` label other tools use.
fn autoheal(view: &ContainerView, keys: &Keys, notes: &mut Notes) -> bool {
    let short = view
        .labels
        .get("autoheal")
        .map(|v| Raw::label("autoheal", v));
    keys.native
        .autoheal
        .as_ref()
        .or(short.as_ref())
        .and_then(|raw| boolean(raw, notes))
        .unwrap_or(false)
}

/// Container-level decisions. `None`: nothing registers. `Some(opted_in)`: go on, and
/// whether the container as a whole satisfies explicit mode.
fn gate(settings: &Settings, keys: &Keys, notes: &mut Notes) -> Option<bool> {
    let Keys { reg, native } = keys;
    let enable = native
        .enable
        .as_ref()
        .and_then(|raw| Some((boolean(raw, notes)?, raw)));
    if let Some((false, raw)) = enable {
        notes.info(format!("{raw}: container opted out"));
        return None;
    }
    let enabled = enable.is_some();
    if let Some(raw) = &reg.container.ignore
        && boolean(raw, notes) == Some(true)
    {
        if !enabled {
            notes.info(format!("{raw}: container ignored"));
            return None;
        }
        notes.info(format!("{raw}: overridden by label berth.enable=true"));
    }
    let opted_in = enabled
        || native.name.is_some()
        || !native.services.is_empty()
        || reg
            .container
            .name
            .as_ref()
            .and_then(Raw::non_empty)
            .is_some();
    if settings.explicit && !opted_in {
        let port_named = reg
            .port
            .values()
            .chain(reg.proto.values())
            .any(|f| f.name.as_ref().and_then(Raw::non_empty).is_some());
        if !port_named {
            notes.info("explicit mode: no service-name label");
            return None;
        }
    }
    Some(opted_in)
}
