//! A CRI v1 client (`runtime.v1` RuntimeService and ImageService) over the
//! runtime's unix socket: k8s-cri's generated stubs on a tonic channel.
//!
//! The channel is lazy and reconnects by itself, so a containerd restarted
//! by the supervisor is picked up again without rebuilding the client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

/// Label every sandbox and container carries (as upstream's kubelet sets it).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Deadline of ordinary runtime calls (upstream's default is 2 minutes).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of an image pull.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// A CRI runtime endpoint.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub endpoint: String,
}

/// `unix:///path`, `unix:/path` or a plain path → the socket path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    PathBuf::from(p)
}

/// A gRPC error as an `anyhow` error that keeps the runtime's message.
fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("CRI {call}: {} ({:?})", s.message(), s.code())
}

async fn bounded<T>(
    call: &str,
    t: Duration,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(t, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status(call, s)),
        Err(_) => Err(anyhow::anyhow!(
            "CRI {call}: timed out after {}s",
            t.as_secs()
        )),
    }
}

/// Whether the error is the runtime's NotFound (the object is already gone).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    let s = e.to_string();
    s.contains("(NotFound)") || s.contains("not found")
}

impl Cri {
    /// A client for `endpoint`; connects lazily (the first call connects).
    pub fn new(endpoint: &str) -> anyhow::Result<Cri> {
        let path = socket_path(endpoint);
        // The URI is unused: the connector dials the socket.
        let channel = Endpoint::try_from("http://[::]:50051")?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        let max = 64 << 20;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(max),
            images: ImageServiceClient::new(channel).max_decoding_message_size(max),
            endpoint: endpoint.to_string(),
        })
    }

    /// Connects and checks the runtime answers `Version`, retrying up to `timeout`.
    pub async fn connect(
        endpoint: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Cri, cri::VersionResponse)> {
        let c = Cri::new(endpoint)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match c.version().await {
                Ok(v) => return Ok((c, v)),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the CRI runtime");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("CRI runtime at {endpoint}")),
            }
        }
    }

    pub async fn version(&self) -> anyhow::Result<cri::VersionResponse> {
        let mut r = self.runtime.clone();
        bounded(
            "Version",
            Duration::from_secs(10),
            r.version(cri::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
    }

    /// Runtime conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> anyhow::Result<cri::StatusResponse> {
        let mut r = self.runtime.clone();
        bounded(
            "Status",
            Duration::from_secs(10),
            r.status(cri::StatusRequest { verbose: false }),
        )
        .await
    }

    pub async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> anyhow::Result<String> {
        let mut r = self.runtime.clone();
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(
            bounded("RunPodSandbox", CALL_TIMEOUT, r.run_pod_sandbox(req))
                .await?
                .pod_sandbox_id,
        )
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let mut r = self.runtime.clone();
        bounded(
            "StopPodSandbox",
            CALL_TIMEOUT,
            r.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> anyhow::Result<()> {
        let mut r = self.runtime.clone();
        bounded(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            r.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    pub async fn pod_sandbox_status(&self, id: &str) -> anyhow::Result<cri::PodSandboxStatus> {
        let mut r = self.runtime.clone();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        bounded("PodSandboxStatus", CALL_TIMEOUT, r.pod_sandbox_status(req))
            .await?
            .status
            .context("PodSandboxStatus without a status")
    }

    /// Sandboxes, optionally only those carrying `labels`.
    pub async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> anyhow::Result<Vec<cri::PodSandbox>> {
        let mut r = self.runtime.clone();
        let filter = cri::PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        };
        Ok(bounded(
            "ListPodSandbox",
            CALL_TIMEOUT,
            r.list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            }),
        )
        .await?
        .items)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> anyhow::Result<String> {
        let mut r = self.runtime.clone();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(
            bounded("CreateContainer", CALL_TIMEOUT, r.create_container(req))
                .await?
                .container_id,
        )
    }

    pub async fn start_container(&self, id: &str) -> anyhow::Result<()> {
        let mut r = self.runtime.clone();
        bounded(
            "StartContainer",
            CALL_TIMEOUT,
            r.start_container(cri::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        let mut r = self.runtime.clone();
        let req = cri::StopContainerRequest {
            container_id: id.into(),
            timeout: grace.as_secs() as i64,
        };
        bounded("StopContainer", CALL_TIMEOUT + grace, r.stop_container(req)).await?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let mut r = self.runtime.clone();
        bounded(
            "RemoveContainer",
            CALL_TIMEOUT,
            r.remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Containers, optionally only those carrying `labels`.
    pub async fn list_containers(
        &self,
        labels: HashMap<String, String>,
    ) -> anyhow::Result<Vec<cri::Container>> {
        let mut r = self.runtime.clone();
        let filter = cri::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        };
        Ok(bounded(
            "ListContainers",
            CALL_TIMEOUT,
            r.list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            }),
        )
        .await?
        .containers)
    }

    /// CPU and memory counters of every container the runtime has.
    pub async fn list_container_stats(&self) -> anyhow::Result<Vec<cri::ContainerStats>> {
        let mut r = self.runtime.clone();
        Ok(bounded(
            "ListContainerStats",
            CALL_TIMEOUT,
            r.list_container_stats(cri::ListContainerStatsRequest { filter: None }),
        )
        .await?
        .stats)
    }

    pub async fn container_status(&self, id: &str) -> anyhow::Result<cri::ContainerStatus> {
        let mut r = self.runtime.clone();
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        bounded("ContainerStatus", CALL_TIMEOUT, r.container_status(req))
            .await?
            .status
            .context("ContainerStatus without a status")
    }

    /// Runs a command in a running container and returns (exit code, stdout, stderr).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> anyhow::Result<(i32, Vec<u8>, Vec<u8>)> {
        let mut r = self.runtime.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd,
            timeout: timeout.as_secs() as i64,
        };
        let resp = bounded(
            "ExecSync",
            timeout + Duration::from_secs(10),
            r.exec_sync(req),
        )
        .await?;
        Ok((resp.exit_code, resp.stdout, resp.stderr))
    }

    /// Prepares a streaming exec; returns the URL on the runtime's streaming
    /// server where the client's upgrade request goes (single use).
    pub async fn exec(&self, req: cri::ExecRequest) -> anyhow::Result<String> {
        let mut r = self.runtime.clone();
        Ok(bounded("Exec", CALL_TIMEOUT, r.exec(req)).await?.url)
    }

    /// Prepares a streaming attach; returns the streaming server's URL.
    pub async fn attach(&self, req: cri::AttachRequest) -> anyhow::Result<String> {
        let mut r = self.runtime.clone();
        Ok(bounded("Attach", CALL_TIMEOUT, r.attach(req)).await?.url)
    }

    /// Prepares a port forward into a sandbox; returns the streaming server's URL.
    pub async fn port_forward(&self, sandbox_id: &str, ports: Vec<i32>) -> anyhow::Result<String> {
        let mut r = self.runtime.clone();
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id.into(),
            port: ports,
        };
        Ok(bounded("PortForward", CALL_TIMEOUT, r.port_forward(req))
            .await?
            .url)
    }

    /// The image's status, `None` when it is not present.
    pub async fn image_status(&self, image: &str) -> anyhow::Result<Option<cri::Image>> {
        let mut r = self.images.clone();
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(bounded("ImageStatus", CALL_TIMEOUT, r.image_status(req))
            .await?
            .image)
    }

    /// Pulls an image; returns the runtime's image reference (its id).
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox: Option<cri::PodSandboxConfig>,
    ) -> anyhow::Result<String> {
        let mut r = self.images.clone();
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                user_specified_image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: sandbox,
        };
        Ok(bounded("PullImage", PULL_TIMEOUT, r.pull_image(req))
            .await?
            .image_ref)
    }

    pub async fn list_images(&self) -> anyhow::Result<Vec<cri::Image>> {
        let mut r = self.images.clone();
        Ok(bounded(
            "ListImages",
            CALL_TIMEOUT,
            r.list_images(cri::ListImagesRequest { filter: None }),
        )
        .await?
        .images)
    }
}

/// `{io.kubernetes.pod.uid: uid}`, the filter for one pod's objects.
pub fn uid_filter(uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID_LABEL.to_string(), uid.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock"),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(socket_path("/x.sock"), PathBuf::from("/x.sock"));
        assert_eq!(socket_path("unix:/x.sock"), PathBuf::from("/x.sock"));
    }
}
