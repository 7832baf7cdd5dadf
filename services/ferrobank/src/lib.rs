//! Composition of the platform for `ferrobank all` and the end-to-end tests: every
//! service on its own listener, the gateway in front (calling the services in process
//! by default, or over their ports), one shutdown signal for all.

use std::net::SocketAddr;

use anyhow::Context;
use ferrobank_config::{DatabaseSettings, GatewayUpstreams, http_uri::Uri};
use ferrobank_gateway::GatewayConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Everything `ferrobank all` needs.
#[derive(Clone, Debug)]
pub struct PlatformConfig {
    /// Listen addresses (port 0 picks free ports, as tests do).
    pub listen: ferrobank_config::ListenArgs,
    /// Identity's database.
    pub identity: DatabaseSettings,
    /// The ledger's databases.
    pub ledger: DatabaseSettings,
    /// Payments' database.
    pub payments: DatabaseSettings,
    /// How services authenticate callers.
    pub auth: ferrobank_config::AuthArgs,
    /// The gateway's layers (Redis, limits, timeouts); defaults without Redis when unset.
    pub gateway: Option<ferrobank_config::GatewayArgs>,
}

/// The authenticator the configuration asks for: the dev header only when explicitly
/// enabled, else verified tokens when a JWT verifier is configured, else nobody.
pub fn authenticator(args: &ferrobank_config::AuthArgs) -> ferrobank_auth::SharedAuthenticator {
    authenticator_with_jwt(args, None)
}

/// [`authenticator`] with a JWT verifier (identity's keys in process, or its JWKS).
pub fn authenticator_with_jwt(
    args: &ferrobank_config::AuthArgs,
    jwt: Option<ferrobank_auth::JwtAuthenticator>,
) -> ferrobank_auth::SharedAuthenticator {
    if args.insecure_dev_principals {
        tracing::warn!(
            "INSECURE: trusting x-ferrobank-dev-principal headers; never use this in production"
        );
        std::sync::Arc::new(ferrobank_auth::DevHeaderAuthenticator)
    } else if let Some(jwt) = jwt {
        std::sync::Arc::new(jwt)
    } else {
        std::sync::Arc::new(ferrobank_auth::DenyAll)
    }
}

/// A running platform.
pub struct Platform {
    /// The gateway's bound address.
    pub gateway_addr: SocketAddr,
    /// The identity service's bound address.
    pub identity_addr: SocketAddr,
    /// The ledger service's bound address.
    pub ledger_addr: SocketAddr,
    /// The payments service's bound address.
    pub payments_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

/// A future that resolves when `rx` says shut down.
pub async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Platform {
    /// Binds every listener, then starts the services and the gateway. Identity gets an
    /// ephemeral key and no Redis; see [`Platform::start_with_identity`].
    pub async fn start(config: PlatformConfig) -> anyhow::Result<Self> {
        Self::start_with_identity(config, ferrobank_identity::IdentityConfig::ephemeral()).await
    }

    /// [`Platform::start`] with identity's keys, token settings and Redis; the other
    /// services verify identity's tokens with its keys in process.
    pub async fn start_with_identity(
        config: PlatformConfig,
        identity_config: ferrobank_identity::IdentityConfig,
    ) -> anyhow::Result<Self> {
        let ledger_batch = ferrobank_config::LedgerBatchArgs::default();
        Self::start_with(config, identity_config, ledger_batch).await
    }

    /// [`Platform::start_with_identity`] with the ledger's micro-batching settings.
    pub async fn start_with(
        config: PlatformConfig,
        identity_config: ferrobank_identity::IdentityConfig,
        ledger_batch: ferrobank_config::LedgerBatchArgs,
    ) -> anyhow::Result<Self> {
        let (identity_l, identity_addr) =
            ferrobank_server::bind(config.listen.identity_addr, "identity").await?;
        let (ledger_l, ledger_addr) =
            ferrobank_server::bind(config.listen.ledger_addr, "ledger").await?;
        let (payments_l, payments_addr) =
            ferrobank_server::bind(config.listen.payments_addr, "payments").await?;
        let (gateway_l, gateway_addr) =
            ferrobank_server::bind(config.listen.gateway_addr, "gateway").await?;

        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let identity = ferrobank_identity::Identity::new(&config.identity, identity_config)
            .context("starting identity")?;
        let jwt = Some(identity.authenticator());
        let identity = identity.start().await.context("starting identity")?;
        let identity_routes = identity.routes();
        let identity_services = identity.services();
        tasks.spawn({
            let rx = rx.clone();
            async move {
                (
                    "identity",
                    identity.serve(identity_l, shutdown_signal(rx)).await,
                )
            }
        });
        let ledger = ferrobank_ledger::Ledger::new(
            &config.ledger,
            authenticator_with_jwt(&config.auth, jwt.clone()),
        )
        .context("starting ledger")?
        .with_batching(&ledger_batch)
        .start()
        .await
        .context("starting ledger")?;
        let ledger_routes = ledger.routes();
        let ledger_services = ledger.services();
        tasks.spawn({
            let rx = rx.clone();
            async move { ("ledger", ledger.serve(ledger_l, shutdown_signal(rx)).await) }
        });
        let payments =
            ferrobank_payments::Payments::new(&config.payments).context("starting payments")?;
        let payments = payments.start().await.context("starting payments")?;
        let payments_routes = payments.routes();
        let services = [identity_services, ledger_services, payments.services()].concat();
        tasks.spawn({
            let rx = rx.clone();
            async move {
                (
                    "payments",
                    payments.serve(payments_l, shutdown_signal(rx)).await,
                )
            }
        });

        let upstream = |addr: SocketAddr| -> anyhow::Result<Vec<Uri>> {
            Ok(vec![
                format!("http://{addr}")
                    .parse()
                    .map_err(anyhow::Error::msg)?,
            ])
        };
        let gateway_auth = authenticator_with_jwt(&config.auth, jwt.clone());
        let gateway = match &config.gateway {
            Some(args) => GatewayConfig::from_args(
                &ferrobank_config::UpstreamArgs {
                    identity_upstream: upstream(identity_addr)?,
                    ledger_upstream: upstream(ledger_addr)?,
                    payments_upstream: upstream(payments_addr)?,
                },
                args,
                gateway_auth,
            ),
            None => GatewayConfig::new(
                upstream(identity_addr)?,
                upstream(ledger_addr)?,
                upstream(payments_addr)?,
                gateway_auth,
            ),
        };
        let gateway = GatewayConfig {
            in_process: (config.listen.gateway_upstreams == GatewayUpstreams::InProcess).then(
                || ferrobank_gateway::InProcess {
                    identity: identity_routes,
                    ledger: ledger_routes,
                    payments: payments_routes,
                    services,
                },
            ),
            ..gateway
        };
        tasks.spawn({
            let rx = rx.clone();
            async move {
                (
                    "gateway",
                    ferrobank_gateway::serve(gateway, gateway_l, shutdown_signal(rx)).await,
                )
            }
        });

        tracing::info!(%gateway_addr, %identity_addr, %ledger_addr, %payments_addr, "platform started");
        Ok(Self {
            gateway_addr,
            identity_addr,
            ledger_addr,
            payments_addr,
            shutdown,
            tasks,
        })
    }

    /// A sender that stops the platform when `true` is sent.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Runs until a service stops (an error) or shutdown is requested, then stops all.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let first = self.tasks.join_next().await;
        let requested = *self.shutdown.borrow();
        let _ = self.shutdown.send(true);
        let mut result = Ok(());
        if let Some(joined) = first {
            let (name, outcome) = joined.context("a service task panicked")?;
            if let Err(err) = outcome {
                result = Err(err.context(format!("{name} stopped")));
            } else if !requested {
                result = Err(anyhow::anyhow!("{name} stopped unexpectedly"));
            }
        }
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok((name, Err(err))) = joined {
                tracing::warn!(service = name, error = %format!("{err:#}"), "service stopped with an error");
            }
        }
        result
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.run().await
    }
}
