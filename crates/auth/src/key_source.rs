//! Where a verifier finds the public key for a token's `kid`: a local set (in process
//! with the identity service, or tests), or identity's JWKS fetched over gRPC
//! (`GetJwks`), cached and refetched when a token names a key the cache lacks.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ferrobank_proto::identity::GetJwksRequest;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use tonic::transport::Channel;

use crate::keys::{Jwk, PublicKey};

/// The key set could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("fetching the JWKS failed: {0}")]
pub struct KeySourceError(pub String);

/// Finds verification keys by id.
#[tonic::async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The key named `kid`, or `None` when the issuer does not publish it.
    async fn key(&self, kid: &str) -> Result<Option<PublicKey>, KeySourceError>;
}

/// A fixed (replaceable) set of keys held in memory.
#[derive(Debug, Default)]
pub struct LocalKeys {
    keys: RwLock<Vec<PublicKey>>,
}

impl LocalKeys {
    /// A source serving `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self {
            keys: RwLock::new(keys),
        }
    }

    /// Replaces the set (key rotation in a running process).
    pub fn replace(&self, keys: Vec<PublicKey>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }
}

#[tonic::async_trait]
impl KeySource for LocalKeys {
    async fn key(&self, kid: &str) -> Result<Option<PublicKey>, KeySourceError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        Ok(keys.iter().find(|k| k.kid() == kid).cloned())
    }
}

/// Identity's JWKS over gRPC, cached. An unknown kid triggers a refetch, at most once
/// per `min_refetch` so a stream of made-up kids cannot turn into a stream of fetches.
pub struct GrpcJwks {
    client: IdentityServiceClient<Channel>,
    cache: RwLock<HashMap<String, PublicKey>>,
    /// When the last fetch finished; fetches are serialized by this lock.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for GrpcJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcJwks")
            .field("min_refetch", &self.min_refetch)
            .finish_non_exhaustive()
    }
}

/// The default minimum interval between two fetches.
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(1);

impl GrpcJwks {
    /// Fetches from the identity service at `channel` (connect lazily).
    pub fn new(channel: Channel, min_refetch: Duration) -> Self {
        Self {
            client: IdentityServiceClient::new(channel),
            cache: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
        }
    }

    /// Fetches from `uri` (e.g. `http://127.0.0.1:50052`), connecting lazily.
    pub fn from_uri(uri: &str, min_refetch: Duration) -> Result<Self, KeySourceError> {
        let endpoint = Channel::from_shared(uri.to_owned())
            .map_err(|e| KeySourceError(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        Ok(Self::new(endpoint.connect_lazy(), min_refetch))
    }

    fn cached(&self, kid: &str) -> Option<PublicKey> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(), KeySourceError> {
        let response = self
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await
            .map_err(|s| KeySourceError(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let mut keys = HashMap::new();
        for jwk in response.keys {
            let jwk = Jwk {
                kty: jwk.kty,
                crv: jwk.crv,
                x: jwk.x,
                kid: jwk.kid,
                alg: jwk.alg,
                use_: jwk.r#use,
            };
            match PublicKey::from_jwk(&jwk) {
                Ok(key) => {
                    keys.insert(key.kid().to_owned(), key);
                }
                Err(err) => tracing::warn!(kid = %jwk.kid, error = %err, "ignoring a JWKS key"),
            }
        }
        tracing::debug!(keys = keys.len(), "jwks fetched");
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }
}

#[tonic::async_trait]
impl KeySource for GrpcJwks {
    async fn key(&self, kid: &str) -> Result<Option<PublicKey>, KeySourceError> {
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        let mut last = self.last_fetch.lock().await;
        // Another call may have fetched while this one waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return Ok(None);
        }
        let result = self.fetch().await;
        *last = Some(Instant::now());
        result?;
        Ok(self.cached(kid))
    }
}
