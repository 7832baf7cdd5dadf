//! `ferrobank`: the one binary. `all` runs the whole platform in one process; each
//! other subcommand runs one service, the migrations or a tool.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ferrobank::{Platform, PlatformConfig, shutdown_signal};
use ferrobank_config::{
    AuthArgs, GatewayArgs, IdentityArgs, IdentityDbArgs, JwtArgs, LedgerDbArgs, ListenArgs,
    PaymentsDbArgs, PgUrl, PoolArgs, TelemetryArgs, UpstreamArgs,
};
use tokio::sync::watch;

/// mimalloc rather than glibc malloc: glibc keeps freed large buffers (each argon2
/// hash allocates 19 MiB) in per-thread arenas, which held the process at ~700 MiB
/// RSS after a burst of logins; mimalloc hands them back to the OS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferrobank: a gRPC-first banking platform.
#[derive(Parser, Debug)]
#[command(name = "ferrobank", version, about)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    pool: PoolArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Every service in one process, each on its own port, the gateway in front.
    All {
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        identity: IdentityDbArgs,
        #[command(flatten)]
        identity_args: IdentityArgs,
        #[command(flatten)]
        ledger: LedgerDbArgs,
        #[command(flatten)]
        ledger_batch: ferrobank_config::LedgerBatchArgs,
        #[command(flatten)]
        payments: PaymentsDbArgs,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// The public gateway.
    Gateway {
        /// Listen address.
        #[arg(
            long = "gateway-addr",
            env = "FERROBANK_GATEWAY_ADDR",
            default_value = "127.0.0.1:50051"
        )]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        upstreams: UpstreamArgs,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// The identity service.
    Identity {
        /// Listen address.
        #[arg(
            long = "identity-addr",
            env = "FERROBANK_IDENTITY_ADDR",
            default_value = "127.0.0.1:50052"
        )]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        db: IdentityDbArgs,
        #[command(flatten)]
        identity_args: IdentityArgs,
    },
    /// The ledger service (and reporting).
    Ledger {
        /// Listen address.
        #[arg(
            long = "ledger-addr",
            env = "FERROBANK_LEDGER_ADDR",
            default_value = "127.0.0.1:50053"
        )]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        db: LedgerDbArgs,
        #[command(flatten)]
        batch: ferrobank_config::LedgerBatchArgs,
    },
    /// The payments service.
    Payments {
        /// Listen address.
        #[arg(
            long = "payments-addr",
            env = "FERROBANK_PAYMENTS_ADDR",
            default_value = "127.0.0.1:50054"
        )]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        db: PaymentsDbArgs,
    },
    /// Applies migrations (all services, or those named), safe to run concurrently.
    Migrate(MigrateArgs),
    /// Lints SQL migrations for operationally unsafe DDL.
    LintMigrations(ferrobank_migration_lint::LintArgs),
    /// Administration tools.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Creates a user of any role (the first admin): the password is read from
    /// FERROBANK_ADMIN_PASSWORD, else from the first line of standard input.
    CreateUser {
        /// Sign-in name.
        #[arg(long)]
        username: String,
        /// Email address.
        #[arg(long)]
        email: String,
        /// Name shown to people.
        #[arg(long, default_value = "")]
        display_name: String,
        /// customer, operator or admin.
        #[arg(long, default_value = "admin")]
        role: String,
        #[command(flatten)]
        db: IdentityDbArgs,
        #[command(flatten)]
        identity_args: IdentityArgs,
    },
    /// Creates a service account (for IssueServiceToken) with a freshly generated
    /// secret, and prints its id and the secret on standard output. The secret is shown
    /// this once and stored only as a hash: keep it now, it cannot be shown again.
    CreateServiceAccount {
        /// The service id, e.g. "payments": IssueServiceTokenRequest.service_id.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: IdentityDbArgs,
        #[command(flatten)]
        identity_args: IdentityArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServiceName {
    Identity,
    Ledger,
    Payments,
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// Services to migrate; all when none is named.
    #[arg(value_enum)]
    services: Vec<ServiceName>,
    /// Identity database, bypassing any pooler.
    #[arg(long, env = "IDENTITY_DATABASE_URL_DIRECT")]
    identity_database_url_direct: Option<PgUrl>,
    /// Identity database (used when the direct URL is unset).
    #[arg(long, env = "IDENTITY_DATABASE_URL")]
    identity_database_url: Option<PgUrl>,
    /// Ledger database, bypassing any pooler.
    #[arg(long, env = "LEDGER_DATABASE_URL_DIRECT")]
    ledger_database_url_direct: Option<PgUrl>,
    /// Ledger database (used when the direct URL is unset).
    #[arg(long, env = "LEDGER_DATABASE_URL")]
    ledger_database_url: Option<PgUrl>,
    /// Payments database, bypassing any pooler.
    #[arg(long, env = "PAYMENTS_DATABASE_URL_DIRECT")]
    payments_database_url_direct: Option<PgUrl>,
    /// Payments database (used when the direct URL is unset).
    #[arg(long, env = "PAYMENTS_DATABASE_URL")]
    payments_database_url: Option<PgUrl>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let line = ferrobank_config::one_line_error(&err, &Cli::command());
            eprintln!("ferrobank: {line}");
            return ExitCode::from(2);
        }
    };

    if let Command::LintMigrations(args) = &cli.command {
        let code = ferrobank_migration_lint::run(args, &mut std::io::stdout().lock());
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ferrobank: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrobank: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _telemetry = ferrobank_telemetry::init(&cli.telemetry)?;
    let (stop, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    // Identity's settings are loaded before the admin port starts, so the port can
    // publish /.well-known/jwks.json.
    let identity_config = match &cli.command {
        Command::All { identity_args, .. } | Command::Identity { identity_args, .. } => Some(
            ferrobank_identity::IdentityConfig::from_args(identity_args, &cli.jwt)?,
        ),
        _ => None,
    };
    let mut admin_router = ferrobank_telemetry::admin_router();
    if let Some(config) = &identity_config {
        admin_router = admin_router.merge(ferrobank_identity::jwks_router(config));
    }
    let (admin_addr, _admin) = ferrobank_telemetry::serve_admin(
        cli.telemetry.admin_addr,
        admin_router,
        shutdown_signal(rx.clone()),
    )
    .await?;
    tracing::debug!(%admin_addr, "admin port");

    let pool = &cli.pool;
    match cli.command {
        Command::All {
            listen,
            identity,
            ledger,
            ledger_batch,
            payments,
            gateway,
            ..
        } => {
            let identity_config = identity_config.context("identity settings")?;
            let platform = Platform::start_with(
                PlatformConfig {
                    listen,
                    identity: identity.settings(pool),
                    ledger: ledger.settings(pool),
                    payments: payments.settings(pool),
                    auth: cli.auth.clone(),
                    gateway: Some(gateway),
                },
                identity_config,
                ledger_batch,
            )
            .await?;
            let handle = platform.shutdown_handle();
            let mut rx = rx;
            tokio::spawn(async move {
                let _ = rx.wait_for(|s| *s).await;
                let _ = handle.send(true);
            });
            platform.run().await
        }
        Command::Gateway {
            listen,
            upstreams,
            gateway,
        } => {
            let (listener, _) = ferrobank_server::bind(listen, "gateway").await?;
            ferrobank_gateway::serve(
                ferrobank_gateway::GatewayConfig::from_args(
                    &upstreams,
                    &gateway,
                    ferrobank::authenticator_with_jwt(&cli.auth, jwt_verifier(&cli.jwt)?),
                ),
                listener,
                shutdown_signal(rx),
            )
            .await
        }
        Command::Identity { listen, db, .. } => {
            let (listener, _) = ferrobank_server::bind(listen, "identity").await?;
            let config = identity_config.context("identity settings")?;
            ferrobank_identity::Identity::new(&db.settings(pool), config)?
                .serve(listener, shutdown_signal(rx))
                .await
        }
        Command::Ledger { listen, db, batch } => {
            let (listener, _) = ferrobank_server::bind(listen, "ledger").await?;
            ferrobank_ledger::Ledger::new(
                &db.settings(pool),
                ferrobank::authenticator_with_jwt(&cli.auth, jwt_verifier(&cli.jwt)?),
            )?
            .with_batching(&batch)
            .serve(listener, shutdown_signal(rx))
            .await
        }
        Command::Payments { listen, db } => {
            let (listener, _) = ferrobank_server::bind(listen, "payments").await?;
            ferrobank_payments::Payments::new(&db.settings(pool))?
                .serve(listener, shutdown_signal(rx))
                .await
        }
        Command::Migrate(args) => migrate(args).await,
        Command::LintMigrations(_) => unreachable!("handled before the runtime starts"),
        Command::Admin(AdminCommand::CreateUser {
            username,
            email,
            display_name,
            role,
            db,
            identity_args,
        }) => {
            admin_create_user(
                &db.settings(pool),
                &identity_args,
                username,
                email,
                display_name,
                &role,
            )
            .await
        }
        Command::Admin(AdminCommand::CreateServiceAccount {
            name,
            db,
            identity_args,
        }) => admin_create_service_account(&db.settings(pool), &identity_args, &name).await,
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let services = if args.services.is_empty() {
        vec![
            ServiceName::Identity,
            ServiceName::Ledger,
            ServiceName::Payments,
        ]
    } else {
        args.services.clone()
    };
    for service in services {
        let (name, direct, url, runner) = match service {
            ServiceName::Identity => (
                "identity",
                &args.identity_database_url_direct,
                &args.identity_database_url,
                ferrobank_identity::migrations(),
            ),
            ServiceName::Ledger => (
                "ledger",
                &args.ledger_database_url_direct,
                &args.ledger_database_url,
                ferrobank_ledger::migrations(),
            ),
            ServiceName::Payments => (
                "payments",
                &args.payments_database_url_direct,
                &args.payments_database_url,
                ferrobank_payments::migrations(),
            ),
        };
        let url = direct.as_ref().or(url.as_ref()).with_context(|| {
            let upper = name.to_uppercase();
            format!("missing required setting --{name}-database-url (env {upper}_DATABASE_URL)")
        })?;
        let report = ferrobank_db::migrate(url, name, runner)
            .await
            .with_context(|| format!("migrating {name} at {}", url.redacted()))?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{name}: {} applied{}",
            report.applied.len(),
            if report.applied.is_empty() {
                " (up to date)".to_owned()
            } else {
                format!(": {}", report.applied.join(", "))
            }
        )?;
    }
    Ok(())
}

/// A JWT verifier when identity's JWKS is configured (`--jwt-jwks-upstream`).
fn jwt_verifier(args: &JwtArgs) -> anyhow::Result<Option<ferrobank_auth::JwtAuthenticator>> {
    if args.jwt_jwks_upstream.is_none() {
        return Ok(None);
    }
    Ok(Some(ferrobank_auth::JwtAuthenticator::from_args(
        args, None,
    )?))
}

/// `ferrobank admin create-user`: any role, no caller check (whoever can reach the
/// database is already trusted). The password never appears on the command line.
async fn admin_create_user(
    settings: &ferrobank_config::DatabaseSettings,
    args: &IdentityArgs,
    username: String,
    email: String,
    display_name: String,
    role: &str,
) -> anyhow::Result<()> {
    let role: ferrobank_auth::Role = role
        .parse()
        .map_err(|()| anyhow::anyhow!("--role must be customer, operator or admin"))?;
    let password = match std::env::var("FERROBANK_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    // Keys are not used to create a user; only the password policy and argon2 cost are.
    let mut config = ferrobank_identity::IdentityConfig::ephemeral();
    config.argon2 = ferrobank_identity::Argon2Params {
        memory_kib: args.identity_argon2_memory_kib,
        iterations: args.identity_argon2_iterations,
        parallelism: args.identity_argon2_parallelism,
    };
    config.password_min_length = args.identity_password_min_length;
    let identity = ferrobank_identity::Identity::new(settings, config)?;
    let user = identity
        .app()
        .create_user(
            None,
            true,
            ferrobank_identity::app::CreateUser {
                request_id: uuid_v4(),
                username,
                email,
                display_name,
                password: password.into(),
                role: Some(role),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    writeln!(
        std::io::stdout().lock(),
        "created {} {} ({})",
        user.role,
        user.username,
        user.id
    )?;
    Ok(())
}

/// `ferrobank admin create-service-account`: registers `name` with a fresh random
/// secret and prints both once on stdout, for the operator's terminal; the secret never
/// goes to the logs and is stored only as an argon2id hash.
async fn admin_create_service_account(
    settings: &ferrobank_config::DatabaseSettings,
    args: &IdentityArgs,
    name: &str,
) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    // Two v4 UUIDs: 244 bits from the OS random number generator, 64 hex characters.
    let secret = format!("{}{}", uuid_v4().simple(), uuid_v4().simple());
    // Keys are not used; only the argon2 cost is.
    let mut config = ferrobank_identity::IdentityConfig::ephemeral();
    config.argon2 = ferrobank_identity::Argon2Params {
        memory_kib: args.identity_argon2_memory_kib,
        iterations: args.identity_argon2_iterations,
        parallelism: args.identity_argon2_parallelism,
    };
    let identity = ferrobank_identity::Identity::new(settings, config)?;
    let id = identity
        .app()
        .create_service_account(name, secret.clone().into())
        .await
        .map_err(|e| match e {
            ferrobank_identity::app::IdentityError::AlreadyExists { .. } => {
                anyhow::anyhow!("service account {name:?} already exists")
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "created service account {name} ({id})")?;
    writeln!(out, "secret: {secret}")?;
    writeln!(
        out,
        "The secret is shown only this once; store it now (it is kept only as a hash)."
    )?;
    Ok(())
}

fn uuid_v4() -> ferrobank_identity::app::RequestId {
    ferrobank_identity::app::RequestId::new_v4()
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
