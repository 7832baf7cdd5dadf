//! The identity service: `ferrobank.identity.v1.IdentityService` on database "identity".
//!
//! Users (argon2id passwords), sessions with rotating refresh tokens (a reused token
//! revokes its family), EdDSA access tokens with published keys, service accounts and
//! login throttling in Redis. Layers: `api/` (tonic) → `app/` (use cases,
//! `IdentityError`) → `store/` (SQL and Redis counters).

mod api;
pub mod app;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrobank_auth::JwtAuthenticator;
use ferrobank_auth::jwt::Validation;
use ferrobank_auth::key_source::{KeySource, LocalKeys};
use ferrobank_auth::keys::{KeyRing, PrivateKey};
use ferrobank_auth::revocation::Revocations;
use ferrobank_config::{DatabaseSettings, IdentityArgs, JwtArgs, RedisUrl, RevocationFallback};
use ferrobank_db::Db;
use ferrobank_proto::identity::identity_service_server::IdentityServiceServer;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

pub use app::password::Argon2Params;
pub use store::throttle::ThrottleLimits;

mod embedded {
    refinery::embed_migrations!("../../migrations/identity");
}

/// The identity service's migrations, embedded in the binary.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "ferrobank.identity.v1.IdentityService";

/// Everything identity needs besides its database, built from values (tests) or from
/// [`IdentityArgs`] + [`JwtArgs`] (`main`).
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Signing keys: the first signs, all are published.
    pub keys: KeyRing,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Clock leeway of verification, in seconds.
    pub leeway_secs: u64,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_ttl: Duration,
    /// argon2id parameters.
    pub argon2: Argon2Params,
    /// Shortest password accepted.
    pub password_min_length: usize,
    /// Login throttling limits.
    pub throttle: ThrottleLimits,
    /// Use `x-forwarded-for` for the client IP (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Redis for throttling and revocation; without it Login, Logout and every
    /// authenticated call answer UNAVAILABLE (fail closed).
    pub redis_url: Option<RedisUrl>,
    /// Prefix of identity's throttle keys.
    pub redis_prefix: String,
    /// Prefix of revocation keys (shared with every verifier).
    pub revocation_prefix: String,
    /// Bound on one Redis command.
    pub redis_timeout: Duration,
    /// Revocation check fallback when Redis is down.
    pub revocation_fallback: RevocationFallback,
}

impl IdentityConfig {
    /// From the command line; loads the signing keys (fails naming the setting).
    pub fn from_args(args: &IdentityArgs, jwt: &JwtArgs) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(pem) = &args.identity_signing_keys_pem {
            keys.extend(PrivateKey::from_pem_all(pem.expose_secret()).context(
                "--identity-signing-keys-pem (env FERROBANK_IDENTITY_SIGNING_KEYS_PEM)",
            )?);
        }
        for path in &args.identity_signing_key_files {
            let pem = SecretString::from(std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading signing key {} (--identity-signing-key-files)",
                    path.display()
                )
            })?);
            keys.extend(
                PrivateKey::from_pem_all(pem.expose_secret())
                    .with_context(|| format!("signing key {}", path.display()))?,
            );
        }
        let keys = KeyRing::new(keys).context(
            "missing required setting --identity-signing-key-files \
             (env FERROBANK_IDENTITY_SIGNING_KEY_FILES) or FERROBANK_IDENTITY_SIGNING_KEYS_PEM",
        )?;
        tracing::info!(
            kid = keys.signing().kid(),
            published = keys.public_keys().len(),
            "signing keys loaded"
        );
        Ok(Self {
            keys,
            issuer: jwt.jwt_issuer.clone(),
            audience: jwt.jwt_audience.clone(),
            leeway_secs: jwt.jwt_leeway_secs,
            access_ttl: Duration::from_secs(args.identity_access_ttl_secs),
            refresh_ttl: Duration::from_secs(args.identity_refresh_ttl_secs),
            argon2: Argon2Params {
                memory_kib: args.identity_argon2_memory_kib,
                iterations: args.identity_argon2_iterations,
                parallelism: args.identity_argon2_parallelism,
            },
            password_min_length: args.identity_password_min_length,
            throttle: ThrottleLimits {
                per_user: args.identity_login_max_failures_per_user,
                per_ip: args.identity_login_max_failures_per_ip,
                window: Duration::from_secs(args.identity_login_window_secs),
            },
            trust_forwarded_for: args.identity_trust_forwarded_for,
            redis_url: jwt.jwt_redis_url.clone(),
            redis_prefix: args.identity_redis_prefix.clone(),
            revocation_prefix: jwt.jwt_redis_prefix.clone(),
            redis_timeout: Duration::from_millis(jwt.jwt_redis_timeout_ms),
            revocation_fallback: jwt.jwt_revocation_fallback,
        })
    }

    /// Defaults with the given keys and Redis: what tests and ephemeral setups use.
    /// argon2 is cheap here; production takes its cost from the command line.
    pub fn with_keys(keys: KeyRing, redis_url: Option<RedisUrl>, prefix: &str) -> Self {
        Self {
            keys,
            issuer: "ferrobank-identity".to_owned(),
            audience: "ferrobank".to_owned(),
            leeway_secs: 30,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            argon2: Argon2Params {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            password_min_length: 12,
            throttle: ThrottleLimits {
                per_user: 5,
                per_ip: 50,
                window: Duration::from_secs(900),
            },
            trust_forwarded_for: false,
            redis_url,
            redis_prefix: format!("{prefix}id:"),
            revocation_prefix: format!("{prefix}auth:"),
            redis_timeout: Duration::from_millis(500),
            revocation_fallback: RevocationFallback::Closed,
        }
    }

    /// A random in-memory key and no Redis: the service starts, serves its keys and
    /// sign-up, and refuses everything that needs Redis. For `Platform::start` without
    /// identity settings.
    pub fn ephemeral() -> Self {
        let keys = KeyRing::new(vec![PrivateKey::generate()]).expect("one key");
        Self::with_keys(keys, None, "fb:")
    }

    /// The claims validation verifiers of these tokens use.
    pub fn validation(&self) -> Validation {
        Validation {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: i64::try_from(self.leeway_secs).unwrap_or(i64::MAX),
        }
    }
}

/// A JSON Web Key Set document of `keys`. The members are base64url and key-id
/// strings (no characters JSON would escape), so plain formatting is exact.
pub fn jwks_json(keys: &[ferrobank_auth::keys::Jwk]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                r#"{{"kty":"{}","crv":"{}","x":"{}","kid":"{}","alg":"{}","use":"{}"}}"#,
                k.kty, k.crv, k.x, k.kid, k.alg, k.use_
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// `GET /.well-known/jwks.json` for the admin HTTP port: the public keys of `config`.
pub fn jwks_router(config: &IdentityConfig) -> axum::Router {
    let body = jwks_json(
        &config
            .keys
            .public_keys()
            .iter()
            .map(|k| k.to_jwk())
            .collect::<Vec<_>>(),
    );
    axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    )
}

/// The running service's state.
#[derive(Clone)]
pub struct Identity {
    app: app::App,
    auth: JwtAuthenticator,
    keys: Arc<LocalKeys>,
    trust_forwarded_for: bool,
}

impl Identity {
    /// Builds the pool and Redis clients (all connect lazily; the process starts while
    /// they are down and reports NOT_SERVING until the database is back).
    pub fn new(settings: &DatabaseSettings, config: IdentityConfig) -> anyhow::Result<Self> {
        let pool = ferrobank_db::build_pool(&settings.primary)?;
        let store = store::Store::new(Db::new(pool, settings.primary.statement_cache));
        let hasher = app::password::Hasher::new(config.argon2)?;
        let (throttle, revocations) = match &config.redis_url {
            Some(url) => (
                Some(store::throttle::Throttle::new(
                    url,
                    &config.redis_prefix,
                    config.throttle,
                    config.redis_timeout,
                )?),
                Some(Revocations::new(
                    url,
                    &config.revocation_prefix,
                    config.redis_timeout,
                )?),
            ),
            None => (None, None),
        };
        let keys = Arc::new(LocalKeys::new(config.keys.public_keys()));
        let auth = JwtAuthenticator::new(
            config.validation(),
            keys.clone(),
            revocations.clone(),
            config.revocation_fallback,
        );
        let leeway = Duration::from_secs(config.leeway_secs);
        let app = app::App::new(
            store,
            hasher,
            config.keys.clone(),
            throttle,
            revocations,
            app::Settings {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                access_ttl: config.access_ttl,
                refresh_ttl: config.refresh_ttl,
                leeway,
                password_min_length: config.password_min_length,
            },
        );
        Ok(Self {
            app,
            auth,
            keys,
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// Identity's verification keys, for verifiers in the same process.
    pub fn key_source(&self) -> Arc<dyn KeySource> {
        self.keys.clone()
    }

    /// The verifier identity itself uses (same keys, revocation store and fallback).
    pub fn authenticator(&self) -> JwtAuthenticator {
        self.auth.clone()
    }

    /// The use cases, for the command line (`ferrobank admin create-user`) and tests.
    pub fn app(&self) -> &app::App {
        &self.app
    }

    /// The public keys as a JSON Web Key Set document (`/.well-known/jwks.json`).
    pub fn jwks_json(&self) -> String {
        jwks_json(&self.app.jwks())
    }

    /// Serves the service with reflection and health on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.start().await?.serve(listener, shutdown).await
    }

    /// The service's routes and health watcher, ready to serve on a listener and to
    /// be called in process by the gateway.
    pub async fn start(self) -> anyhow::Result<ferrobank_server::Started> {
        let mut host = ferrobank_server::Host::new()?;
        let db = self.app.store().db().clone();
        let watcher = ferrobank_server::watch_health(
            host.health(),
            SERVICE_NAME,
            Duration::from_secs(2),
            move || {
                let db = db.clone();
                async move { db.query("SELECT 1", &[]).await.is_ok() }
            },
        )
        .await;
        let api = api::Api::new(self.app, self.auth, self.trust_forwarded_for);
        host.add(IdentityServiceServer::new(api));
        Ok(host.start(vec![watcher]))
    }
}
