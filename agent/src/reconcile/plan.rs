//! The pure diff: desired instances (from Docker) against owned ones (from the registry).
//!
//! Startup, events and resync all end here, over a whole node or over one container.

use std::collections::{BTreeMap, BTreeSet};

use berth_registry::{Health, Instance};

/// One registry write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create, or replace because a registered field changed.
    Register(Instance),
    /// Remove an instance this node owns that is no longer desired.
    Deregister { id: String },
    /// Only the health changed: written on its own (`Registry::set_health`), no
    /// re-registration.
    SetHealth { id: String, health: Health },
}

impl Op {
    pub fn id(&self) -> &str {
        match self {
            Op::Register(i) => &i.id,
            Op::Deregister { id } | Op::SetHealth { id, .. } => id,
        }
    }
}

/// A desired instance that cannot be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub id: String,
    pub reason: &'static str,
}

/// The writes that turn owned into desired, deregistrations first, each group sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub conflicts: Vec<Conflict>,
}

/// Plans the writes for `node`.
///
/// - `owned` entries of any other node are ignored: they are never deregistered.
/// - `desired` ids that belong to someone else (`is_foreign`) or repeat an earlier desired id
///   become conflicts, never writes.
/// - Nothing is planned for an instance whose registration and health are unchanged, unless
///   the registry will drop it unless written again (`is_stale`): then it is registered anew.
/// - A `provisional` desired health (no probe result yet) never replaces the owned health of
///   an unchanged registration: a restarted agent keeps what the registry says until its
///   probes answer. New instances, changed ones (a new port or address) and a new container
///   taking over an id start with it.
pub fn plan(
    node: &str,
    desired: &[Instance],
    owned: &[Instance],
    is_foreign: impl Fn(&str) -> bool,
    is_stale: impl Fn(&str) -> bool,
    is_provisional: impl Fn(&str) -> bool,
) -> Plan {
    let owned: BTreeMap<&str, &Instance> = owned
        .iter()
        .filter(|o| o.origin.node == node)
        .map(|o| (o.id.as_str(), o))
        .collect();

    let mut seen = BTreeSet::new();
    let mut registers = Vec::new();
    let mut healths = Vec::new();
    let mut conflicts = Vec::new();
    for d in desired {
        if !seen.insert(d.id.as_str()) {
            conflicts.push(Conflict {
                id: d.id.clone(),
                reason: "another container on this node already uses this id",
            });
            continue;
        }
        let Some(o) = owned.get(d.id.as_str()) else {
            if is_foreign(&d.id) {
                conflicts.push(Conflict {
                    id: d.id.clone(),
                    reason: "the registry already has this id from another owner; not overwriting it",
                });
            } else {
                registers.push(Op::Register(d.clone()));
            }
            continue;
        };
        // Only for the same registration: a new endpoint (a new port or address after a
        // restart, or a new container taking over the id) has passed nothing yet.
        let health = if is_provisional(&d.id) && o.same_registration(d) {
            &o.health
        } else {
            &d.health
        };
        if !o.same_registration(d) || is_stale(&d.id) {
            registers.push(Op::Register(Instance {
                health: health.clone(),
                ..d.clone()
            }));
        } else if o.health != *health {
            healths.push(Op::SetHealth {
                id: d.id.clone(),
                health: health.clone(),
            });
        }
    }

    let mut ops: Vec<Op> = owned
        .keys()
        .filter(|id| !seen.contains(*id))
        .map(|id| Op::Deregister {
            id: (*id).to_owned(),
        })
        .collect();
    registers.sort_by(|a, b| a.id().cmp(b.id()));
    healths.sort_by(|a, b| a.id().cmp(b.id()));
    ops.extend(registers);
    ops.extend(healths);
    Plan { ops, conflicts }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_registry::{Origin, Status};
    use proptest::prelude::*;

    fn inst(node: &str, id: &str, port: u16, status: Status) -> Instance {
        Instance {
            id: id.into(),
            name: "svc".into(),
            address: "10.0.0.1".into(),
            port,
            tags: vec![],
            meta: Default::default(),
            origin: Origin {
                node: node.into(),
                container_id: format!("c-{id}"),
                container_name: id.into(),
                image: "img".into(),
            },
            health: Health {
                status,
                output: status.to_string(),
            },
        }
    }

    fn no_foreign(_: &str) -> bool {
        false
    }

    fn no_stale(_: &str) -> bool {
        false
    }

    fn no_provisional(_: &str) -> bool {
        false
    }

    #[test]
    fn empty_to_desired_registers_everything() {
        let d = vec![
            inst("n", "b", 1, Status::Passing),
            inst("n", "a", 1, Status::Passing),
        ];
        let p = plan("n", &d, &[], no_foreign, no_stale, no_provisional);
        assert_eq!(
            p.ops,
            vec![Op::Register(d[1].clone()), Op::Register(d[0].clone())]
        );
    }

    #[test]
    fn unchanged_plans_nothing() {
        let d = vec![inst("n", "a", 1, Status::Passing)];
        assert_eq!(
            plan("n", &d, &d, no_foreign, no_stale, no_provisional),
            Plan::default()
        );
    }

    #[test]
    fn changed_field_reregisters_and_health_only_sets_health() {
        let owned = vec![
            inst("n", "a", 1, Status::Passing),
            inst("n", "b", 1, Status::Passing),
        ];
        let desired = vec![
            inst("n", "a", 2, Status::Passing),
            inst("n", "b", 1, Status::Critical),
        ];
        let p = plan("n", &desired, &owned, no_foreign, no_stale, no_provisional);
        assert_eq!(
            p.ops,
            vec![
                Op::Register(desired[0].clone()),
                Op::SetHealth {
                    id: "b".into(),
                    health: desired[1].health.clone()
                }
            ]
        );
    }

    #[test]
    fn stale_owned_is_deregistered_but_other_nodes_are_not() {
        let owned = vec![
            inst("n", "gone", 1, Status::Passing),
            inst("other", "theirs", 1, Status::Passing),
        ];
        let p = plan("n", &[], &owned, no_foreign, no_stale, no_provisional);
        assert_eq!(p.ops, vec![Op::Deregister { id: "gone".into() }]);
    }

    #[test]
    fn foreign_and_duplicate_ids_are_conflicts() {
        let d = vec![
            inst("n", "x", 1, Status::Passing),
            inst("n", "dup", 1, Status::Passing),
            inst("n", "dup", 2, Status::Passing),
        ];
        let p = plan("n", &d, &[], |id| id == "x", no_stale, no_provisional);
        assert_eq!(p.ops, vec![Op::Register(d[1].clone())]);
        assert_eq!(
            p.conflicts
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            ["x", "dup"]
        );
    }

    #[test]
    fn stale_owned_is_rewritten_when_desired_and_removed_when_not() {
        let owned = vec![
            inst("n", "keep", 1, Status::Passing),
            inst("n", "gone", 1, Status::Passing),
            inst("n", "fresh", 1, Status::Passing),
        ];
        let desired = vec![owned[0].clone(), owned[2].clone()];
        let p = plan(
            "n",
            &desired,
            &owned,
            no_foreign,
            |id| id != "fresh",
            no_provisional,
        );
        assert_eq!(
            p.ops,
            vec![
                Op::Deregister { id: "gone".into() },
                Op::Register(owned[0].clone())
            ]
        );
    }

    #[test]
    fn provisional_health_never_overwrites_the_registered_one() {
        let owned = vec![
            inst("n", "same", 1, Status::Passing),
            inst("n", "moved", 1, Status::Passing),
        ];
        // A restarted agent: its probes have no result yet, so its checks' initial status.
        let desired = vec![
            inst("n", "moved", 2, Status::Critical),
            inst("n", "new", 1, Status::Critical),
            inst("n", "same", 1, Status::Critical),
        ];
        let p = plan("n", &desired, &owned, no_foreign, no_stale, |_| true);
        assert_eq!(
            p.ops,
            vec![
                Op::Register(desired[0].clone()),
                Op::Register(desired[1].clone())
            ],
            "no health write for `same`; `moved` (a new port) and `new` start at their \
             initial status"
        );

        // Rewritten because the registry would drop it (etcd: another lease): with the
        // registered health.
        let p = plan(
            "n",
            &desired[2..],
            &owned[..1],
            no_foreign,
            |_| true,
            |_| true,
        );
        assert_eq!(p.ops, vec![Op::Register(owned[0].clone())]);

        // A new container taking over the id is not vouched for by the old one's health.
        let mut takeover = desired[2].clone();
        takeover.origin.container_id = "c-new".into();
        let p = plan(
            "n",
            &[takeover.clone()],
            &owned[..1],
            no_foreign,
            no_stale,
            |_| true,
        );
        assert_eq!(p.ops, vec![Op::Register(takeover)]);

        // Once the probes answer, their health is written.
        let p = plan(
            "n",
            &desired[2..],
            &owned[..1],
            no_foreign,
            no_stale,
            no_provisional,
        );
        assert_eq!(
            p.ops,
            vec![Op::SetHealth {
                id: "same".into(),
                health: desired[2].health.clone()
            }]
        );
    }

    /// Applies a plan to a model registry the way a backend would.
    fn apply(registry: &mut BTreeMap<String, Instance>, p: &Plan) {
        for op in &p.ops {
            match op {
                Op::Register(i) => {
                    registry.insert(i.id.clone(), i.clone());
                }
                Op::Deregister { id } => {
                    registry.remove(id);
                }
                Op::SetHealth { id, health } => {
                    registry.get_mut(id).unwrap().health = health.clone();
                }
            }
        }
    }

    fn arb_instance() -> impl Strategy<Value = Instance> {
        (
            prop::sample::select(vec!["n", "other"]),
            prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]),
            1u16..4,
            prop::sample::select(vec![Status::Passing, Status::Warning, Status::Critical]),
            prop::sample::select(vec!["svc", "api"]),
        )
            .prop_map(|(node, id, port, status, name)| {
                let mut i = inst(node, id, port, status);
                i.name = name.into();
                i
            })
    }

    proptest! {
        #[test]
        fn plan_is_idempotent_never_duplicates_and_respects_ownership(
            desired in prop::collection::vec(arb_instance(), 0..8),
            registry_entries in prop::collection::vec(arb_instance(), 0..8),
            foreign_ids in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "z"]), 0..3),
            stale_ids in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]), 0..4),
            provisional_ids in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]), 0..4),
        ) {
            // Desired instances are always this node's.
            let desired: Vec<Instance> = desired.into_iter().map(|mut i| { i.origin.node = "n".into(); i }).collect();
            let mut registry: BTreeMap<String, Instance> = BTreeMap::new();
            for e in registry_entries { registry.entry(e.id.clone()).or_insert(e); }
            let before = registry.clone();
            let is_foreign = |id: &str| foreign_ids.contains(id) || before.get(id).is_some_and(|i| i.origin.node != "n");
            let owned: Vec<Instance> = registry.values().cloned().collect();

            let is_provisional = |id: &str| provisional_ids.contains(id);
            let p = plan("n", &desired, &owned, is_foreign, |id| stale_ids.contains(id), is_provisional);

            // A provisional health never overwrites the health of an unchanged registration.
            for op in &p.ops {
                let unchanged = before.get(op.id()).is_some_and(|o| desired.iter().find(|d| d.id == o.id).is_some_and(|d| o.same_registration(d)));
                if provisional_ids.contains(op.id()) && unchanged {
                    match op {
                        Op::SetHealth { id, .. } => prop_assert!(false, "provisional health written for {}", id),
                        Op::Register(i) => prop_assert_eq!(&i.health, &before[op.id()].health),
                        Op::Deregister { .. } => {}
                    }
                }
            }

            // No duplicate ids among the writes.
            let mut ids = BTreeSet::new();
            for op in &p.ops { prop_assert!(ids.insert(op.id().to_owned()), "duplicate op for {}", op.id()); }

            // Never touches an entry another node or owner has.
            for op in &p.ops {
                if let Some(existing) = before.get(op.id()) {
                    prop_assert_eq!(&existing.origin.node, "n", "touched another node's {}", op.id());
                } else {
                    prop_assert!(!foreign_ids.contains(op.id()), "wrote foreign id {}", op.id());
                }
            }

            // Every stale instance of this node is written again or removed.
            for id in &stale_ids {
                if before.get(*id).is_some_and(|i| i.origin.node == "n") {
                    prop_assert!(ids.contains(*id), "stale {} left as it was", id);
                }
            }

            // Idempotent: once applied (which refreshes what was stale), planning again
            // writes nothing.
            apply(&mut registry, &p);
            let owned: Vec<Instance> = registry.values().cloned().collect();
            let again = plan("n", &desired, &owned, is_foreign, |id| stale_ids.contains(id) && !ids.contains(id), is_provisional);
            prop_assert!(again.ops.is_empty(), "second plan not empty: {:?}", again.ops);

            // Other nodes' entries survive untouched.
            for (id, e) in &before {
                if e.origin.node != "n" { prop_assert_eq!(registry.get(id), Some(e)); }
            }
        }
    }
}
