//! Stage 5 of the pipeline, the instances: one per endpoint of each spec, with the id its
//! rule gives, the health Docker reports, and its probes; then two instances clients could
//! not tell apart become one, and ids are made unique.

use std::collections::{BTreeMap, BTreeSet};

use berth_registry::limits::truncate_output;
use berth_registry::{Health, Instance, Origin};

use super::checks::{Checked, Probes};
use super::notes::Notes;
use super::specs::{IdRule, Spec, proto_marks};
use super::{CheckLabels, Settings};
use crate::docker::view::{ContainerView, DockerHealth, Proto};

/// One instance with its check keys and probes.
#[derive(Debug)]
pub(super) struct Planned {
    pub instance: Instance,
    /// The rule that chose the address.
    pub address_rule: String,
    pub proto: Proto,
    pub checks: CheckLabels,
    pub probes: Probes,
}

/// The instances of the checked specs: one per endpoint, ids formed by each spec's rule,
/// duplicates dropped, ids made unique, sorted by id.
pub(super) fn from_specs(
    view: &ContainerView,
    settings: &Settings,
    checked: Vec<Checked>,
    notes: &mut Notes,
) -> Vec<Planned> {
    let port_count = checked
        .iter()
        .map(|c| c.spec.pp)
        .collect::<BTreeSet<_>>()
        .len();
    let health = health(view);
    let origin = Origin {
        node: settings.node.clone(),
        container_id: view.id.clone(),
        container_name: view.name.clone(),
        image: view.image.clone(),
    };
    let mut planned = Vec::new();
    for Checked { spec, probes } in checked {
        let id = id(&spec, port_count, view, settings);
        let checks: CheckLabels = spec
            .checks
            .iter()
            .map(|(k, r)| (k.clone(), r.value.clone()))
            .collect();
        for (endpoint, probes) in spec.endpoints.into_iter().zip(probes) {
            planned.push(Planned {
                instance: Instance {
                    id: id.clone(),
                    name: spec.name.clone(),
                    address: endpoint.address,
                    port: endpoint.port,
                    tags: with_forced_tags(&spec.tags, &settings.tags),
                    meta: spec.meta.clone(),
                    origin: origin.clone(),
                    health: health.clone(),
                },
                address_rule: endpoint.rule,
                proto: spec.pp.proto,
                checks: checks.clone(),
                probes,
            });
        }
    }
    drop_duplicates(&mut planned, notes);
    unique_ids(&mut planned, notes);
    planned.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    planned
}

/// `own` followed by each of `--tags` it does not have yet.
fn with_forced_tags(own: &[String], forced: &[String]) -> Vec<String> {
    let mut tags = own.to_vec();
    for t in forced {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

/// The id `spec`'s rule gives, before ids are made unique.
fn id(spec: &Spec, port_count: usize, view: &ContainerView, settings: &Settings) -> String {
    let suffix = proto_marks(spec.pp.proto)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let port = spec.pp.port;
    match &spec.id {
        IdRule::Exact(id) => id.clone(),
        IdRule::Container(id) if port_count == 1 => id.clone(),
        IdRule::Container(id) => format!("{id}-{port}{suffix}"),
        IdRule::Default { service } => {
            let service = service
                .as_ref()
                .map(|s| format!(":{s}"))
                .unwrap_or_default();
            format!("{}:{}:{port}{suffix}{service}", settings.node, view.name)
        }
    }
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
            Health::critical(truncate_output(&full))
        }
    }
}
