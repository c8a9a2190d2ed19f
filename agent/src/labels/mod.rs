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
pub mod drain;
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
pub use drain::Drain;
use instances::Planned;
use keys::{Keys, Raw, boolean};
use notes::Notes;
pub use notes::{Key, Level, Note};

/// Agent-wide settings that shape what a container registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Node identity; first part of every default instance id.
    pub node: String,
    /// Address for published ports whose binding has no specific host IP.
    pub host_ip: IpAddr,
    /// Where `host_ip` came from (`--host-ip`, or how it was detected), for `berth explain`.
    pub host_ip_from: String,
    /// `--internal`: register container IP and container port.
    pub internal: bool,
    /// `--network`: network to take the container IP from in internal mode.
    pub network: Option<String>,
    /// `--explicit`: only containers/ports with a service-name label register.
    pub explicit: bool,
    /// `--tags`: added to every instance's tags (after its own, without repeats).
    pub tags: Vec<String>,
    /// `--ip-from-label`: the label whose value is the address to register, when a
    /// container has it (`berth.address` wins).
    pub ip_label: Option<String>,
    /// `--drain-on-stop`: mark a container's instances critical when Docker sends it its stop
    /// signal (`berth.drain` overrides it per container).
    pub drain_on_stop: bool,
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
    /// How the container is drained when it is stopped; `None` when draining is off for it
    /// or it registers nothing.
    pub drain: Option<Drain>,
    /// Why each instance has its address (the rule that chose it), per instance id.
    pub addresses: BTreeMap<String, String>,
    /// Why the container registers nothing, when it does not.
    pub skipped: Option<Skip>,
    pub notes: Vec<Note>,
}

/// Why a container registers nothing. The code is the `reason` label of
/// `berth_containers_skipped`; the notes say the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    NotRunning,
    Paused,
    /// `berth.enable=false`.
    OptedOut,
    /// `SERVICE_IGNORE`.
    Ignored,
    /// `--explicit` and no service-name label.
    Explicit,
    /// Nothing published (or exposed, in internal and host-network modes).
    NoPorts,
    /// `--internal` and no network to take an address from.
    NoNetwork,
    /// It has ports, but its labels left no instance (every one refused).
    InvalidLabels,
}

impl Skip {
    pub const ALL: [Skip; 8] = [
        Skip::NotRunning,
        Skip::Paused,
        Skip::OptedOut,
        Skip::Ignored,
        Skip::Explicit,
        Skip::NoPorts,
        Skip::NoNetwork,
        Skip::InvalidLabels,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Skip::NotRunning => "not_running",
            Skip::Paused => "paused",
            Skip::OptedOut => "opted_out",
            Skip::Ignored => "ignored",
            Skip::Explicit => "explicit",
            Skip::NoPorts => "no_ports",
            Skip::NoNetwork => "no_network",
            Skip::InvalidLabels => "invalid_labels",
        }
    }
}

/// Decides what `view` registers.
///
/// Pure and deterministic: the same view and settings always give the same outcome.
/// Instances come back sorted by id with unique ids; every skipped port or ignored label
/// has a note.
pub fn plan_container(view: &ContainerView, settings: &Settings) -> Outcome {
    let mut notes = Notes::default();
    let (planned, autoheal, drain, skipped) = match plan(view, settings, &mut notes) {
        Ok(PlanResult {
            planned,
            autoheal,
            drain,
            ports,
        }) => {
            let skipped = planned.is_empty().then_some(if ports == 0 {
                Skip::NoPorts
            } else {
                Skip::InvalidLabels
            });
            let drain = drain.filter(|_| !planned.is_empty());
            (planned, autoheal, drain, skipped)
        }
        Err(skip) => (Vec::new(), false, None, Some(skip)),
    };
    let mut outcome = Outcome {
        autoheal,
        drain,
        skipped,
        ..Outcome::default()
    };
    for p in planned {
        outcome
            .addresses
            .insert(p.instance.id.clone(), p.address_rule.clone());
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

/// What [`plan`] decided for a container that passed the gate.
struct PlanResult {
    planned: Vec<Planned>,
    autoheal: bool,
    drain: Option<Drain>,
    /// Registrable ports found (an empty plan with ports means the labels refused them).
    ports: usize,
}

/// The instances of `view` and whether it asked for self-healing, or why it registers
/// nothing.
fn plan(view: &ContainerView, settings: &Settings, notes: &mut Notes) -> Result<PlanResult, Skip> {
    if !view.running {
        notes.info("container is not running");
        return Err(Skip::NotRunning);
    }
    if view.paused {
        notes.info("container is paused");
        return Err(Skip::Paused);
    }
    // Problems in the keys of a container that does not register are noise: keep them
    // apart until the gate has let the container through.
    let mut read_notes = Notes::default();
    let keys = keys::read(view, &mut read_notes);
    let opted_in = gate(settings, &keys, notes)?;
    notes.extend(read_notes);
    let ports = ports::choose(view, settings, &keys, notes).ok_or(Skip::NoNetwork)?;
    let port_count = ports.candidates.len();
    let specs = specs::build(view, settings, &keys, ports, opted_in, notes);
    let autoheal = autoheal(view, &keys, notes);
    let drain = drain::resolve(view, settings.drain_on_stop, &keys, notes);
    let checked = checks::attach(view, settings, &keys, specs, notes);
    Ok(PlanResult {
        planned: instances::from_specs(view, settings, checked, notes),
        autoheal,
        drain,
        ports: port_count,
    })
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

/// Container-level decisions. `Err`: nothing registers. `Ok(opted_in)`: go on, and
/// whether the container as a whole satisfies explicit mode.
fn gate(settings: &Settings, keys: &Keys, notes: &mut Notes) -> Result<bool, Skip> {
    let Keys { reg, native } = keys;
    let enable = native
        .enable
        .as_ref()
        .and_then(|raw| Some((boolean(raw, notes)?, raw)));
    if let Some((false, raw)) = enable {
        notes.info_at(raw, "container opted out");
        return Err(Skip::OptedOut);
    }
    let enabled = enable.is_some();
    if let Some(raw) = &reg.container.ignore
        && boolean(raw, notes) == Some(true)
    {
        if !enabled {
            notes.info_at(raw, "container ignored");
            return Err(Skip::Ignored);
        }
        notes.info_at(raw, "overridden by label berth.enable=true");
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
            return Err(Skip::Explicit);
        }
    }
    Ok(opted_in)
}
