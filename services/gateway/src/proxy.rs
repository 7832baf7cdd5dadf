//! Forwards a gRPC call to an upstream service as raw HTTP/2: headers, message frames
//! and trailers pass through undecoded. The upstream is a network channel, or — in
//! `ferrobank all`, where the services live in the gateway's own process — the
//! service's routes called in process. A failure to reach the upstream becomes
//! UNAVAILABLE at once rather than a hang or an UNKNOWN.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrobank_proto::common::ErrorReason;
use ferrobank_server::LocalService;
use http::{Request, Response};
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::transport::server::TcpConnectInfo;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::layers::ResponseFuture;

/// Where one service's calls go: a network channel, or the service in this process.
#[derive(Clone)]
pub enum Upstream {
    /// Over the network, through `Channel`.
    Network(Channel),
    /// In this process: the call goes straight to the service (or to its routes), with
    /// no connection, HTTP/2 framing or second trip through the kernel in between.
    ///
    /// The service sees what it would see over the network — method, path, headers
    /// (the caller's token, `traceparent`, `grpc-timeout`) and the body — and none of
    /// the gateway's own request extensions, with two exceptions:
    /// - the client's connection info: the service learns the real client address,
    ///   where over the network it would see the gateway's;
    /// - [`ferrobank_auth::Vouched`]: the token's checks, made by the gateway a moment
    ///   ago with the service's own verifier, are not repeated.
    InProcess(LocalService),
}

/// Why a call could not be handed to its upstream (the connection failed).
#[derive(Debug)]
pub struct Unreachable(BoxError);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// An upstream reached over the network through `channel`.
pub fn over_network(channel: Channel) -> Upstream {
    Upstream::Network(channel)
}

/// An upstream in this process reached through its `routes`, which match the path
/// again (see [`Upstream::InProcess`]).
pub fn in_process(routes: Routes) -> Upstream {
    Upstream::InProcess(LocalService::new(routes))
}

/// One service in this process, called straight: [`Dispatch`] already matched its
/// name, so no router matches the path again (see [`Upstream::InProcess`]).
pub fn in_process_service(service: LocalService) -> Upstream {
    Upstream::InProcess(service)
}

/// The request as an in-process service gets it (see [`Upstream::InProcess`]).
fn for_in_process(req: Request<Body>) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let connection = parts.extensions.remove::<TcpConnectInfo>();
    let checked = parts.extensions.remove::<ferrobank_auth::Vouched>();
    parts.extensions = http::Extensions::new();
    if let Some(connection) = connection {
        parts.extensions.insert(connection);
    }
    if let Some(checked) = checked {
        parts.extensions.insert(checked);
    }
    Request::from_parts(parts, body)
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = Unreachable;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Unreachable>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Upstream::Network(channel) => channel
                .poll_ready(cx)
                .map_err(|err| Unreachable(err.into())),
            Upstream::InProcess(service) => service.poll_ready(cx).map_err(|never| match never {}),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self {
            Upstream::Network(channel) => {
                let fut = channel.call(req);
                Box::pin(async move { fut.await.map_err(|err| Unreachable(err.into())) })
            }
            Upstream::InProcess(service) => {
                let fut = service.call(for_in_process(req));
                // Services never fail: an unknown method is an UNIMPLEMENTED response.
                Box::pin(
                    async move { Ok(fut.await.unwrap_or_else(|never: Infallible| match never {})) },
                )
            }
        }
    }
}

/// The platform's services by name, each with its upstream.
pub type Upstreams = Arc<[(&'static str, Upstream)]>;

/// Adds [`Dispatch`].
#[derive(Clone)]
pub struct DispatchLayer {
    upstreams: Upstreams,
}

impl DispatchLayer {
    /// Sends every method of each named service (`/pkg.Service/*`) to its upstream.
    pub fn new(upstreams: Upstreams) -> Self {
        Self { upstreams }
    }
}

impl<S> Layer<S> for DispatchLayer {
    type Service = Dispatch<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Dispatch {
            inner,
            upstreams: self.upstreams.clone(),
        }
    }
}

/// The innermost step of the gateway: a call to one of the platform's services goes
/// straight to that service's upstream, by the service name in its path; anything
/// else (reflection, health, an unknown service) to the gateway's own routes. A call
/// is matched with one split and a comparison against a handful of names, and its body
/// passes through as it came, with no router or body conversion in between.
#[derive(Clone)]
pub struct Dispatch<S> {
    inner: S,
    upstreams: Upstreams,
}

impl<S> Dispatch<S> {
    fn upstream(&self, path: &str) -> Option<&Upstream> {
        let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
        self.upstreams
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, upstream)| upstream)
    }
}

impl<S> Service<Request<Body>> for Dispatch<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(upstream) = self.upstream(req.uri().path()) {
            let upstream = upstream.clone();
            return Box::pin(async move { Ok(forward(upstream, req).await) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

async fn forward(mut upstream: Upstream, req: Request<Body>) -> Response<Body> {
    let result = match upstream.ready().await {
        Ok(ready) => ready.call(req).await,
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| {
        // The call's span names the method.
        tracing::warn!(error = %err, "upstream unreachable");
        metrics::counter!("gateway_upstream_errors_total").increment(1);
        ferrobank_proto::status::error(
            tonic::Code::Unavailable,
            ErrorReason::Unavailable,
            "upstream service unavailable",
        )
        .into_http()
    })
}
