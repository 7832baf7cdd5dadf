//! Real Postgres and Redis for tests, never mocks.
//!
//! Where they come from, in order:
//! 1. `DATABASE_URL` (a superuser URL on the primary), with `DATABASE_URL_REPLICA`,
//!    `REDIS_URL` and the per-service role URLs (`LEDGER_DATABASE_URL`, …) — what
//!    `make test` exports after starting its throwaway stack;
//! 2. otherwise testcontainers (Postgres 15, Redis 7) when a Docker engine answers;
//! 3. otherwise a panic that says to run `make test`.
//!
//! Each test gets a fresh database copied from a template that holds the service's
//! migrations (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`, tens of ms), owned
//! by the service's own role, so tests run with production privileges.

mod proxy;
mod traces;

pub use proxy::TcpProxy;
pub use traces::{LogLines, capture_json_logs, export_spans_in_memory};

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrobank_config::{DatabaseSettings, PgUrl, PoolSettings, RedisUrl, ReportingFallback};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// Where the test stack lives.
pub struct TestEnv {
    admin: tokio_postgres::Config,
    replica_admin: Option<tokio_postgres::Config>,
    redis_url: String,
    _containers: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

static ENV: OnceCell<TestEnv> = OnceCell::const_new();

/// The process-wide test environment (started once).
pub async fn env() -> &'static TestEnv {
    ENV.get_or_init(|| async {
        match TestEnv::discover().await {
            Ok(env) => env,
            Err(err) => panic!(
                "no test database: {err:#}\n\
                 Run `make test` (it starts Postgres 15 + replica + Redis and exports \
                 DATABASE_URL, DATABASE_URL_REPLICA and REDIS_URL), or set them yourself."
            ),
        }
    })
    .await
}

impl TestEnv {
    async fn discover() -> Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin = tokio_postgres::Config::from_str(&url).context("DATABASE_URL")?;
            let replica_admin = match std::env::var("DATABASE_URL_REPLICA") {
                Ok(u) => {
                    Some(tokio_postgres::Config::from_str(&u).context("DATABASE_URL_REPLICA")?)
                }
                Err(_) => None,
            };
            let redis_url = std::env::var("REDIS_URL").context("REDIS_URL is not set")?;
            return Ok(Self {
                admin,
                replica_admin,
                redis_url,
                _containers: Vec::new(),
            });
        }
        containers::start().await
    }

    /// The Redis URL of the test stack.
    pub fn redis_url(&self) -> RedisUrl {
        self.redis_url
            .parse()
            .expect("REDIS_URL is a valid redis URL")
    }

    /// The replica's address, when the stack has one.
    pub fn replica_addr(&self) -> Option<std::net::SocketAddr> {
        let cfg = self.replica_admin.as_ref()?;
        let host = match cfg.get_hosts().first()? {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            _ => return None,
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}").parse().ok()
    }

    /// Returns once the replica has replayed everything the primary has written so far
    /// (e.g. a database a test just created). Polls the replay position, bounded.
    pub async fn wait_for_replica(&self) -> Result<()> {
        let primary = self.admin_client("postgres").await?;
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let replica = self.replica_admin_client("postgres").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let caught_up: bool = replica
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the replica did not replay {target} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether a streaming replica is part of the stack.
    pub fn has_replica(&self) -> bool {
        self.replica_admin.is_some()
    }

    /// A superuser connection to `dbname` on the primary.
    pub async fn admin_client(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        connect(&self.admin, dbname, None).await
    }

    /// A superuser connection to `dbname` on the replica.
    pub async fn replica_admin_client(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let Some(cfg) = &self.replica_admin else {
            bail!("the test stack has no replica (DATABASE_URL_REPLICA unset)");
        };
        connect(cfg, dbname, None).await
    }
}

async fn connect(
    base: &tokio_postgres::Config,
    dbname: &str,
    user: Option<(&str, &[u8])>,
) -> Result<tokio_postgres::Client> {
    let mut cfg = base.clone();
    cfg.dbname(dbname).application_name("ferrobank-testkit");
    if let Some((user, password)) = user {
        cfg.user(user).password(password);
    }
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .context("connecting to the test stack")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A fresh, migrated database for one test, owned by the service's role.
pub struct TestDb {
    /// The database's name (`t_<uuid>`).
    pub name: String,
    /// Settings a service would be configured with to use it.
    pub settings: DatabaseSettings,
    role: String,
    password: String,
}

/// The role a service's database belongs to: name and password. Taken from
/// `<SERVICE>_DATABASE_URL` when set (the stack's roles), else created.
async fn service_role(env: &TestEnv, service: &str) -> Result<(String, String)> {
    let var = format!("{}_DATABASE_URL", service.to_uppercase());
    if let Ok(url) = std::env::var(&var) {
        let cfg = tokio_postgres::Config::from_str(&url).with_context(|| var.clone())?;
        let user = cfg.get_user().context("role URL has no user")?.to_owned();
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        return Ok((user, password));
    }
    // No stack roles (testcontainers): create the role with a password of our own.
    let password = uuid::Uuid::new_v4().simple().to_string();
    let admin = env.admin_client("postgres").await?;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{service}') THEN
                 CREATE ROLE {service} LOGIN;
               END IF;
             END $$;
             ALTER ROLE {service} PASSWORD '{password}';"
        ))
        .await
        .context("creating the service role")?;
    Ok((service.to_owned(), password))
}

impl TestDb {
    /// A new database holding `service`'s migrations (from `runner`).
    pub async fn new(service: &str, runner: impl Fn() -> refinery::Runner) -> Result<Self> {
        let env = env().await;
        let (role, password) = service_role(env, service).await?;
        let template = ensure_template(env, service, &role, &runner).await?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = env.admin_client("postgres").await?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY OWNER {role}"
            ))
            .await
            .context("creating the test database")?;
        Self::describe(env, service, name, &role, &password)
    }

    fn describe(
        env: &TestEnv,
        service: &str,
        name: String,
        role: &str,
        password: &str,
    ) -> Result<Self> {
        let url = |cfg: &tokio_postgres::Config| -> Result<PgUrl> {
            let host = match cfg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "127.0.0.1".to_owned(),
            };
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            PgUrl::from_str(&format!(
                "postgres://{role}:{password}@{host}:{port}/{name}"
            ))
            .map_err(anyhow::Error::msg)
        };
        let pool = |url: PgUrl, app: &str| PoolSettings {
            url,
            application_name: app.to_owned(),
            max_size: 8,
            statement_cache: true,
            // Generous: a loaded CI machine (parallel test processes on 2 cores) can
            // take seconds to hand out a connection; a dead server still fails at once.
            connect_timeout: Duration::from_secs(10),
        };
        let primary = url(&env.admin)?;
        let reporting = match &env.replica_admin {
            Some(cfg) => Some(pool(url(cfg)?, &format!("{service}-reporting"))),
            None => None,
        };
        Ok(Self {
            settings: DatabaseSettings {
                primary: pool(primary.clone(), service),
                direct_url: primary,
                reporting,
                reporting_fallback: ReportingFallback::Primary,
            },
            name,
            role: role.to_owned(),
            password: password.to_owned(),
        })
    }

    /// An empty database owned by `service`'s role: no migrations applied yet.
    pub async fn empty(service: &str) -> Result<Self> {
        let env = env().await;
        let (role, password) = service_role(env, service).await?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = env.admin_client("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {role}"))
            .await
            .context("creating the test database")?;
        Self::describe(env, service, name, &role, &password)
    }

    /// This database's settings with the reporting pool pointed at `addr` (e.g. a
    /// [`TcpProxy`] in front of the replica) and the given fallback.
    pub fn settings_with_reporting_at(
        &self,
        addr: std::net::SocketAddr,
        fallback: ReportingFallback,
    ) -> Result<DatabaseSettings> {
        let url = PgUrl::from_str(&format!(
            "postgres://{}:{}@{}/{}",
            self.role, self.password, addr, self.name
        ))
        .map_err(anyhow::Error::msg)?;
        let mut settings = self.settings.clone();
        let mut reporting = settings
            .reporting
            .clone()
            .unwrap_or_else(|| settings.primary.clone());
        reporting.url = url;
        reporting.application_name = format!("{}-reporting", settings.primary.application_name);
        settings.reporting = Some(reporting);
        settings.reporting_fallback = fallback;
        Ok(settings)
    }

    /// A superuser connection to this database on the primary (for assertions).
    pub async fn admin(&self) -> Result<tokio_postgres::Client> {
        env().await.admin_client(&self.name).await
    }
}

/// The template for `service` at its current migrations, created once per stack.
async fn ensure_template(
    env: &TestEnv,
    service: &str,
    role: &str,
    runner: &impl Fn() -> refinery::Runner,
) -> Result<String> {
    let mut hasher = DefaultHasher::new();
    for m in runner().get_migrations() {
        m.version().hash(&mut hasher);
        m.checksum().hash(&mut hasher);
    }
    let template = format!("tpl_{service}_{:016x}", hasher.finish());

    let admin = env.admin_client("postgres").await?;
    // Test processes run in parallel: one builds the template, the others wait here.
    admin
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&template])
        .await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await?
        .is_some();
    if !exists {
        let building = format!("{template}_building");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {building} OWNER {role}"))
            .await?;
        {
            let mut client = connect(&env.admin, &building, None).await?;
            client.batch_execute(&format!("SET ROLE {role}")).await?;
            ferrobank_db::run_migrations(&mut client, runner())
                .await
                .with_context(|| format!("migrating the {service} template"))?;
        }
        // Rename only once complete, so a crash never leaves a half-built template.
        for sql in [
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}'"
            ),
            format!("ALTER DATABASE {building} RENAME TO {template}"),
            format!("ALTER DATABASE {template} ALLOW_CONNECTIONS false"),
        ] {
            admin.batch_execute(&sql).await?;
        }
    }
    admin
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&template])
        .await?;
    Ok(template)
}

/// A key prefix unique to one test, so tests share one Redis without colliding.
pub fn redis_prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}

mod containers {
    //! The testcontainers path, for machines with a Docker engine.
    use super::*;
    use testcontainers::ImageExt;
    use testcontainers::runners::AsyncRunner;

    pub(super) async fn start() -> Result<TestEnv> {
        let pg = testcontainers_modules::postgres::Postgres::default()
            .with_tag("15-alpine")
            .start()
            .await
            .context("DATABASE_URL is unset and no Docker engine answered")?;
        let pg_port = pg.get_host_port_ipv4(5432).await?;
        let redis = testcontainers_modules::redis::Redis::default()
            .start()
            .await
            .context("starting Redis in Docker")?;
        let redis_port = redis.get_host_port_ipv4(6379).await?;
        let admin = tokio_postgres::Config::from_str(&format!(
            "postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"
        ))?;
        Ok(TestEnv {
            admin,
            replica_admin: None,
            redis_url: format!("redis://127.0.0.1:{redis_port}/"),
            _containers: vec![Box::new(pg), Box::new(redis)],
        })
    }
}
