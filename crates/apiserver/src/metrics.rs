//! Prometheus metrics of the API server (`/metrics`).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::rest::Ctx;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VerbLabels, Histogram>,
    objects: Gauge,
    revision: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<VerbLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        let objects = Gauge::default();
        let revision = Gauge::default();
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register("apiserver_request_duration_seconds", "Request latency by verb (watches: until the stream opens)", latency.clone());
        registry.register("apiserver_storage_objects", "Objects in the watch cache", objects.clone());
        registry.register("apiserver_watch_cache_revision", "Newest store revision the watch cache has seen", revision.clone());
        Metrics { registry: Mutex::new(registry), requests, latency, objects, revision }
    }
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        self.latency.get_or_create(&VerbLabels { verb: verb.into() }).observe(elapsed.as_secs_f64());
    }

    pub async fn encode(&self, ctx: &Ctx) -> String {
        self.objects.set(ctx.cache.count("/registry/").await as i64);
        self.revision.set(ctx.cache.revision());
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
