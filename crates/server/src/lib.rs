//! Hosting for every Ferrobank gRPC listener: the service routes plus server reflection
//! (v1 and v1alpha, so old and new grpcurl work) and the standard health service with a
//! status per service, served until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use tonic_health::ServingStatus as Serving;
pub use tonic_health::server::HealthReporter as Health;

/// Reflection for every Ferrobank proto and the health proto, both protocol versions.
pub fn add_reflection(routes: &mut RoutesBuilder) -> anyhow::Result<()> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferrobank_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the v1 reflection service")?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferrobank_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the v1alpha reflection service")?;
    routes.add_service(v1).add_service(v1alpha);
    Ok(())
}

/// Adds the health service; the returned reporter sets each service's status.
pub fn add_health(routes: &mut RoutesBuilder) -> HealthReporter {
    let (reporter, service) = tonic_health::server::health_reporter();
    routes.add_service(service);
    reporter
}

/// A generated service whose every call runs in its span
/// ([`ferrobank_telemetry::rpc_span`]), continuing the caller's trace, so one trace
/// runs gateway → service → SQL. The span is for trace export only (see
/// [`ferrobank_telemetry::EXPORT_TARGET`]).
#[derive(Clone, Debug)]
pub struct Traced<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for Traced<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Traced<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let span = ferrobank_telemetry::rpc_span(req.uri().path(), req.headers());
        self.0.call(req).instrument(span)
    }
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and its address.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} port {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Accepted connections with Nagle off. `Server::tcp_nodelay` only applies to listeners
/// tonic binds itself; with our own listener small responses would wait ~40 ms for
/// delayed ACKs.
fn nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
        })
    })
}

/// How long in-flight calls may drain after shutdown before the server stops anyway.
/// Server-streaming calls (WatchEvents) never end on their own, so draining is bounded.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Serves `routes` on `listener` until `shutdown` resolves, then drains in-flight calls
/// for at most [`DRAIN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(nodelay(listener), async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("grpc server failed"),
        () = shutdown => {
            let _ = stop.send(true);
        }
    }
    match tokio::time::timeout(DRAIN_GRACE, server).await {
        Ok(result) => result.context("grpc server failed"),
        Err(_) => {
            tracing::warn!("calls still open after the drain grace period; closing them");
            Ok(())
        }
    }
}

/// Keeps `service`'s health in step with `check` (e.g. "can I reach my database?"),
/// re-checking every `every` until the task is aborted. The service is registered as
/// NOT_SERVING before this returns, so health never answers "unknown service" for it.
pub async fn watch_health<F, Fut>(
    reporter: HealthReporter,
    service: &'static str,
    every: Duration,
    check: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    reporter
        .set_service_status(service, ServingStatus::NotServing)
        .await;
    tokio::spawn(async move {
        let mut last = Some(false);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let ok = check().await;
            if last != Some(ok) {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                if ok {
                    tracing::info!(service, "serving");
                } else {
                    tracing::warn!(service, "not serving: dependency check failed");
                }
                reporter.set_service_status(service, status).await;
                last = Some(ok);
            }
        }
    })
}

/// One generated service, boxed, for calling it in process without its listener's
/// router (see [`Started::services`]).
pub type LocalService = tower::util::BoxCloneSyncService<
    tonic::codegen::http::Request<tonic::body::Body>,
    tonic::codegen::http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// One gRPC listener's routes: reflection and health are always there; services are
/// added with [`Host::add`].
pub struct Host {
    routes: RoutesBuilder,
    health: HealthReporter,
    services: Vec<(&'static str, LocalService)>,
}

impl Host {
    /// Routes with reflection and health already in place.
    pub fn new() -> anyhow::Result<Self> {
        let mut routes = RoutesBuilder::default();
        add_reflection(&mut routes)?;
        let health = add_health(&mut routes);
        Ok(Self {
            routes,
            health,
            services: Vec::new(),
        })
    }

    /// Adds a generated tonic service; each of its calls runs in its own span
    /// ([`Traced`]).
    pub fn add<S>(&mut self, svc: S) -> &mut Self
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services
            .push((S::NAME, LocalService::new(Traced(svc.clone()))));
        self.routes.add_service(Traced(svc));
        self
    }

    /// The health reporter for this listener's services.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        serve(listener, self.routes.routes(), shutdown).await
    }

    /// The finished routes with the tasks that keep them healthy (health watchers,
    /// maintenance), which stop when the returned value is dropped.
    pub fn start(self, background: Vec<tokio::task::JoinHandle<()>>) -> Started {
        Started {
            routes: self.routes.routes(),
            services: self.services,
            background,
        }
    }
}

/// A service ready to answer: its routes (reflection and health included) and its
/// background tasks. The routes can be served on a listener and, in `ferrobank all`,
/// also called in process by the gateway; the background tasks are aborted when this
/// is dropped.
pub struct Started {
    routes: Routes,
    services: Vec<(&'static str, LocalService)>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// The service's routes, for calling it in process.
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// The generated services of [`Started::routes`] by their full names, each to be
    /// called in process without the routes' router: a caller that already routed a
    /// call by its service name (the gateway) need not match its path again. Only
    /// the services themselves: reflection and health are in the routes alone.
    pub fn services(&self) -> Vec<(&'static str, LocalService)> {
        self.services.clone()
    }

    /// Serves the routes on `listener` until `shutdown` resolves (then drains, see
    /// [`serve`]) and stops the background tasks.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        serve(listener, self.routes.clone(), shutdown).await
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}
