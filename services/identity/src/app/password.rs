//! argon2id hashing on the blocking pool. Unknown users are "verified" against a dummy
//! hash made with the same parameters, so a login takes as long whether or not the
//! user exists.
//!
//! Each hash holds `memory_kib` (19 MiB by default) for its duration, so at most one
//! hash per core runs at a time: a burst of logins queues instead of multiplying memory
//! (64 concurrent logins unbounded would take ~1.2 GiB).

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::IdentityError;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// See the module docs.
#[derive(Clone)]
pub struct Hasher {
    argon: Argon2<'static>,
    dummy: String,
    /// One permit per core: bounds the memory hashing can hold at once.
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher with `params`; fails naming the bad parameter.
    pub fn new(params: Argon2Params) -> anyhow::Result<Self> {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let dummy = argon
            .hash_password(b"not a real password; only burns time")
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Ok(Self {
            argon,
            dummy,
            permits: Arc::new(Semaphore::new(cores)),
        })
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: SecretString) -> Result<String, IdentityError> {
        let argon = self.argon.clone();
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            argon
                .hash_password(password.expose_secret().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| IdentityError::Internal(format!("argon2 hash: {e}")))
        })
        .await
        .map_err(|e| IdentityError::Internal(format!("hash task: {e}")))?
    }

    /// Whether `password` matches `hash`; with `None` (no such user) checks the dummy
    /// hash and answers false, taking the same time.
    pub async fn verify(
        &self,
        password: SecretString,
        hash: Option<String>,
    ) -> Result<bool, IdentityError> {
        let argon = self.argon.clone();
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let ok = argon
                .verify_password(password.expose_secret().as_bytes(), hash.as_str())
                .is_ok();
            ok && exists
        })
        .await
        .map_err(|e| IdentityError::Internal(format!("verify task: {e}")))
    }

    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, IdentityError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| IdentityError::Internal(format!("hash permits: {e}")))
    }
}
