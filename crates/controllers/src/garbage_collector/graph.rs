//! The dependency graph: every watched object by uid, with its owners and
//! dependents (upstream's `GraphBuilder`).
//!
//! Pure data: the watches feed [`Change`]s in, [`Graph::apply`] returns the
//! work they make for the collector's workers. Owners that no watch has
//! reported yet are "virtual" nodes, known only from someone's
//! `ownerReference`; a worker verifies each with the API server and reports
//! back a [`Change::VirtualDelete`] when it does not exist.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::discovery::group_of;

pub const FINALIZER_ORPHAN: &str = "orphan";
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Where an object is: its coordinates and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects. A virtual node takes its first
    /// dependent's namespace, as upstream: whether the owner's kind is
    /// namespaced is only known when a worker resolves it.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl Identity {
    /// The owner an `ownerReference` names, seen from a dependent in `namespace`.
    pub fn of_owner(r: &OwnerReference, namespace: Option<String>) -> Identity {
        Identity { api_version: r.api_version.clone(), kind: r.kind.clone(), namespace, name: r.name.clone(), uid: r.uid.clone() }
    }

    /// Whether `r` points at this identity. Versions may differ (an owner
    /// reference may name any served version of the owner's kind).
    pub fn matches_ref(&self, r: &OwnerReference) -> bool {
        r.uid == self.uid && r.name == self.name && r.kind == self.kind && group_of(&r.api_version) == group_of(&self.api_version)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {}/{} (uid {})", self.api_version, self.kind, ns, self.name, self.uid),
            None => write!(f, "{} {} {} (uid {})", self.api_version, self.kind, self.name, self.uid),
        }
    }
}

/// What a watch reported about one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub identity: Identity,
    pub owners: Vec<OwnerReference>,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    pub finalizers: Vec<String>,
}

impl Observed {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// An input to the graph.
#[derive(Clone, Debug)]
pub enum Change {
    /// Added or updated (a watch event or an initial list item).
    Upsert(Observed),
    /// Deleted (a watch event, or missing from a relist).
    Delete(Observed),
    /// A worker found that this identity does not exist in the API server.
    VirtualDelete(Identity),
}

/// A unit of work for the collector's workers, by uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check whether the object's owners are gone (upstream's `attemptToDelete`).
    Delete(String),
    /// Orphan the dependents of an owner being deleted with the `orphan`
    /// finalizer, then remove the finalizer (upstream's `attemptToOrphan`).
    Orphan(String),
}

/// The work a change makes.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub now: Vec<Work>,
    /// Work that could loop if run at once (a virtual node's next guess at
    /// its coordinates), to be run after the item's backoff.
    pub rate_limited: Vec<Work>,
}

impl Effects {
    fn delete(&mut self, uid: &str) {
        let w = Work::Delete(uid.to_string());
        if !self.now.contains(&w) {
            self.now.push(w);
        }
    }
}

/// One object in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    pub identity: Identity,
    pub owners: Vec<OwnerReference>,
    /// Uids of the objects whose `ownerReferences` name this one.
    pub dependents: BTreeSet<String>,
    /// Reported by a watch; `false` for a virtual node.
    pub observed: bool,
    pub being_deleted: bool,
    /// Being deleted with the `foregroundDeletion` finalizer: waiting for its
    /// blocking dependents to go.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

/// Identities the API server said do not exist. Uids are never reused, so
/// an entry never goes stale; the bound only limits memory.
#[derive(Debug, Default)]
struct AbsentOwners {
    set: HashSet<Identity>,
    order: VecDeque<Identity>,
}

const ABSENT_CAPACITY: usize = 4096;

impl AbsentOwners {
    fn add(&mut self, id: Identity) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > ABSENT_CAPACITY
                && let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
        }
    }
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    absent: AbsentOwners,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether the API server said `id` does not exist.
    pub fn is_absent(&self, id: &Identity) -> bool {
        self.absent.set.contains(id)
    }

    pub fn mark_absent(&mut self, id: Identity) {
        self.absent.add(id);
    }

    /// The dependents of `uid` (identities, for orphaning).
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        let Some(n) = self.nodes.get(uid) else { return Vec::new() };
        n.dependents.iter().filter_map(|d| self.nodes.get(d)).cloned().collect()
    }

    /// The dependents of `uid` whose reference to it has
    /// `blockOwnerDeletion: true`: what a foreground deletion waits for.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<Node> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| d.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true)))
            .collect()
    }

    /// Applies one change; returns the work it makes.
    pub fn apply(&mut self, change: Change) -> Effects {
        let mut fx = Effects::default();
        match change {
            Change::Upsert(obj) => self.upsert(obj, &mut fx),
            Change::Delete(obj) => self.delete(&obj.identity, false, &mut fx),
            Change::VirtualDelete(id) => self.delete(&id, true, &mut fx),
        }
        fx
    }

    fn upsert(&mut self, obj: Observed, fx: &mut Effects) {
        let uid = obj.identity.uid.clone();
        if uid.is_empty() {
            return;
        }
        // A watch reports an object that was only known as someone's owner.
        let replaced_virtual = match self.nodes.get(&uid) {
            Some(existing) if !existing.observed && existing.identity != obj.identity => Some(existing.dependents.clone()),
            _ => None,
        };
        if let Some(deps) = replaced_virtual {
            // Dependents that named this uid with other coordinates point at
            // something that does not exist; let the workers check them.
            let (_, nonmatching) = self.partition_dependents(&deps, &obj.identity);
            for dep in nonmatching {
                if let (Some(ns), Some(d)) = (&obj.identity.namespace, self.nodes.get(&dep))
                    && d.identity.namespace.as_ref() != Some(ns) {
                        tracing::warn!(item = %d.identity, owner = %obj.identity, "object references an owner in another namespace");
                    }
                fx.delete(&dep);
            }
            tracing::debug!(observed = %obj.identity, "replacing a virtual node with the observed object");
        }
        if let Some(existing) = self.nodes.get_mut(&uid)
            && !existing.observed {
                existing.identity = obj.identity.clone();
                existing.observed = true;
            }

        if !self.nodes.contains_key(&uid) {
            self.nodes.insert(
                uid.clone(),
                Node {
                    identity: obj.identity.clone(),
                    owners: obj.owners.clone(),
                    dependents: BTreeSet::new(),
                    observed: true,
                    being_deleted: obj.being_deleted,
                    deleting_dependents: false,
                    orphaning: false,
                },
            );
            self.add_dependent_to_owners(&uid, &obj.owners, fx);
        } else {
            let old_owners = self.nodes[&uid].owners.clone();
            let (added, removed, changed) = references_diff(&old_owners, &obj.owners);
            if !added.is_empty() || !removed.is_empty() || !changed.is_empty() {
                // A reference that stops blocking may be the last thing a
                // foreground deletion waits for.
                for r in &removed {
                    if r.block_owner_deletion == Some(true) && self.nodes.contains_key(&r.uid) {
                        fx.delete(&r.uid);
                    }
                }
                for (old, new) in &changed {
                    if old.block_owner_deletion == Some(true) && new.block_owner_deletion != Some(true) && self.nodes.contains_key(&new.uid) {
                        fx.delete(&new.uid);
                    }
                }
                self.nodes.get_mut(&uid).expect("present").owners = obj.owners.clone();
                self.add_dependent_to_owners(&uid, &added, fx);
                self.remove_dependent_from_owners(&uid, &removed);
            }
            if obj.being_deleted {
                // Deletion is a one-way trip: a deletionTimestamp is never unset.
                self.nodes.get_mut(&uid).expect("present").being_deleted = true;
            }
        }
        self.process_transitions(&uid, &obj, fx);
    }

    /// Starts orphaning or foreground deletion when an object enters that state.
    fn process_transitions(&mut self, uid: &str, obj: &Observed, fx: &mut Effects) {
        let orphan = obj.being_deleted && obj.has_finalizer(FINALIZER_ORPHAN);
        let foreground = obj.being_deleted && obj.has_finalizer(FINALIZER_FOREGROUND);
        let node = self.nodes.get_mut(uid).expect("present");
        let starts_orphaning = orphan && !node.orphaning;
        node.orphaning = orphan;
        if starts_orphaning {
            // Orphaning comes first, as upstream: the owner keeps its
            // dependents (minus the reference) whatever else it asked for.
            fx.now.push(Work::Orphan(uid.to_string()));
            return;
        }
        if foreground && !node.deleting_dependents {
            node.deleting_dependents = true;
            let deps: Vec<String> = node.dependents.iter().cloned().collect();
            for d in deps {
                fx.delete(&d);
            }
            fx.delete(uid);
        }
    }

    /// Records `uid` as a dependent of each of `owners`, creating virtual
    /// nodes for owners not seen yet (a worker then verifies they exist).
    fn add_dependent_to_owners(&mut self, uid: &str, owners: &[OwnerReference], fx: &mut Effects) {
        let item = self.nodes[uid].identity.clone();
        let mut potentially_invalid = false;
        for owner in owners {
            match self.nodes.get_mut(&owner.uid) {
                None => {
                    let mut dependents = BTreeSet::new();
                    dependents.insert(uid.to_string());
                    self.nodes.insert(
                        owner.uid.clone(),
                        Node {
                            identity: Identity::of_owner(owner, item.namespace.clone()),
                            owners: Vec::new(),
                            dependents,
                            observed: false,
                            being_deleted: false,
                            deleting_dependents: false,
                            orphaning: false,
                        },
                    );
                    fx.delete(&owner.uid);
                }
                Some(owner_node) => {
                    owner_node.dependents.insert(uid.to_string());
                    if potentially_invalid {
                        continue;
                    }
                    let owner_namespaced = owner_node.identity.namespace.is_some();
                    if owner_namespaced && owner_node.identity.namespace != item.namespace {
                        // A namespaced owner must be in its dependent's namespace.
                        if owner_node.observed {
                            tracing::warn!(item = %item, owner = %owner_node.identity, "object references an owner in another namespace");
                        }
                        potentially_invalid = true;
                    } else if !owner_node.identity.matches_ref(owner) {
                        potentially_invalid = true;
                    } else if !owner_namespaced && owner_node.identity.namespace != item.namespace && !owner_node.observed {
                        // A virtual cluster-scoped guess from another
                        // dependent; this one may mean a namespaced kind.
                        potentially_invalid = true;
                    }
                }
            }
        }
        if potentially_invalid {
            fx.delete(uid);
        }
    }

    fn remove_dependent_from_owners(&mut self, uid: &str, owners: &[OwnerReference]) {
        for owner in owners {
            if let Some(o) = self.nodes.get_mut(&owner.uid) {
                o.dependents.remove(uid);
            }
        }
    }

    /// Splits dependents by whether their reference to the owner's uid
    /// matches `owner`'s coordinates.
    fn partition_dependents(&self, deps: &BTreeSet<String>, owner: &Identity) -> (Vec<String>, Vec<String>) {
        let (mut matching, mut nonmatching) = (Vec::new(), Vec::new());
        for dep in deps {
            let Some(d) = self.nodes.get(dep) else { continue };
            let (mut found_match, mut found_mismatch) = (false, false);
            if owner.namespace.is_some() && owner.namespace != d.identity.namespace {
                found_mismatch = true;
            } else {
                for r in d.owners.iter().filter(|r| r.uid == owner.uid) {
                    if owner.matches_ref(r) {
                        found_match = true;
                    } else {
                        found_mismatch = true;
                    }
                }
            }
            if found_match {
                matching.push(dep.clone());
            }
            if found_mismatch {
                nonmatching.push(dep.clone());
            }
        }
        (matching, nonmatching)
    }

    /// Another identity the dependents give the uid of `absent`, to try next.
    fn alternate_identity(&self, deps: &[String], absent: &Identity) -> Option<Identity> {
        let mut candidates = BTreeSet::new();
        for dep in deps {
            let Some(d) = self.nodes.get(dep) else { continue };
            for r in d.owners.iter().filter(|r| r.uid == absent.uid) {
                let mut id = Identity::of_owner(r, d.identity.namespace.clone());
                if absent.namespace.is_none() && id.api_version == absent.api_version && id.kind == absent.kind {
                    // This kind is known to be cluster-scoped.
                    id.namespace = None;
                }
                if id != *absent {
                    candidates.insert(id);
                }
            }
        }
        // The next one after the absent identity in a fixed order, so that
        // repeated guesses cycle through all of them.
        candidates.iter().find(|c| *c > absent).or_else(|| candidates.iter().next()).cloned()
    }

    fn delete(&mut self, id: &Identity, virtual_event: bool, fx: &mut Effects) {
        let Some(existing) = self.nodes.get(&id.uid) else { return };
        let mut remove = true;
        if virtual_event {
            let deps = existing.dependents.clone();
            if !existing.observed {
                let (matching, nonmatching) = self.partition_dependents(&deps, id);
                if !nonmatching.is_empty() {
                    // Some dependents name this uid differently: keep the
                    // node, but those that agree with the absent identity
                    // have lost their owner.
                    remove = false;
                    if !matching.is_empty() {
                        self.absent.add(id.clone());
                        for d in &matching {
                            fx.delete(d);
                        }
                    }
                    if self.nodes[&id.uid].identity == *id
                        && let Some(alt) = self.alternate_identity(&nonmatching, id) {
                            self.nodes.get_mut(&id.uid).expect("present").identity = alt;
                            fx.rate_limited.push(Work::Delete(id.uid.clone()));
                        }
                }
            } else if existing.identity != *id {
                // A real object exists under other coordinates: only the
                // dependents that used these coordinates lost their owner.
                remove = false;
                let (matching, _) = self.partition_dependents(&deps, id);
                if !matching.is_empty() {
                    self.absent.add(id.clone());
                    for d in &matching {
                        fx.delete(d);
                    }
                }
            }
        }
        if !remove {
            return;
        }
        let node = self.nodes.remove(&id.uid).expect("present");
        self.remove_dependent_from_owners(&id.uid, &node.owners);
        if !node.dependents.is_empty() {
            self.absent.add(id.clone());
        }
        for d in &node.dependents {
            fx.delete(d);
        }
        // An owner deleting in the foreground may have waited only for this one.
        for o in &node.owners {
            if self.nodes.get(&o.uid).map(|n| n.deleting_dependents).unwrap_or(false) {
                fx.delete(&o.uid);
            }
        }
    }
}

/// Owner references added, removed, and changed (same uid, other fields).
fn references_diff(old: &[OwnerReference], new: &[OwnerReference]) -> (Vec<OwnerReference>, Vec<OwnerReference>, Vec<(OwnerReference, OwnerReference)>) {
    let old_by_uid: HashMap<&str, &OwnerReference> = old.iter().map(|r| (r.uid.as_str(), r)).collect();
    let mut seen = HashSet::new();
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for r in new {
        match old_by_uid.get(r.uid.as_str()) {
            Some(o) => {
                seen.insert(r.uid.as_str());
                if *o != r {
                    changed.push(((*o).clone(), r.clone()));
                }
            }
            None => added.push(r.clone()),
        }
    }
    let removed = old.iter().filter(|r| !seen.contains(r.uid.as_str())).cloned().collect();
    (added, removed, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: Option<&str>, name: &str, uid: &str) -> Identity {
        let api_version = if kind == "Deployment" || kind == "ReplicaSet" { "apps/v1" } else { "v1" };
        Identity { api_version: api_version.into(), kind: kind.into(), namespace: ns.map(String::from), name: name.into(), uid: uid.into() }
    }

    fn oref(owner: &Identity, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn obs(id: &Identity, owners: Vec<OwnerReference>) -> Observed {
        Observed { identity: id.clone(), owners, being_deleted: false, finalizers: vec![] }
    }

    fn deleting(id: &Identity, owners: Vec<OwnerReference>, finalizer: &str) -> Observed {
        Observed { identity: id.clone(), owners, being_deleted: true, finalizers: vec![finalizer.into()] }
    }

    #[test]
    fn owner_deletion_queues_dependents() {
        let mut g = Graph::new();
        let owner = id("ConfigMap", Some("ns"), "owner", "u1");
        let dep = id("ConfigMap", Some("ns"), "dep", "u2");
        assert!(g.apply(Change::Upsert(obs(&owner, vec![]))).now.is_empty());
        let fx = g.apply(Change::Upsert(obs(&dep, vec![oref(&owner, false)])));
        assert!(fx.now.is_empty(), "an observed, matching owner needs no check: {fx:?}");
        assert!(g.node("u1").unwrap().dependents.contains("u2"));
        let fx = g.apply(Change::Delete(obs(&owner, vec![])));
        assert_eq!(fx.now, vec![Work::Delete("u2".into())]);
        assert!(g.node("u1").is_none());
        assert!(g.is_absent(&owner));
    }

    #[test]
    fn unseen_owner_becomes_a_virtual_node_to_verify() {
        let mut g = Graph::new();
        let owner = id("ConfigMap", Some("ns"), "owner", "u1");
        let dep = id("ConfigMap", Some("ns"), "dep", "u2");
        let fx = g.apply(Change::Upsert(obs(&dep, vec![oref(&owner, false)])));
        assert_eq!(fx.now, vec![Work::Delete("u1".into())]);
        assert!(!g.node("u1").unwrap().observed);
        // The worker finds it absent: the node goes and the dependent is checked.
        let fx = g.apply(Change::VirtualDelete(owner.clone()));
        assert_eq!(fx.now, vec![Work::Delete("u2".into())]);
        assert!(g.node("u1").is_none());
        // Observing the owner later turns a virtual node into a real one.
        let mut g = Graph::new();
        g.apply(Change::Upsert(obs(&dep, vec![oref(&owner, false)])));
        assert!(g.apply(Change::Upsert(obs(&owner, vec![]))).now.is_empty());
        assert!(g.node("u1").unwrap().observed);
    }

    #[test]
    fn orphan_and_foreground_transitions_fire_once() {
        let mut g = Graph::new();
        let owner = id("Deployment", Some("ns"), "d", "u1");
        let rs = id("ReplicaSet", Some("ns"), "rs", "u2");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        g.apply(Change::Upsert(obs(&rs, vec![oref(&owner, true)])));
        let fx = g.apply(Change::Upsert(deleting(&owner, vec![], FINALIZER_ORPHAN)));
        assert_eq!(fx.now, vec![Work::Orphan("u1".into())]);
        assert!(g.apply(Change::Upsert(deleting(&owner, vec![], FINALIZER_ORPHAN))).now.is_empty(), "only the transition fires");

        let mut g = Graph::new();
        g.apply(Change::Upsert(obs(&owner, vec![])));
        g.apply(Change::Upsert(obs(&rs, vec![oref(&owner, true)])));
        let fx = g.apply(Change::Upsert(deleting(&owner, vec![], FINALIZER_FOREGROUND)));
        assert_eq!(fx.now, vec![Work::Delete("u2".into()), Work::Delete("u1".into())]);
        assert!(g.node("u1").unwrap().deleting_dependents);
        assert_eq!(g.blocking_dependents("u1").len(), 1);
        // The dependent going re-checks the waiting owner.
        let fx = g.apply(Change::Delete(obs(&rs, vec![oref(&owner, true)])));
        assert_eq!(fx.now, vec![Work::Delete("u1".into())]);
        assert!(g.blocking_dependents("u1").is_empty());
    }

    #[test]
    fn unblocking_a_reference_rechecks_the_owner() {
        let mut g = Graph::new();
        let owner = id("Deployment", Some("ns"), "d", "u1");
        let rs = id("ReplicaSet", Some("ns"), "rs", "u2");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        g.apply(Change::Upsert(obs(&rs, vec![oref(&owner, true)])));
        let fx = g.apply(Change::Upsert(obs(&rs, vec![oref(&owner, false)])));
        assert_eq!(fx.now, vec![Work::Delete("u1".into())]);
        let fx = g.apply(Change::Upsert(obs(&rs, vec![])));
        assert!(fx.now.is_empty(), "a non-blocking reference going away changes nothing to wait for");
        assert!(g.node("u1").unwrap().dependents.is_empty());
    }

    #[test]
    fn namespace_mismatch_is_checked() {
        let mut g = Graph::new();
        let owner = id("ConfigMap", Some("a"), "owner", "u1");
        let dep = id("ConfigMap", Some("b"), "dep", "u2");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        let fx = g.apply(Change::Upsert(obs(&dep, vec![oref(&owner, false)])));
        assert_eq!(fx.now, vec![Work::Delete("u2".into())], "a namespaced owner in another namespace is verified");
        // A virtual delete of the coordinates the dependent used (its own
        // namespace) leaves the real owner but re-checks the dependent.
        let as_seen_by_dep = Identity { namespace: Some("b".into()), ..owner.clone() };
        let fx = g.apply(Change::VirtualDelete(as_seen_by_dep));
        assert!(g.node("u1").is_some());
        assert_eq!(fx.now, vec![Work::Delete("u2".into())], "the dependent that used those coordinates lost its owner");
        assert!(g.is_absent(&Identity { namespace: Some("b".into()), ..owner }));
    }

    #[test]
    fn virtual_owner_named_two_ways_tries_each_identity() {
        let mut g = Graph::new();
        let as_cm = id("ConfigMap", Some("ns"), "x", "ux");
        let as_secret = id("Secret", Some("ns"), "x", "ux");
        let a = id("ConfigMap", Some("ns"), "a", "ua");
        let b = id("ConfigMap", Some("ns"), "b", "ub");
        g.apply(Change::Upsert(obs(&a, vec![oref(&as_cm, false)])));
        g.apply(Change::Upsert(obs(&b, vec![oref(&as_secret, false)])));
        assert_eq!(g.node("ux").unwrap().identity, as_cm, "the first reference names the virtual node");
        // The ConfigMap coordinates are verified absent: only `a` lost its
        // owner; the node stays, now guessed as the Secret, checked later.
        let fx = g.apply(Change::VirtualDelete(as_cm.clone()));
        assert_eq!(fx.now, vec![Work::Delete("ua".into())]);
        assert_eq!(fx.rate_limited, vec![Work::Delete("ux".into())]);
        assert_eq!(g.node("ux").unwrap().identity, as_secret);
        assert!(g.is_absent(&as_cm));
        // Once `a` is gone, the Secret guess being absent too removes the node.
        g.apply(Change::Delete(obs(&a, vec![oref(&as_cm, false)])));
        let fx = g.apply(Change::VirtualDelete(as_secret));
        assert_eq!(fx.now, vec![Work::Delete("ub".into())]);
        assert!(g.node("ux").is_none());
    }

    #[test]
    fn diff_of_references() {
        let a = id("ConfigMap", Some("ns"), "a", "ua");
        let b = id("ConfigMap", Some("ns"), "b", "ub");
        let c = id("ConfigMap", Some("ns"), "c", "uc");
        let (added, removed, changed) = references_diff(&[oref(&a, true), oref(&b, false)], &[oref(&a, false), oref(&c, false)]);
        assert_eq!(added.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["uc"]);
        assert_eq!(removed.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(), ["ub"]);
        assert_eq!(changed.len(), 1);
    }
}
