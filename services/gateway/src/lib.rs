//! The gateway: the platform's one public gRPC port. It routes each call by its service
//! path to an upstream channel without decoding the message, and serves reflection and
//! health for the whole platform.

mod proxy;
mod upstream_health;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ferrobank_config::http_uri::Uri;
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::transport::{Channel, Endpoint};

/// Where the gateway sends each domain service's calls.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Identity upstream endpoints.
    pub identity: Vec<Uri>,
    /// Ledger (and reporting) upstream endpoints.
    pub ledger: Vec<Uri>,
    /// Payments upstream endpoints.
    pub payments: Vec<Uri>,
    /// How long connecting to an upstream may take before the call fails UNAVAILABLE.
    pub connect_timeout: Duration,
    /// How often upstream health is polled.
    pub health_interval: Duration,
}

impl GatewayConfig {
    /// Upstreams from the `ferrobank gateway` flags.
    pub fn from_args(args: &ferrobank_config::UpstreamArgs) -> Self {
        Self {
            identity: args.identity_upstream.clone(),
            ledger: args.ledger_upstream.clone(),
            payments: args.payments_upstream.clone(),
            connect_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
        }
    }
}

fn channel(uris: &[Uri], connect_timeout: Duration) -> anyhow::Result<Channel> {
    let endpoints = uris
        .iter()
        .map(|uri| {
            Endpoint::from_shared(uri.as_str().to_owned())
                .with_context(|| format!("upstream {}", uri.as_str()))
                .map(|e| {
                    e.connect_timeout(connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !endpoints.is_empty(),
        "an upstream needs at least one endpoint"
    );
    if endpoints.len() == 1 {
        Ok(endpoints[0].connect_lazy())
    } else {
        Ok(Channel::balance_list(endpoints.into_iter()))
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let identity = channel(&config.identity, config.connect_timeout)?;
    let ledger = channel(&config.ledger, config.connect_timeout)?;
    let payments = channel(&config.payments, config.connect_timeout)?;

    let mut builder = RoutesBuilder::default();
    ferrobank_server::add_reflection(&mut builder)?;
    let health = ferrobank_server::add_health(&mut builder);
    let mut routes = builder.routes();

    let upstreams = [
        ("ferrobank.identity.v1.IdentityService", identity),
        ("ferrobank.ledger.v1.LedgerService", ledger.clone()),
        ("ferrobank.payments.v1.PaymentsService", payments),
        ("ferrobank.reporting.v1.ReportingService", ledger),
    ];
    for (service, channel) in &upstreams {
        proxy::route(routes.axum_router_mut(), service, channel.clone());
    }
    let poller = upstream_health::spawn(health, upstreams.to_vec(), config.health_interval).await;

    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "gateway listening");
    let result = ferrobank_server::serve(listener, routes, shutdown).await;
    poller.abort();
    result
}
