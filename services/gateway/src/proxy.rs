//! Forwards a gRPC call to an upstream service as raw HTTP/2: headers, message frames
//! and trailers pass through undecoded. The upstream is a network channel, or — in
//! `ferrobank all`, where the services live in the gateway's own process — the
//! service's routes called in process. A failure to reach the upstream becomes
//! UNAVAILABLE at once rather than a hang or an UNKNOWN.

use std::convert::Infallible;

use ferrobank_proto::common::ErrorReason;
use http::{Request, Response};
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::transport::server::TcpConnectInfo;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

/// Where one service's calls go.
pub type Upstream = BoxCloneSyncService<Request<Body>, Response<Body>, Unreachable>;

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
    BoxCloneSyncService::new(channel.map_err(|err| Unreachable(err.into())))
}

/// An upstream in this process: the call goes straight to the service's `routes`, with
/// no connection, HTTP/2 framing or second trip through the kernel in between.
///
/// The service sees what it would see over the network — method, path, headers
/// (the caller's token, `traceparent`, `grpc-timeout`) and the body — and none of the
/// gateway's own request extensions, with two exceptions:
/// - the client's connection info: the service learns the real client address, where
///   over the network it would see the gateway's;
/// - [`ferrobank_auth::RevocationChecked`]: the token's revocation lookup, made by the
///   gateway a moment ago, is not repeated.
pub fn in_process(routes: Routes) -> Upstream {
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let routes = routes.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let connection = parts.extensions.remove::<TcpConnectInfo>();
            let checked = parts
                .extensions
                .remove::<ferrobank_auth::RevocationChecked>();
            parts.extensions = http::Extensions::new();
            if let Some(connection) = connection {
                parts.extensions.insert(connection);
            }
            if let Some(checked) = checked {
                parts.extensions.insert(checked);
            }
            let response = routes.oneshot(Request::from_parts(parts, body)).await;
            // Routes never fail: an unknown method is an UNIMPLEMENTED response.
            Ok::<_, Unreachable>(response.unwrap_or_else(|never: Infallible| match never {}))
        }
    }))
}

/// Routes every method of `service` (`/pkg.Service/*`) to `upstream`.
pub fn route(router: &mut axum::Router, service: &str, upstream: Upstream) {
    let path = format!("/{service}/{{*method}}");
    let svc = tower::service_fn(move |req: Request<axum::body::Body>| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(forward(upstream, req.map(Body::new)).await) }
    });
    let taken = std::mem::take(router);
    *router = taken.route_service(&path, svc);
}

async fn forward(mut upstream: Upstream, req: Request<Body>) -> Response<Body> {
    let method = req.uri().path().to_owned();
    let result = match upstream.ready().await {
        Ok(ready) => ready.call(req).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(%method, error = %err, "upstream unreachable");
            metrics::counter!("gateway_upstream_errors_total").increment(1);
            ferrobank_proto::status::error(
                tonic::Code::Unavailable,
                ErrorReason::Unavailable,
                "upstream service unavailable",
            )
            .into_http()
        }
    }
}
