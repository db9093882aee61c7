//! The agent's events, written in the background.
//!
//! Upstream's kubelet records events through a broadcaster: a pod's start
//! never waits for its `Created` or `Started` event to reach the API server.
//! [`EventQueue`] does the same. Every event of the agent goes through one
//! bounded channel to one task, so the events of a pod are written in the
//! order they happened; when the API server falls far behind, new events
//! are dropped (with a log line) rather than holding up the pods.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// How many events may wait to be written before new ones are dropped
/// (upstream's broadcaster queue holds 1,000).
pub const QUEUE_LEN: usize = 1000;

/// Where the agent's events go; cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventQueue {
    /// Starts the writer task: it reports as `kubelet` on `node_name`, as
    /// upstream's kubelet does.
    pub fn start(client: kube::Client, node_name: &str) -> EventQueue {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: Some(node_name.to_string()),
        };
        let recorder = Recorder::new(client, reporter);
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE_LEN);
        tokio::spawn(async move {
            while let Some((object, ev)) = rx.recv().await {
                if let Err(e) = recorder.publish(&ev, &object).await {
                    tracing::debug!(error = %e, reason = %ev.reason, "event not recorded");
                }
            }
        });
        EventQueue { tx }
    }

    /// Queues an event about `object`; returns at once.
    pub fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.tx.try_send((object.clone(), ev)) {
            tracing::warn!(reason, error = %e, "event queue full or closed; event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// An API server that takes `delay` for each request and keeps the
    /// reason of every event written, in order.
    fn fake_api(delay: Duration) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen2 = seen.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let seen = seen2.clone();
            async move {
                use http_body_util::BodyExt;
                let body = req.into_body().collect().await?.to_bytes();
                tokio::time::sleep(delay).await;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                seen.lock().unwrap().push(v["reason"].as_str().unwrap_or("").to_string());
                let resp = http::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_vec()))?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
            }
        });
        (kube::Client::new(svc, "default"), seen)
    }

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn events_are_written_in_order() {
        let (client, seen) = fake_api(Duration::from_millis(1));
        let q = EventQueue::start(client, "n1");
        let reasons = ["Pulled", "Created", "Started", "Killing"];
        for r in reasons {
            q.publish(&pod("p"), EventType::Normal, r, format!("{r} container c"));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < reasons.len() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*seen.lock().unwrap(), reasons);
    }

    /// A slow API server never holds up the caller: publishing returns at
    /// once, and what does not fit in the queue is dropped.
    #[tokio::test]
    async fn publishing_never_waits_for_the_api_server() {
        let (client, seen) = fake_api(Duration::from_secs(3600));
        let q = EventQueue::start(client, "n1");
        let t = std::time::Instant::now();
        for i in 0..QUEUE_LEN + 10 {
            q.publish(&pod(&format!("p{i}")), EventType::Normal, "Created", "Created container c".into());
        }
        assert!(t.elapsed() < Duration::from_secs(2), "publishing took {:?}", t.elapsed());
        assert!(seen.lock().unwrap().is_empty());
    }
}
