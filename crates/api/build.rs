//! Generates the protobuf field table used by `tug_api::protobuf`.
//!
//! The field numbers and wire types of every Kubernetes message come from the
//! `k8s-pb` crate (a regular dependency, so cargo has downloaded its source
//! before this script runs). Its prost-generated sources are parsed here: each
//! `pub struct` and the `#[prost(...)]` attribute of each field become one
//! entry of a static table in `$OUT_DIR/k8s_pb_table.rs`. No Kubernetes code
//! is copied into the repository; the table is rebuilt from the dependency.
//!
//! The k8s-pb source directory is found with `cargo metadata --offline` (each
//! package's `manifest_path`), falling back to
//! `$CARGO_HOME/registry/src/*/k8s-pb-0.9.*`.
//! `TUGBOAT_K8S_PB_SRC` may point at a `src` directory to override both.

use std::collections::{BTreeMap, HashMap};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The k8s-pb version this crate depends on (`Cargo.toml`); used to pick the
/// right directory when several are unpacked in the registry.
const K8S_PB_PREFIX: &str = "k8s-pb-0.9.";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TUGBOAT_K8S_PB_SRC");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    // A changed lock file may mean another k8s-pb version: regenerate then.
    for dir in manifest_dir.ancestors() {
        let lock = dir.join("Cargo.lock");
        if lock.is_file() {
            println!("cargo:rerun-if-changed={}", lock.display());
            break;
        }
    }

    let src = find_k8s_pb_src(&manifest_dir).unwrap_or_else(|e| {
        panic!("tug-api build: cannot find the source of the k8s-pb crate: {e}")
    });
    let mut parsed = Parsed::default();
    let mut files = Vec::new();
    collect_rs(&src, &mut files);
    files.sort();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let mut segments: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let last = segments.pop().unwrap();
        if last != "mod.rs" && last != "lib.rs" {
            segments.push(last.trim_end_matches(".rs").to_string());
        }
        let module = segments.join(".");
        let text = fs::read_to_string(file).unwrap();
        parse_file(&module, &text, &mut parsed);
    }
    if parsed.messages.len() < 100 {
        panic!(
            "tug-api build: only {} messages parsed from {} (k8s-pb layout changed?)",
            parsed.messages.len(),
            src.display()
        );
    }
    let out = generate(&parsed);
    let out_path = PathBuf::from(env::var("OUT_DIR").unwrap()).join("k8s_pb_table.rs");
    fs::write(&out_path, out).unwrap();
}

// ---------------------------------------------------------------------------
// Locating the k8s-pb sources

fn find_k8s_pb_src(manifest_dir: &Path) -> Result<PathBuf, String> {
    if let Ok(dir) = env::var("TUGBOAT_K8S_PB_SRC") {
        return Ok(PathBuf::from(dir));
    }
    let mut errors = Vec::new();
    match from_cargo_metadata(manifest_dir) {
        Ok(p) => return Ok(p),
        Err(e) => errors.push(format!("cargo metadata: {e}")),
    }
    match from_registry() {
        Ok(p) => return Ok(p),
        Err(e) => errors.push(format!("registry scan: {e}")),
    }
    Err(errors.join("; "))
}

fn from_cargo_metadata(manifest_dir: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Offline: a build script should not fetch anything. When the graph is
    // not fully downloaded yet this fails, and the registry scan finds k8s-pb
    // (cargo has unpacked it, being a dependency of this crate).
    cmd.arg("metadata")
        .arg("--offline")
        .arg("--format-version")
        .arg("1")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"));
    if let Ok(target) = env::var("TARGET") {
        cmd.arg("--filter-platform").arg(target);
    }
    let output = cmd.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let json = String::from_utf8_lossy(&output.stdout);
    // Every package object carries "manifest_path"; keep those whose manifest
    // declares the k8s-pb package (no JSON parser needed in the build script).
    let key = "\"manifest_path\":\"";
    let mut rest: &str = &json;
    let mut candidates = Vec::new();
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        let mut path = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => path.push('\n'),
                    Some('t') => path.push('\t'),
                    Some(other) => path.push(other),
                    None => break,
                },
                c => path.push(c),
            }
        }
        let manifest = PathBuf::from(&path);
        if is_k8s_pb_manifest(&manifest) {
            candidates.push(manifest);
        }
    }
    candidates.sort();
    candidates
        .iter()
        .rev()
        .find(|m| {
            m.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n.to_string_lossy().starts_with(K8S_PB_PREFIX))
        })
        .or(candidates.last())
        .map(|m| m.parent().unwrap().join("src"))
        .ok_or_else(|| "no k8s-pb package in the dependency graph".to_string())
}

fn is_k8s_pb_manifest(manifest: &Path) -> bool {
    let dir_hint = manifest
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n.to_string_lossy().contains("k8s-pb"));
    if !dir_hint {
        // Only read manifests that could plausibly be it (vendored copies
        // keep the crate name in the directory too).
        return false;
    }
    fs::read_to_string(manifest)
        .map(|t| t.lines().any(|l| l.replace(' ', "") == "name=\"k8s-pb\""))
        .unwrap_or(false)
}

fn from_registry() -> Result<PathBuf, String> {
    let home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_string())?;
    let registry = home.join("registry").join("src");
    let mut found = Vec::new();
    for index in fs::read_dir(&registry).map_err(|e| format!("{}: {e}", registry.display()))? {
        let Ok(index) = index else { continue };
        let Ok(entries) = fs::read_dir(index.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(K8S_PB_PREFIX) && entry.path().join("src").join("lib.rs").is_file()
            {
                found.push(entry.path().join("src"));
            }
        }
    }
    found.sort();
    found
        .pop()
        .ok_or_else(|| format!("no {K8S_PB_PREFIX}* under {}", registry.display()))
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing prost-generated sources

#[derive(Default)]
struct Parsed {
    /// Full path (`api.core.v1.Pod`) → fields.
    messages: BTreeMap<String, Vec<RawField>>,
    /// (apiVersion, kind, message path) from `impl crate::Resource for ...`.
    resources: Vec<(String, String, String)>,
}

struct RawField {
    tag: u32,
    name: String,
    /// The first word of the field's doc comment (upstream's Go comments start
    /// with the JSON name by convention), a hint for naming.
    doc_word: String,
    /// `optional`, `repeated` or `map`.
    label: &'static str,
    /// Scalar type name, or `message`.
    ty: String,
    /// For maps: the key's scalar type.
    key: Option<String>,
    /// For messages (or map values that are messages): the full path.
    message: Option<String>,
}

fn parse_file(module: &str, text: &str, parsed: &mut Parsed) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let trimmed = rest.trim_end();
            if let Some(name) = trimmed.strip_suffix("{}") {
                parsed
                    .messages
                    .insert(format!("{module}.{}", name.trim()), Vec::new());
                i += 1;
                continue;
            }
            if !trimmed.ends_with('{') {
                i += 1;
                continue;
            }
            let name = trimmed.trim_end_matches('{').trim().to_string();
            i += 1;
            let mut fields = Vec::new();
            let mut doc_word = String::new();
            let mut doc_started = false;
            while i < lines.len() && lines[i] != "}" {
                let l = lines[i].trim();
                if let Some(d) = l.strip_prefix("///") {
                    if !doc_started {
                        doc_started = true;
                        doc_word = d
                            .trim()
                            .split(|c: char| !c.is_ascii_alphanumeric())
                            .next()
                            .unwrap_or("")
                            .to_string();
                    }
                    i += 1;
                    continue;
                }
                if l.starts_with("#[prost(") {
                    // The attribute may span lines until "]".
                    let mut attr = l.to_string();
                    while !attr.ends_with(")]") && i + 1 < lines.len() {
                        i += 1;
                        attr.push(' ');
                        attr.push_str(lines[i].trim());
                    }
                    // The field declaration follows, possibly over several lines.
                    i += 1;
                    let mut decl = String::new();
                    while i < lines.len() {
                        decl.push_str(lines[i].trim());
                        let open = decl.matches('<').count();
                        let close = decl.matches('>').count();
                        if open == close && lines[i].trim_end().ends_with(',') {
                            break;
                        }
                        decl.push(' ');
                        i += 1;
                    }
                    if let Some(f) = parse_field(module, &attr, &decl, &doc_word) {
                        fields.push(f);
                    }
                    doc_word.clear();
                    doc_started = false;
                } else if !l.starts_with("#[") {
                    doc_word.clear();
                    doc_started = false;
                }
                i += 1;
            }
            fields.sort_by_key(|f| f.tag);
            parsed.messages.insert(format!("{module}.{name}"), fields);
        } else if let Some(rest) = line.strip_prefix("impl crate::Resource for ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            let mut api_version = None;
            let mut kind = None;
            i += 1;
            while i < lines.len() && lines[i] != "}" {
                let l = lines[i].trim();
                if l.starts_with("const API_VERSION") {
                    api_version = quoted(l);
                } else if l.starts_with("const KIND") {
                    kind = quoted(l);
                }
                i += 1;
            }
            if let (Some(v), Some(k)) = (api_version, kind) {
                parsed.resources.push((v, k, format!("{module}.{name}")));
            }
        }
        i += 1;
    }
}

fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let end = start + s[start..].find('"')?;
    Some(s[start..end].to_string())
}

fn parse_field(module: &str, attr: &str, decl: &str, doc_word: &str) -> Option<RawField> {
    let inner = attr.strip_prefix("#[prost(")?.strip_suffix(")]")?;
    // Split on commas outside quotes.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in inner.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                cur.push(c);
            }
            ',' if !in_quotes => {
                parts.push(cur.trim().to_string());
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim().to_string());
    }
    let mut tag = None;
    let mut ty = None;
    let mut label = "optional";
    let mut map_types = None;
    for p in &parts {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
            None => (p.as_str(), None),
        };
        match k {
            "tag" => tag = v.and_then(|v| v.parse().ok()),
            "optional" | "required" => label = "optional",
            "repeated" => label = "repeated",
            "map" | "btree_map" | "hash_map" => {
                label = "map";
                map_types = v;
            }
            "oneof" | "tags" => return None,
            "packed" | "boxed" | "default" | "json_name" => {}
            "bytes" | "string" | "bool" | "int32" | "int64" | "uint32" | "uint64" | "sint32"
            | "sint64" | "fixed32" | "fixed64" | "sfixed32" | "sfixed64" | "double" | "float"
            | "message" | "group" => ty = Some(k.to_string()),
            "enumeration" => ty = Some("enumeration".to_string()),
            _ => {}
        }
    }
    let tag = tag?;
    let name_part = decl.strip_prefix("pub ")?;
    let (name, ty_expr) = name_part.split_once(':')?;
    let name = name.trim().trim_start_matches("r#").to_string();
    let ty_expr = ty_expr.trim().trim_end_matches(',').trim();
    let mut field = RawField {
        tag,
        name,
        doc_word: doc_word.to_string(),
        label,
        ty: String::new(),
        key: None,
        message: None,
    };
    if label == "map" {
        let types = map_types?;
        let (k, v) = types.split_once(',')?;
        let (k, v) = (k.trim(), v.trim());
        field.key = Some(k.to_string());
        if v == "message" {
            field.ty = "message".into();
            // BTreeMap<String, Value>: the value type follows the first comma.
            let value = ty_expr
                .split_once(',')?
                .1
                .trim_end_matches(|c: char| c == '>' || c == ',' || c.is_whitespace())
                .trim();
            field.message = Some(resolve_path(module, value));
        } else if let Some(e) = v.strip_prefix("enumeration") {
            let _ = e;
            field.ty = "enumeration".into();
        } else {
            field.ty = v.to_string();
        }
    } else {
        let ty = ty?;
        if ty == "message" || ty == "group" {
            field.ty = "message".into();
            field.message = Some(resolve_path(module, innermost_type(ty_expr)));
        } else {
            field.ty = ty;
        }
    }
    Some(field)
}

/// `::core::option::Option<::prost::alloc::boxed::Box<super::v1::X>>` → `super::v1::X`.
fn innermost_type(expr: &str) -> &str {
    let mut e = expr.trim();
    loop {
        let Some(open) = e.find('<') else { return e };
        let outer = &e[..open];
        if outer.ends_with("Option") || outer.ends_with("Vec") || outer.ends_with("Box") {
            e = e[open + 1..].trim();
            e = e.strip_suffix('>').unwrap_or(e);
            e = e
                .trim_end_matches(|c: char| c == ',' || c.is_whitespace())
                .trim();
        } else {
            return e;
        }
    }
}

/// Resolves a Rust path as written in `module` to a dotted full path.
fn resolve_path(module: &str, rust_path: &str) -> String {
    let mut base: Vec<&str> = module.split('.').filter(|s| !s.is_empty()).collect();
    let segments: Vec<&str> = rust_path
        .trim()
        .trim_start_matches("::")
        .split("::")
        .collect();
    let mut rest = &segments[..];
    if rest.first() == Some(&"crate") {
        base.clear();
        rest = &rest[1..];
    }
    while rest.first() == Some(&"super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut all: Vec<&str> = base;
    all.extend(rest.iter().copied());
    all.join(".")
}

// ---------------------------------------------------------------------------
// Output

fn scalar_variant(ty: &str) -> &'static str {
    match ty {
        "string" => "Ty::String",
        "bytes" => "Ty::Bytes",
        "bool" => "Ty::Bool",
        "int32" => "Ty::Int32",
        "int64" => "Ty::Int64",
        "uint32" => "Ty::Uint32",
        "uint64" => "Ty::Uint64",
        "sint32" => "Ty::Sint32",
        "sint64" => "Ty::Sint64",
        "fixed32" => "Ty::Fixed32",
        "fixed64" => "Ty::Fixed64",
        "sfixed32" => "Ty::Sfixed32",
        "sfixed64" => "Ty::Sfixed64",
        "double" => "Ty::Double",
        "float" => "Ty::Float",
        "enumeration" => "Ty::Enum",
        _ => "Ty::Unknown",
    }
}

fn generate(parsed: &Parsed) -> String {
    let index: HashMap<&str, usize> = parsed
        .messages
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut out = String::new();
    out.push_str("// @generated by crates/api/build.rs from the k8s-pb crate's sources.\n\n");
    out.push_str("pub(super) static MESSAGES: &[Message] = &[\n");
    for (path, fields) in &parsed.messages {
        writeln!(out, "    Message {{ path: {path:?}, fields: &[").unwrap();
        for f in fields {
            let ty = if f.ty == "message" {
                match f.message.as_deref().and_then(|m| index.get(m)) {
                    Some(i) => format!("Ty::Message({i})"),
                    None => {
                        println!(
                            "cargo:warning=k8s-pb: {path}.{}: unresolved message type {:?}; the field is skipped",
                            f.name, f.message
                        );
                        "Ty::Unknown".to_string()
                    }
                }
            } else {
                scalar_variant(&f.ty).to_string()
            };
            let label = match f.label {
                "repeated" => "Label::Repeated".to_string(),
                "map" => format!(
                    "Label::Map({})",
                    scalar_variant(f.key.as_deref().unwrap_or("string"))
                ),
                _ => "Label::Optional".to_string(),
            };
            writeln!(
                out,
                "        Field {{ tag: {}, name: {:?}, doc_word: {:?}, label: {label}, ty: {ty} }},",
                f.tag, f.name, f.doc_word
            )
            .unwrap();
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n");
    out.push_str("/// (apiVersion, kind, index into MESSAGES) of k8s-pb's `Resource` impls.\n");
    out.push_str("pub(super) static RESOURCES: &[(&str, &str, usize)] = &[\n");
    for (v, k, path) in &parsed.resources {
        if let Some(i) = index.get(path.as_str()) {
            writeln!(out, "    ({v:?}, {k:?}, {i}),").unwrap();
        }
    }
    out.push_str("];\n");
    out
}
