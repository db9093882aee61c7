//! Field management: `metadata.managedFields` (who set which field) and
//! server-side apply built on it.
//!
//! A field set is the set of leaf paths of an object, in upstream's
//! `FieldsV1` vocabulary: `f:name` for a field, `k:{"name":"c"}` for an
//! element of a list keyed by merge key, `v:"x"` for an element of a set of
//! scalars. Atomic lists and scalars are leaves.

use std::collections::BTreeSet;

/// The schema of fields the schemas do not describe.
static NULL: Value = Value::Null;

use serde_json::{json, Map, Value};
use tug_api::resources::ResourceType;
use tug_api::schema::Schemas;
use tug_api::status::Cause;
use tug_api::{meta, ApiError};

type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Fields no manager owns (identity and server-managed metadata).
fn is_unowned(path: &[String]) -> bool {
    let member = |f: &String| f.strip_prefix("f:").unwrap_or_default().to_owned();
    match path {
        [] => true,
        [f] => is_unowned_member(&[], &member(f)),
        [m, f, ..] => is_unowned_member(std::slice::from_ref(m), &member(f)),
    }
}

/// The leaf paths of `value` whose type is `schema`.
pub fn field_set(value: &Value, definition: &str) -> FieldSet {
    let schemas = Schemas::get();
    let schema = schemas.definition(definition).unwrap_or(&NULL);
    let mut out = FieldSet::new();
    walk(value, schema, schemas, &mut Vec::new(), &mut out);
    out.retain(|p| !is_unowned(p));
    out
}

fn walk(value: &Value, schema: &Value, schemas: &Schemas, path: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                walk_member(k, v, schema, schemas, path, out);
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The paths of member `k` (value `v`) of an object whose type is `schema`.
/// Lists are walked here, from their parent: their merge strategy is a
/// property of the parent's field.
fn walk_member(k: &str, v: &Value, schema: &Value, schemas: &Schemas, path: &mut Path, out: &mut FieldSet) {
    let child = schemas.property(schema, k).unwrap_or(&NULL);
    path.push(format!("f:{k}"));
    match v {
        Value::Array(items) if !items.is_empty() => {
            let item_schema = Schemas::attr(schemas.resolve(child), "items").unwrap_or(&NULL);
            match list_shape(schemas, schema, k, items) {
                ListShape::Keyed(key) => {
                    for item in items {
                        path.push(item_key(item, &key));
                        out.insert(with(path, "."));
                        walk(item, item_schema, schemas, path, out);
                        path.pop();
                    }
                }
                ListShape::Set => {
                    for item in items {
                        out.insert(with(path, &format!("v:{item}")));
                    }
                }
                ListShape::Atomic => {
                    out.insert(path.clone());
                }
            }
        }
        _ => walk(v, child, schemas, path, out),
    }
    path.pop();
}

/// How the members of a non-empty list are owned: each element by its merge
/// key, each value of a set of scalars, or the list as one (atomic) field.
enum ListShape {
    Keyed(String),
    Set,
    Atomic,
}

/// The shape of list member `k` of an object whose type is `schema`.
fn list_shape(schemas: &Schemas, schema: &Value, k: &str, items: &[Value]) -> ListShape {
    let strategy = schemas.patch_strategy(schema, k);
    match (strategy.merge_key, strategy.merge) {
        (Some(key), _) if items.iter().all(|i| i.get(key.as_str()).is_some()) => ListShape::Keyed(key),
        (None, true) if items.iter().all(|i| !i.is_object() && !i.is_array()) => ListShape::Set,
        _ => ListShape::Atomic,
    }
}

/// Metadata fields no manager owns (see [`is_unowned`]).
const UNOWNED_METADATA: [&str; 10] = [
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
];

/// Whether member `k` of the object at `path` is a field no manager owns.
fn is_unowned_member(path: &[String], k: &str) -> bool {
    match path {
        [] => k == "apiVersion" || k == "kind",
        [m] => m == "f:metadata" && UNOWNED_METADATA.contains(&k),
        _ => false,
    }
}

/// What an update changed: `changed` holds the paths of `new` whose value is
/// new or different (what the updating manager takes), `removed` the paths
/// of `old` that `new` no longer has. Equal subtrees are skipped whole, so a
/// status write does not walk the spec; this is the hot path of every
/// update, and walking both objects in full cost more than the rest of the
/// request.
struct Diff {
    changed: FieldSet,
    removed: FieldSet,
}

fn diff(old: &Value, new: &Value, definition: &str) -> Diff {
    let schemas = Schemas::get();
    let schema = schemas.definition(definition).unwrap_or(&NULL);
    let mut d = Diff { changed: FieldSet::new(), removed: FieldSet::new() };
    // Not compared whole first: that would compare each equal member (the
    // spec, on a status write) twice.
    diff_value(old, new, schema, schemas, &mut Vec::new(), &mut d);
    d.changed.retain(|p| !is_unowned(p));
    d.removed.retain(|p| !is_unowned(p) && get_at(new, p).is_none());
    d
}

/// Diffs `old` and `new`, the values at `path` on either side, which the
/// caller found to differ (each subtree is compared once, by its parent).
/// Every path found below is compared from these values down (never from
/// the roots: that re-walked every list and re-parsed every `k:` key for
/// each path).
fn diff_value(old: &Value, new: &Value, schema: &Value, schemas: &Schemas, path: &mut Path, d: &mut Diff) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) if !o.is_empty() && !n.is_empty() => {
            for (k, v) in n {
                if is_unowned_member(path, k) {
                    continue;
                }
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) if !v.is_array() && !ov.is_array() => {
                        let child = schemas.property(schema, k).unwrap_or(&NULL);
                        path.push(format!("f:{k}"));
                        diff_value(ov, v, child, schemas, path, d);
                        path.pop();
                    }
                    ov => diff_member(k, ov, Some(v), schema, schemas, path, d),
                }
            }
            for (k, ov) in o {
                if !n.contains_key(k) && !is_unowned_member(path, k) {
                    diff_member(k, Some(ov), None, schema, schemas, path, d);
                }
            }
        }
        (o, n) if !is_inner(o) && !is_inner(n) => {
            if o != n {
                d.changed.insert(path.clone());
            }
        }
        _ => {
            // Different shapes: compare the paths of both sides.
            let mut new_set = FieldSet::new();
            walk(new, schema, schemas, path, &mut new_set);
            let mut old_set = FieldSet::new();
            walk(old, schema, schemas, path, &mut old_set);
            collect_diff(new_set, old_set, (Some(old), Some(new)), path.len(), d);
        }
    }
}

/// Whether a value has paths below it (a non-empty object); anything else
/// is one leaf of a field set.
fn is_inner(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty())
}

/// Diffs member `k` of the object at `path`: keyed lists item by item,
/// anything else by comparing its paths on both sides.
fn diff_member(k: &str, old: Option<&Value>, new: Option<&Value>, schema: &Value, schemas: &Schemas, path: &mut Path, d: &mut Diff) {
    if let (Some(Value::Array(o)), Some(Value::Array(n))) = (old, new)
        && !o.is_empty()
        && !n.is_empty()
        && let (ListShape::Keyed(ko), ListShape::Keyed(kn)) =
            (list_shape(schemas, schema, k, o), list_shape(schemas, schema, k, n))
        && ko == kn
        && diff_keyed(k, o, n, &kn, schema, schemas, path, d)
    {
        return;
    }
    // A member only one side has: all its paths are new, or all gone.
    match (old, new) {
        (None, Some(v)) => return walk_member(k, v, schema, schemas, path, &mut d.changed),
        (Some(v), None) => return walk_member(k, v, schema, schemas, path, &mut d.removed),
        _ => {}
    }
    let mut new_set = FieldSet::new();
    if let Some(v) = new {
        walk_member(k, v, schema, schemas, path, &mut new_set);
    }
    let mut old_set = FieldSet::new();
    if let Some(v) = old {
        walk_member(k, v, schema, schemas, path, &mut old_set);
    }
    // The paths start with `path` and `f:k`; below that, they are relative
    // to the member's values.
    collect_diff(new_set, old_set, (old, new), path.len() + 1, d);
}

/// Diffs a keyed list (member `k`, merge key `key`) item by item: equal
/// items are skipped, changed ones are diffed below their key, added and
/// removed ones contribute all their paths. `false` (nothing recorded)
/// when a key repeats on either side; the caller then compares paths.
#[allow(clippy::too_many_arguments)]
fn diff_keyed(k: &str, old: &[Value], new: &[Value], key: &str, schema: &Value, schemas: &Schemas, path: &mut Path, d: &mut Diff) -> bool {
    let keyed = |items: &[Value]| -> Option<Vec<(String, usize)>> {
        let mut v: Vec<(String, usize)> = items.iter().enumerate().map(|(i, item)| (item_key(item, key), i)).collect();
        v.sort_unstable();
        v.windows(2).all(|w| w[0].0 != w[1].0).then_some(v)
    };
    let (Some(old_keys), Some(new_keys)) = (keyed(old), keyed(new)) else { return false };
    let child = schemas.property(schema, k).unwrap_or(&NULL);
    let item_schema = Schemas::attr(schemas.resolve(child), "items").unwrap_or(&NULL);
    path.push(format!("f:{k}"));
    let find = |keys: &[(String, usize)], ik: &str| keys.binary_search_by(|(x, _)| x.as_str().cmp(ik)).ok().map(|i| keys[i].1);
    for (ik, ni) in &new_keys {
        path.push(ik.clone());
        let item = &new[*ni];
        match find(&old_keys, ik).map(|oi| &old[oi]) {
            Some(o) if o == item => {}
            Some(o) => {
                d.changed.insert(with(path, "."));
                diff_value(o, item, item_schema, schemas, path, d);
            }
            None => {
                d.changed.insert(with(path, "."));
                walk(item, item_schema, schemas, path, &mut d.changed);
            }
        }
        path.pop();
    }
    for (ik, oi) in &old_keys {
        if find(&new_keys, ik).is_none() {
            path.push(ik.clone());
            d.removed.insert(with(path, "."));
            walk(&old[*oi], item_schema, schemas, path, &mut d.removed);
            path.pop();
        }
    }
    path.pop();
    true
}

/// Paths of `old_set` missing from `new_set` are removed; paths of
/// `new_set` whose value differs are changed. The values are looked up
/// from `bases` (the values at the paths' first `skip` elements).
fn collect_diff(new_set: FieldSet, old_set: FieldSet, (old_base, new_base): (Option<&Value>, Option<&Value>), skip: usize, d: &mut Diff) {
    for p in old_set.difference(&new_set) {
        d.removed.insert(p.clone());
    }
    fn at<'a>(base: Option<&'a Value>, p: &[String]) -> Option<&'a Value> {
        base.and_then(|b| get_at(b, p))
    }
    for p in new_set {
        let rel = &p[skip.min(p.len())..];
        if at(old_base, rel) != at(new_base, rel) {
            d.changed.insert(p);
        }
    }
}

/// Whether a `fieldsV1` tree holds any of `paths` (as a leaf), without
/// parsing it into a set.
fn fields_v1_holds_any(tree: &Value, paths: &FieldSet) -> bool {
    paths.iter().any(|p| {
        let mut node = tree;
        for el in p {
            match node.get(el.as_str()) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.as_object().is_none_or(|m| m.is_empty())
    })
}

/// Removes leaf `path` from a `fieldsV1` tree, and the nodes it leaves
/// empty (a set of paths read back from the tree must not gain them as
/// leaves): what `from_fields_v1`, removing the path and `to_fields_v1` do,
/// without rebuilding the tree.
fn fields_v1_remove(tree: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(node) = tree.get_mut(first.as_str()) else { return };
    let is_leaf = node.as_object().is_none_or(|m| m.is_empty());
    if rest.is_empty() || is_leaf {
        // A leaf is removed when it is the path's end; a path reaching
        // past a leaf is not in the tree.
        if rest.is_empty() && is_leaf {
            tree.shift_remove(first.as_str());
        }
        return;
    }
    if let Some(m) = node.as_object_mut() {
        fields_v1_remove(m, rest);
        if m.is_empty() {
            tree.shift_remove(first.as_str());
        }
    }
}

/// `fieldsV1` of all the fields of `value` (whose type is `definition`) that
/// a manager can own, built directly as the nested tree (the create path:
/// no set of paths in between).
fn fields_v1_of(value: &Value, definition: &str) -> Value {
    let schemas = Schemas::get();
    let schema = schemas.definition(definition).unwrap_or(&NULL);
    let mut root = Map::new();
    if let Value::Object(m) = value {
        for (k, v) in m.iter().filter(|(k, _)| !is_unowned_member(&[], k)) {
            if k == "metadata" {
                // Only the owned metadata fields; no node at all when none is set.
                let mut meta_node = Map::new();
                match v {
                    Value::Object(mm) if !mm.is_empty() => {
                        let meta_schema = schemas.property(schema, "metadata").unwrap_or(&NULL);
                        let owned: Vec<_> = mm.iter().filter(|(mk, _)| !UNOWNED_METADATA.contains(&mk.as_str())).collect();
                        if owned.is_empty() {
                            continue;
                        }
                        for (mk, mv) in owned {
                            tree_member(mk, mv, meta_schema, schemas, &mut meta_node);
                        }
                    }
                    _ => {}
                }
                root.insert("f:metadata".into(), Value::Object(meta_node));
                continue;
            }
            tree_member(k, v, schema, schemas, &mut root);
        }
    }
    sort_tree(&mut root);
    Value::Object(root)
}

fn tree(value: &Value, schema: &Value, schemas: &Schemas, node: &mut Map<String, Value>) {
    if let Value::Object(m) = value {
        for (k, v) in m {
            tree_member(k, v, schema, schemas, node);
        }
    }
}

/// [`walk_member`], into a `fieldsV1` tree.
fn tree_member(k: &str, v: &Value, schema: &Value, schemas: &Schemas, parent: &mut Map<String, Value>) {
    let child_schema = schemas.property(schema, k).unwrap_or(&NULL);
    let node = object_at(parent, format!("f:{k}"));
    match v {
        Value::Array(items) if !items.is_empty() => {
            let item_schema = Schemas::attr(schemas.resolve(child_schema), "items").unwrap_or(&NULL);
            match list_shape(schemas, schema, k, items) {
                ListShape::Keyed(key) => {
                    for item in items {
                        let item_node = object_at(node, item_key(item, &key));
                        item_node.insert(".".into(), json!({}));
                        tree(item, item_schema, schemas, item_node);
                    }
                }
                ListShape::Set => {
                    for item in items {
                        node.insert(format!("v:{item}"), json!({}));
                    }
                }
                ListShape::Atomic => {}
            }
        }
        _ => tree(v, child_schema, schemas, node),
    }
}

fn object_at(parent: &mut Map<String, Value>, key: String) -> &mut Map<String, Value> {
    parent.entry(key).or_insert_with(|| json!({})).as_object_mut().expect("fieldsV1 nodes are objects")
}

/// Sorts every level, as a tree built from a sorted set of paths is.
fn sort_tree(node: &mut Map<String, Value>) {
    node.sort_keys();
    for v in node.values_mut() {
        if let Value::Object(m) = v {
            sort_tree(m);
        }
    }
}

fn with(path: &Path, last: &str) -> Path {
    let mut p = path.clone();
    p.push(last.to_string());
    p
}

/// `k:{"key":value}`: how upstream names a keyed list's element (the
/// one-member object's JSON, written out without building it).
fn item_key(item: &Value, key: &str) -> String {
    let value = item.get(key).unwrap_or(&Value::Null);
    format!("k:{{{}:{value}}}", Value::String(key.to_owned()))
}

/// A field set as upstream's nested `fieldsV1` object.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            node = node.entry(el.clone()).or_insert_with(|| json!({})).as_object_mut().expect("object");
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    rec(child, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// The value at a field-set path, if present.
fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            continue;
        }
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return cur.as_array()?.iter().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(v) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return cur.as_array()?.iter().find(|i| **i == want);
    }
    None
}

/// Removes the value at a field-set path.
fn remove_at(obj: &mut Value, path: &[String]) {
    let path: Vec<&String> = path.iter().filter(|e| *e != ".").collect();
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = obj;
    for el in parents {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else { return };
            cur.as_array_mut().and_then(|a| a.iter_mut().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv))))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), cur.as_array_mut()) {
            a.retain(|i| !key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            a.retain(|i| *i != want);
        }
    }
}

/// Removes a dotted path such as `spec.containers[0].foo` (unknown fields).
pub fn remove_path(obj: &mut Value, dotted: &str) {
    let mut cur = obj;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, indices) = match part.find('[') {
            Some(p) => (&part[..p], &part[p..]),
            None => (*part, ""),
        };
        let last = i == parts.len() - 1;
        if last && indices.is_empty() {
            if let Some(m) = cur.as_object_mut() {
                m.remove(name);
            }
            return;
        }
        let Some(next) = cur.get_mut(name) else { return };
        cur = next;
        for idx in indices.split(']').filter(|s| !s.is_empty()) {
            let Ok(n) = idx.trim_start_matches('[').parse::<usize>() else { return };
            let Some(next) = cur.get_mut(n) else { return };
            cur = next;
        }
    }
}

fn entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn definition_of(obj: &Value) -> Option<&'static str> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    tug_api::resources::find_kind(api_version, kind).map(|r| r.definition)
}

fn entry(manager: &str, operation: &str, api_version: &str, set: &FieldSet, subresource: Option<&str>) -> Value {
    entry_with(manager, operation, api_version, to_fields_v1(set), subresource)
}

fn entry_with(manager: &str, operation: &str, api_version: &str, fields_v1: Value, subresource: Option<&str>) -> Value {
    // Built by hand: `json!` would serialize `fields_v1` into a copy.
    let mut e = Map::new();
    e.insert("manager".into(), Value::String(manager.into()));
    e.insert("operation".into(), Value::String(operation.into()));
    e.insert("apiVersion".into(), Value::String(api_version.into()));
    e.insert("time".into(), Value::String(meta::now_rfc3339()));
    e.insert("fieldsType".into(), Value::String("FieldsV1".into()));
    e.insert("fieldsV1".into(), fields_v1);
    if let Some(s) = subresource {
        e.insert("subresource".into(), Value::String(s.into()));
    }
    Value::Object(e)
}

/// Records an Update by `manager`: it takes ownership of every field it
/// changed (or, on create, set); other managers lose those fields.
/// Writes through a subresource (`status`, `scale`) are recorded as their own
/// entries, as upstream does.
pub fn record_update(obj: &mut Value, old: Option<&Value>, manager: &str, api_version: &str, operation: &str, subresource: Option<&str>) {
    if operation == "Apply" {
        return; // record_apply already wrote the entry.
    }
    let Some(def) = definition_of(obj) else { return };
    let Some(old) = old else {
        // A create: the manager owns every field, all of them present by
        // construction (no diff, no re-lookup of each path).
        let entry = entry_with(manager, "Update", api_version, fields_v1_of(obj, def), subresource);
        meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(vec![entry]));
        return;
    };
    let Diff { changed, removed } = diff(old, obj, def);
    // The entries to update: the new object's own copy when it is the old
    // one's (as after a patch, or a PUT that sends them back), rather than
    // another copy of them.
    // (Taken out in place, keeping the member order.)
    let mut list = match meta::metadata_mut(obj).get_mut("managedFields").map(std::mem::take) {
        Some(Value::Array(l)) if old.pointer("/metadata/managedFields").and_then(Value::as_array) == Some(&l) => l,
        _ => entries(old),
    };
    if changed.is_empty() && removed.is_empty() {
        meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
        return;
    }
    let mut mine = FieldSet::new();
    list.retain_mut(|e| {
        let is_mine = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == subresource;
        let tree = e.get("fieldsV1").unwrap_or(&Value::Null);
        if is_mine {
            mine = from_fields_v1(tree);
            return false;
        }
        // Most entries own nothing that changed: leave them as they are.
        if !fields_v1_holds_any(tree, &changed) && !fields_v1_holds_any(tree, &removed) {
            return true;
        }
        let Some(tree) = e.get_mut("fieldsV1").and_then(Value::as_object_mut) else { return false };
        for p in changed.iter().chain(&removed) {
            fields_v1_remove(tree, p);
        }
        !tree.is_empty()
    });
    mine.retain(|p| !removed.contains(p));
    mine.extend(changed);
    // A write that only removed fields leaves its manager owning nothing.
    if !mine.is_empty() {
        list.push(entry(manager, "Update", api_version, &mine, subresource));
    }
    meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
}

/// A field another manager owns with a different value.
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            s.push_str(&format!("[{}]", k.trim_start_matches('{').trim_end_matches('}').replace(':', "=")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Records an Apply by `manager` of `config`, after checking conflicts with
/// other managers (which `force` overrides by taking their fields).
pub fn record_apply(obj: &mut Value, old: Option<&Value>, config: &Value, manager: &str, api_version: &str, force: bool) -> Result<(), Vec<Conflict>> {
    let Some(def) = definition_of(obj) else { return Ok(()) };
    let applied = field_set(config, def);
    let mut list = old.map(entries).unwrap_or_default();
    let mut conflicts = Vec::new();
    if let Some(o) = old {
        for e in &list {
            let m = e.get("manager").and_then(Value::as_str).unwrap_or("");
            let op = e.get("operation").and_then(Value::as_str).unwrap_or("");
            if m == manager && op == "Apply" {
                continue;
            }
            let set = from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
            for p in set.intersection(&applied) {
                if p.last().map(|l| l == ".").unwrap_or(false) {
                    continue;
                }
                if get_at(o, p) != get_at(config, p) {
                    conflicts.push(Conflict {
                        manager: m.to_string(),
                        api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                        path: render_path(p),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    list.retain_mut(|e| {
        let m = e.get("manager").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operation").and_then(Value::as_str).unwrap_or("");
        if m == manager && op == "Apply" {
            return false;
        }
        let mut set = from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
        // Applying the same value shares ownership; a forced change takes it.
        set.retain(|p| !(applied.contains(p) && old.map(|o| get_at(o, p) != get_at(config, p)).unwrap_or(false)));
        e["fieldsV1"] = to_fields_v1(&set);
        !set.is_empty()
    });
    list.push(entry(manager, "Apply", api_version, &applied, None));
    meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
    Ok(())
}

pub fn conflict_error(rt: &ResourceType, name: &str, conflicts: Vec<Conflict>) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.path))
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let mut e = ApiError::conflict(rt.group, rt.plural, name, "");
    e.message = message;
    e.causes = conflicts
        .iter()
        .map(|c| Cause::new("FieldManagerConflict", &c.path, format!("conflict with \"{}\" using {}", c.manager, c.api_version)))
        .collect();
    e
}

/// The object after applying `config` for `manager`: fields it applied
/// before and no longer applies are removed (unless another manager owns
/// them), then `config` is merged in (keyed lists by key, the rest replaced).
pub fn merge_applied(old: &Value, config: &Value, manager: &str, definition: &str) -> Value {
    let mut result = old.clone();
    let new_set = field_set(config, definition);
    let list = entries(old);
    let mut previous = FieldSet::new();
    let mut others = FieldSet::new();
    for e in &list {
        let set = from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
        if e.get("manager").and_then(Value::as_str) == Some(manager) && e.get("operation").and_then(Value::as_str) == Some("Apply") {
            previous = set;
        } else {
            others.extend(set);
        }
    }
    for p in previous.difference(&new_set) {
        if !others.contains(p) && !p.last().map(|l| l == ".").unwrap_or(false) {
            remove_at(&mut result, p);
        }
    }
    // Keyed list elements whose whole entry is no longer applied go too.
    for p in previous.difference(&new_set) {
        if p.last().map(|l| l == ".").unwrap_or(false) && !others.iter().any(|o| o.starts_with(&p[..p.len() - 1])) {
            remove_at(&mut result, &p[..p.len() - 1]);
        }
    }
    let schemas = Schemas::get();
    let schema = schemas.definition(definition).unwrap_or(&NULL);
    merge_into(&mut result, config, schema, schemas);
    result
}

fn merge_into(target: &mut Value, config: &Value, schema: &Value, schemas: &Schemas) {
    let (Some(t), Some(c)) = (target.as_object_mut(), config.as_object()) else {
        *target = config.clone();
        return;
    };
    for (k, v) in c {
        let child_schema = schemas.property(schema, k).unwrap_or(&NULL);
        match (t.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => merge_into(existing, v, child_schema, schemas),
            (Some(Value::Array(existing)), Value::Array(items)) => {
                let strategy = schemas.patch_strategy(schema, k);
                let item_schema = Schemas::attr(schemas.resolve(child_schema), "items").unwrap_or(&NULL);
                match strategy.merge_key {
                    Some(key) => {
                        let mut merged = Vec::new();
                        for item in items {
                            let id = item.get(key.as_str());
                            match existing.iter().position(|e| e.get(key.as_str()) == id) {
                                Some(i) => {
                                    let mut e = existing.remove(i);
                                    merge_into(&mut e, item, item_schema, schemas);
                                    merged.push(e);
                                }
                                None => merged.push(item.clone()),
                            }
                        }
                        merged.append(existing);
                        *existing = merged;
                    }
                    None if strategy.merge => {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                    }
                    None => *existing = items.clone(),
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn field_sets_use_keys_for_merge_lists() {
        let set = field_set(&deploy(1, "x"), DEPLOY);
        let v1 = to_fields_v1(&set);
        assert!(v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"].is_object());
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let mut live = deploy(1, "x");
        record_update(&mut live, None, "kubectl-create", "apps/v1", "Update", None);
        let config = deploy(3, "x");
        let mut merged = merge_applied(&live, &config, "kubectl", DEPLOY);
        let err = record_apply(&mut merged, Some(&live), &config, "kubectl", "apps/v1", false).err().unwrap();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].path, ".spec.replicas");
        assert!(record_apply(&mut merged, Some(&live), &config, "kubectl", "apps/v1", true).is_ok());
        assert_eq!(merged["spec"]["replicas"], 3);
    }

    #[test]
    fn reapply_without_a_field_removes_it() {
        let mut live = deploy(1, "x");
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b", "extra": "1"}}});
        let mut merged = merge_applied(&live, &config, "mgr", DEPLOY);
        record_apply(&mut merged, Some(&live), &config, "mgr", "apps/v1", false).ok().unwrap();
        assert_eq!(merged["metadata"]["labels"]["extra"], "1");
        live = merged;
        let config2 = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}}});
        let merged2 = merge_applied(&live, &config2, "mgr", DEPLOY);
        assert!(merged2["metadata"]["labels"].get("extra").is_none());
        assert_eq!(merged2["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn status_writes_get_their_own_entry() {
        let mut live = deploy(1, "x");
        record_update(&mut live, None, "mgr", "apps/v1", "Update", None);
        let mut next = live.clone();
        next["status"] = json!({"replicas": 1});
        record_update(&mut next, Some(&live), "mgr", "apps/v1", "Update", Some("status"));
        let entries = next["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["subresource"], "status");
        assert!(entries[1]["fieldsV1"]["f:status"]["f:replicas"].is_object());
        assert!(entries[0].get("subresource").is_none());
    }

    /// The update path before it learned to skip equal subtrees: every
    /// field of both objects compared, every entry re-parsed. The fast path
    /// must give the same entries.
    fn reference_record_update(obj: &mut Value, old: &Value, manager: &str, api_version: &str, subresource: Option<&str>) {
        let def = definition_of(obj).unwrap();
        let new_set = field_set(obj, def);
        let changed: FieldSet = new_set.iter().filter(|p| get_at(old, p) != get_at(obj, p)).cloned().collect();
        let mut list = entries(old);
        let removed_any = field_set(old, def).iter().any(|p| get_at(obj, p).is_none());
        if changed.is_empty() && !removed_any {
            meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
            return;
        }
        let mut mine = FieldSet::new();
        list.retain_mut(|e| {
            let mut set = from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
            let is_mine = e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Update")
                && e.get("subresource").and_then(Value::as_str) == subresource;
            if is_mine {
                mine = set;
                return false;
            }
            set.retain(|p| !changed.contains(p) && get_at(obj, p).is_some());
            e["fieldsV1"] = to_fields_v1(&set);
            !set.is_empty()
        });
        mine.extend(changed);
        mine.retain(|p| get_at(obj, p).is_some());
        if !mine.is_empty() {
            list.push(entry(manager, "Update", api_version, &mine, subresource));
        }
        meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
    }

    fn without_times(obj: &Value) -> Value {
        let mut list = obj["metadata"]["managedFields"].clone();
        for e in list.as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("time");
        }
        list
    }

    fn pod(labels: Value, containers: Value, status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "uid": "u", "resourceVersion": "5", "labels": labels},
               "spec": {"nodeName": "n1", "containers": containers, "tolerations": [{"key": "a", "operator": "Exists"}]},
               "status": status})
    }

    #[test]
    fn fast_update_path_matches_the_full_comparison() {
        let c1 = json!([{"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]);
        let c2 = json!([{"name": "a", "image": "y", "ports": [{"containerPort": 80, "protocol": "TCP"}]}, {"name": "b", "image": "z"}]);
        let running = json!({"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
                             "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {"startedAt": "t"}}}]});
        let states = [
            pod(json!({"app": "web"}), c1.clone(), json!({"phase": "Pending"})),
            pod(json!({"app": "web", "tier": "1"}), c1.clone(), json!({"phase": "Pending"})),
            pod(json!({"app": "web"}), c2.clone(), running.clone()),
            pod(json!({}), c2.clone(), json!({"phase": "Running", "podIP": "10.0.0.2"})),
            pod(json!({"app": "db"}), c1.clone(), running.clone()),
            pod(json!({"app": "db"}), json!([{"name": "b", "image": "z"}]), json!({})),
        ];
        let managers = [("kubectl", None), ("kubelet", Some("status")), ("controller", None), ("kubectl", None)];
        for (i, first) in states.iter().enumerate() {
            for second in &states {
                for (m, (manager, sub)) in managers.iter().enumerate() {
                    // An object with history: created by one manager, written by another.
                    let mut live = first.clone();
                    record_update(&mut live, None, "creator", "v1", "Update", None);
                    let mut mid = states[(i + m) % states.len()].clone();
                    record_update(&mut mid, Some(&live), "other", "v1", "Update", Some("status"));
                    let mut fast = second.clone();
                    record_update(&mut fast, Some(&mid), manager, "v1", "Update", *sub);
                    let mut full = second.clone();
                    reference_record_update(&mut full, &mid, manager, "v1", *sub);
                    assert_eq!(without_times(&fast), without_times(&full), "{manager} writing {second} over {mid}");
                    // As after a patch: the new object carries the old one's entries.
                    let mut patched = second.clone();
                    patched["metadata"]["managedFields"] = mid["metadata"]["managedFields"].clone();
                    record_update(&mut patched, Some(&mid), manager, "v1", "Update", *sub);
                    assert_eq!(without_times(&patched), without_times(&full), "{manager} patching {second} over {mid}");
                    // Entries a client sends back changed are not taken for the old ones.
                    let mut sent = second.clone();
                    sent["metadata"]["managedFields"] = json!([{"manager": "forged", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
                    record_update(&mut sent, Some(&mid), manager, "v1", "Update", *sub);
                    assert_eq!(without_times(&sent), without_times(&full), "{manager} sending entries with {second} over {mid}");
                }
            }
        }
    }

    #[test]
    fn create_entry_matches_the_field_set() {
        let objects = [
            deploy(2, "x"),
            pod(json!({"app": "web"}), json!([{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}]), json!({})),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": {"k": "v"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a", "b"], "annotations": {}}}),
        ];
        for obj in objects {
            let def = definition_of(&obj).unwrap();
            assert_eq!(fields_v1_of(&obj, def), to_fields_v1(&field_set(&obj, def)), "{obj}");
            assert_eq!(serde_json::to_string(&fields_v1_of(&obj, def)).unwrap(), serde_json::to_string(&to_fields_v1(&field_set(&obj, def))).unwrap(), "key order of {obj}");
        }
    }

    #[test]
    fn remove_dotted_paths() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "bogus": 1}]}});
        remove_path(&mut v, "spec.containers[0].bogus");
        assert_eq!(v, json!({"spec": {"containers": [{"name": "a"}]}}));
    }

    /// The definition of [`diff`]: every path of both sides, compared from
    /// the roots. `diff` must find exactly this, only faster.
    fn diff_by_full_walk(old: &Value, new: &Value, definition: &str) -> (FieldSet, FieldSet) {
        let schemas = Schemas::get();
        let schema = schemas.definition(definition).unwrap_or(&NULL);
        let (mut new_set, mut old_set) = (FieldSet::new(), FieldSet::new());
        walk(new, schema, schemas, &mut Vec::new(), &mut new_set);
        walk(old, schema, schemas, &mut Vec::new(), &mut old_set);
        let removed = old_set
            .difference(&new_set)
            .filter(|p| !is_unowned(p) && get_at(new, p).is_none())
            .cloned()
            .collect();
        let changed = new_set.into_iter().filter(|p| !is_unowned(p) && get_at(old, p) != get_at(new, p)).collect();
        (changed, removed)
    }

    fn sample_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}, "finalizers": ["a", "b"],
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rsu", "controller": true}]},
               "spec": {"containers": [
                            {"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                             "resources": {"requests": {"cpu": "100m"}}, "args": ["sleep", "1"]},
                            {"name": "d", "image": "busybox", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}],
                        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                        "nodeSelector": {"disk": "ssd"}},
               "status": {"phase": "Pending",
                          "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"}]}})
    }

    fn running(mut p: Value) -> Value {
        p["spec"]["nodeName"] = json!("n1");
        p["status"] = json!({"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
            "startTime": "t1", "qosClass": "Burstable",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"},
                           {"type": "Initialized", "status": "True", "lastTransitionTime": "t1"},
                           {"type": "Ready", "status": "True", "lastTransitionTime": "t2"},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": "t2"}],
            "containerStatuses": [
                {"name": "c", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "sha", "started": true,
                 "state": {"running": {"startedAt": "t1"}}},
                {"name": "d", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "sha", "started": true,
                 "state": {"running": {"startedAt": "t1"}}}]});
        p
    }

    fn assert_same_diff(old: &Value, new: &Value, what: &str) {
        let d = diff(old, new, "io.k8s.api.core.v1.Pod");
        let (changed, removed) = diff_by_full_walk(old, new, "io.k8s.api.core.v1.Pod");
        assert_eq!(d.changed, changed, "changed paths differ: {what}\nold {old}\nnew {new}");
        assert_eq!(d.removed, removed, "removed paths differ: {what}\nold {old}\nnew {new}");
    }

    #[test]
    fn diff_finds_what_a_full_walk_finds() {
        let created = sample_pod();
        let bound = running(sample_pod());
        assert_same_diff(&created, &bound, "create → running");
        assert_same_diff(&bound, &created, "running → create");
        let mut v = bound.clone();
        v["status"]["conditions"].as_array_mut().unwrap().remove(1);
        v["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        v["status"]["containerStatuses"][1]["lastState"] = json!({"running": {"startedAt": "t1"}});
        v["status"]["containerStatuses"].as_array_mut().unwrap().swap(0, 1);
        assert_same_diff(&bound, &v, "a condition removed, a container exited, items reordered");
        // A repeated merge key (the item-wise diff steps aside).
        let mut dup = bound.clone();
        let first = dup["status"]["conditions"][0].clone();
        dup["status"]["conditions"].as_array_mut().unwrap().push(json!({"type": "PodScheduled", "status": "False"}));
        assert_same_diff(&bound, &dup, "repeated key in new");
        assert_same_diff(&dup, &bound, "repeated key in old");
        dup["status"]["conditions"][0] = first;
        // A list losing its keys (atomic), a set of scalars, a shape change.
        let mut w = bound.clone();
        w["status"]["conditions"] = json!([{"status": "True"}]);
        w["metadata"]["finalizers"] = json!(["b", "c"]);
        w["spec"]["nodeSelector"] = json!("x");
        assert_same_diff(&bound, &w, "keyless items, set change, object → scalar");
        assert_same_diff(&w, &bound, "and back");
        // Pseudo-random edits of the running pod.
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..400 {
            let mut v = bound.clone();
            for _ in 0..1 + rnd(4) {
                mutate(&mut v, &mut rnd, 0);
            }
            assert_same_diff(&bound, &v, &format!("random edit {round}"));
            assert_same_diff(&v, &bound, &format!("random edit {round}, reversed"));
            // And the managedFields that come of it, with a history of two managers.
            if v.get("apiVersion") == bound.get("apiVersion") && v.get("kind") == bound.get("kind") && v["metadata"].is_object() {
                let mut live = created.clone();
                record_update(&mut live, None, "creator", "v1", "Update", None);
                let mut mid = bound.clone();
                record_update(&mut mid, Some(&live), "kubelet", "v1", "Update", Some("status"));
                let (mut fast, mut full) = (v.clone(), v.clone());
                record_update(&mut fast, Some(&mid), "kubectl", "v1", "Update", None);
                reference_record_update(&mut full, &mid, "kubectl", "v1", None);
                assert_eq!(without_times(&fast), without_times(&full), "random edit {round}: {v}");
            }
        }
    }

    /// One random edit somewhere below `v`: a leaf changed, a member
    /// removed or added, an item removed, repeated or moved.
    fn mutate(v: &mut Value, rnd: &mut impl FnMut(usize) -> usize, depth: usize) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = &keys[rnd(keys.len())];
                match rnd(6) {
                    0 if depth > 0 => {
                        m.remove(k);
                    }
                    1 => {
                        m.insert(format!("x{}", rnd(3)), json!(rnd(3)));
                    }
                    _ => mutate(m.get_mut(k).unwrap(), rnd, depth + 1),
                }
            }
            Value::Array(a) if !a.is_empty() => match rnd(5) {
                0 => {
                    a.remove(rnd(a.len()));
                }
                1 => {
                    let i = rnd(a.len());
                    a.push(a[i].clone());
                }
                2 => {
                    let (i, j) = (rnd(a.len()), rnd(a.len()));
                    a.swap(i, j);
                }
                _ => {
                    let i = rnd(a.len());
                    mutate(&mut a[i], rnd, depth + 1)
                }
            },
            _ => *v = json!(format!("v{}", rnd(3))),
        }
    }
}
