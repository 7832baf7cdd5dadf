//! `JwtAuthenticator`: the [`Authenticator`] every service uses in production. It reads
//! `authorization: Bearer <jwt>`, verifies it (see [`crate::jwt`]) against keys from a
//! [`KeySource`], then asks Redis whether the token or its session was revoked.
//!
//! Refusals are UNAUTHENTICATED with one generic message; the precise reason goes to
//! the log only. Expired and revoked tokens carry the contract's TOKEN_EXPIRED and
//! TOKEN_REVOKED reasons so clients know to refresh or sign in again.
//!
//! When the revocation check cannot be made (Redis down, slow, or not configured) the
//! [`RevocationFallback`] decides: `Closed` (the default) answers UNAVAILABLE, `Open`
//! accepts the token with a warning.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrobank_config::{JwtArgs, RevocationFallback};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::jwt::{self, TokenError, Validation, Verified};
use crate::key_source::{DEFAULT_MIN_REFETCH, GrpcJwks, KeySource};
use crate::revocation::Revocations;
use crate::{Authenticator, Principal, unauthenticated};

/// The generic message of every token refusal.
const REFUSED: &str = "missing or invalid credentials";

/// See the module docs.
#[derive(Clone)]
pub struct JwtAuthenticator {
    validation: Validation,
    keys: Arc<dyn KeySource>,
    revocations: Option<Revocations>,
    fallback: RevocationFallback,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("validation", &self.validation)
            .field("revocations", &self.revocations)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// A verifier with explicit parts. `revocations: None` means the check can never be
    /// made, so `fallback` decides every call (Closed refuses everything).
    pub fn new(
        validation: Validation,
        keys: Arc<dyn KeySource>,
        revocations: Option<Revocations>,
        fallback: RevocationFallback,
    ) -> Self {
        Self {
            validation,
            keys,
            revocations,
            fallback,
        }
    }

    /// A verifier configured by `args`, with `keys` when given (in process with
    /// identity) or else identity's JWKS from `--jwt-jwks-upstream`.
    pub fn from_args(args: &JwtArgs, keys: Option<Arc<dyn KeySource>>) -> anyhow::Result<Self> {
        let keys = match (keys, &args.jwt_jwks_upstream) {
            (Some(keys), _) => keys,
            (None, Some(uri)) => Arc::new(GrpcJwks::from_uri(uri.as_str(), DEFAULT_MIN_REFETCH)?),
            (None, None) => anyhow::bail!(
                "missing required setting --jwt-jwks-upstream (env FERROBANK_JWT_JWKS_UPSTREAM)"
            ),
        };
        let revocations = args
            .jwt_redis_url
            .as_ref()
            .map(|url| {
                Revocations::new(
                    url,
                    &args.jwt_redis_prefix,
                    Duration::from_millis(args.jwt_redis_timeout_ms),
                )
            })
            .transpose()?;
        if revocations.is_none() {
            tracing::warn!(
                fallback = ?args.jwt_revocation_fallback,
                "no Redis for token revocation checks (REDIS_URL unset)"
            );
        }
        Ok(Self::new(
            validation_from(args),
            keys,
            revocations,
            args.jwt_revocation_fallback,
        ))
    }

    /// Verifies the bearer token in `metadata`.
    pub async fn verify_metadata(&self, metadata: &MetadataMap) -> Result<Verified, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthenticated("no authorization header"));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("authorization header is not ASCII"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("authorization is not a bearer token"))?;
        self.verify_token(token.trim()).await
    }

    /// Verifies one token: signature, claims, then revocation.
    pub async fn verify_token(&self, token: &str) -> Result<Verified, Status> {
        let verified = self.verify_signed(token).await?;
        let sid = verified.principal.session_id;
        let revoked = match &self.revocations {
            Some(store) => store.is_revoked(verified.jti, sid).await.map_err(|e| e.0),
            None => Err("no revocation store configured".to_owned()),
        };
        match revoked {
            Ok(false) => Ok(verified),
            Ok(true) => {
                tracing::info!(jti = %verified.jti, sid = ?sid, "request refused: token revoked");
                Err(status::error(
                    Code::Unauthenticated,
                    ErrorReason::TokenRevoked,
                    REFUSED,
                ))
            }
            Err(error) => match self.fallback {
                RevocationFallback::Closed => {
                    tracing::warn!(%error, "revocation check failed; refusing (fail closed)");
                    Err(status::error(
                        Code::Unavailable,
                        ErrorReason::Unavailable,
                        "cannot verify credentials right now; retry later",
                    ))
                }
                RevocationFallback::Open => {
                    tracing::warn!(%error, "revocation check failed; accepting (fail open)");
                    Ok(verified)
                }
            },
        }
    }

    /// Signature and claims only, no revocation check.
    pub async fn verify_signed(&self, token: &str) -> Result<Verified, Status> {
        let parsed = jwt::parse(token).map_err(refused)?;
        let key = self.keys.key(&parsed.kid).await.map_err(|err| {
            tracing::warn!(error = %err, "verification keys unavailable");
            status::error(
                Code::Unavailable,
                ErrorReason::Unavailable,
                "cannot verify credentials right now; retry later",
            )
        })?;
        let key = key.ok_or_else(|| refused(TokenError::UnknownKey(parsed.kid.clone())))?;
        parsed
            .verify(&key, &self.validation, unix_now())
            .map_err(refused)
    }
}

/// The claims validation `args` asks for.
pub fn validation_from(args: &JwtArgs) -> Validation {
    Validation {
        issuer: args.jwt_issuer.clone(),
        audience: args.jwt_audience.clone(),
        leeway_secs: i64::try_from(args.jwt_leeway_secs).unwrap_or(i64::MAX),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn refused(err: TokenError) -> Status {
    match err {
        TokenError::Expired => {
            tracing::info!(reason = %err, "request refused: unauthenticated");
            status::error(Code::Unauthenticated, ErrorReason::TokenExpired, REFUSED)
        }
        other => unauthenticated(&other.to_string()),
    }
}

#[tonic::async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        self.verify_metadata(metadata).await.map(|v| v.principal)
    }
}
