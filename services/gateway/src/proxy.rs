//! Forwards a gRPC call to an upstream channel as raw HTTP/2: headers, message frames
//! and trailers pass through undecoded. A failure to reach the upstream becomes
//! UNAVAILABLE at once rather than a hang or an UNKNOWN.

use std::convert::Infallible;

use ferrobank_proto::common::ErrorReason;
use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// Routes every method of `service` (`/pkg.Service/*`) to `channel`.
pub fn route(router: &mut axum::Router, service: &str, channel: Channel) {
    let path = format!("/{service}/{{*method}}");
    let svc = tower::service_fn(move |req: Request<axum::body::Body>| {
        let channel = channel.clone();
        async move { Ok::<_, Infallible>(forward(channel, req.map(Body::new)).await) }
    });
    let taken = std::mem::take(router);
    *router = taken.route_service(&path, svc);
}

async fn forward(mut channel: Channel, req: Request<Body>) -> Response<Body> {
    let method = req.uri().path().to_owned();
    let result = match channel.ready().await {
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
