//! The in-process transport: requests from components that run inside the
//! server process (scheduler, controllers) go straight to
//! [`Server::handle`], as upstream's loopback client does in spirit, without
//! a TLS session, HTTP/2 framing and a socket in between.
//!
//! Everything after the transport is the same as for any client: the
//! caller's identity is fixed when the transport is made (instead of read
//! from a client certificate), and authorization, admission, validation,
//! the store and the watch cache see an ordinary request. The component on
//! the other end is still an API client (kube-rs's `Client` over this
//! service) and cannot tell the difference, apart from speed: on the
//! scheduler bench the TLS and HTTP/2 work on both ends of the in-process
//! connection was a tenth of the server's CPU.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tug_pki::PeerIdentity;

use crate::http::Server;

/// A tower service that serves each request in the caller's task.
#[derive(Clone)]
pub struct Loopback {
    server: Arc<Server>,
    user: PeerIdentity,
}

impl Loopback {
    /// Requests through this transport are made as `user`.
    pub fn new(server: Arc<Server>, user: PeerIdentity) -> Loopback {
        Loopback { server, user }
    }
}

impl<B> tower::Service<Request<B>> for Loopback
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let server = self.server.clone();
        let user = self.user.clone();
        Box::pin(async move { Ok(server.handle(Some(user), req.map(Body::new)).await) })
    }
}
