//! The gateway: the platform's one public gRPC (and gRPC-Web) port. A tower stack —
//! request ids, tracing, deadlines, load shedding, authentication, per-caller fairness,
//! Redis rate limits and idempotency, built in [`stack`] — ends in a dispatch step that
//! forwards each call by the service name in its path to that service's upstream (a
//! channel, or the service's routes in process) without decoding the message. It also
//! serves reflection and health for the whole platform.

pub mod layers;
mod methods;
mod proxy;
pub mod redis_store;
mod upstream_health;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrobank_auth::SharedAuthenticator;
use ferrobank_config::http_uri::Uri;
use ferrobank_config::{GatewayArgs, RedisFallback, RedisUrl, UpstreamArgs};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;

pub use layers::idempotency::{IDEMPOTENCY_KEY, REPLAY_HEADER};
pub use layers::rate_limit::{Batching, Rate, Rates};
pub use methods::MethodClass;
use redis_store::RedisStore;

/// Everything the gateway needs: upstreams, the authenticator, Redis and the limits.
#[derive(Clone)]
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
    /// Verifies callers of non-public methods.
    pub auth: SharedAuthenticator,
    /// Redis for shared rate limits and idempotency; `None`: in-process limits, no
    /// idempotency.
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key the gateway writes.
    pub redis_prefix: String,
    /// Bound on one Redis command.
    pub redis_timeout: Duration,
    /// What happens while Redis is unreachable.
    pub redis_fallback: RedisFallback,
    /// Deadline of a unary call that sends no `grpc-timeout`.
    pub default_timeout: Duration,
    /// Cap on a unary call's `grpc-timeout`.
    pub max_timeout: Duration,
    /// Calls in flight across the gateway before shedding.
    pub max_in_flight: usize,
    /// Calls in flight per caller.
    pub max_in_flight_per_caller: u32,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
    /// Rate limits per method class.
    pub rates: Rates,
    /// How rate-limit admissions are taken from Redis ahead of busy callers' calls.
    pub rate_batching: Batching,
    /// How long idempotent responses are kept.
    pub idempotency_ttl: Duration,
    /// Browser origins allowed to call with gRPC-Web from another origin (CORS); empty:
    /// none.
    pub cors_origins: Vec<http::HeaderValue>,
    /// The services in this process (`ferrobank all`): when set, calls go to their
    /// routes directly and the upstream URIs above are not used.
    pub in_process: Option<InProcess>,
}

/// The services' routes, for a gateway in the same process as the services.
#[derive(Clone)]
pub struct InProcess {
    /// `ferrobank.identity.v1.IdentityService`.
    pub identity: Routes,
    /// `ferrobank.ledger.v1.LedgerService` and `ferrobank.reporting.v1.ReportingService`.
    pub ledger: Routes,
    /// `ferrobank.payments.v1.PaymentsService`.
    pub payments: Routes,
    /// The services of the routes above by full name, called straight by calls the
    /// gateway routed to them (see [`ferrobank_server::Started::services`]); a service
    /// not listed is called through its routes. Health checks always go to the routes.
    pub services: Vec<(&'static str, ferrobank_server::LocalService)>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("identity", &self.identity)
            .field("ledger", &self.ledger)
            .field("payments", &self.payments)
            .field("redis_url", &self.redis_url)
            .field("redis_fallback", &self.redis_fallback)
            .field("rates", &self.rates)
            .field("rate_batching", &self.rate_batching)
            .field("in_process", &self.in_process.is_some())
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// The given upstreams and authenticator with every other setting at the
    /// documented default of [`GatewayArgs`], and no Redis.
    pub fn new(
        identity: Vec<Uri>,
        ledger: Vec<Uri>,
        payments: Vec<Uri>,
        auth: SharedAuthenticator,
    ) -> Self {
        Self {
            identity,
            ledger,
            payments,
            connect_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
            auth,
            redis_url: None,
            redis_prefix: "fb:gw:".to_owned(),
            redis_timeout: Duration::from_millis(100),
            redis_fallback: RedisFallback::Local,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            max_in_flight: 1024,
            max_in_flight_per_caller: 64,
            max_message_bytes: 4 * 1024 * 1024,
            rates: [Rate::new(6000, 200), Rate::new(1200, 50), Rate::new(30, 10)],
            rate_batching: Batching {
                max: 32,
                hold: Duration::from_millis(500),
            },
            idempotency_ttl: Duration::from_secs(24 * 3600),
            cors_origins: Vec::new(),
            in_process: None,
        }
    }

    /// From the `ferrobank gateway` flags.
    pub fn from_args(
        upstreams: &UpstreamArgs,
        args: &GatewayArgs,
        auth: SharedAuthenticator,
    ) -> Self {
        Self {
            redis_url: args.gateway_redis_url.clone(),
            redis_prefix: args.gateway_redis_prefix.clone(),
            redis_timeout: Duration::from_millis(args.gateway_redis_timeout_ms),
            redis_fallback: args.gateway_redis_fallback,
            default_timeout: Duration::from_millis(args.gateway_default_timeout_ms),
            max_timeout: Duration::from_millis(args.gateway_max_timeout_ms),
            max_in_flight: args.gateway_max_in_flight,
            max_in_flight_per_caller: args.gateway_max_in_flight_per_principal,
            max_message_bytes: args.gateway_max_message_bytes,
            rates: [
                Rate::new(args.gateway_rate_read_per_min, args.gateway_burst_read),
                Rate::new(args.gateway_rate_write_per_min, args.gateway_burst_write),
                Rate::new(args.gateway_rate_login_per_min, args.gateway_burst_login),
            ],
            rate_batching: Batching {
                max: args.gateway_rate_batch_max.max(1),
                hold: Duration::from_millis(args.gateway_rate_batch_hold_ms),
            },
            idempotency_ttl: Duration::from_secs(args.gateway_idempotency_ttl_hours * 3600),
            // Validated by the flag's parser; an origin that is not a header value
            // cannot be sent by a browser anyway.
            cors_origins: args
                .gateway_cors_origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok())
                .collect(),
            ..Self::new(
                upstreams.identity_upstream.clone(),
                upstreams.ledger_upstream.clone(),
                upstreams.payments_upstream.clone(),
                auth,
            )
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

/// CORS for gRPC-Web from `origins` (None when there are none): POST only, the
/// request headers gRPC-Web clients and Ferrobank use, and the response headers and
/// trailers-in-headers a page must be allowed to read.
fn cors(origins: &[http::HeaderValue]) -> Option<tower_http::cors::CorsLayer> {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([http::Method::POST])
            .allow_headers([
                CONTENT_TYPE,
                AUTHORIZATION,
                name("x-grpc-web"),
                name("x-user-agent"),
                name("grpc-timeout"),
                name("x-request-id"),
                name("idempotency-key"),
                name("traceparent"),
                name("tracestate"),
            ])
            .expose_headers([
                name("grpc-status"),
                name("grpc-message"),
                name("grpc-status-details-bin"),
                name("x-request-id"),
                name("x-ratelimit-limit"),
                name("x-ratelimit-remaining"),
                name("x-ratelimit-reset"),
                name(REPLAY_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The gateway's middleware, outermost first. Every layer below rescue refuses with a
/// ready gRPC response (or an error rescue maps), so nothing here ever queues a call.
pub fn stack(
    config: &GatewayConfig,
    redis: Option<Arc<RedisStore>>,
    upstreams: proxy::Upstreams,
) -> ServiceBuilder<
    impl tower::Layer<
        tonic::service::Routes,
        Service = impl tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = tower::BoxError,
            Future = impl std::future::Future + Send,
        > + Clone
                  + Send
                  + 'static,
    > + Clone,
> {
    use layers::*;
    let idempotency = idempotency::IdempotencyLayer::new(
        redis.clone(),
        config.redis_fallback,
        config.idempotency_ttl,
        // A lock outlives the longest call the gateway allows; a dropped call frees it
        // at once, a crashed gateway's lock frees itself after this.
        config.max_timeout + Duration::from_secs(5),
    );
    let limits = rate_limit::RateLimitLayer::new(
        redis,
        config.redis_fallback,
        config.rates,
        config.rate_batching,
    );
    ServiceBuilder::new()
        // CORS outermost, and only for configured origins: a browser's preflight
        // (OPTIONS) is answered here, and gRPC-Web answers carry the headers a page on
        // another origin needs to read them.
        .option_layer(cors(&config.cors_origins))
        // Anything that is not gRPC or gRPC-Web is answered with a gRPC error before
        // the gRPC-Web shim would answer it with a bare HTTP 400.
        .layer(grpc_guard::RequireGrpcLayer)
        // gRPC-Web next: a browser's call becomes a plain gRPC call before any other
        // layer looks at it, so every layer below sees one protocol.
        .layer(tonic_web::GrpcWebLayer::new())
        // Request id outermost (after the protocol shim), so every answer — shed,
        // refused, timed out — carries the id its log lines carry.
        .layer(request_id::RequestIdLayer)
        // Tracing next: the span covers everything below, sees the final status of
        // every call (refusals included) and is what metrics count.
        .layer(trace::TraceLayer)
        // Rescue maps the errors of the layers below (elapsed, overloaded, bugs) to
        // precise statuses, above them all and below the span that records the code.
        .layer(rescue::RescueLayer)
        // Oversized messages are refused before they cost anything.
        .layer(grpc_guard::GrpcGuardLayer::new(config.max_message_bytes))
        // The deadline covers all the work below, Redis round trips included, and is
        // forwarded upstream so the service stops when the gateway does. Every layer
        // above calls on synchronously, so its timer starts before tonic's server arms
        // its own for the same client deadline (after the call returns) and fires no
        // later: the client gets the gateway's DEADLINE_EXCEEDED, not tonic's CANCELLED.
        .layer(deadline::DeadlineLayer::new(
            config.default_timeout,
            config.max_timeout,
        ))
        // Global shedding before authentication: an overload is refused before it
        // costs a token check or a Redis call.
        .layer(shed::ShedLayer::new(config.max_in_flight))
        // Authentication decides who the caller is; everything below is per caller.
        // While it asks Redis whether the token was revoked, it asks for the caller's
        // rate-limit decision too, so the call waits for one round trip, not two.
        .layer(auth::AuthLayer::new(config.auth.clone()).with_limits(limits.clone()))
        // Per-caller fairness: one caller's flood cannot take everyone's slots.
        .layer(fairness::FairnessLayer::new(
            config.max_in_flight_per_caller,
        ))
        // Rate limits (one EVALSHA, taken ahead by authentication for signed-in
        // callers) applied before idempotency, so replays are counted and a refused
        // call never takes an idempotency lock.
        .layer(limits)
        // Idempotency buffers only keyed mutations, right before the upstream.
        .layer(idempotency)
        // Innermost: calls to the platform's services go to their upstream; the
        // gateway's own routes answer reflection, health and unknown services.
        .layer(proxy::DispatchLayer::new(upstreams))
}

/// Serves the gateway on `listener` until `shutdown` resolves.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (identity, ledger, payments) = match &config.in_process {
        Some(local) => (
            proxy::in_process(local.identity.clone()),
            proxy::in_process(local.ledger.clone()),
            proxy::in_process(local.payments.clone()),
        ),
        None => (
            proxy::over_network(channel(&config.identity, config.connect_timeout)?),
            proxy::over_network(channel(&config.ledger, config.connect_timeout)?),
            proxy::over_network(channel(&config.payments, config.connect_timeout)?),
        ),
    };

    let mut builder = RoutesBuilder::default();
    ferrobank_server::add_reflection(&mut builder)?;
    let health = ferrobank_server::add_health(&mut builder);
    let routes = builder.routes();

    let health_targets = [
        ("ferrobank.identity.v1.IdentityService", identity),
        ("ferrobank.ledger.v1.LedgerService", ledger.clone()),
        ("ferrobank.payments.v1.PaymentsService", payments),
        ("ferrobank.reporting.v1.ReportingService", ledger),
    ];
    // Calls go straight to an in-process service where there is one; health checks go
    // to the routes, which serve health.
    let local = config
        .in_process
        .as_ref()
        .map_or(&[][..], |l| &l.services[..]);
    let upstreams: proxy::Upstreams = health_targets
        .iter()
        .map(|(name, upstream)| {
            let direct = local.iter().find(|(n, _)| n == name);
            let upstream = match direct {
                Some((_, service)) => proxy::in_process_service(service.clone()),
                None => upstream.clone(),
            };
            (*name, upstream)
        })
        .collect();
    let poller =
        upstream_health::spawn(health, health_targets.to_vec(), config.health_interval).await;

    let redis = match &config.redis_url {
        Some(url) => Some(Arc::new(RedisStore::new(
            url,
            &config.redis_prefix,
            config.redis_timeout,
        )?)),
        None => {
            tracing::warn!(
                "gateway has no Redis: rate limits are per replica and idempotency is off"
            );
            None
        }
    };

    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, redis = redis.is_some(), in_process = config.in_process.is_some(), "gateway listening");
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself. The gateway
    // writes response headers, messages and trailers as they arrive from upstream, so
    // with Nagle on, a client's delayed ACK stalls each call by ~40 ms.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let result = tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(stack(&config, redis, upstreams))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gateway server failed");
    poller.abort();
    result
}
