//! Stage 1 of the pipeline, reading the key layers: registrator's `SERVICE_*` (labels and
//! env) and berth's `berth.*` labels, into [`Keys`].
//!
//! Reading only sorts keys into structures and reports keys that can never mean anything
//! (bad syntax, unknown names, refused check kinds). It also knows how the layers stack:
//! [`Layers`] picks the most specific registrator value for a port, and [`overlay`] puts one
//! set of check keys over another. Which key wins for a given service is decided by
//! `specs`.

use std::collections::BTreeMap;
use std::fmt;

use crate::docker::view::{ContainerView, PortProto, Proto};

use berth_registry::limits::{MAX_META_KEY_LEN, MAX_META_VALUE_LEN, RESERVED_META_PREFIXES};

use super::notes::Notes;
use super::sanitize::{self, quote};

/// Every key of a container, read once.
#[derive(Debug)]
pub(super) struct Keys {
    pub reg: Registrator,
    pub native: Native,
}

/// Reads every key of `view`.
pub(super) fn read(view: &ContainerView, notes: &mut Notes) -> Keys {
    Keys {
        reg: Registrator::read(view, notes),
        native: Native::read(view, notes),
    }
}

const SERVICE_PREFIX: &str = "SERVICE_";
const BERTH_PREFIX: &str = "berth.";

/// Registrator check kinds that run a command (in the container or on the host). berth never
/// runs commands that come from labels: anyone who can start a container would get code
/// execution in the agent's context.
const COMMAND_CHECKS: [&str; 3] = ["check_script", "check_cmd", "check_docker"];
/// The same refusal for berth's own check keys.
const NATIVE_COMMAND_CHECKS: [&str; 2] = ["check.script", "check.cmd"];

/// Where a key was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Label,
    Env,
}

/// One key as the operator wrote it; notes quote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Raw {
    pub source: Source,
    pub key: String,
    pub value: String,
}

impl Raw {
    pub(super) fn label(key: &str, value: &str) -> Raw {
        Raw {
            source: Source::Label,
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    /// The value, or `None` when it is empty (registrator treats empty as unset).
    pub fn non_empty(&self) -> Option<&str> {
        Some(self.value.as_str()).filter(|v| !v.is_empty())
    }
}

impl fmt::Display for Raw {
    /// `label SERVICE_80_IGNORE="maybe"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Label => "label",
            Source::Env => "env",
        };
        write!(
            f,
            "{source} {}={}",
            self.key.escape_debug(),
            quote(&self.value)
        )
    }
}

/// Stores `raw` in `slot`: a label replaces an env key; a second key of the same source
/// (`SERVICE_NAME` and `SERVICE_name`) is reported and dropped.
fn put(slot: &mut Option<Raw>, raw: Raw, notes: &mut Notes) {
    match slot {
        Some(old) if old.source == raw.source => {
            notes.warn_at(&raw, format!("same key as {}; ignored", old.key));
        }
        _ => *slot = Some(raw),
    }
}

/// [`put`] for keyed maps (meta, checks).
fn put_keyed(map: &mut BTreeMap<String, Raw>, key: String, raw: Raw, notes: &mut Notes) {
    let mut slot = map.remove(&key);
    put(&mut slot, raw, notes);
    if let Some(raw) = slot {
        map.insert(key, raw);
    }
}

/// Adds a user meta entry, sanitising key and value for Consul.
fn put_meta(map: &mut BTreeMap<String, Raw>, key: &str, mut raw: Raw, notes: &mut Notes) {
    if key.is_empty() {
        notes.warn_at(&raw, "empty meta key; ignored");
        return;
    }
    let (clean, truncated) = sanitize::meta_key(key);
    if truncated {
        notes.warn_at(
            &raw,
            format!(
                "meta key longer than {} characters; truncated",
                MAX_META_KEY_LEN
            ),
        );
    } else if clean != key.to_ascii_lowercase() {
        notes.info_at(&raw, format!("meta key sanitized to {}", quote(&clean)));
    }
    if RESERVED_META_PREFIXES.iter().any(|p| clean.starts_with(p)) {
        notes.warn_at(
            &raw,
            "meta keys starting with berth- or consul- are reserved; dropped",
        );
        return;
    }
    if raw.value.len() > MAX_META_VALUE_LEN {
        notes.warn_at(
            &raw,
            format!("meta value longer than {MAX_META_VALUE_LEN} bytes; truncated"),
        );
        raw.value = sanitize::truncate(&raw.value, MAX_META_VALUE_LEN).to_owned();
    }
    put_keyed(map, clean, raw, notes);
}

/// Registrator keys of one scope (container-wide, one port, or one port and protocol).
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub name: Option<Raw>,
    pub tags: Option<Raw>,
    pub id: Option<Raw>,
    pub ignore: Option<Raw>,
    /// `check_http` → raw.
    pub checks: BTreeMap<String, Raw>,
    /// Sanitised meta key → raw (value already truncated).
    pub meta: BTreeMap<String, Raw>,
}

impl Fields {
    /// Every key of this scope, for notes.
    pub fn raws(&self) -> impl Iterator<Item = &Raw> {
        [&self.name, &self.tags, &self.id, &self.ignore]
            .into_iter()
            .flatten()
            .chain(self.checks.values())
            .chain(self.meta.values())
    }

    fn add(&mut self, field: &str, raw: Raw, notes: &mut Notes) {
        match field {
            "name" => put(&mut self.name, raw, notes),
            "tags" => put(&mut self.tags, raw, notes),
            "id" => put(&mut self.id, raw, notes),
            "ignore" => put(&mut self.ignore, raw, notes),
            _ if field.starts_with("check_") && field.len() > "check_".len() => {
                if COMMAND_CHECKS.contains(&field) {
                    notes.warn_at(
                        &raw,
                        "command checks are not supported (berth never runs commands \
                         from labels); dropped",
                    );
                } else {
                    put_keyed(&mut self.checks, field.to_owned(), raw, notes);
                }
            }
            _ => {
                put_meta(&mut self.meta, field, raw, notes);
            }
        }
    }
}

/// How specific the registrator key that supplied a value was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// `SERVICE_<port>_<proto>_X`.
    Proto,
    /// `SERVICE_<port>_X`.
    Port,
    /// `SERVICE_X`.
    Container,
}

/// All registrator keys of a container, labels over env.
#[derive(Debug, Default)]
pub(super) struct Registrator {
    pub container: Fields,
    pub port: BTreeMap<u16, Fields>,
    pub proto: BTreeMap<PortProto, Fields>,
}

impl Registrator {
    /// Reads `SERVICE_*` from env, then from labels so that labels win.
    pub fn read(view: &ContainerView, notes: &mut Notes) -> Registrator {
        let mut r = Registrator::default();
        let env = view.env.iter().map(|(k, v)| (Source::Env, k, v));
        let labels = view.labels.iter().map(|(k, v)| (Source::Label, k, v));
        for (source, key, value) in env.chain(labels) {
            if !key.starts_with(SERVICE_PREFIX) {
                continue;
            }
            let raw = Raw {
                source,
                key: key.clone(),
                value: value.clone(),
            };
            r.add(raw, notes);
        }
        r
    }

    fn add(&mut self, raw: Raw, notes: &mut Notes) {
        let rest = raw.key[SERVICE_PREFIX.len()..].to_lowercase();
        if rest.is_empty() {
            notes.warn_at(&raw, "no key after SERVICE_; ignored");
            return;
        }
        let (first, after) = match rest.split_once('_') {
            Some((first, after)) => (first, Some(after)),
            None => (rest.as_str(), None),
        };
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            self.container.add(&rest, raw, notes);
            return;
        }
        let Some(after) = after.filter(|a| !a.is_empty()) else {
            notes.warn_at(
                &raw,
                format!("a port without a key (expected e.g. SERVICE_{first}_NAME); ignored"),
            );
            return;
        };
        let Some(port) = first.parse::<u16>().ok().filter(|p| *p != 0) else {
            notes.warn_at(&raw, format!("{first} is not a port number; ignored"));
            return;
        };
        let (proto, field) = match after.split_once('_') {
            Some((p, field)) => match p.parse::<Proto>() {
                Ok(proto) => (Some(proto), field),
                Err(()) => (None, after),
            },
            None => (None, after),
        };
        match proto {
            Some(_) if field.is_empty() => {
                notes.warn_at(
                    &raw,
                    format!(
                        "a protocol without a key (expected e.g. SERVICE_{port}_UDP_NAME); \
                     ignored"
                    ),
                );
            }
            Some(proto) => self
                .proto
                .entry(PortProto { port, proto })
                .or_default()
                .add(field, raw, notes),
            None if after.parse::<Proto>().is_ok() => {
                notes.warn_at(
                    &raw,
                    format!(
                        "a protocol without a key (expected e.g. SERVICE_{port}_UDP_NAME); \
                     ignored"
                    ),
                );
            }
            None => self.port.entry(port).or_default().add(field, raw, notes),
        }
    }

    /// The scopes that apply to `pp`, most specific first.
    pub fn layers(&self, pp: PortProto) -> Layers<'_> {
        Layers {
            proto: self.proto.get(&pp),
            port: self.port.get(&pp.port),
            container: &self.container,
        }
    }
}

/// The registrator scopes for one port, most specific first.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layers<'a> {
    pub proto: Option<&'a Fields>,
    pub port: Option<&'a Fields>,
    pub container: &'a Fields,
}

impl<'a> Layers<'a> {
    fn each(self) -> [(Scope, Option<&'a Fields>); 3] {
        [
            (Scope::Proto, self.proto),
            (Scope::Port, self.port),
            (Scope::Container, Some(self.container)),
        ]
    }

    /// The most specific non-empty value of a field (registrator: empty means unset).
    pub fn pick(self, field: impl Fn(&Fields) -> Option<&Raw>) -> Option<(&'a Raw, Scope)> {
        self.each().into_iter().find_map(|(scope, fields)| {
            let raw = fields.and_then(&field)?;
            raw.non_empty().map(|_| (raw, scope))
        })
    }

    /// Meta of all scopes, the more specific overriding.
    pub fn meta(self) -> BTreeMap<String, Raw> {
        self.merged(
            |f| &f.meta,
            |out, m| {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            },
        )
    }

    /// Check keys of all scopes, the more specific overriding (a kind replaces the kind of
    /// a less specific scope).
    pub fn checks(self) -> BTreeMap<String, Raw> {
        self.merged(|f| &f.checks, overlay)
    }

    /// `map` of every scope, least specific first, each put on top of the previous ones with
    /// `combine`.
    fn merged(
        self,
        map: impl Fn(&Fields) -> &BTreeMap<String, Raw>,
        combine: impl Fn(&mut BTreeMap<String, Raw>, &BTreeMap<String, Raw>),
    ) -> BTreeMap<String, Raw> {
        let mut out = BTreeMap::new();
        for (_, fields) in self.each().into_iter().rev() {
            if let Some(f) = fields {
                combine(&mut out, map(f));
            }
        }
        out
    }
}

/// Check kinds, in the order registrator gives them precedence.
pub(super) const KINDS: [&str; 4] = ["http", "https", "tcp", "grpc"];

/// The check a key sets the kind of: `Some("")` for the default check (`check_http`,
/// `check.tcp`), `Some(name)` for `check.<name>.<kind>`, `None` for any other key.
fn kind_of(key: &str) -> Option<&str> {
    if let Some(kind) = key.strip_prefix("check_") {
        return KINDS.contains(&kind).then_some("");
    }
    let rest = key.strip_prefix("check.")?;
    match rest.split_once('.') {
        None => KINDS.contains(&rest).then_some(""),
        Some((name, kind)) => KINDS.contains(&kind).then_some(name),
    }
}

/// `over` on top of `base`: a check whose kind `over` sets loses the kind `base` gave it
/// (a per-port `SERVICE_80_CHECK_TCP` replaces a container-wide `SERVICE_CHECK_HTTP`, a
/// `berth.service.<svc>.check.tcp` replaces `berth.check.http`), then `over`'s keys win.
pub(super) fn overlay(base: &mut BTreeMap<String, Raw>, over: &BTreeMap<String, Raw>) {
    let replaced: Vec<String> = over
        .keys()
        .filter_map(|k| kind_of(k))
        .map(str::to_owned)
        .collect();
    base.retain(|k, _| kind_of(k).is_none_or(|check| !replaced.iter().any(|r| r == check)));
    base.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Parses a boolean key; a bad value is reported and the key ignored.
pub(super) fn boolean(raw: &Raw, notes: &mut Notes) -> Option<bool> {
    let parsed = sanitize::parse_bool(&raw.value);
    if parsed.is_none() {
        notes.warn_at(raw, "not a boolean (use true/false); ignored");
    }
    parsed
}

/// `berth.port`: the container ports allowed to register.
#[derive(Debug)]
pub(super) struct PortList {
    pub ports: Vec<PortProto>,
    pub raw: Raw,
}

/// `berth.service.<svc>.*`.
#[derive(Debug, Default)]
pub(super) struct ServiceLabels {
    pub port: Option<Raw>,
    pub name: Option<Raw>,
    pub tags: Option<Raw>,
    pub id: Option<Raw>,
    pub meta: BTreeMap<String, Raw>,
    pub checks: BTreeMap<String, Raw>,
}

/// All `berth.*` labels of a container.
#[derive(Debug, Default)]
pub(super) struct Native {
    /// Unparsed: the gate reports a bad value.
    pub enable: Option<Raw>,
    /// `berth.autoheal`, unparsed.
    pub autoheal: Option<Raw>,
    /// `berth.drain`, unparsed.
    pub drain: Option<Raw>,
    pub name: Option<Raw>,
    pub id: Option<Raw>,
    pub tags: Option<Raw>,
    pub meta: BTreeMap<String, Raw>,
    pub checks: BTreeMap<String, Raw>,
    pub ports: Option<PortList>,
    pub network: Option<Raw>,
    /// Validated and normalised override, with its label.
    pub address: Option<(String, Raw)>,
    pub services: BTreeMap<String, ServiceLabels>,
}

impl Native {
    pub fn read(view: &ContainerView, notes: &mut Notes) -> Native {
        let mut n = Native::default();
        for (key, value) in &view.labels {
            let Some(rest) = key.strip_prefix(BERTH_PREFIX) else {
                continue;
            };
            let raw = Raw::label(key, value);
            match rest {
                "enable" => n.enable = Some(raw),
                "autoheal" => n.autoheal = Some(raw),
                "drain" => n.drain = Some(raw),
                "name" => n.name = non_empty(raw, notes),
                "id" => n.id = non_empty(raw, notes),
                "tags" => n.tags = Some(raw),
                "network" => n.network = non_empty(raw, notes),
                "port" => n.ports = port_list(raw, notes),
                "address" => match sanitize::address(raw.value.trim()) {
                    Ok(address) => n.address = Some((address, raw)),
                    Err(why) => notes.warn_at(&raw, format!("{why}; override ignored")),
                },
                _ => {
                    if let Some(k) = rest.strip_prefix("meta.") {
                        put_meta(&mut n.meta, k, raw, notes);
                    } else if let Some(k) = rest.strip_prefix("check.") {
                        put_check(&mut n.checks, k, raw, notes);
                    } else if let Some(s) = rest.strip_prefix("service.") {
                        n.add_service(s, raw, notes);
                    } else {
                        unknown(&raw, notes);
                    }
                }
            }
        }
        n
    }

    fn add_service(&mut self, rest: &str, raw: Raw, notes: &mut Notes) {
        let Some((svc, field)) = rest.split_once('.') else {
            unknown(&raw, notes);
            return;
        };
        if !sanitize::key_name(svc) {
            notes.warn_at(
                &raw,
                format!(
                    "service key {} must be letters, digits, - or _; ignored",
                    quote(svc)
                ),
            );
            return;
        }
        let known = matches!(field, "port" | "name" | "id" | "tags")
            || field.starts_with("meta.")
            || field.starts_with("check.");
        if !known {
            // A typo must not declare a service (that would switch the container to
            // exactly-these-services mode).
            unknown(&raw, notes);
            return;
        }
        let s = self.services.entry(svc.to_owned()).or_default();
        match field {
            "port" => s.port = Some(raw),
            "name" => s.name = non_empty(raw, notes),
            "id" => s.id = non_empty(raw, notes),
            "tags" => s.tags = Some(raw),
            _ => {
                if let Some(k) = field.strip_prefix("meta.") {
                    put_meta(&mut s.meta, k, raw, notes);
                } else if let Some(k) = field.strip_prefix("check.") {
                    put_check(&mut s.checks, k, raw, notes);
                }
            }
        }
    }
}

fn unknown(raw: &Raw, notes: &mut Notes) {
    notes.warn_at(raw, "unknown berth label (see docs/labels.md); ignored");
}

fn non_empty(raw: Raw, notes: &mut Notes) -> Option<Raw> {
    if raw.value.trim().is_empty() {
        notes.warn_at(&raw, "empty value; ignored");
        return None;
    }
    Some(raw)
}

/// `berth.check.<k>` → `check.<k>`, kept raw for the health-probe work.
fn put_check(map: &mut BTreeMap<String, Raw>, k: &str, raw: Raw, notes: &mut Notes) {
    if k.is_empty() {
        notes.warn_at(&raw, "empty check key; ignored");
        return;
    }
    let key = format!("check.{}", k.to_lowercase());
    if NATIVE_COMMAND_CHECKS.contains(&key.as_str()) {
        notes.warn_at(
            &raw,
            "command checks are not supported (berth never runs commands from labels); \
             dropped",
        );
        return;
    }
    put_keyed(map, key, raw, notes);
}

/// Parses `berth.port=80,53/udp`. Bad entries are reported and skipped; a label with no good
/// entry is ignored as a whole.
fn port_list(raw: Raw, notes: &mut Notes) -> Option<PortList> {
    let mut ports = Vec::new();
    for item in raw
        .value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.parse::<PortProto>() {
            Ok(pp) if !ports.contains(&pp) => ports.push(pp),
            Ok(_) => {}
            Err(()) => notes.warn_at(
                &raw,
                format!(
                    "{} is not a port (use 80 or 53/udp); entry ignored",
                    quote(item)
                ),
            ),
        }
    }
    if ports.is_empty() {
        notes.warn_at(&raw, "no valid port; label ignored");
        return None;
    }
    Some(PortList { ports, raw })
}
