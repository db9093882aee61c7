//! `GET /containerLogs/{ns}/{pod}/{container}`: container logs read from
//! the runtime's CRI log files.
//!
//! The runtime writes one file per container instance (the sandbox's log
//! directory joined with the container's `log_path`, see
//! [`crate::spec::log_path`]), one entry a line:
//! `<RFC 3339 time> <stdout|stderr> <P|F> <text>`, where `P` marks a
//! partial line (a long line split by the runtime, continued by the next
//! entry) and `F` a full one. Which instance is read follows upstream's
//! `validateContainerLogStatus`: the container ID of the pod status (the
//! running or terminated container, else the last terminated one), or with
//! `previous=true` the last terminated one; the errors are upstream's.
//!
//! Query: `follow`, `previous`, `timestamps`, `tailLines`, `sinceSeconds`,
//! `sinceTime`, `limitBytes`. With `follow` the file is polled for new
//! entries until the container stops or the client goes away.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header;
use hyper::Response;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;
use tug_httpstream::{Body, BoxError, parse_bool};

use crate::Agent;
use crate::cri::{self, v1 as c};
use crate::server::{HttpError, has_container, node_pod};

/// How often a followed log file is polled for new entries.
const POLL: Duration = Duration::from_millis(100);
/// Every this many idle polls, whether the container still runs is checked.
const CHECK_EVERY: u32 = 10;
/// Output is sent in pieces of about this size while more is at hand, and
/// as soon as the file has no more.
const CHUNK: usize = 32 * 1024;

/// What the client asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// The last this many lines only (`None`: all).
    pub tail_lines: Option<u64>,
    /// Entries from this time on only (`sinceSeconds` or `sinceTime`).
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the query; a value that does not parse is an error (400).
    pub fn parse(q: &[(String, String)], now: Timestamp) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in q {
            let bool_of = |v: &str| parse_bool(v).ok_or_else(|| format!("{k}: invalid boolean {v:?}"));
            let int_of = |v: &str| v.parse::<i64>().map_err(|_| format!("{k}: invalid integer {v:?}"));
            match k.as_str() {
                "follow" => o.follow = bool_of(v)?,
                "previous" => o.previous = bool_of(v)?,
                "timestamps" => o.timestamps = bool_of(v)?,
                // Negative: everything (upstream's -1).
                "tailLines" => o.tail_lines = u64::try_from(int_of(v)?).ok(),
                "limitBytes" => o.limit_bytes = u64::try_from(int_of(v)?).ok().filter(|n| *n > 0),
                "sinceSeconds" => {
                    let s = int_of(v)?;
                    if s > 0 {
                        o.since = now.checked_sub(SignedDuration::from_secs(s)).ok();
                    }
                }
                "sinceTime" => {
                    o.since = Some(v.parse().map_err(|e| format!("sinceTime: invalid time {v:?}: {e}"))?);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// Answers a log request: the response head now, the entries as a stream.
pub async fn serve(
    agent: Arc<Agent>,
    ns: &str,
    pod_name: &str,
    container: &str,
    query: &[(String, String)],
) -> Result<Response<Body>, HttpError> {
    let opts = LogOptions::parse(query, Timestamp::now()).map_err(HttpError::bad_request)?;
    let pod = node_pod(&agent, ns, pod_name).await?;
    if !has_container(&pod, container) {
        return Err(HttpError::not_found(format!("container {container:?} not found in pod {pod_name:?}")));
    }
    let id = log_container_id(&pod, container, opts.previous).map_err(HttpError::bad_request)?;
    let status = agent.cri.container_status(&id).await.map_err(|e| {
        if cri::is_not_found(&e) {
            HttpError::not_found(format!("container {container:?} in pod {pod_name:?} is gone: {e}"))
        } else {
            HttpError::internal(e.to_string())
        }
    })?;
    if status.log_path.is_empty() {
        return Err(HttpError::internal(format!("the runtime reports no log file for container {container:?}")));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let running = move || {
        let (agent, id) = (agent.clone(), id.clone());
        async move { running(&agent, &id).await }
    };
    tokio::spawn(copy(PathBuf::from(status.log_path), opts, tx, running));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(StreamBody::new(frames).boxed())
        .expect("a header makes a valid response"))
}

/// The runtime's ID in a status `containerID` (`containerd://<id>`).
fn runtime_id(container_id: Option<&String>) -> Option<String> {
    let s = container_id?.as_str();
    let id = s.split_once("://").map(|(_, id)| id).unwrap_or(s);
    (!id.is_empty()).then(|| id.to_string())
}

/// Which container instance's log to read, from the pod status (upstream's
/// `validateContainerLogStatus`, with its messages).
pub fn log_container_id(pod: &Pod, name: &str, previous: bool) -> Result<String, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let cs = pod.status.iter().find_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
            .find(|c| c.name == name)
    });
    let Some(cs) = cs else {
        return Err(format!("container {name:?} in pod {pod_name:?} is not available"));
    };
    let state = cs.state.clone().unwrap_or_default();
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let terminated_msg = || format!("container {name:?} in pod {pod_name:?} is terminated");
    if previous {
        return last
            .and_then(|t| runtime_id(t.container_id.as_ref()))
            .ok_or_else(|| format!("previous terminated container {name:?} in pod {pod_name:?} not found"));
    }
    if state.running.is_some() {
        return runtime_id(cs.container_id.as_ref())
            .ok_or_else(|| format!("container {name:?} in pod {pod_name:?} is waiting to start - no logs yet"));
    }
    if let Some(t) = &state.terminated {
        return runtime_id(t.container_id.as_ref())
            .or_else(|| last.and_then(|l| runtime_id(l.container_id.as_ref())))
            .ok_or_else(terminated_msg);
    }
    if let Some(l) = last {
        return runtime_id(l.container_id.as_ref()).ok_or_else(terminated_msg);
    }
    Err(match state.waiting.as_ref().and_then(|w| w.reason.as_deref()) {
        Some("ErrImagePull") => format!("container {name:?} in pod {pod_name:?} is waiting to start: image can't be pulled"),
        Some("ImagePullBackOff") => {
            format!("container {name:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image")
        }
        Some(reason) => format!("container {name:?} in pod {pod_name:?} is waiting to start: {reason}"),
        None => format!("container {name:?} in pod {pod_name:?} is waiting to start - no logs yet"),
    })
}

/// One CRI log entry: (time, full line, text).
fn parse_entry(line: &[u8]) -> Option<(&str, bool, &[u8])> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    let partial = tag.split(|b| *b == b':').any(|t| t == b"P");
    Some((time, !partial, text))
}

/// The output for one file line, or `None` when it is skipped (malformed,
/// or older than `since`).
fn render(line: &[u8], opts: &LogOptions) -> Option<Vec<u8>> {
    let (time, full, text) = parse_entry(line)?;
    if let Some(since) = opts.since {
        let t: Timestamp = time.parse().ok()?;
        if t < since {
            return None;
        }
    }
    let mut out = Vec::with_capacity(time.len() + text.len() + 2);
    if opts.timestamps {
        out.extend_from_slice(time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(text);
    if full {
        out.push(b'\n');
    }
    Some(out)
}

/// Where the last `n` lines of the file begin.
fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let (mut end, mut seen) = (len, 0u64);
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            let pos = start + i as u64;
            // The file's last newline ends its last line; each earlier one
            // starts a line after it.
            if *b == b'\n' && pos + 1 != len {
                seen += 1;
                if seen == n {
                    return Ok(pos + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

async fn running(agent: &Agent, id: &str) -> bool {
    match agent.cri.container_status(id).await {
        Ok(s) => s.state == c::ContainerState::ContainerRunning as i32,
        Err(_) => false,
    }
}

/// Sends the log entries to `tx` until the end of the file (or, following,
/// until `running` says the container stopped and everything it wrote was
/// sent), the byte limit, or the client leaving.
async fn copy<F, Fut>(path: PathBuf, opts: LogOptions, tx: mpsc::Sender<Bytes>, running: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let file = loop {
        match tokio::fs::File::open(&path).await {
            Ok(f) => break f,
            // Not written yet: wait while the container runs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.follow && !tx.is_closed() && running().await => {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "opening a container log failed");
                }
                return;
            }
        }
    };
    let mut reader = BufReader::new(file);
    if let Some(n) = opts.tail_lines {
        let p = path.clone();
        let offset = match tokio::task::spawn_blocking(move || tail_offset(&p, n)).await {
            Ok(Ok(o)) => o,
            _ => return,
        };
        if reader.seek(SeekFrom::Start(offset)).await.is_err() {
            return;
        }
    }
    let mut remaining = opts.limit_bytes;
    let mut line = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut idle, mut stopped) = (0u32, false);
    // Sends what is pending; false when the client is gone.
    async fn flush(tx: &mpsc::Sender<Bytes>, pending: &mut Vec<u8>) -> bool {
        pending.is_empty() || tx.send(Bytes::from(std::mem::take(pending))).await.is_ok()
    }
    loop {
        match reader.read_until(b'\n', &mut line).await {
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading a container log failed");
                flush(&tx, &mut pending).await;
                return;
            }
            Ok(_) if line.ends_with(b"\n") => {
                idle = 0;
                if let Some(mut out) = render(&line, &opts) {
                    let mut last = false;
                    if let Some(r) = remaining.as_mut() {
                        if out.len() as u64 >= *r {
                            out.truncate(*r as usize);
                            last = true;
                        }
                        *r -= out.len() as u64;
                    }
                    pending.extend_from_slice(&out);
                    if last {
                        flush(&tx, &mut pending).await;
                        return;
                    }
                    if pending.len() >= CHUNK && !flush(&tx, &mut pending).await {
                        return;
                    }
                }
                line.clear();
            }
            // The end of what is written so far (maybe inside a line).
            Ok(_) => {
                if !flush(&tx, &mut pending).await || !opts.follow || stopped || tx.is_closed() {
                    return;
                }
                idle += 1;
                if idle % CHECK_EVERY == 0 && !running().await {
                    // Read once more: what it wrote before it stopped.
                    stopped = true;
                    continue;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        let o = LogOptions::parse(
            &q(&[("follow", "true"), ("tailLines", "3"), ("limitBytes", "10"), ("sinceSeconds", "60"), ("timestamps", "1")]),
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        assert_eq!(o.since, Some("2024-05-01T09:59:00Z".parse().unwrap()));
        let o = LogOptions::parse(&q(&[("tailLines", "-1"), ("sinceTime", "2024-05-01T08:00:00Z")]), now).unwrap();
        assert_eq!(o.tail_lines, None);
        assert_eq!(o.since, Some("2024-05-01T08:00:00Z".parse().unwrap()));
        assert!(LogOptions::parse(&q(&[("tailLines", "x")]), now).is_err());
        assert!(LogOptions::parse(&q(&[("follow", "maybe")]), now).is_err());
        assert!(LogOptions::parse(&q(&[("sinceTime", "yesterday")]), now).is_err());
    }

    #[test]
    fn entries() {
        let o = LogOptions::default();
        assert_eq!(render(b"2024-05-01T10:00:00.5Z stdout F hello world\n", &o).unwrap(), b"hello world\n");
        assert_eq!(render(b"2024-05-01T10:00:00.5Z stderr P part\n", &o).unwrap(), b"part");
        assert_eq!(render(b"2024-05-01T10:00:00.5Z stdout F \n", &o).unwrap(), b"\n");
        assert_eq!(render(b"2024-05-01T10:00:00.5Z stdout F\n", &o).unwrap(), b"\n");
        assert!(render(b"garbage\n", &o).is_none());
        let ts = LogOptions { timestamps: true, ..Default::default() };
        assert_eq!(
            render(b"2024-05-01T10:00:00.5+02:00 stdout F x\n", &ts).unwrap(),
            b"2024-05-01T10:00:00.5+02:00 x\n"
        );
        let since = LogOptions { since: Some("2024-05-01T10:00:00Z".parse().unwrap()), ..Default::default() };
        assert!(render(b"2024-05-01T09:59:59.999Z stdout F old\n", &since).is_none());
        assert!(render(b"2024-05-01T12:00:00+02:00 stdout F same instant\n", &since).is_some());
        assert!(render(b"not-a-time stdout F x\n", &since).is_none());
    }

    #[test]
    fn tails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 0).unwrap(), 9);
        assert_eq!(tail_offset(&p, 1).unwrap(), 5);
        assert_eq!(tail_offset(&p, 2).unwrap(), 2);
        assert_eq!(tail_offset(&p, 3).unwrap(), 0);
        assert_eq!(tail_offset(&p, 10).unwrap(), 0);
        std::fs::write(&p, "a\nbb\npartial").unwrap();
        assert_eq!(tail_offset(&p, 1).unwrap(), 5);
        // Longer than one read.
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &big).unwrap();
        let off = tail_offset(&p, 2).unwrap() as usize;
        assert_eq!(&big[off..], "line 19998\nline 19999\n");
        assert!(tail_offset(&dir.path().join("missing"), 1).is_err());
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    fn log_file(lines: &[&str]) -> String {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("2024-05-01T10:00:{i:02}.000000001Z stdout F {l}\n"))
            .collect()
    }

    #[tokio::test]
    async fn copies_tail_limit_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut content = log_file(&["a", "b", "c"]);
        content.push_str("2024-05-01T10:00:09Z stdout P par\n2024-05-01T10:00:09Z stdout F tial\n");
        std::fs::write(&p, content).unwrap();
        let run = |opts: LogOptions| {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(copy(p.clone(), opts, tx, || async { false }));
            collect(rx)
        };
        assert_eq!(run(LogOptions::default()).await, "a\nb\nc\npartial\n");
        let tail = LogOptions { tail_lines: Some(3), ..Default::default() };
        assert_eq!(run(tail).await, "c\npartial\n");
        let limit = LogOptions { limit_bytes: Some(3), ..Default::default() };
        assert_eq!(run(limit).await, "a\nb");
        let since = LogOptions { since: Some("2024-05-01T10:00:01Z".parse().unwrap()), ..Default::default() };
        assert_eq!(run(since).await, "b\nc\npartial\n");
        // A missing file is an empty log unless following a running container.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(copy(dir.path().join("none.log"), LogOptions::default(), tx, || async { true }));
        assert_eq!(collect(rx).await, "");
    }

    #[tokio::test]
    async fn follows_until_the_container_stops() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let flag = alive.clone();
        let follow = LogOptions { follow: true, ..Default::default() };
        let task = tokio::spawn(copy(p.clone(), follow, tx, move || {
            let flag = flag.clone();
            async move { flag.load(Ordering::SeqCst) }
        }));
        // The file appears after the request, and grows.
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(&p, log_file(&["one"])).unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("one\n"));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        use std::io::Write;
        // Half a line first: nothing is sent until it is complete.
        f.write_all(b"2024-05-01T10:00:05Z stdout F tw").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err());
        f.write_all(b"o\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("two\n"));
        // The container stops after a last line: that line still comes, then the end.
        f.write_all(b"2024-05-01T10:00:06Z stdout F three\n").unwrap();
        alive.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "three\n");
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stops_when_the_client_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, log_file(&["x"])).unwrap();
        let (tx, rx) = mpsc::channel(4);
        let follow = LogOptions { follow: true, ..Default::default() };
        let task = tokio::spawn(copy(p, follow, tx, || async { true }));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn which_container() {
        let running = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
            "containerID": "containerd://new", "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 3, "containerID": "containerd://old"}},
        }]}));
        assert_eq!(log_container_id(&running, "c", false).unwrap(), "new");
        assert_eq!(log_container_id(&running, "c", true).unwrap(), "old");
        assert_eq!(log_container_id(&running, "x", false).unwrap_err(), "container \"x\" in pod \"p\" is not available");

        let backoff = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 3, "containerID": "containerd://old"}},
        }]}));
        assert_eq!(log_container_id(&backoff, "c", false).unwrap(), "old");

        let pulling = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff"}},
        }]}));
        assert_eq!(
            log_container_id(&pulling, "c", false).unwrap_err(),
            "container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image"
        );
        assert_eq!(
            log_container_id(&pulling, "c", true).unwrap_err(),
            "previous terminated container \"c\" in pod \"p\" not found"
        );
        let creating = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]}));
        assert_eq!(
            log_container_id(&creating, "c", false).unwrap_err(),
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        let done = pod(serde_json::json!({"initContainerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "containerID": "containerd://init"}},
        }]}));
        assert_eq!(log_container_id(&done, "c", false).unwrap(), "init");
    }
}
