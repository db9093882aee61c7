//! The Kubernetes API object model as Tugboat serves it.
//!
//! Everything the API server knows about a kind lives here, in one table
//! ([`resources::RESOURCES`]): routing, discovery, OpenAPI, tables and storage
//! all read from it. Objects travel as `serde_json::Value` (the stored JSON);
//! k8s-openapi types are used for schemas and typed validation.

pub mod convert;
pub mod cron;
pub mod defaults;
pub mod meta;
pub mod patch;
pub mod protobuf;
pub mod quota;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod status;
pub mod tables;
pub mod taints;
pub mod validation;

pub use resources::{ResourceType, RESOURCES};
pub use status::ApiError;
