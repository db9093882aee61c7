//! Object metadata rules shared by every kind: names, generateName, labels,
//! annotations, and small accessors on JSON objects.

use serde_json::{Map, Value};

use crate::status::Cause;

/// Upstream's DNS-1123 subdomain: most object names.
pub fn is_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    for part in s.split('.') {
        if !is_label_chars(part) {
            return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
        }
    }
    Ok(())
}

fn is_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Upstream's DNS-1123 label: namespaces, container and port names.
pub fn is_dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_label_chars(s) {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
    }
    Ok(())
}

/// Upstream's DNS-1035 label: Service names (must start with a letter).
pub fn is_dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_label_chars(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        return Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into());
    }
    Ok(())
}

/// Names that may appear in a URL path segment (what upstream checks for every name).
pub fn is_valid_path_segment_name(s: &str) -> Result<(), String> {
    if s == "." || s == ".." {
        return Err(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            return Err(format!("may not contain '{bad}'"));
        }
    }
    Ok(())
}

/// A qualified name: label keys, annotation keys (`prefix/name`).
pub fn is_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        is_dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() || name.len() > 63 {
        return Err("name part must be non-empty and no more than 63 characters".into());
    }
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let bytes = name.as_bytes();
    if !bytes.iter().all(|&b| ok_char(b))
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    Ok(())
}

/// A label value: empty, or up to 63 characters like a qualified name part.
pub fn is_valid_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    is_qualified_name(s).map_err(|_| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
}

/// The 5-character suffix upstream appends to `generateName` (no vowels, no
/// look-alike characters, so generated names never spell words).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4();
    bytes.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The name a `generateName` prefix produces (prefix cut so the total fits 63).
pub fn generate_name(prefix: &str) -> String {
    let max_prefix = 63 - 5;
    let cut = if prefix.len() > max_prefix { &prefix[..max_prefix] } else { prefix };
    format!("{cut}{}", random_suffix())
}

/// Causes for invalid labels, annotations and other metadata common to all kinds.
pub fn validate_object_meta(meta: &Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(e) = is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", &Value::String(k.clone()), &e));
            }
            match v.as_str() {
                Some(s) => {
                    if let Err(e) = is_valid_label_value(s) {
                        causes.push(Cause::invalid(&format!("metadata.labels"), v, &e));
                    }
                }
                None => causes.push(Cause::invalid("metadata.labels", v, "must be a string")),
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            if let Err(e) = is_qualified_name(&k.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", &Value::String(k.clone()), &e));
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in finalizers.iter().enumerate() {
            let s = f.as_str().unwrap_or("");
            if let Err(e) = is_qualified_name(s) {
                causes.push(Cause::invalid(&format!("metadata.finalizers[{i}]"), f, &e));
            }
        }
    }
    causes
}

/// `obj.metadata` as a map, created if absent.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").map(Value::is_object).unwrap_or(false) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// RFC 3339 with second precision, as upstream serializes `metav1.Time`.
pub fn now_rfc3339() -> String {
    // Formatted once per second per thread: every create stamps one, and
    // strftime showed up in the create path's profile.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = jiff::Timestamp::now();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now.as_second() {
            *last = (now.as_second(), now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        last.1.clone()
    })
}

/// `metav1.MicroTime`, for leases and events.
pub fn now_rfc3339_micros() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web-1.example").is_ok());
        assert!(is_dns1123_subdomain("Web").is_err());
        assert!(is_dns1123_subdomain("-a").is_err());
        assert!(is_dns1123_label("a.b").is_err());
        assert!(is_dns1035_label("1abc").is_err());
        assert!(is_dns1035_label("abc-1").is_ok());
        assert!(is_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(is_qualified_name("a/b/c").is_err());
        assert!(is_valid_label_value("").is_ok());
        assert!(is_valid_label_value("bad value").is_err());
    }

    #[test]
    fn generated_names_have_five_char_suffix() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(is_dns1123_subdomain(&n).is_ok());
    }
}
