//! Labels → instances. Pure: no I/O, no clock.
//!
//! [`plan_container`] turns one [`ContainerView`] plus the agent's [`Settings`] into the
//! instances berth should register for it, with notes saying why (used in logs and by
//! `berth explain`). The contract is documented in `docs/labels.md`.
//!
//! The work happens in four steps:
//! 1. read every `SERVICE_*` key (labels and env) and `berth.*` label ([`keys`]);
//! 2. gate the container (running, opted out, ignored, explicit mode);
//! 3. find the registrable ports and their endpoints for the mode ([`ports`]);
//! 4. resolve name, id, tags, meta and checks per port or per `berth.service.<svc>`, then
//!    make ids unique.

mod checks;
mod keys;
mod ports;
mod sanitize;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use berth_registry::{Health, Instance, Origin};

use crate::docker::view::{ContainerView, DockerHealth, PortProto, Proto};

pub use checks::{CheckSpec, ProbeKind, Probes, Target};
use keys::{Native, Raw, Registrator, Scope, ServiceLabels};
use ports::{Candidates, Endpoint};
use sanitize::quote;

/// `output` cut to the 4 KB every backend stores.
pub fn truncate_output(output: &str) -> &str {
    sanitize::truncate(output, sanitize::MAX_HEALTH_OUTPUT)
}

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

/// Notes in the order they were made, without exact repeats (a note about a container-wide
/// key would otherwise repeat once per port).
#[derive(Debug, Default)]
struct Notes(Vec<Note>);

impl Notes {
    fn info(&mut self, message: impl Into<String>) {
        self.push(Level::Info, message.into());
    }

    fn warn(&mut self, message: impl Into<String>) {
        self.push(Level::Warn, message.into());
    }

    fn push(&mut self, level: Level, message: String) {
        if !self
            .0
            .iter()
            .any(|n| n.level == level && n.message == message)
        {
            self.0.push(Note { level, message });
        }
    }

    fn extend(&mut self, other: Notes) {
        for n in other.0 {
            self.push(n.level, n.message);
        }
    }
}

/// One instance with its check keys, before ids are made unique.
#[derive(Debug)]
struct Planned {
    instance: Instance,
    proto: Proto,
    checks: CheckLabels,
    probes: Probes,
}

/// How an instance id is formed once the container's port count is known.
#[derive(Debug)]
enum IdRule {
    /// A per-port or per-service id, used as written.
    Exact(String),
    /// A container-wide id (`SERVICE_ID`, `berth.id`): as written for a single port,
    /// `<id>-<port>` otherwise.
    Container(String),
    /// `<node>:<container>:<port>`, plus `:<svc>` when services share a port.
    Default { service: Option<String> },
}

/// Everything decided for one registrable port (or one `berth.service.<svc>`).
#[derive(Debug)]
struct Spec {
    pp: PortProto,
    endpoints: Vec<Endpoint>,
    name: String,
    id: IdRule,
    tags: Vec<String>,
    meta: BTreeMap<String, Raw>,
    checks: BTreeMap<String, Raw>,
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
    let reg = Registrator::read(view, &mut read_notes);
    let native = Native::read(view, &mut read_notes);
    let opted_in = gate(settings, &reg, &native, notes)?;
    notes.extend(read_notes);

    let known = ports::known(view);
    warn_unknown_port_keys(&reg, &known, notes);
    let address = native.address.as_ref().map(|(a, _)| a.as_str());
    let candidates = ports::candidates(view, settings, address, native.network.as_ref(), notes)?;
    let ctx = Ctx {
        view,
        settings,
        reg: &reg,
        native: &native,
        known: &known,
    };
    let specs = if native.services.is_empty() {
        plain_specs(&ctx, candidates, opted_in, notes)
    } else {
        service_specs(&ctx, &candidates, notes)
    };
    let container_ip = checks::container_ip(view, settings, native.network.as_ref());
    let autoheal = autoheal(view, &native, notes);
    Some((build(view, settings, container_ip, specs, notes), autoheal))
}

/// `berth.autoheal` or, failing that, the `autoheal` label other tools use.
fn autoheal(view: &ContainerView, native: &Native, notes: &mut Notes) -> bool {
    let short = view
        .labels
        .get("autoheal")
        .map(|v| keys::Raw::label("autoheal", v));
    native
        .autoheal
        .as_ref()
        .or(short.as_ref())
        .and_then(|raw| boolean(raw, notes))
        .unwrap_or(false)
}

/// Container-level decisions. `None`: nothing registers. `Some(opted_in)`: go on, and
/// whether the container as a whole satisfies explicit mode.
fn gate(
    settings: &Settings,
    reg: &Registrator,
    native: &Native,
    notes: &mut Notes,
) -> Option<bool> {
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

/// Parses a boolean key; a bad value is reported and the key ignored.
fn boolean(raw: &Raw, notes: &mut Notes) -> Option<bool> {
    let parsed = sanitize::parse_bool(&raw.value);
    if parsed.is_none() {
        notes.warn(format!("{raw}: not a boolean (use true/false); ignored"));
    }
    parsed
}

/// Per-port registrator keys naming a port the container does not have are typos.
fn warn_unknown_port_keys(reg: &Registrator, known: &BTreeSet<PortProto>, notes: &mut Notes) {
    for (port, fields) in &reg.port {
        if !known.iter().any(|pp| pp.port == *port) {
            for raw in fields.raws() {
                notes.warn(format!("{raw}: the container has no port {port}; ignored"));
            }
        }
    }
    for (pp, fields) in &reg.proto {
        if !known.contains(pp) {
            for raw in fields.raws() {
                notes.warn(format!("{raw}: the container has no port {pp}; ignored"));
            }
        }
    }
}

/// Where a service name came from, for notes.
#[derive(Clone, Copy, Debug)]
enum NameFrom<'a> {
    Key(&'a Raw),
    Image(&'a str),
    ServiceKey(&'a str),
}

/// Sanitises a service name; `None` (with a warning) when nothing usable is left.
fn service_name(base: &str, from: NameFrom<'_>, what: &str, notes: &mut Notes) -> Option<String> {
    let name = sanitize::service_name(base);
    if name.is_empty() {
        notes.warn(match from {
            NameFrom::Key(raw) => format!(
                "{raw}: not usable as a service name (letters, digits and - only); {what} skipped"
            ),
            NameFrom::Image(image) => format!(
                "image {} gives no usable service name; set SERVICE_NAME or berth.name; {what} \
                 skipped",
                quote(image)
            ),
            NameFrom::ServiceKey(svc) => format!(
                "service key {} gives no usable service name; set berth.service.{svc}.name; \
                 {what} skipped",
                quote(svc)
            ),
        });
        return None;
    }
    if name != base {
        match from {
            NameFrom::Key(raw) => {
                notes.info(format!("{raw}: service name sanitized to {}", quote(&name)));
            }
            NameFrom::ServiceKey(svc) => notes.info(format!(
                "service key {}: service name sanitized to {}",
                quote(svc),
                quote(&name)
            )),
            NameFrom::Image(_) => {}
        }
    }
    Some(name)
}

/// A custom id, or `None` (with a warning) when a registry could not take it.
fn custom_id(raw: &Raw, notes: &mut Notes) -> Option<String> {
    let id = raw.value.trim();
    if sanitize::valid_id(id) {
        return Some(id.to_owned());
    }
    notes.warn(format!(
        "{raw}: not a usable id (no spaces, /, ?, # or %); using the default id"
    ));
    None
}

/// The tag a non-TCP protocol adds, and the id suffix it adds.
fn proto_marks(proto: Proto) -> Option<&'static str> {
    match proto {
        Proto::Tcp => None,
        Proto::Udp => Some("udp"),
        Proto::Sctp => Some("sctp"),
    }
}

fn tags(raw: Option<&Raw>, proto: Proto) -> Vec<String> {
    let mut tags = raw
        .map(|r| sanitize::split_list(&r.value))
        .unwrap_or_default();
    if let Some(tag) = proto_marks(proto)
        && !tags.iter().any(|t| t == tag)
    {
        tags.push(tag.to_owned());
    }
    tags
}

/// registrator's "group" naming: with several ports, container-wide names get `-<port>`.
fn grouped(base: &str, pp: PortProto, group: bool) -> String {
    if group {
        format!("{base}-{}", pp.port)
    } else {
        base.to_owned()
    }
}

/// What the spec builders read.
#[derive(Debug)]
struct Ctx<'a> {
    view: &'a ContainerView,
    settings: &'a Settings,
    reg: &'a Registrator,
    native: &'a Native,
    /// Every port the container has (exposed or bound).
    known: &'a BTreeSet<PortProto>,
}

/// One spec per registrable port (no `berth.service.*` labels).
fn plain_specs(
    ctx: &Ctx<'_>,
    mut candidates: Candidates,
    opted_in: bool,
    notes: &mut Notes,
) -> Vec<Spec> {
    let Ctx {
        view,
        settings,
        reg,
        native,
        known,
    } = *ctx;
    if let Some(list) = &native.ports {
        for pp in &list.ports {
            if !known.contains(pp) {
                notes.warn(format!(
                    "{}: {pp} is not a port of this container; ignored",
                    list.raw
                ));
            }
        }
        candidates.retain(|pp, _| {
            let keep = list.ports.contains(pp);
            if !keep {
                notes.info(format!("port {pp} is not listed in {}; skipped", list.raw));
            }
            keep
        });
    }
    // Counted like registrator: after publishing, before per-port ignores.
    let group = candidates.len() > 1;
    let image = sanitize::image_name(&view.image);
    let mut specs = Vec::new();
    for (pp, endpoints) in candidates {
        let layers = reg.layers(pp);
        if let Some((raw, scope)) = layers.pick(|f| f.ignore.as_ref())
            && scope != Scope::Container
            && boolean(raw, notes) == Some(true)
        {
            notes.info(format!("{raw}: port {pp} ignored"));
            continue;
        }
        let port_name = layers
            .pick(|f| f.name.as_ref())
            .filter(|(_, scope)| *scope != Scope::Container)
            .map(|(raw, _)| raw);
        if settings.explicit && !opted_in && port_name.is_none() {
            notes.info(format!(
                "explicit mode: no service-name label for port {pp}; skipped"
            ));
            continue;
        }
        let (base, from) = if let Some(raw) = &native.name {
            (raw.value.clone(), NameFrom::Key(raw))
        } else if let Some(raw) = port_name {
            (raw.value.clone(), NameFrom::Key(raw))
        } else if let Some((raw, _)) = layers.pick(|f| f.name.as_ref()) {
            (grouped(&raw.value, pp, group), NameFrom::Key(raw))
        } else {
            (grouped(image, pp, group), NameFrom::Image(&view.image))
        };
        let Some(name) = service_name(&base, from, &format!("port {pp}"), notes) else {
            continue;
        };
        let tags_raw = native
            .tags
            .as_ref()
            .or_else(|| layers.pick(|f| f.tags.as_ref()).map(|(raw, _)| raw));
        let mut meta = layers.meta();
        meta.extend(native.meta.clone());
        let mut checks = layers.checks();
        checks.extend(native.checks.clone());
        let id = match (&native.id, layers.pick(|f| f.id.as_ref())) {
            (Some(raw), _) | (None, Some((raw, Scope::Container))) => {
                custom_id(raw, notes).map(IdRule::Container)
            }
            (None, Some((raw, _))) => custom_id(raw, notes).map(IdRule::Exact),
            (None, None) => None,
        };
        specs.push(Spec {
            pp,
            endpoints,
            name,
            id: id.unwrap_or(IdRule::Default { service: None }),
            tags: tags(tags_raw, pp.proto),
            meta,
            checks,
        });
    }
    specs
}

/// One spec per `berth.service.<svc>`: the container registers exactly those.
fn service_specs(ctx: &Ctx<'_>, candidates: &Candidates, notes: &mut Notes) -> Vec<Spec> {
    let Ctx {
        reg, native, known, ..
    } = *ctx;
    let container_wide = [
        native.ports.as_ref().map(|l| &l.raw),
        native.name.as_ref(),
        native.id.as_ref(),
    ];
    for raw in container_wide.into_iter().flatten() {
        notes.warn(format!(
            "{raw}: has no effect when berth.service.* labels are present; ignored"
        ));
    }

    let mut chosen: Vec<(&str, &ServiceLabels, PortProto)> = Vec::new();
    for (svc, s) in &native.services {
        let pp = match &s.port {
            Some(raw) => match raw.value.trim().parse::<PortProto>() {
                Ok(pp) => pp,
                Err(()) => {
                    notes.warn(format!(
                        "{raw}: not a port (use 8080 or 53/udp); service {svc} not registered"
                    ));
                    continue;
                }
            },
            None => match candidates.keys().collect::<Vec<_>>().as_slice() {
                [pp] => **pp,
                [] => {
                    notes.info(format!(
                        "service {svc}: the container has no port to register"
                    ));
                    continue;
                }
                several => {
                    let list: Vec<String> = several.iter().map(|pp| pp.to_string()).collect();
                    notes.warn(format!(
                        "label berth.service.{svc}.port is missing and the container has several \
                         ports ({}); service {svc} not registered",
                        list.join(", ")
                    ));
                    continue;
                }
            },
        };
        if !candidates.contains_key(&pp) {
            if known.contains(&pp) {
                notes.info(format!(
                    "service {svc}: port {pp} is exposed but not published; not registered"
                ));
            } else if let Some(raw) = &s.port {
                notes.warn(format!(
                    "{raw}: {pp} is not a port of this container; service {svc} not registered"
                ));
            }
            continue;
        }
        chosen.push((svc, s, pp));
    }
    for pp in candidates.keys() {
        if !chosen.iter().any(|(_, _, p)| p == pp) {
            notes.info(format!(
                "port {pp} is not named by any berth.service.<svc>.port label; skipped"
            ));
        }
    }

    let mut specs = Vec::new();
    for &(svc, s, pp) in &chosen {
        let Some(endpoints) = candidates.get(&pp) else {
            continue;
        };
        let (base, from) = match &s.name {
            Some(raw) => (raw.value.as_str(), NameFrom::Key(raw)),
            None => (svc, NameFrom::ServiceKey(svc)),
        };
        let Some(name) = service_name(base, from, &format!("service {svc}"), notes) else {
            continue;
        };
        let layers = reg.layers(pp);
        let tags_raw = s
            .tags
            .as_ref()
            .or(native.tags.as_ref())
            .or_else(|| layers.pick(|f| f.tags.as_ref()).map(|(raw, _)| raw));
        let mut meta = layers.meta();
        meta.extend(native.meta.clone());
        meta.extend(s.meta.clone());
        let mut checks = layers.checks();
        checks.extend(native.checks.clone());
        keys::overlay(&mut checks, &s.checks);
        let shared = chosen.iter().filter(|(_, _, p)| *p == pp).count() > 1;
        let id =
            s.id.as_ref()
                .and_then(|raw| custom_id(raw, notes))
                .map_or_else(
                    || IdRule::Default {
                        service: shared.then(|| svc.to_owned()),
                    },
                    IdRule::Exact,
                );
        specs.push(Spec {
            pp,
            endpoints: endpoints.clone(),
            name,
            id,
            tags: tags(tags_raw, pp.proto),
            meta,
            checks,
        });
    }
    specs
}

/// Turns specs into instances: one per endpoint, duplicates dropped, ids made unique.
fn build(
    view: &ContainerView,
    settings: &Settings,
    container_ip: Option<IpAddr>,
    specs: Vec<Spec>,
    notes: &mut Notes,
) -> Vec<Planned> {
    let port_count = specs.iter().map(|s| s.pp).collect::<BTreeSet<_>>().len();
    let health = health(view);
    let origin = Origin {
        node: settings.node.clone(),
        container_id: view.id.clone(),
        container_name: view.name.clone(),
        image: view.image.clone(),
    };
    let mut planned = Vec::new();
    for spec in specs {
        let suffix = proto_marks(spec.pp.proto)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let port = spec.pp.port;
        let id = match spec.id {
            IdRule::Exact(id) => id,
            IdRule::Container(id) if port_count == 1 => id,
            IdRule::Container(id) => format!("{id}-{port}{suffix}"),
            IdRule::Default { service } => {
                let service = service.map(|s| format!(":{s}")).unwrap_or_default();
                format!("{}:{}:{port}{suffix}{service}", settings.node, view.name)
            }
        };
        let meta = cap_meta(spec.meta, notes);
        for endpoint in spec.endpoints {
            let dial = checks::Dial {
                container_ip,
                pp: spec.pp,
                address: endpoint.address.clone(),
                port: endpoint.port,
            };
            let probes = checks::parse(&spec.checks, &dial, notes);
            planned.push(Planned {
                instance: Instance {
                    id: id.clone(),
                    name: spec.name.clone(),
                    address: endpoint.address,
                    port: endpoint.port,
                    tags: spec.tags.clone(),
                    meta: meta.clone(),
                    origin: origin.clone(),
                    health: health.clone(),
                },
                proto: spec.pp.proto,
                checks: spec
                    .checks
                    .iter()
                    .map(|(k, r)| (k.clone(), r.value.clone()))
                    .collect(),
                probes,
            });
        }
    }
    drop_duplicates(&mut planned, notes);
    unique_ids(&mut planned, notes);
    planned.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    planned
}

/// Keeps at most [`sanitize::MAX_USER_META_KEYS`] keys (the first in key order).
fn cap_meta(meta: BTreeMap<String, Raw>, notes: &mut Notes) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, raw) in meta {
        if out.len() < sanitize::MAX_USER_META_KEYS {
            out.insert(key, raw.value);
        } else {
            notes.warn(format!(
                "{raw}: more than {} user meta keys (Consul allows 64, berth adds 5); dropped",
                sanitize::MAX_USER_META_KEYS
            ));
        }
    }
    out
}

fn sort_key(p: &Planned) -> (&str, &str, u16, &str) {
    (
        &p.instance.id,
        &p.instance.address,
        p.instance.port,
        &p.instance.name,
    )
}

/// Two instances clients cannot tell apart (same name, address, port and protocol): keep
/// the one with the smallest id.
fn drop_duplicates(planned: &mut Vec<Planned>, notes: &mut Notes) {
    planned.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let mut seen: BTreeMap<(String, u16, String, Proto), String> = BTreeMap::new();
    planned.retain(|p| {
        let i = &p.instance;
        let key = (i.address.clone(), i.port, i.name.clone(), p.proto);
        if let Some(kept) = seen.get(&key) {
            notes.info(format!(
                "instance {} has the same name, address and port as {kept}; dropped",
                i.id
            ));
            return false;
        }
        seen.insert(key, i.id.clone());
        true
    });
}

fn duplicate_ids(planned: &[Planned]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    planned
        .iter()
        .filter(|p| !seen.insert(p.instance.id.as_str()))
        .map(|p| p.instance.id.clone())
        .collect()
}

/// Makes ids unique: first `:<port>` (the registered port), then `:<n>` in a stable order.
fn unique_ids(planned: &mut Vec<Planned>, notes: &mut Notes) {
    let shared = duplicate_ids(planned);
    for id in &shared {
        notes.info(format!(
            "id {id} is shared by several instances; appended the registered port"
        ));
    }
    for p in planned.iter_mut() {
        if shared.contains(&p.instance.id) {
            p.instance.id = format!("{}:{}", p.instance.id, p.instance.port);
        }
    }
    // Each round makes one group of equal ids distinct; a new clash needs an unrelated id
    // that happens to end in `:<n>`, so a few rounds always suffice in practice.
    for _ in 0..4 {
        let shared = duplicate_ids(planned);
        if shared.is_empty() {
            return;
        }
        planned.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let mut counters: BTreeMap<String, usize> = BTreeMap::new();
        for p in planned.iter_mut() {
            if shared.contains(&p.instance.id) {
                let n = counters.entry(p.instance.id.clone()).or_insert(0);
                *n += 1;
                p.instance.id = format!("{}:{n}", p.instance.id);
            }
        }
        for id in &shared {
            notes.info(format!(
                "id {id} is still shared (same port); appended :1, :2, … by address"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    planned.retain(|p| {
        let fresh = seen.insert(p.instance.id.clone());
        if !fresh {
            notes.warn(format!(
                "instance {} could not be given a unique id; dropped",
                p.instance.id
            ));
        }
        fresh
    });
}

/// The health berth reports, from Docker's own HEALTHCHECK when the image has one.
fn health(view: &ContainerView) -> Health {
    match &view.health {
        None => Health::passing(format!("berth: container {} is running", view.name)),
        Some(DockerHealth::Healthy) => Health::passing("Docker HEALTHCHECK: healthy"),
        Some(DockerHealth::Starting) => Health::critical("Docker HEALTHCHECK: starting"),
        Some(DockerHealth::Unhealthy(out)) if out.is_empty() => {
            Health::critical("Docker HEALTHCHECK: unhealthy")
        }
        Some(DockerHealth::Unhealthy(out)) => {
            // Cap the whole output, as backends store it: a longer desired output would never
            // equal the stored one and be re-sent on every resync.
            let full = format!("Docker HEALTHCHECK: unhealthy: {out}");
            Health::critical(sanitize::truncate(&full, sanitize::MAX_HEALTH_OUTPUT))
        }
    }
}
