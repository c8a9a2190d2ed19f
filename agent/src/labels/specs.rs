//! Stage 3 of the pipeline, building service specs: one per registrable port, or one per
//! `berth.service.<svc>` when the container declares services. A spec has the service name,
//! the rule its instance ids follow, its tags, its meta and its check keys, each taken from
//! the most specific key that sets it.

use std::collections::{BTreeMap, BTreeSet};

use berth_registry::OWN_META_KEYS;
use berth_registry::limits::{MAX_META_KEYS, MAX_USER_META_KEYS};

use super::Settings;
use super::keys::{Keys, Native, Raw, Registrator, Scope, ServiceLabels, boolean, overlay};
use super::notes::Notes;
use super::ports::{Candidates, Endpoint, Ports};
use super::sanitize::{self, quote};
use crate::docker::view::{ContainerView, PortProto, Proto};

/// The specs of a container whose ports are `ports`; `opted_in` says whether the container as
/// a whole satisfies explicit mode.
pub(super) fn build(
    view: &ContainerView,
    settings: &Settings,
    keys: &Keys,
    ports: Ports,
    opted_in: bool,
    notes: &mut Notes,
) -> Vec<Spec> {
    let ctx = Ctx {
        view,
        settings,
        reg: &keys.reg,
        native: &keys.native,
        known: &ports.known,
    };
    if keys.native.services.is_empty() {
        plain_specs(&ctx, ports.candidates, opted_in, notes)
    } else {
        service_specs(&ctx, &ports.candidates, notes)
    }
}

/// How an instance id is formed once the container's port count is known.
#[derive(Debug)]
pub(super) enum IdRule {
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
pub(super) struct Spec {
    pub pp: PortProto,
    pub endpoints: Vec<Endpoint>,
    pub name: String,
    pub id: IdRule,
    pub tags: Vec<String>,
    /// User meta, sanitised and capped.
    pub meta: BTreeMap<String, String>,
    /// Check keys, merged over every scope.
    pub checks: BTreeMap<String, Raw>,
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
                notes.warn_at(
                    &list.raw,
                    format!("{pp} is not a port of this container; ignored"),
                );
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
            notes.info_at(raw, format!("port {pp} ignored"));
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
            meta: cap_meta(meta, notes),
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
        notes.warn_at(
            raw,
            "has no effect when berth.service.* labels are present; ignored",
        );
    }

    let mut chosen: Vec<(&str, &ServiceLabels, PortProto)> = Vec::new();
    for (svc, s) in &native.services {
        let pp = match &s.port {
            Some(raw) => match raw.value.trim().parse::<PortProto>() {
                Ok(pp) => pp,
                Err(()) => {
                    notes.warn_at(
                        raw,
                        format!("not a port (use 8080 or 53/udp); service {svc} not registered"),
                    );
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
                    notes.warn_missing(
                        &format!("berth.service.{svc}.port"),
                        format!(
                            "is missing and the container has several ports ({}); service \
                             {svc} not registered",
                            list.join(", ")
                        ),
                    );
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
                notes.warn_at(
                    raw,
                    format!("{pp} is not a port of this container; service {svc} not registered"),
                );
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
        overlay(&mut checks, &s.checks);
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
            meta: cap_meta(meta, notes),
            checks,
        });
    }
    specs
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
        match from {
            NameFrom::Key(raw) => notes.warn_at(
                raw,
                format!(
                    "not usable as a service name (letters, digits and - only); {what} skipped"
                ),
            ),
            NameFrom::Image(image) => notes.warn(format!(
                "image {} gives no usable service name; set SERVICE_NAME or berth.name; {what} \
                 skipped",
                quote(image)
            )),
            NameFrom::ServiceKey(svc) => notes.warn(format!(
                "service key {} gives no usable service name; set berth.service.{svc}.name; \
                 {what} skipped",
                quote(svc)
            )),
        }
        return None;
    }
    if name != base {
        match from {
            NameFrom::Key(raw) => {
                notes.info_at(raw, format!("service name sanitized to {}", quote(&name)));
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
    notes.warn_at(
        raw,
        "not a usable id (no spaces, /, ?, # or %); using the default id",
    );
    None
}

/// The tag a non-TCP protocol adds, and the id suffix it adds.
pub(super) fn proto_marks(proto: Proto) -> Option<&'static str> {
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

/// Keeps at most [`MAX_USER_META_KEYS`] keys (the first in key order).
fn cap_meta(meta: BTreeMap<String, Raw>, notes: &mut Notes) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, raw) in meta {
        if out.len() < MAX_USER_META_KEYS {
            out.insert(key, raw.value);
        } else {
            notes.warn_at(
                &raw,
                format!(
                    "more than {MAX_USER_META_KEYS} user meta keys (Consul allows \
                 {MAX_META_KEYS}, berth adds {}); dropped",
                    OWN_META_KEYS.len()
                ),
            );
        }
    }
    out
}
