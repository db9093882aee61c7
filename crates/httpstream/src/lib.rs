//! Streaming through HTTP proxies: what the API server and the kubelet
//! share to carry `exec`, `attach`, `port-forward` and log streams (the part
//! of upstream's `apimachinery/pkg/util/proxy` UpgradeAwareHandler Tugboat
//! needs).
//!
//! [`proxy_upgrade`] forwards an HTTP/1.1 upgrade request (SPDY/3.1 or
//! WebSocket) to a backend over a connection the caller dialled (TLS to a
//! kubelet, plain TCP to the runtime's streaming server). When the backend
//! switches protocols, the client gets the backend's `101` with its headers
//! and, once both sides are upgraded, bytes are copied both ways untouched:
//! the protocol spoken inside is negotiated end to end by the client and the
//! backend. When the backend refuses (any other status), its response is
//! relayed as is, so the client sees exactly the backend's failed upgrade
//! (kubectl's WebSocket-to-SPDY fallback depends on that).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or request body of any origin (a buffer, a relayed body, a stream).
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e: Infallible| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

/// A relayed hyper body.
pub fn relay(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// Whether `headers` ask for a protocol upgrade: a `Connection` header
/// listing `upgrade` and a non-empty `Upgrade` header (upstream's
/// `httpstream.IsUpgradeRequest`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.get(header::UPGRADE).is_some_and(|v| !v.is_empty())
}

/// Request headers never passed to a backend: the client's own credentials
/// are for this hop only (the backend authenticates the proxy), and the
/// forwarded request has no body (an upgrade request's body, if any, is
/// not relayed), so no body framing either.
const DROPPED: &[header::HeaderName] = &[
    header::HOST,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Sends `req` on a fresh HTTP/1.1 connection over `io` and returns the
/// response head; the connection lives (in a task) until the response body
/// is consumed or dropped. `req`'s URI must be in origin form (path and
/// query); set `Host` on it.
pub async fn send<IO>(io: IO, req: Request<Body>) -> Result<Response<Incoming>, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    sender.send_request(req).await
}

/// Proxies the upgrade request `req` to `path_and_query` on the backend at
/// the other end of `io` (`authority` becomes its `Host`). Returns the
/// response for the client: the backend's `101 Switching Protocols` (after
/// which a task copies bytes both ways until both sides close), or the
/// backend's refusal relayed as is.
pub async fn proxy_upgrade<IO, B>(
    mut req: Request<B>,
    io: IO,
    authority: &str,
    path_and_query: &str,
) -> Result<Response<Body>, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut backend_req = Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .body(empty())
        .expect("a method and an origin-form URI make a valid request");
    let headers = backend_req.headers_mut();
    for (name, value) in req.headers() {
        if !DROPPED.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, host);
    }
    let mut resp = send(io, backend_req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(relay));
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded stream closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded stream ended with an error"),
        }
    });
    Ok(Response::from_parts(parts, empty()))
}

/// The query's `key=value` pairs in order, repeated keys kept (exec's
/// `command` is one parameter per argument), decoded like Go's
/// `url.ParseQuery` (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes `pairs` as a query string like Go's `url.Values.Encode` (without
/// its sorting: the order given is kept, so repeated keys stay in order).
pub fn encode_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let esc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for &c in s.as_bytes() {
            match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(c as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{c:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k.as_ref()), esc(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `strconv.ParseBool` truths (`1`, `t`, `true`, ...), what upstream
/// accepts for `stdin=`, `follow=` and the like.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = query_pairs(Some("command=sh&command=-c&command=echo+hi%3B+exit+3&stdout=true&bad=%zz&x"));
        assert_eq!(
            q,
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".into(), "-c".into()),
                ("command".into(), "echo hi; exit 3".into()),
                ("stdout".into(), "true".into()),
                ("bad".into(), "%zz".into()),
                ("x".into(), "".into()),
            ]
        );
        let cmd = [("command", "sh"), ("command", "echo a&b=c; ü")];
        let encoded = encode_query(&cmd);
        assert_eq!(encoded, "command=sh&command=echo+a%26b%3Dc%3B+%C3%BC");
        assert_eq!(
            query_pairs(Some(&encoded)),
            cmd.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
        );
        assert_eq!(query_pairs(Some("a=%4")), vec![("a".to_string(), "%4".to_string())]);
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn upgrade_requests() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(!is_upgrade_request(&h), "no Upgrade header");
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade_request(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_upgrade_request(&h));
    }
}

#[cfg(test)]
mod proxy_tests {
    use std::convert::Infallible;

    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A backend that switches to an echo protocol, or refuses when asked.
    async fn backend() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    if req.headers().contains_key("x-refuse") {
                        return Ok::<_, Infallible>(Response::builder().status(403).body(full("refused by backend")).unwrap());
                    }
                    let saw = format!(
                        "{} {} host={} auth={}",
                        req.method(),
                        req.uri(),
                        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
                        req.headers().contains_key(header::AUTHORIZATION)
                    );
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(on.await.unwrap());
                        let mut buf = [0u8; 64];
                        loop {
                            let n = io.read(&mut buf).await.unwrap();
                            if n == 0 {
                                break;
                            }
                            io.write_all(&buf[..n]).await.unwrap();
                        }
                    });
                    Ok(Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header(header::CONNECTION, "Upgrade")
                        .header(header::UPGRADE, "echo")
                        .header("x-saw", saw)
                        .body(empty())
                        .unwrap())
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).with_upgrades());
            }
        });
        addr
    }

    /// A proxy sending every request to `/backend?x=1` on `backend`.
    async fn proxy(backend: String) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let backend = backend.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let backend = backend.clone();
                    async move {
                        let io = TcpStream::connect(&backend).await.unwrap();
                        Ok::<_, hyper::Error>(proxy_upgrade(req, io, &backend, "/backend?x=1").await.unwrap())
                    }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).with_upgrades());
            }
        });
        addr
    }

    async fn read_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "connection closed in the head: {head:?}");
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn upgrades_are_proxied_and_refusals_relayed() {
        let proxy = proxy(backend().await).await;

        let mut s = TcpStream::connect(&proxy).await.unwrap();
        s.write_all(b"POST /front HTTP/1.1\r\nHost: front\r\nAuthorization: Bearer secret\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await.to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        let backend_host = head.lines().find(|l| l.starts_with("x-saw:")).unwrap().to_string();
        assert!(backend_host.contains("post /backend?x=1 host=127.0.0.1:"), "{backend_host}");
        assert!(backend_host.ends_with("auth=false"), "the client's credentials reached the backend: {backend_host}");
        for msg in [&b"hello"[..], b"world"] {
            s.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
        }
        // Closing our side ends the backend's echo loop and the stream.
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());

        let mut s = TcpStream::connect(&proxy).await.unwrap();
        s.write_all(b"GET /front HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Refuse: 1\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let mut body = vec![0u8; "refused by backend".len()];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"refused by backend");
    }
}
