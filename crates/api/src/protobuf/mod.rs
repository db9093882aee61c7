//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! decoded into the Kubernetes JSON the rest of the server works with.
//!
//! kubectl and every client-go based client send typed writes as protobuf: the
//! 4-byte magic `k8s\0`, then a `runtime.Unknown` message (1: typeMeta
//! {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType) whose
//! `raw` is the object encoded as the message of its kind. [`decode`] turns
//! that into the object as the JSON API carries it.
//!
//! # How the message definitions are obtained
//!
//! A generic wire-format decoder walks a table of every Kubernetes message:
//! field number → (name, label, type). The table is generated at build time
//! (`crates/api/build.rs`) by parsing the prost-generated sources of the
//! `k8s-pb` crate (kube-rs, Apache-2.0), a dependency of this crate: its
//! `#[prost(message, optional, tag = "1")]` attributes carry exactly the field
//! numbers and types of upstream's `generated.proto` files. Nothing from
//! upstream is copied into this repository, and a k8s-pb upgrade regenerates
//! the table.
//!
//! This was chosen over decoding with prost into k8s-pb's typed structs: those
//! have no serde support, so each of the ~1,260 messages would need its own
//! conversion to JSON, whereas one table-driven decoder covers all of them,
//! including kinds the server does not serve (yet). The build script stays a
//! simple text scan; k8s-pb is not otherwise used at run time.
//!
//! What the table lacks is recovered at run time (module `names`, once per
//! process):
//! - exact JSON field names, matched against the OpenAPI property names of
//!   k8s-openapi's schemas (prost's snake_case is not reversible: `podIPs` →
//!   `pod_i_ps`), and embedded Go structs (`json:",inline"`, a nested message
//!   on the wire: `Volume.volumeSource`, `Probe.handler`) flattened;
//! - the JSON form of special types: `Time` → `"2026-01-02T03:04:05Z"`,
//!   `MicroTime` with microseconds, `Duration` → `"1h0m0s"`, `Quantity` →
//!   its string, `IntOrString` → number or string, `RawExtension`/`FieldsV1`
//!   → the embedded JSON, `bytes` → base64;
//! - which zero values to keep. Upstream's protobuf encoder writes every
//!   non-pointer field, zero or not, while its JSON encoder omits zero
//!   `omitempty` fields, and the defaulting here (like upstream's) only fills
//!   fields that are absent. So a singular scalar holding "", 0 or false is
//!   dropped unless the OpenAPI schema requires the field or it is a Go
//!   pointer whose zero means something (`replicas: 0`,
//!   `automountServiceAccountToken: false`; `names::POINTER_FIELDS`). Empty
//!   messages stay (`"resources": {}`, `"status": {}`), an empty `Time` is
//!   `null` (`"creationTimestamp": null`), exactly as kubectl's JSON has them.

mod names;
mod table;
mod wire;

#[cfg(test)]
mod tests;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use names::{Registry, Special};
use table::{Label, MESSAGES, Ty};
use wire::{FIXED32, FIXED64, LEN, Reader, VARINT};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf envelope.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Nesting limit for messages, against stack exhaustion on hostile input.
const MAX_DEPTH: usize = 100;

/// Decodes a Kubernetes protobuf body (magic, `runtime.Unknown` envelope,
/// object) into the object's Kubernetes JSON, with `apiVersion` and `kind`
/// from the envelope's type meta.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    decode_depth(body, 0)
}

fn decode_depth(body: &[u8], depth: usize) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        "the body does not start with the Kubernetes protobuf prefix \"k8s\\0\"".to_string()
    })?;
    let envelope = Envelope::parse(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(format!(
            "unsupported content encoding {:?}",
            envelope.content_encoding
        ));
    }
    let media = envelope.content_type.split(';').next().unwrap_or("").trim();
    let value = match media {
        "" | CONTENT_TYPE => {
            if envelope.kind.is_empty() {
                return Err("the protobuf envelope names no kind".into());
            }
            let registry = Registry::get();
            let idx = registry
                .message_for_kind(&envelope.api_version, &envelope.kind)
                .ok_or_else(|| {
                    format!(
                        "no protobuf message is known for {} {}",
                        envelope.api_version, envelope.kind
                    )
                })?;
            Decoder { registry }.message(idx, envelope.raw, depth)?
        }
        "application/json" => {
            serde_json::from_slice(envelope.raw).map_err(|e| format!("embedded JSON: {e}"))?
        }
        other => return Err(format!("unsupported embedded content type {other:?}")),
    };
    let Value::Object(fields) = value else {
        return Err(format!(
            "{} {} does not decode to an object",
            envelope.api_version, envelope.kind
        ));
    };
    let mut obj = Map::new();
    if !envelope.api_version.is_empty() || !fields.contains_key("apiVersion") {
        obj.insert(
            "apiVersion".into(),
            Value::String(envelope.api_version.clone()),
        );
    }
    if !envelope.kind.is_empty() || !fields.contains_key("kind") {
        obj.insert("kind".into(), Value::String(envelope.kind.clone()));
    }
    for (k, v) in fields {
        if !obj.contains_key(&k) {
            obj.insert(k, v);
        }
    }
    Ok(Value::Object(obj))
}

/// `runtime.Unknown`.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, String> {
        let mut env = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut r = Reader::new(buf);
        while !r.done() {
            let (tag, wt) = r.key().map_err(|e| format!("envelope: {e}"))?;
            match (tag, wt) {
                (1, LEN) => {
                    let meta = r.bytes()?;
                    let mut m = Reader::new(meta);
                    while !m.done() {
                        let (t, w) = m.key().map_err(|e| format!("typeMeta: {e}"))?;
                        match (t, w) {
                            (1, LEN) => env.api_version = lossy(m.bytes()?),
                            (2, LEN) => env.kind = lossy(m.bytes()?),
                            _ => m.skip(t, w)?,
                        }
                    }
                }
                (2, LEN) => env.raw = r.bytes()?,
                (3, LEN) => env.content_encoding = lossy(r.bytes()?),
                (4, LEN) => env.content_type = lossy(r.bytes()?),
                _ => r.skip(tag, wt).map_err(|e| format!("envelope: {e}"))?,
            }
        }
        Ok(env)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One field's decoded value(s) within a message.
enum Slot<'a> {
    Absent,
    /// A scalar, or a repeated/map element list.
    One(Value),
    Many(Vec<Value>),
    Map(Map<String, Value>),
    /// A singular message: its occurrences, merged by concatenation.
    Message(Vec<&'a [u8]>),
}

struct Decoder {
    registry: &'static Registry,
}

impl Decoder {
    fn message(&self, idx: usize, buf: &[u8], depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("messages nested too deeply".into());
        }
        let special = self.registry.special[idx];
        match special {
            Special::RawJson => return raw_json(buf, depth),
            Special::Time | Special::MicroTime if buf.is_empty() => return Ok(Value::Null),
            _ => {}
        }
        let mut slots = self.slots(idx, buf, depth)?;
        let msg = &MESSAGES[idx];
        let mut take = |tag: u32| -> Slot {
            match msg.field_index(tag) {
                Some(i) => std::mem::replace(&mut slots[i], Slot::Absent),
                None => Slot::Absent,
            }
        };
        match special {
            Special::None | Special::RawJson => {}
            Special::Time | Special::MicroTime => {
                let seconds = as_i64(&take(1));
                let nanos = if special == Special::MicroTime {
                    as_i64(&take(2))
                } else {
                    0
                };
                return format_time(seconds, nanos, special == Special::MicroTime)
                    .map(Value::String);
            }
            Special::Duration => return Ok(Value::String(go_duration(as_i64(&take(1))))),
            Special::Quantity => {
                return Ok(match take(1) {
                    Slot::One(Value::String(s)) if !s.is_empty() => Value::String(s),
                    _ => Value::String("0".into()),
                });
            }
            Special::IntOrString => {
                let ty = as_i64(&take(1));
                let int_val = as_i64(&take(2));
                return Ok(if ty == 1 {
                    match take(3) {
                        Slot::One(v @ Value::String(_)) => v,
                        _ => Value::String(String::new()),
                    }
                } else {
                    Value::from(int_val)
                });
            }
            Special::StringList => {
                return Ok(match slots.into_iter().next() {
                    Some(Slot::Many(items)) => Value::Array(items),
                    _ => Value::Array(Vec::new()),
                });
            }
            Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
                // OrBool: {1: allows, 2: schema}; the others: {1: schema, 2: list}.
                let schema_tag = if special == Special::SchemaOrBool {
                    2
                } else {
                    1
                };
                let schema = take(schema_tag);
                let other = take(3 - schema_tag);
                if let Slot::Many(items) = &other
                    && !items.is_empty()
                {
                    return Ok(Value::Array(items.clone()));
                }
                let schema_ty = msg.field_index(schema_tag).map(|i| msg.fields[i].ty);
                if let (Slot::Message(parts), Some(Ty::Message(child))) = (schema, schema_ty) {
                    return self.message(child, &concat(&parts), depth + 1);
                }
                return Ok(match (special, other) {
                    (Special::SchemaOrBool, Slot::One(Value::Bool(b))) => Value::Bool(b),
                    (Special::SchemaOrBool, _) => Value::Bool(false),
                    _ => Value::Null,
                });
            }
        }

        let infos = &self.registry.fields[idx];
        let mut obj = Map::new();
        for (i, slot) in slots.into_iter().enumerate() {
            let field = &msg.fields[i];
            let info = &infos[i];
            let value = match slot {
                Slot::Absent => continue,
                Slot::One(v) => {
                    if is_zero(&v) && !info.keep_zero {
                        continue;
                    }
                    v
                }
                Slot::Many(items) => Value::Array(items),
                Slot::Map(m) => Value::Object(m),
                Slot::Message(parts) => match field.ty {
                    Ty::Message(child) => self.message(child, &concat(&parts), depth + 1)?,
                    _ => continue,
                },
            };
            if info.inline
                && let Value::Object(inner) = value
            {
                obj.extend(inner);
                continue;
            }
            obj.insert(info.json.clone(), value);
        }
        Ok(Value::Object(obj))
    }

    /// Reads every field of message `idx` from `buf`.
    fn slots<'b>(&self, idx: usize, buf: &'b [u8], depth: usize) -> Result<Vec<Slot<'b>>, String> {
        let msg = &MESSAGES[idx];
        let mut slots: Vec<Slot> = msg.fields.iter().map(|_| Slot::Absent).collect();
        let mut r = Reader::new(buf);
        while !r.done() {
            let (tag, wt) = r.key().map_err(|e| format!("{}: {e}", msg.name()))?;
            let Some(i) = msg.field_index(tag) else {
                r.skip(tag, wt)
                    .map_err(|e| format!("{}: field {tag}: {e}", msg.name()))?;
                continue;
            };
            let field = &msg.fields[i];
            let ctx = |e: String| format!("{}.{}: {e}", msg.name(), field.name);
            if field.ty == Ty::Unknown {
                r.skip(tag, wt).map_err(ctx)?;
                continue;
            }
            match field.label {
                Label::Optional => match field.ty {
                    Ty::Message(_) => {
                        expect_wire(wt, LEN).map_err(ctx)?;
                        let bytes = r.bytes().map_err(ctx)?;
                        match &mut slots[i] {
                            Slot::Message(parts) => parts.push(bytes),
                            s => *s = Slot::Message(vec![bytes]),
                        }
                    }
                    ty => slots[i] = Slot::One(scalar(ty, wt, &mut r).map_err(ctx)?),
                },
                Label::Repeated => {
                    let mut items = match std::mem::replace(&mut slots[i], Slot::Absent) {
                        Slot::Many(items) => items,
                        _ => Vec::new(),
                    };
                    match field.ty {
                        Ty::Message(child) => {
                            expect_wire(wt, LEN).map_err(ctx)?;
                            let bytes = r.bytes().map_err(ctx)?;
                            items.push(self.message(child, bytes, depth + 1)?);
                        }
                        ty if wt == LEN && packable(ty) => {
                            let packed = r.bytes().map_err(ctx)?;
                            let mut p = Reader::new(packed);
                            while !p.done() {
                                items.push(scalar(ty, element_wire(ty), &mut p).map_err(ctx)?);
                            }
                        }
                        ty => items.push(scalar(ty, wt, &mut r).map_err(ctx)?),
                    }
                    slots[i] = Slot::Many(items);
                }
                Label::Map(key_ty) => {
                    expect_wire(wt, LEN).map_err(ctx)?;
                    let entry = r.bytes().map_err(ctx)?;
                    let (k, v) = self
                        .map_entry(key_ty, field.ty, entry, depth)
                        .map_err(ctx)?;
                    match &mut slots[i] {
                        Slot::Map(m) => {
                            m.insert(k, v);
                        }
                        s => {
                            let mut m = Map::new();
                            m.insert(k, v);
                            *s = Slot::Map(m);
                        }
                    }
                }
            }
        }
        Ok(slots)
    }

    fn map_entry(
        &self,
        key_ty: Ty,
        value_ty: Ty,
        entry: &[u8],
        depth: usize,
    ) -> Result<(String, Value), String> {
        let mut key = None;
        let mut value = None;
        let mut value_parts: Vec<&[u8]> = Vec::new();
        let mut r = Reader::new(entry);
        while !r.done() {
            let (tag, wt) = r.key()?;
            match tag {
                1 => key = Some(scalar(key_ty, wt, &mut r)?),
                2 => match value_ty {
                    Ty::Message(_) => {
                        expect_wire(wt, LEN)?;
                        value_parts.push(r.bytes()?);
                    }
                    ty => value = Some(scalar(ty, wt, &mut r)?),
                },
                _ => r.skip(tag, wt)?,
            }
        }
        let key = match key.unwrap_or_else(|| zero(key_ty)) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let value = match value_ty {
            Ty::Message(child) => self.message(child, &concat(&value_parts), depth + 1)?,
            ty => value.unwrap_or_else(|| zero(ty)),
        };
        Ok((key, value))
    }
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn expect_wire(got: u8, want: u8) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("wire type {got}, expected {want}"))
    }
}

fn packable(ty: Ty) -> bool {
    !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_) | Ty::Unknown)
}

fn element_wire(ty: Ty) -> u8 {
    match ty {
        Ty::Fixed64 | Ty::Sfixed64 | Ty::Double => FIXED64,
        Ty::Fixed32 | Ty::Sfixed32 | Ty::Float => FIXED32,
        _ => VARINT,
    }
}

fn scalar(ty: Ty, wt: u8, r: &mut Reader) -> Result<Value, String> {
    expect_wire(
        wt,
        match ty {
            Ty::String | Ty::Bytes | Ty::Message(_) | Ty::Unknown => LEN,
            other => element_wire(other),
        },
    )?;
    Ok(match ty {
        Ty::String => Value::String(lossy(r.bytes()?)),
        Ty::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
        Ty::Bool => Value::Bool(r.varint()? != 0),
        Ty::Int32 | Ty::Enum => Value::from(r.varint()? as i64 as i32),
        Ty::Int64 => Value::from(r.varint()? as i64),
        Ty::Uint32 => Value::from(r.varint()? as u32),
        Ty::Uint64 => Value::from(r.varint()?),
        Ty::Sint32 => {
            let v = r.varint()? as u32;
            Value::from(((v >> 1) as i32) ^ -((v & 1) as i32))
        }
        Ty::Sint64 => {
            let v = r.varint()?;
            Value::from(((v >> 1) as i64) ^ -((v & 1) as i64))
        }
        Ty::Fixed32 => Value::from(r.fixed32()?),
        Ty::Sfixed32 => Value::from(r.fixed32()? as i32),
        Ty::Float => float(f64::from(f32::from_bits(r.fixed32()?))),
        Ty::Fixed64 => Value::from(r.fixed64()?),
        Ty::Sfixed64 => Value::from(r.fixed64()? as i64),
        Ty::Double => float(f64::from_bits(r.fixed64()?)),
        Ty::Message(_) | Ty::Unknown => unreachable!("not a scalar"),
    })
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn zero(ty: Ty) -> Value {
    match ty {
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Double | Ty::Float => float(0.0),
        _ => Value::from(0),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

fn as_i64(slot: &Slot) -> i64 {
    match slot {
        Slot::One(v) => v.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// `RawExtension`, `FieldsV1`, apiextensions `JSON`: field 1 holds a JSON
/// document (or, for embedded objects, a protobuf envelope).
fn raw_json(buf: &[u8], depth: usize) -> Result<Value, String> {
    let raw = wire::last_bytes(buf, 1)?.unwrap_or_default();
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC.as_slice()) {
        return decode_depth(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| format!("embedded raw object is not JSON: {e}"))
}

/// `metav1.Time` as upstream writes it in JSON (seconds precision, UTC), or
/// `MicroTime` (six fractional digits).
fn format_time(seconds: i64, nanos: i64, micro: bool) -> Result<String, String> {
    let ts = jiff::Timestamp::from_second(seconds)
        .map_err(|e| format!("timestamp out of range: {e}"))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micro {
        let micros = nanos.clamp(0, 999_999_999) / 1000;
        Ok(format!("{base}.{micros:06}Z"))
    } else {
        Ok(format!("{base}Z"))
    }
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it:
/// `1h2m3.5s`, `150ms`, `0s`.
fn go_duration(d: i64) -> String {
    fn frac(v: u64, prec: u32) -> (u64, String) {
        let p = 10u64.pow(prec);
        let (int, f) = (v / p, v % p);
        if f == 0 {
            return (int, String::new());
        }
        let digits = format!("{f:0width$}", width = prec as usize);
        (int, format!(".{}", digits.trim_end_matches('0')))
    }
    let u = d.unsigned_abs();
    let body = if u < 1_000_000_000 {
        if u == 0 {
            return "0s".into();
        }
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, f) = frac(u, prec);
        format!("{int}{f}{unit}")
    } else {
        let (secs, f) = frac(u, 9);
        let mut out = String::new();
        let minutes = secs / 60;
        if minutes > 0 {
            let hours = minutes / 60;
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            out.push_str(&format!("{}m", minutes % 60));
        }
        out.push_str(&format!("{}{f}s", secs % 60));
        out
    };
    if d < 0 { format!("-{body}") } else { body }
}
