//! Response shapes by `Accept`: the object itself, a server-side Table, or
//! only metadata (`PartialObjectMetadata`).

use serde_json::{json, Value};
use tug_api::resources::ResourceType;
use tug_api::tables::{self, IncludeObject};

use crate::rest::ListBody;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    Json,
    Table(IncludeObject),
    PartialMetadata,
}

pub const TABLE_MEDIA: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub const PARTIAL_MEDIA: &str = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io";
pub const PARTIAL_LIST_MEDIA: &str = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";

impl Output {
    /// The first `Accept` alternative this server can produce.
    pub fn negotiate(accept: &str, include: Option<&str>) -> Output {
        for part in accept.split(',') {
            let p = part.replace(' ', "");
            if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
                let inc = match include {
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    _ => IncludeObject::Metadata,
                };
                return Output::Table(inc);
            }
            if p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io") {
                return Output::PartialMetadata;
            }
            if p.starts_with("application/json") || p.starts_with("*/*") || p.is_empty() || p.starts_with("application/*") {
                return Output::Json;
            }
        }
        Output::Json
    }

    pub fn is_table(&self) -> bool {
        matches!(self, Output::Table(_))
    }

    pub fn content_type(&self, list: bool) -> &'static str {
        match self {
            Output::Json => "application/json",
            Output::Table(_) => TABLE_MEDIA,
            Output::PartialMetadata if list => PARTIAL_LIST_MEDIA,
            Output::PartialMetadata => PARTIAL_MEDIA,
        }
    }

    fn partial(obj: &Value) -> Value {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
    }

    /// One object (GET, or the result of a write).
    pub fn object(&self, rt: &ResourceType, obj: &Value) -> Value {
        match self {
            Output::Json => obj.clone(), // (http.rs serves JSON without this copy)
            Output::Table(inc) => {
                let mut t = tables::table_for(rt.kind, std::slice::from_ref(obj), jiff::Timestamp::now(), *inc);
                t["metadata"] = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")});
                t
            }
            Output::PartialMetadata => Self::partial(obj),
        }
    }

    /// A list body as built by the REST layer, as a Table or metadata only
    /// (plain JSON is served from the `ListBody` itself).
    pub fn list(&self, rt: &ResourceType, list: ListBody) -> Value {
        match self {
            Output::Json => serde_json::from_slice(&list.to_json()).expect("the list's own encoding parses"),
            Output::Table(inc) => {
                let items: Vec<Value> = list.items.iter().map(|i| i.to_value()).collect();
                let mut t = tables::table_for(rt.kind, &items, jiff::Timestamp::now(), *inc);
                t["metadata"] = list.metadata;
                t
            }
            Output::PartialMetadata => {
                let items: Vec<Value> = list.items.iter().map(|o| Self::partial(&o.to_value())).collect();
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list.metadata, "items": items})
            }
        }
    }

    /// The object inside a watch event.
    pub fn watch_object(&self, rt: &ResourceType, obj: &Value) -> Value {
        self.object(rt, obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_tables() {
        let o = Output::negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", None);
        assert_eq!(o, Output::Table(IncludeObject::Metadata));
        assert_eq!(Output::negotiate("application/json", None), Output::Json);
        assert_eq!(Output::negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", None), Output::PartialMetadata);
    }
}
