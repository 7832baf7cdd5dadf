//! Typed configuration: clap argument groups that read flags or environment variables,
//! with documented defaults, loaded once in `main` and passed down explicitly.
//!
//! Secrets (database URLs carry passwords) live in types whose `Debug` never prints
//! them. A bad value fails at startup with one line naming the flag and the variable.

mod pg;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
pub use pg::PgUrl;
use secrecy::{ExposeSecret, SecretString};

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when stdout is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging, tracing export and the admin HTTP port (Prometheus `/metrics`).
#[derive(Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "FERROBANK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces and metrics; export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<url::Url>,
    /// `service.name` reported to OpenTelemetry.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "ferrobank",
        global = true
    )]
    pub service_name: String,
    /// Admin HTTP listener: `/metrics`, `/healthz`. Port 0 picks a free port.
    #[arg(
        long,
        env = "FERROBANK_ADMIN_ADDR",
        default_value = "127.0.0.1:9464",
        global = true
    )]
    pub admin_addr: SocketAddr,
}

/// What reporting reads do when the replica cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportingFallback {
    /// Read from the primary pool instead (and say so in the response).
    #[default]
    Primary,
    /// Answer UNAVAILABLE with reason REPLICA_UNAVAILABLE.
    Unavailable,
}

/// One Postgres pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Where to connect (may be a transaction-mode pooler).
    pub url: PgUrl,
    /// `application_name`, so `pg_stat_activity` tells the pools apart.
    pub application_name: String,
    /// Upper bound on connections.
    pub max_size: usize,
    /// Use named prepared statements cached per connection. Must be off behind a
    /// transaction-mode pooler such as PgBouncer, which breaks them.
    pub statement_cache: bool,
    /// How long to wait for a new connection before the pool answers UNAVAILABLE.
    pub connect_timeout: Duration,
}

/// A service's database settings: the primary pool, the direct URL for migrations,
/// advisory locks and LISTEN, and (for the ledger) the reporting pool.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// The primary pool.
    pub primary: PoolSettings,
    /// Bypasses any pooler; migrations, advisory locks and LISTEN use it.
    pub direct_url: PgUrl,
    /// The reporting pool (a streaming replica), when the service has one.
    pub reporting: Option<PoolSettings>,
    /// What reporting reads do when the replica is down.
    pub reporting_fallback: ReportingFallback,
}

/// Settings shared by every database a process opens.
#[derive(Args, Clone, Debug)]
pub struct PoolArgs {
    /// Maximum connections per pool.
    #[arg(
        long,
        env = "FERROBANK_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub db_pool_size: usize,
    /// Named prepared statements cached per connection; turn off behind PgBouncer in
    /// transaction mode.
    #[arg(long, env = "FERROBANK_DB_STATEMENT_CACHE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub db_statement_cache: bool,
    /// Seconds to wait for a database connection before answering UNAVAILABLE.
    #[arg(
        long,
        env = "FERROBANK_DB_CONNECT_TIMEOUT_SECS",
        default_value_t = 3,
        global = true
    )]
    pub db_connect_timeout_secs: u64,
}

impl PoolArgs {
    fn pool(&self, url: PgUrl, application_name: &str) -> PoolSettings {
        PoolSettings {
            url,
            application_name: application_name.to_owned(),
            max_size: self.db_pool_size,
            statement_cache: self.db_statement_cache,
            connect_timeout: Duration::from_secs(self.db_connect_timeout_secs),
        }
    }
}

/// Identity's database.
#[derive(Args, Clone, Debug)]
pub struct IdentityDbArgs {
    /// Identity database (may point at PgBouncer).
    #[arg(long, env = "IDENTITY_DATABASE_URL")]
    pub identity_database_url: PgUrl,
    /// Identity database bypassing any pooler; defaults to IDENTITY_DATABASE_URL.
    #[arg(long, env = "IDENTITY_DATABASE_URL_DIRECT")]
    pub identity_database_url_direct: Option<PgUrl>,
}

impl IdentityDbArgs {
    /// The identity service's database settings.
    pub fn settings(&self, pool: &PoolArgs) -> DatabaseSettings {
        DatabaseSettings {
            primary: pool.pool(self.identity_database_url.clone(), "identity"),
            direct_url: direct(
                &self.identity_database_url_direct,
                &self.identity_database_url,
            ),
            reporting: None,
            reporting_fallback: ReportingFallback::Primary,
        }
    }
}

/// The ledger's databases: primary, direct and the reporting replica.
#[derive(Args, Clone, Debug)]
pub struct LedgerDbArgs {
    /// Ledger database (may point at PgBouncer).
    #[arg(long, env = "LEDGER_DATABASE_URL")]
    pub ledger_database_url: PgUrl,
    /// Ledger database bypassing any pooler; defaults to LEDGER_DATABASE_URL.
    #[arg(long, env = "LEDGER_DATABASE_URL_DIRECT")]
    pub ledger_database_url_direct: Option<PgUrl>,
    /// Reporting replica of the ledger database; reporting reads use the primary when
    /// unset.
    #[arg(long, env = "LEDGER_REPORTING_DATABASE_URL")]
    pub ledger_reporting_database_url: Option<PgUrl>,
    /// What reporting reads do when the replica is down.
    #[arg(long, env = "LEDGER_REPORTING_FALLBACK", value_enum, default_value_t = ReportingFallback::Primary)]
    pub ledger_reporting_fallback: ReportingFallback,
}

impl LedgerDbArgs {
    /// The ledger's database settings.
    pub fn settings(&self, pool: &PoolArgs) -> DatabaseSettings {
        DatabaseSettings {
            primary: pool.pool(self.ledger_database_url.clone(), "ledger"),
            direct_url: direct(&self.ledger_database_url_direct, &self.ledger_database_url),
            reporting: self
                .ledger_reporting_database_url
                .clone()
                .map(|url| pool.pool(url, "ledger-reporting")),
            reporting_fallback: self.ledger_reporting_fallback,
        }
    }
}

/// Automatic micro-batching of single CreateTransfer calls in the ledger: concurrent
/// calls gathered for at most a window (or until a batch is full) share one database
/// round trip and one commit, each keeping its own result.
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerBatchArgs {
    /// How long (µs) a batch waits for more transfers after its first; 0 turns
    /// batching off. Tokio's timers tick in milliseconds, so a window rounds up to one.
    #[arg(
        long,
        env = "LEDGER_BATCH_WINDOW_US",
        default_value_t = LedgerBatchArgs::DEFAULT_WINDOW_US
    )]
    pub ledger_batch_window_us: u64,
    /// Most transfers in one batch (1..=1000).
    #[arg(
        long,
        env = "LEDGER_BATCH_MAX",
        default_value_t = LedgerBatchArgs::DEFAULT_MAX,
        value_parser = clap::value_parser!(u16).range(1..=1000)
    )]
    pub ledger_batch_max: u16,
    /// Most batches running at once, each on its own pool connection (capped at half
    /// the primary pool). Batches that share an account serialize on its row lock, so
    /// fewer, fuller batches beat many small ones.
    #[arg(
        long,
        env = "LEDGER_BATCH_IN_FLIGHT",
        default_value_t = LedgerBatchArgs::DEFAULT_IN_FLIGHT,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub ledger_batch_in_flight: u16,
    /// Wait out the window even under light load (no batch running and the last one
    /// had a single member), which otherwise goes at once: fuller batches, more latency.
    #[arg(
        long,
        env = "LEDGER_BATCH_ALWAYS_WAIT",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub ledger_batch_always_wait: bool,
}

impl LedgerBatchArgs {
    /// The default window: 1 ms, tokio's timer resolution.
    pub const DEFAULT_WINDOW_US: u64 = 1_000;
    /// The default batch size.
    pub const DEFAULT_MAX: u16 = 100;
    /// The default number of batches in flight.
    pub const DEFAULT_IN_FLIGHT: u16 = 8;

    /// The window, or None when batching is off.
    pub fn window(&self) -> Option<Duration> {
        (self.ledger_batch_window_us > 0)
            .then(|| Duration::from_micros(self.ledger_batch_window_us))
    }
}

impl Default for LedgerBatchArgs {
    fn default() -> Self {
        Self {
            ledger_batch_window_us: Self::DEFAULT_WINDOW_US,
            ledger_batch_max: Self::DEFAULT_MAX,
            ledger_batch_in_flight: Self::DEFAULT_IN_FLIGHT,
            ledger_batch_always_wait: false,
        }
    }
}

/// Payments' database.
#[derive(Args, Clone, Debug)]
pub struct PaymentsDbArgs {
    /// Payments database (may point at PgBouncer).
    #[arg(long, env = "PAYMENTS_DATABASE_URL")]
    pub payments_database_url: PgUrl,
    /// Payments database bypassing any pooler; defaults to PAYMENTS_DATABASE_URL.
    #[arg(long, env = "PAYMENTS_DATABASE_URL_DIRECT")]
    pub payments_database_url_direct: Option<PgUrl>,
}

impl PaymentsDbArgs {
    /// The payments service's database settings.
    pub fn settings(&self, pool: &PoolArgs) -> DatabaseSettings {
        DatabaseSettings {
            primary: pool.pool(self.payments_database_url.clone(), "payments"),
            direct_url: direct(
                &self.payments_database_url_direct,
                &self.payments_database_url,
            ),
            reporting: None,
            reporting_fallback: ReportingFallback::Primary,
        }
    }
}

fn direct(direct: &Option<PgUrl>, fallback: &PgUrl) -> PgUrl {
    direct.clone().unwrap_or_else(|| fallback.clone())
}

/// Redis, used for rate limits, idempotency, revocation and caching.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL (`redis://127.0.0.1:6379/`); may carry a password.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: RedisUrl,
}

/// A Redis URL; `Debug` hides any password.
#[derive(Clone)]
pub struct RedisUrl(SecretString);

impl RedisUrl {
    /// The URL, password included; pass it to the client, never to a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(self.0.expose_secret()) {
            Ok(url) => write!(
                f,
                "RedisUrl({}://{}:{})",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.port().unwrap_or(6379)
            ),
            Err(_) => f.write_str("RedisUrl(<invalid>)"),
        }
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse_redis_url(value)
    }
}

fn parse_redis_url(value: &str) -> Result<RedisUrl, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
        return Err(format!(
            "scheme must be redis:// or rediss://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) && !url.scheme().contains("unix") {
        return Err("missing host".to_owned());
    }
    Ok(RedisUrl(SecretString::from(value.to_owned())))
}

/// How services learn who is calling.
#[derive(Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// Trust the `x-ferrobank-dev-principal: <role>:<uuid>` header instead of verified
    /// tokens. For local development and tests only — anyone can claim any identity.
    #[arg(long, env = "FERROBANK_INSECURE_DEV_PRINCIPALS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub insecure_dev_principals: bool,
}

/// How the gateway of `ferrobank all` reaches the services beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum GatewayUpstreams {
    /// Calls go straight to the services' routes in the same process: no connection,
    /// no second HTTP/2 hop.
    #[default]
    InProcess,
    /// Calls go over loopback to the services' own ports, as from a separate gateway.
    Network,
}

/// Where each service of `ferrobank all` listens, the gateway first, and how the
/// gateway reaches the others.
#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// The gateway: the one public port.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub gateway_addr: SocketAddr,
    /// The identity service.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub identity_addr: SocketAddr,
    /// The ledger service (and reporting).
    #[arg(long, env = "FERROBANK_LEDGER_ADDR", default_value = "127.0.0.1:50053")]
    pub ledger_addr: SocketAddr,
    /// The payments service.
    #[arg(
        long,
        env = "FERROBANK_PAYMENTS_ADDR",
        default_value = "127.0.0.1:50054"
    )]
    pub payments_addr: SocketAddr,
    /// How the gateway reaches the services. Each service still listens on its own
    /// port either way.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_UPSTREAMS",
        value_enum,
        default_value_t = GatewayUpstreams::InProcess
    )]
    pub gateway_upstreams: GatewayUpstreams,
}

/// Where the gateway finds each upstream service.
#[derive(Args, Clone, Debug)]
pub struct UpstreamArgs {
    /// Identity upstream(s), comma-separated URIs.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_UPSTREAM",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub identity_upstream: Vec<http_uri::Uri>,
    /// Ledger upstream(s), comma-separated URIs; reporting is served there too.
    #[arg(
        long,
        env = "FERROBANK_LEDGER_UPSTREAM",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50053"
    )]
    pub ledger_upstream: Vec<http_uri::Uri>,
    /// Payments upstream(s), comma-separated URIs.
    #[arg(
        long,
        env = "FERROBANK_PAYMENTS_UPSTREAM",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50054"
    )]
    pub payments_upstream: Vec<http_uri::Uri>,
}

/// What the gateway does when Redis (rate limits, idempotency) cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RedisFallback {
    /// Keep serving: rate limits fall back to an in-process limiter per gateway replica
    /// (the same limits, counted locally, so N replicas admit up to N times the limit);
    /// idempotency is skipped (the ledger's own `request_id` still deduplicates).
    #[default]
    Local,
    /// Keep serving without rate limits or idempotency.
    Open,
    /// Refuse rate-limited and idempotent calls with UNAVAILABLE.
    Closed,
}

/// The gateway's tower stack: deadlines, load shedding, message size, Redis rate limits
/// and idempotency. Rates are requests per minute per principal (or per client IP when
/// anonymous) and method class; a rate of 0 turns that class's limit off.
#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Redis for rate limits and idempotency, shared by every gateway replica. Without
    /// it the gateway limits in process and skips idempotency.
    #[arg(long, env = "REDIS_URL")]
    pub gateway_redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key the gateway writes.
    #[arg(long, env = "FERROBANK_GATEWAY_REDIS_PREFIX", default_value = "fb:gw:")]
    pub gateway_redis_prefix: String,
    /// Milliseconds a Redis command may take before the call uses the fallback.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_REDIS_TIMEOUT_MS",
        default_value_t = 100
    )]
    pub gateway_redis_timeout_ms: u64,
    /// What happens while Redis is unreachable.
    #[arg(long, env = "FERROBANK_GATEWAY_REDIS_FALLBACK", value_enum, default_value_t = RedisFallback::Local)]
    pub gateway_redis_fallback: RedisFallback,
    /// Deadline (ms) for unary calls that send no `grpc-timeout`.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_DEFAULT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub gateway_default_timeout_ms: u64,
    /// Upper bound (ms) on a unary call's `grpc-timeout`.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_MAX_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub gateway_max_timeout_ms: u64,
    /// Calls in flight across the whole gateway; beyond it calls are shed UNAVAILABLE.
    #[arg(long, env = "FERROBANK_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub gateway_max_in_flight: usize,
    /// Calls in flight per principal (or client IP); beyond it RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_MAX_IN_FLIGHT_PER_PRINCIPAL",
        default_value_t = 64
    )]
    pub gateway_max_in_flight_per_principal: u32,
    /// Largest gRPC message (bytes) a client may send; larger is RESOURCE_EXHAUSTED.
    #[arg(long, env = "FERROBANK_GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub gateway_max_message_bytes: usize,
    /// Origins (e.g. `https://app.example.com`, comma-separated) whose browser pages may
    /// call the gateway with gRPC-Web; none (the default) answers no CORS preflight, so
    /// only same-origin pages can.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub gateway_cors_origins: Vec<String>,
    /// Read calls (Get*, List*, Watch*) per minute.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_RATE_READ_PER_MIN",
        default_value_t = 6000
    )]
    pub gateway_rate_read_per_min: u32,
    /// Read calls allowed in a burst.
    #[arg(long, env = "FERROBANK_GATEWAY_BURST_READ", default_value_t = 200)]
    pub gateway_burst_read: u32,
    /// Write calls (every other authenticated method) per minute.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_RATE_WRITE_PER_MIN",
        default_value_t = 1200
    )]
    pub gateway_rate_write_per_min: u32,
    /// Write calls allowed in a burst.
    #[arg(long, env = "FERROBANK_GATEWAY_BURST_WRITE", default_value_t = 50)]
    pub gateway_burst_write: u32,
    /// Login-class calls (Login, RefreshSession, CreateUser) per minute.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_RATE_LOGIN_PER_MIN",
        default_value_t = 30
    )]
    pub gateway_rate_login_per_min: u32,
    /// Login-class calls allowed in a burst.
    #[arg(long, env = "FERROBANK_GATEWAY_BURST_LOGIN", default_value_t = 10)]
    pub gateway_burst_login: u32,
    /// Most rate-limit admissions a gateway takes from Redis at once for a caller whose
    /// calls keep coming, and hands out without asking again (capped at an eighth of
    /// the class's burst); 1 asks Redis on every call.
    #[arg(long, env = "FERROBANK_GATEWAY_RATE_BATCH_MAX", default_value_t = 32)]
    pub gateway_rate_batch_max: u32,
    /// Milliseconds admissions taken ahead wait for the caller's calls before they
    /// expire unused (they stay spent in the shared bucket).
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_RATE_BATCH_HOLD_MS",
        default_value_t = 500
    )]
    pub gateway_rate_batch_hold_ms: u64,
    /// Hours a stored idempotent response is replayed.
    #[arg(
        long,
        env = "FERROBANK_GATEWAY_IDEMPOTENCY_TTL_HOURS",
        default_value_t = 24
    )]
    pub gateway_idempotency_ttl_hours: u64,
}

/// What a token verifier does when Redis cannot answer a revocation check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RevocationFallback {
    /// Refuse the call with UNAVAILABLE: a logged-out token is never accepted, at the
    /// price of refusing every token while Redis is down. The default.
    #[default]
    Closed,
    /// Accept tokens whose signature and claims verify, with a warning: logout and
    /// revoke-all are not enforced until Redis is back (tokens still expire).
    Open,
}

/// How services verify access tokens (JWT, EdDSA) issued by the identity service.
#[derive(Args, Clone, Debug)]
pub struct JwtArgs {
    /// The `iss` claim identity writes and verifiers require.
    #[arg(
        long,
        env = "FERROBANK_JWT_ISSUER",
        default_value = "ferrobank-identity",
        global = true
    )]
    pub jwt_issuer: String,
    /// The `aud` claim identity writes and verifiers require.
    #[arg(
        long,
        env = "FERROBANK_JWT_AUDIENCE",
        default_value = "ferrobank",
        global = true
    )]
    pub jwt_audience: String,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    #[arg(
        long,
        env = "FERROBANK_JWT_LEEWAY_SECS",
        default_value_t = 30,
        global = true
    )]
    pub jwt_leeway_secs: u64,
    /// The identity service whose GetJwks publishes the verification keys. Unset in
    /// `ferrobank all`, where services share identity's key set in process.
    #[arg(long, env = "FERROBANK_JWT_JWKS_UPSTREAM", global = true)]
    pub jwt_jwks_upstream: Option<http_uri::Uri>,
    /// Redis holding revoked token ids (`jti`) and sessions (`sid`), written by identity.
    #[arg(long = "jwt-redis-url", env = "REDIS_URL", global = true)]
    pub jwt_redis_url: Option<RedisUrl>,
    /// Prefix of the revocation keys; identity and every verifier must agree on it.
    #[arg(
        long,
        env = "FERROBANK_JWT_REDIS_PREFIX",
        default_value = "fb:auth:",
        global = true
    )]
    pub jwt_redis_prefix: String,
    /// Milliseconds a revocation check may take before the fallback applies.
    #[arg(
        long,
        env = "FERROBANK_JWT_REDIS_TIMEOUT_MS",
        default_value_t = 200,
        global = true
    )]
    pub jwt_redis_timeout_ms: u64,
    /// What verification does when the revocation check cannot be made (Redis down or
    /// not configured): `closed` refuses the call (UNAVAILABLE), `open` accepts it.
    #[arg(long, env = "FERROBANK_JWT_REVOCATION_FALLBACK", value_enum, default_value_t = RevocationFallback::Closed, global = true)]
    pub jwt_revocation_fallback: RevocationFallback,
}

/// The identity service: signing keys, token lifetimes, password hashing and login
/// throttling. Issuer, audience and the revocation Redis come from [`JwtArgs`].
#[derive(Args, Clone, Debug)]
pub struct IdentityArgs {
    /// PKCS#8 PEM files holding Ed25519 private keys (`openssl genpkey -algorithm
    /// ed25519`), comma-separated. The first signs new tokens; the others are only
    /// published and verified, so tokens they signed keep working until they expire.
    /// Rotate by putting a new key first, then drop the old one after the access TTL.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_SIGNING_KEY_FILES",
        value_delimiter = ','
    )]
    pub identity_signing_key_files: Vec<std::path::PathBuf>,
    /// The same as PEM text (one or more concatenated blocks), for deployments that
    /// inject secrets as environment variables. These keys come before the files.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_SIGNING_KEYS_PEM",
        hide_env_values = true
    )]
    pub identity_signing_keys_pem: Option<SecretString>,
    /// Lifetime of an access token, in seconds.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_ACCESS_TTL_SECS",
        default_value_t = 900
    )]
    pub identity_access_ttl_secs: u64,
    /// Lifetime of a refresh token (and so of an idle session), in seconds.
    #[arg(long, env = "FERROBANK_IDENTITY_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub identity_refresh_ttl_secs: u64,
    /// argon2id memory cost in KiB (OWASP: 19456 with 2 iterations).
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_ARGON2_MEMORY_KIB",
        default_value_t = 19_456
    )]
    pub identity_argon2_memory_kib: u32,
    /// argon2id iterations.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_ARGON2_ITERATIONS",
        default_value_t = 2
    )]
    pub identity_argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_ARGON2_PARALLELISM",
        default_value_t = 1
    )]
    pub identity_argon2_parallelism: u32,
    /// Shortest password accepted (characters).
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_PASSWORD_MIN_LENGTH",
        default_value_t = 12
    )]
    pub identity_password_min_length: usize,
    /// Failed logins per username within the window before logins are throttled.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_LOGIN_MAX_FAILURES_PER_USER",
        default_value_t = 5
    )]
    pub identity_login_max_failures_per_user: u32,
    /// Failed logins per client IP within the window before logins are throttled.
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_LOGIN_MAX_FAILURES_PER_IP",
        default_value_t = 50
    )]
    pub identity_login_max_failures_per_ip: u32,
    /// The throttling window, in seconds (counted from the first failure).
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_LOGIN_WINDOW_SECS",
        default_value_t = 900
    )]
    pub identity_login_window_secs: u64,
    /// Take the client IP from the first `x-forwarded-for` entry instead of the TCP
    /// peer. Only behind a proxy that overwrites the header (the gateway does);
    /// otherwise a client could pick its own IP and dodge per-IP throttling.
    #[arg(long, env = "FERROBANK_IDENTITY_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub identity_trust_forwarded_for: bool,
    /// Prefix of identity's own Redis keys (login throttling).
    #[arg(
        long,
        env = "FERROBANK_IDENTITY_REDIS_PREFIX",
        default_value = "fb:id:"
    )]
    pub identity_redis_prefix: String,
}

/// A parsed upstream URI (kept as text plus validation so this crate needs no `http`).
pub mod http_uri {
    use std::str::FromStr;

    /// An absolute `http://host:port` URI.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Uri(String);

    impl Uri {
        /// The URI text.
        pub fn as_str(&self) -> &str {
            &self.0
        }
    }

    impl FromStr for Uri {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let url = url::Url::parse(s).map_err(|e| format!("not a URI: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err("expected http://host:port".to_owned());
            }
            Ok(Self(s.trim_end_matches('/').to_owned()))
        }
    }
}

/// Turns a clap error into the one line `main` prints: the setting and what is wrong
/// with it, naming the environment variable where the flag has one.
pub fn one_line_error(err: &clap::Error, cmd: &clap::Command) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg_names = |value: Option<&ContextValue>| -> Vec<String> {
        match value {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => Vec::new(),
        }
    };
    let describe = |shown: &str| -> String {
        let long = shown
            .split_whitespace()
            .next()
            .unwrap_or(shown)
            .trim_start_matches('-');
        match find_env(cmd, long) {
            Some(env) => format!("--{long} (env {env})"),
            None => shown.to_owned(),
        }
    };
    match err.kind() {
        ErrorKind::MissingRequiredArgument => {
            let names: Vec<String> = arg_names(err.get(ContextKind::InvalidArg))
                .iter()
                .map(|a| describe(a))
                .collect();
            format!("missing required setting {}", names.join(", "))
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = arg_names(err.get(ContextKind::InvalidArg))
                .first()
                .map(|a| describe(a))
                .unwrap_or_else(|| "a setting".to_owned());
            // clap's own first line already says what failed; keep only the reason.
            let rendered = err.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let reason = first.rsplit_once("': ").map(|(_, r)| r).unwrap_or(first);
            format!("invalid value for {arg}: {reason}")
        }
        _ => err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

fn find_env(cmd: &clap::Command, long: &str) -> Option<String> {
    for arg in cmd.get_arguments() {
        if arg.get_long() == Some(long) {
            return arg.get_env().map(|e| e.to_string_lossy().into_owned());
        }
    }
    cmd.get_subcommands().find_map(|sub| find_env(sub, long))
}

/// A browser origin: `http://` or `https://`, a host and an optional port, nothing
/// else (no path, no wildcard).
fn parse_origin(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("'{s}' is not an origin: it must start with https:// or http://"))?;
    let valid = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}' is not an origin: only scheme://host[:port], without a path or wildcard"
        ))
    }
}
