//! API errors as upstream's `metav1.Status` bodies.

use serde_json::{json, Value};

/// One cause of an error, as in `Status.details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: String,
    pub message: String,
    /// JSON path of the field (`metadata.name`, `spec.containers[0].image`).
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Cause { reason: reason.into(), message: message.into(), field: field.into() }
    }
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("\"{s}\""),
            other => other.to_string(),
        };
        Cause::new("FieldValueInvalid", field, format!("Invalid value: {shown}: {detail}"))
    }
    pub fn required(field: &str) -> Self {
        Cause::new("FieldValueRequired", field, "Required value")
    }
    pub fn required_msg(field: &str, detail: &str) -> Self {
        Cause::new("FieldValueRequired", field, format!("Required value: {detail}"))
    }
    pub fn not_supported(field: &str, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Cause::new(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: {}: supported values: {}", value, list.join(", ")),
        )
    }
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Cause::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }
    pub fn duplicate(field: &str, value: &Value) -> Self {
        Cause::new("FieldValueDuplicate", field, format!("Duplicate value: {value}"))
    }
    /// The `field: message` form upstream joins into the Status message.
    pub fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error the API answers with: HTTP code, `reason`, message and details.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub group: String,
    pub kind: String,
    pub name: String,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.group = group.into();
        self.kind = kind.into();
        self.name = name.into();
        self
    }

    /// `pods "web" not found` — `resource` is the plural, qualified by group when not core.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{}\" not found", qualified(group, resource), name))
            .with_details(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{}\" already exists", qualified(group, resource), name))
            .with_details(group, resource, name)
    }

    /// The optimistic-concurrency failure kubectl retries on.
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{}\": {}", qualified(group, resource), name, detail),
        )
        .with_details(group, resource, name)
    }

    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: `Pod "x" is invalid: [field: message, ...]`. `kind` is the Kind.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes.iter().map(Cause::render).collect();
        let joined = if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
        let mut e = ApiError::new(422, "Invalid", format!("{} \"{}\" is invalid: {}", qualified(group, kind), name, joined))
            .with_details(group, kind, name);
        e.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type}"))
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError::new(504, "Timeout", message)
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.name.is_empty() || !self.kind.is_empty() || !self.causes.is_empty() || self.retry_after_seconds.is_some() {
            let mut details = serde_json::Map::new();
            if !self.name.is_empty() {
                details.insert("name".into(), json!(self.name));
            }
            if !self.group.is_empty() {
                details.insert("group".into(), json!(self.group));
            }
            if !self.kind.is_empty() {
                details.insert("kind".into(), json!(self.kind));
            }
            if !self.causes.is_empty() {
                let causes: Vec<Value> = self
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(s) = self.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// A success `Status` (deletes of collections, some subresources).
pub fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_upstream_shape() {
        let s = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["name"], "web");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes_with_fields() {
        let e = ApiError::invalid("", "Pod", "x", vec![Cause::required("spec.containers")]);
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["message"], "Pod \"x\" is invalid: spec.containers: Required value");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
    }
}
