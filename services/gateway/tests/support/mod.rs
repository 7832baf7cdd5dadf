//! Test harness shared by the gateway's tests and bench: an in-process upstream
//! (`LedgerService` with a test implementation that echoes request metadata and can
//! hold a call in flight) and a gateway in front of it on port 0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrobank_auth::{DEV_PRINCIPAL_HEADER, DevHeaderAuthenticator};
use ferrobank_gateway::GatewayConfig;
use ferrobank_gateway::layers::auth::Caller;
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::ledger_service_server::{LedgerService, LedgerServiceServer};
use ferrobank_proto::ledger::{
    Account, CreateTransferRequest, CreateTransferResponse, GetAccountRequest, GetAccountResponse,
    Transfer,
};
use opentelemetry::trace::{Tracer, TracerProvider as _};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// A transfer of this amount is held in flight until the test releases it.
pub const HOLD_AMOUNT: i64 = 999;

/// Request metadata the upstream echoes back as `echo-<name>` response metadata.
const ECHOED: [&str; 5] = [
    "x-request-id",
    "authorization",
    DEV_PRINCIPAL_HEADER,
    "grpc-timeout",
    "traceparent",
];

/// The test upstream's shared state.
#[derive(Clone)]
pub struct TestLedger {
    /// CreateTransfer calls executed.
    pub transfers: Arc<AtomicUsize>,
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl TestLedger {
    fn echo<T>(request: &Request<T>, response: &mut Response<impl Sized>) {
        // Whether the gateway's own request state reached the service (it must not:
        // a service sees what the wire carries).
        if request.extensions().get::<Caller>().is_some() {
            response
                .metadata_mut()
                .insert("echo-gateway-state", "leaked".parse().expect("ascii"));
        }
        if ferrobank_auth::Vouched::covers(request.extensions(), request.metadata()) {
            response
                .metadata_mut()
                .insert("echo-vouched", "vouched".parse().expect("ascii"));
        }
        for name in ECHOED {
            if let Some(value) = request.metadata().get(name) {
                let key = format!("echo-{name}");
                if let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) {
                    response.metadata_mut().insert(key, value.clone());
                }
            }
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[tonic::async_trait]
impl LedgerService for TestLedger {
    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        // The service's own span, a child of whatever trace the gateway sent.
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&MetadataExtractor(request.metadata()))
        });
        let span = opentelemetry::global::tracer_provider()
            .tracer("test-ledger")
            .start_with_context("ledger.GetAccount", &parent);
        drop(span);
        let mut response = Response::new(GetAccountResponse {
            account: Some(Account {
                id: request.get_ref().account_id.clone(),
                ..Account::default()
            }),
        });
        Self::echo(&request, &mut response);
        Ok(response)
    }

    async fn create_transfer(
        &self,
        request: Request<CreateTransferRequest>,
    ) -> Result<Response<CreateTransferResponse>, Status> {
        let n = self.transfers.fetch_add(1, Ordering::SeqCst) + 1;
        let amount = request.get_ref().transfer.as_ref().map_or(0, |t| t.amount);
        if amount == HOLD_AMOUNT {
            let _ = self.entered.send(());
            let permit = self
                .release
                .acquire()
                .await
                .map_err(|_| Status::aborted("closed"))?;
            permit.forget();
        }
        let mut response = Response::new(CreateTransferResponse {
            transfer: Some(Transfer {
                id: format!("transfer-{n}-{}", Uuid::new_v4()),
                ..Transfer::default()
            }),
            ..CreateTransferResponse::default()
        });
        Self::echo(&request, &mut response);
        Ok(response)
    }
}

/// A running upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub ledger: TestLedger,
    /// Receives one `()` per held call when it is in flight.
    pub entered: mpsc::UnboundedReceiver<()>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// CreateTransfer calls that reached the upstream.
    pub fn transfers(&self) -> usize {
        self.ledger.transfers.load(Ordering::SeqCst)
    }

    /// Serves the test ledger on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let ledger = TestLedger {
            transfers: Arc::default(),
            entered: entered_tx,
            release: Arc::new(Semaphore::new(0)),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let service = LedgerServiceServer::new(ledger.clone());
        // Nagle off on accepted sockets, as every Ferrobank listener has it (see
        // `ferrobank_server`): else a response now and then waits ~40 ms for a delayed
        // ACK, which the overhead bench would charge to whoever called.
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            accepted.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            ledger,
            entered,
            _stop: stop,
        }
    }

    /// The upstream's routes, for a gateway that calls it in process.
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(LedgerServiceServer::new(self.ledger.clone()))
    }

    /// Lets `n` held calls finish.
    pub fn release(&self, n: usize) {
        self.ledger.release.add_permits(n);
    }
}

/// A running gateway.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// The gateway configuration tests start from: every upstream is the test upstream,
/// dev-header authentication, Redis from the test stack under a fresh prefix.
pub async fn config(upstream: SocketAddr) -> GatewayConfig {
    let uri: ferrobank_config::http_uri::Uri =
        format!("http://{upstream}").parse().expect("upstream uri");
    let mut config = GatewayConfig::new(
        vec![uri.clone()],
        vec![uri.clone()],
        vec![uri],
        Arc::new(DevHeaderAuthenticator),
    );
    config.redis_url = Some(ferrobank_testkit::env().await.redis_url());
    config.redis_prefix = ferrobank_testkit::redis_prefix();
    config
}

impl Gateway {
    /// Serves a gateway with `config` on 127.0.0.1:0.
    pub async fn start(config: GatewayConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(ferrobank_gateway::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Self { addr, _stop: stop }
    }

    /// A ledger client through this gateway.
    pub async fn ledger(&self) -> LedgerServiceClient<Channel> {
        LedgerServiceClient::new(self.channel().await)
    }

    /// A channel to this gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("gateway uri")
            .connect()
            .await
            .expect("connect to the gateway")
    }
}

/// `msg` as a request from customer `user`.
pub fn as_user<T>(user: Uuid, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request.metadata_mut().insert(
        DEV_PRINCIPAL_HEADER,
        format!("customer:{user}").parse().expect("ascii"),
    );
    request
}

/// A GetAccount request from `user`.
pub fn get_account(user: Uuid) -> Request<GetAccountRequest> {
    as_user(
        user,
        GetAccountRequest {
            account_id: "acc-1".into(),
        },
    )
}

/// A CreateTransfer request from `user` for `amount`, with an idempotency key if given.
pub fn create_transfer(
    user: Uuid,
    amount: i64,
    key: Option<&str>,
) -> Request<CreateTransferRequest> {
    let mut request = as_user(
        user,
        CreateTransferRequest {
            request_id: "req-1".into(),
            transfer: Some(ferrobank_proto::ledger::TransferSpec {
                debit_account_id: "a".into(),
                credit_account_id: "b".into(),
                amount,
                currency_code: "USD".into(),
                ..Default::default()
            }),
        },
    );
    if let Some(key) = key {
        request.metadata_mut().insert(
            ferrobank_gateway::IDEMPOTENCY_KEY,
            key.parse().expect("ascii"),
        );
    }
    request
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &Status) -> String {
    ferrobank_proto::status::reason(status).unwrap_or_default()
}
