//! Stage 4 of the pipeline, attaching checks: the health-check keys of each spec become the
//! probes berth runs for each of its endpoints. Pure.
//!
//! Two vocabularies feed one result:
//! - registrator's `SERVICE_CHECK_*` keys (any scope; `keys` already merged the per-port
//!   forms) describe one check, the *default* check;
//! - berth's `berth.check.<field>` labels set fields of the default check (overriding
//!   registrator's), and `berth.check.<name>.<field>` labels add named checks. Named checks
//!   inherit the default check's settings (interval, thresholds, …) unless they set their
//!   own. `berth.service.<svc>.check.*` labels do the same for one declared service.
//!
//! A probe dials the container itself (its IP on the chosen network, the container port),
//! never the published host port: Docker's userland proxy accepts TCP connections on a
//! published port whether or not anything listens behind it. Containers on the host network
//! (and containers without an IP) are probed at their registered address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use berth_registry::Status;

use crate::docker::view::{ContainerView, PortProto};

use super::Settings;
use super::keys::{KINDS, Keys, Raw, boolean};
use super::notes::Notes;
use super::sanitize::{self, quote};
use super::specs::Spec;

/// Defaults (Consul's and registrator's where they have one).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest interval berth accepts; shorter values are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The largest rise/fall threshold accepted.
const MAX_THRESHOLD: u32 = 100;

/// Where a probe connects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// An IP literal or, for a probe of the registered address, possibly a host name.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// 2xx passes, 429 warns, anything else (or no answer) is critical.
    Http {
        method: String,
        /// `http://10.0.0.2:80/health`.
        url: String,
        tls_skip_verify: bool,
    },
    /// A TCP connect.
    Tcp(Target),
    /// `grpc.health.v1.Health/Check` for `service` (empty: the server as a whole).
    Grpc { target: Target, service: String },
}

impl ProbeKind {
    /// `http`, `tcp` or `grpc`: the `kind` label of the probe metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Http { .. } => "http",
            ProbeKind::Tcp(_) => "tcp",
            ProbeKind::Grpc { .. } => "grpc",
        }
    }
}

/// One check of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// `http`, `tcp`, `grpc` for the default check; the label's name for a named check.
    pub name: String,
    pub kind: ProbeKind,
    pub interval: Duration,
    /// Never longer than `interval`.
    pub timeout: Duration,
    /// Consecutive passes before a failing check passes again.
    pub rise: u32,
    /// Consecutive failures before a passing check fails.
    pub fall: u32,
    /// Reported until the first probe result.
    pub initial: Status,
}

/// Every check of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Probes {
    /// Sorted by name, names unique.
    pub checks: Vec<CheckSpec>,
    /// Withdraw the instance after it has been critical this long (it comes back once it
    /// passes again).
    pub deregister_after: Option<Duration>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }
}

/// Registrator check keys and the berth field each one sets.
const REGISTRATOR_FIELDS: [(&str, &str); 10] = [
    ("check_http", "http"),
    ("check_https", "https"),
    ("check_tcp", "tcp"),
    ("check_grpc", "grpc"),
    ("check_interval", "interval"),
    ("check_timeout", "timeout"),
    ("check_initial_status", "initial_status"),
    ("check_deregister_after", "deregister_after"),
    ("check_http_method", "method"),
    ("check_tls_skip_verify", "tls_skip_verify"),
];

/// Settings a named check takes over from the default check. Besides these and its kind, a
/// check has a target (`path`, `port`), which belongs to the check that names it, and
/// `deregister_after`, which applies to the whole instance.
const INHERITED: [&str; 7] = [
    "method",
    "interval",
    "timeout",
    "rise",
    "fall",
    "initial_status",
    "tls_skip_verify",
];

type Fields = BTreeMap<String, Raw>;

/// A spec with the probes of each of its endpoints.
#[derive(Debug)]
pub(super) struct Checked {
    pub spec: Spec,
    /// One per endpoint of `spec`, in the same order.
    pub probes: Vec<Probes>,
}

/// The probes of every endpoint of every spec.
pub(super) fn attach(
    view: &ContainerView,
    settings: &Settings,
    keys: &Keys,
    specs: Vec<Spec>,
    notes: &mut Notes,
) -> Vec<Checked> {
    let container_ip = container_ip(view, settings, keys.native.network.as_ref());
    specs
        .into_iter()
        .map(|spec| {
            let probes = spec
                .endpoints
                .iter()
                .map(|e| {
                    let dial = Dial {
                        container_ip,
                        pp: spec.pp,
                        address: e.address.clone(),
                        port: e.port,
                    };
                    parse(&spec.checks, &dial, notes)
                })
                .collect();
            Checked { spec, probes }
        })
        .collect()
}

/// The address and port probes of one instance dial by default.
#[derive(Clone, Debug)]
struct Dial {
    /// The container IP, or `None` to probe the registered address.
    pub container_ip: Option<IpAddr>,
    pub pp: PortProto,
    pub address: String,
    pub port: u16,
}

impl Dial {
    /// The target, with `port` (from a `port` field) replacing the default port.
    fn target(&self, port: Option<u16>) -> Target {
        match self.container_ip {
            Some(ip) => Target {
                host: ip.to_string(),
                port: port.unwrap_or(self.pp.port),
            },
            None => Target {
                host: self.address.clone(),
                port: port.unwrap_or(self.port),
            },
        }
    }
}

/// The container IP probes dial: on the network `berth.network`/`--network` names when the
/// container is attached to it, else on the first network (by name) that gives it an IP.
/// `None` for host-network containers.
fn container_ip(
    view: &ContainerView,
    settings: &Settings,
    network: Option<&Raw>,
) -> Option<IpAddr> {
    if view.host_network() {
        return None;
    }
    let named = network
        .map(|raw| raw.value.trim())
        .or(settings.network.as_deref());
    if let Some(ip) = named
        .and_then(|n| view.networks.iter().find(|a| a.name == n))
        .and_then(|a| a.ip())
    {
        return Some(ip);
    }
    view.networks.iter().find_map(|a| a.ip())
}

/// Turns the merged check keys of one instance into its probes. Every key that cannot be
/// used gets a note.
fn parse(keys: &BTreeMap<String, Raw>, dial: &Dial, notes: &mut Notes) -> Probes {
    let (default, named) = group(keys, notes);
    let mut probes = Probes::default();
    let mut deregister_after = Vec::new();
    if let Some(raw) = default.get("deregister_after")
        && let Some(d) = duration(raw, notes)
    {
        deregister_after.push(d);
    }
    if KINDS.iter().any(|k| default.contains_key(*k)) {
        if let Some(spec) = build(None, &default, dial, notes) {
            probes.checks.push(spec);
        }
    } else if named.is_empty() {
        for raw in default.values() {
            notes.warn_at(
                raw,
                "no check kind is set (http, https, tcp or grpc); ignored",
            );
        }
    }
    for (name, fields) in &named {
        let mut merged: Fields = default
            .iter()
            .filter(|(k, _)| INHERITED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(raw) = fields.get("deregister_after")
            && let Some(d) = duration(raw, notes)
        {
            deregister_after.push(d);
        }
        if probes.checks.iter().any(|c| c.name == *name) {
            notes.warn(format!(
                "check {name}: the name is taken by the default check; use another name; \
                 ignored"
            ));
            continue;
        }
        if let Some(spec) = build(Some(name), &merged, dial, notes) {
            probes.checks.push(spec);
        }
    }
    probes.checks.sort_by(|a, b| a.name.cmp(&b.name));
    if !probes.checks.is_empty() {
        probes.deregister_after = deregister_after.into_iter().min();
    }
    probes
}

/// Sorts keys into the default check's fields and each named check's fields.
fn group(keys: &BTreeMap<String, Raw>, notes: &mut Notes) -> (Fields, BTreeMap<String, Fields>) {
    let mut registrator = Fields::new();
    let mut native = Fields::new();
    let mut named: BTreeMap<String, Fields> = BTreeMap::new();
    for (key, raw) in keys {
        if let Some(rest) = key.strip_prefix("check.") {
            match rest.split_once('.') {
                None if known_field(rest) => {
                    native.insert(rest.to_owned(), raw.clone());
                }
                None => notes.warn_at(raw, format!("unknown check field {}; ignored", quote(rest))),
                Some((name, field)) if sanitize::key_name(name) && known_field(field) => {
                    named
                        .entry(name.to_owned())
                        .or_default()
                        .insert(field.to_owned(), raw.clone());
                }
                Some((name, _)) if !sanitize::key_name(name) => notes.warn_at(
                    raw,
                    format!(
                        "check name {} must be letters, digits, - or _; ignored",
                        quote(name)
                    ),
                ),
                Some((_, field)) => notes.warn_at(
                    raw,
                    format!("unknown check field {}; ignored", quote(field)),
                ),
            }
        } else if key == "check_ttl" {
            notes.info_at(
                raw,
                "berth always keeps a TTL heartbeat on every instance; ignored",
            );
        } else if let Some((_, field)) = REGISTRATOR_FIELDS.iter().find(|(k, _)| k == key) {
            registrator.insert((*field).to_owned(), raw.clone());
        } else {
            notes.warn_at(
                raw,
                "not a supported check key (see docs/labels.md); ignored",
            );
        }
    }
    // berth's own kind replaces registrator's rather than competing with it.
    if KINDS.iter().any(|k| native.contains_key(*k)) {
        for kind in KINDS {
            if let Some(raw) = registrator.remove(kind) {
                notes.info_at(&raw, "replaced by the berth.check.* check");
            }
        }
    }
    registrator.extend(native);
    (registrator, named)
}

fn known_field(field: &str) -> bool {
    KINDS.contains(&field)
        || INHERITED.contains(&field)
        || matches!(field, "path" | "port" | "deregister_after")
}

/// One check from its fields; `None` (with a note) when it cannot run.
fn build(name: Option<&str>, f: &Fields, dial: &Dial, notes: &mut Notes) -> Option<CheckSpec> {
    let (kind, raw) = chosen_kind(name, f, notes)?;
    let target = dial.target(target_port(f, notes)?);
    let kind = match kind {
        "http" | "https" => http(kind, raw, f, target, notes)?,
        "tcp" => tcp(raw, target, notes)?,
        _ => grpc(raw, target, notes)?,
    };
    let (interval, timeout) = timing(f, notes);
    let initial = initial_status(f, notes);
    Some(CheckSpec {
        name: name.map_or_else(|| kind_word(&kind).to_owned(), str::to_owned),
        kind,
        interval,
        timeout,
        rise: f.get("rise").and_then(|r| threshold(r, notes)).unwrap_or(1),
        fall: f.get("fall").and_then(|r| threshold(r, notes)).unwrap_or(1),
        initial,
    })
}

/// The check's kind and the key that set it: the first of [`KINDS`] present; any other kind
/// also present is reported.
fn chosen_kind<'a>(
    name: Option<&str>,
    f: &'a Fields,
    notes: &mut Notes,
) -> Option<(&'static str, &'a Raw)> {
    let present: Vec<&'static str> = KINDS.into_iter().filter(|k| f.contains_key(*k)).collect();
    let Some(&kind) = present.first() else {
        if let Some(name) = name {
            notes.warn(format!(
                "check {name}: no kind is set (berth.check.{name}.http, .https, .tcp or .grpc); \
                 ignored"
            ));
        }
        return None;
    };
    for other in &present[1..] {
        if let Some(raw) = f.get(*other) {
            notes.warn_at(
                raw,
                format!("a check has one kind and {kind} takes precedence; ignored"),
            );
        }
    }
    Some((kind, f.get(kind)?))
}

/// The `port` field: `Some(None)` when absent (the default port), `None` (with a note) when
/// it is not a port, and the check is not run.
fn target_port(f: &Fields, notes: &mut Notes) -> Option<Option<u16>> {
    let Some(p) = f.get("port") else {
        return Some(None);
    };
    match p.value.trim().parse::<u16>() {
        Ok(n) if n != 0 => Some(Some(n)),
        _ => {
            notes.warn_at(p, "not a port number; the check is not run");
            None
        }
    }
}

/// An HTTP(S) check: the path from the kind key or `path`, the method, skip-verify.
fn http(
    scheme: &str,
    raw: &Raw,
    f: &Fields,
    target: Target,
    notes: &mut Notes,
) -> Option<ProbeKind> {
    let path = match (raw.value.trim(), f.get("path")) {
        ("" | "true", Some(p)) => p.value.trim().to_owned(),
        ("" | "true", None) => "/".to_owned(),
        (v, _) => v.to_owned(),
    };
    if path.eq_ignore_ascii_case("false") {
        notes.info_at(raw, "check disabled");
        return None;
    }
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let method = match f.get("method") {
        None => "GET".to_owned(),
        Some(m) => {
            let v = m.value.trim().to_ascii_uppercase();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
                notes.warn_at(m, "not an HTTP method; using GET");
                "GET".to_owned()
            } else {
                v
            }
        }
    };
    Some(ProbeKind::Http {
        method,
        url: format!("{scheme}://{target}{path}"),
        tls_skip_verify: f
            .get("tls_skip_verify")
            .and_then(|r| boolean(r, notes))
            .unwrap_or(false),
    })
}

/// A TCP connect check; `false` disables it.
fn tcp(raw: &Raw, target: Target, notes: &mut Notes) -> Option<ProbeKind> {
    if sanitize::parse_bool(&raw.value) == Some(false) {
        notes.info_at(raw, "check disabled");
        return None;
    }
    Some(ProbeKind::Tcp(target))
}

/// A gRPC health check of the service the value names (none, or `true`: the whole server).
fn grpc(raw: &Raw, target: Target, notes: &mut Notes) -> Option<ProbeKind> {
    let v = raw.value.trim();
    if v.eq_ignore_ascii_case("false") {
        notes.info_at(raw, "check disabled");
        return None;
    }
    let service = if v.is_empty() || v.eq_ignore_ascii_case("true") {
        String::new()
    } else {
        v.to_owned()
    };
    Some(ProbeKind::Grpc { target, service })
}

/// The interval (at least [`MIN_INTERVAL`]) and the timeout (positive, at most the
/// interval).
fn timing(f: &Fields, notes: &mut Notes) -> (Duration, Duration) {
    let mut interval = f
        .get("interval")
        .and_then(|r| duration(r, notes))
        .unwrap_or(DEFAULT_INTERVAL);
    if interval < MIN_INTERVAL {
        if let Some(r) = f.get("interval") {
            notes.warn_at(r, "below the 1s minimum; using 1s");
        }
        interval = MIN_INTERVAL;
    }
    let mut timeout = match f.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(r) => match duration(r, notes) {
            Some(d) if d.is_zero() => {
                notes.warn_at(r, "a timeout must be positive; using 5s");
                DEFAULT_TIMEOUT
            }
            Some(d) => d,
            None => DEFAULT_TIMEOUT,
        },
    };
    if timeout > interval {
        if let Some(r) = f.get("timeout") {
            notes.info_at(r, "longer than the interval; capped at it");
        }
        timeout = interval;
    }
    (interval, timeout)
}

/// The status reported until the first result (default critical).
fn initial_status(f: &Fields, notes: &mut Notes) -> Status {
    let Some(r) = f.get("initial_status") else {
        return Status::Critical;
    };
    match r.value.trim().to_ascii_lowercase().as_str() {
        "passing" => Status::Passing,
        "warning" => Status::Warning,
        "critical" => Status::Critical,
        _ => {
            notes.warn_at(
                r,
                "not a status (passing, warning or critical); using critical",
            );
            Status::Critical
        }
    }
}

fn kind_word(kind: &ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Http { url, .. } if url.starts_with("https:") => "https",
        ProbeKind::Http { .. } => "http",
        ProbeKind::Tcp(_) => "tcp",
        ProbeKind::Grpc { .. } => "grpc",
    }
}

fn duration(raw: &Raw, notes: &mut Notes) -> Option<Duration> {
    match humantime::parse_duration(raw.value.trim()) {
        Ok(d) => Some(d),
        Err(_) => {
            notes.warn_at(
                raw,
                "not a duration (use e.g. 10s or 1m); using the default",
            );
            None
        }
    }
}

fn threshold(raw: &Raw, notes: &mut Notes) -> Option<u32> {
    match raw.value.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Some(n),
        _ => {
            notes.warn_at(
                raw,
                format!("not a count from 1 to {MAX_THRESHOLD}; using 1"),
            );
            None
        }
    }
}
