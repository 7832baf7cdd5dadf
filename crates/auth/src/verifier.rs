//! `JwtAuthenticator`: the [`Authenticator`] every service uses in production. It reads
//! `authorization: Bearer <jwt>`, verifies it (see [`crate::jwt`]) against keys from a
//! [`KeySource`], then asks Redis whether the token or its session was revoked.
//!
//! Refusals are UNAUTHENTICATED with one generic message; the precise reason goes to
//! the log only. Expired and revoked tokens carry the contract's TOKEN_EXPIRED and
//! TOKEN_REVOKED reasons so clients know to refresh or sign in again.
//!
//! A token whose signature and claims were verified once is remembered (bounded, until
//! it expires): the same bytes verify the same way, so a client's later calls skip
//! the Ed25519 check — the largest CPU cost of an authenticated call. Expiry, the
//! signing key still being published, and revocation are checked on every call.
//!
//! When the revocation check cannot be made (Redis down, slow, or not configured) the
//! [`RevocationFallback`] decides: `Closed` (the default) answers UNAVAILABLE, `Open`
//! accepts the token with a warning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrobank_config::{JwtArgs, RevocationFallback};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::jwt::{self, TokenError, Validation, Verified};
use crate::key_source::{DEFAULT_MIN_REFETCH, GrpcJwks, KeySource};
use crate::revocation::{RevocationLookup, Revocations};
use crate::{Authentication, Authenticator, Principal, unauthenticated};

/// The generic message of every token refusal.
pub(crate) const REFUSED: &str = "missing or invalid credentials";

/// Most verified tokens remembered at once (~1 KiB each).
const VERIFIED_CACHE_CAPACITY: usize = 8192;

/// See the module docs.
#[derive(Clone)]
pub struct JwtAuthenticator {
    validation: Validation,
    keys: Arc<dyn KeySource>,
    revocations: Option<Revocations>,
    fallback: RevocationFallback,
    verified: Arc<VerifiedCache>,
    /// Shared by clones, different for every [`JwtAuthenticator::new`]: whose
    /// [`crate::Vouched`] this authenticator honours.
    id: u64,
}

/// The next [`JwtAuthenticator::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Tokens whose signature and claims checked out, by their exact text.
#[derive(Default)]
struct VerifiedCache {
    tokens: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedCache {
    fn get(&self, token: &str) -> Option<Verified> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).cloned()
    }

    fn remove(&self, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(token);
    }

    /// Remembers `verified`; when full, forgets expired tokens first and everything
    /// if that is not enough, so the cache never grows past its capacity.
    fn insert(&self, token: &str, verified: &Verified, now: i64, leeway: i64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= VERIFIED_CACHE_CAPACITY {
            tokens.retain(|_, v| now <= v.exp.saturating_add(leeway));
            if tokens.len() >= VERIFIED_CACHE_CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), verified.clone());
    }
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
            verified: Arc::default(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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
        self.verify_token(Self::bearer(metadata)?).await
    }

    /// [`JwtAuthenticator::verify_metadata`], or the [`crate::Vouched`] of a gateway in
    /// this process for this exact token, made by this authenticator or a clone of it,
    /// while the token is unexpired.
    pub async fn verify_request(
        &self,
        metadata: &MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Verified, Status> {
        match self.vouched(metadata, extensions)? {
            Some(verified) => Ok(verified.clone()),
            None => self.verify_metadata(metadata).await,
        }
    }

    /// The token verified by this authenticator's own vouch in `extensions`, if there
    /// is one for this token; expired, it is refused as on every other path.
    fn vouched<'a>(
        &self,
        metadata: &MetadataMap,
        extensions: &'a tonic::Extensions,
    ) -> Result<Option<&'a Verified>, Status> {
        match crate::Vouched::for_token(extensions, metadata) {
            Some(vouch) if vouch.verifier == self.id => {
                let verified = &vouch.verified;
                if unix_now() > verified.exp.saturating_add(self.validation.leeway_secs) {
                    return Err(refused(TokenError::Expired));
                }
                Ok(Some(verified))
            }
            _ => Ok(None),
        }
    }

    /// Verifies one token: signature, claims, then revocation.
    pub async fn verify_token(&self, token: &str) -> Result<Verified, Status> {
        let verified = self.verify_signed(token).await?;
        self.revocation_check(&verified).run().await?;
        Ok(verified)
    }

    /// The revocation lookup of a verified token.
    fn revocation_check(&self, verified: &Verified) -> RevocationLookup {
        RevocationLookup::new(
            self.revocations.clone(),
            verified.jti,
            verified.principal.session_id,
            self.fallback,
        )
    }

    /// The bearer token in `metadata`, or UNAUTHENTICATED.
    fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
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
        Ok(token.trim())
    }

    /// Signature and claims only, no revocation check.
    pub async fn verify_signed(&self, token: &str) -> Result<Verified, Status> {
        let now = unix_now();
        let leeway = self.validation.leeway_secs;
        if let Some(known) = self.verified.get(token) {
            // Verified before: still unexpired, and its key still published (a
            // retired key's tokens stop working at once, as on the full path).
            if now > known.exp.saturating_add(leeway) {
                self.verified.remove(token);
                return Err(refused(TokenError::Expired));
            }
            if self.key(&known.kid).await?.is_some() {
                return Ok(known);
            }
            self.verified.remove(token);
        }
        let parsed = jwt::parse(token).map_err(refused)?;
        let key = self
            .key(&parsed.kid)
            .await?
            .ok_or_else(|| refused(TokenError::UnknownKey(parsed.kid.clone())))?;
        let verified = parsed
            .verify(&key, &self.validation, now)
            .map_err(refused)?;
        self.verified.insert(token, &verified, now, leeway);
        Ok(verified)
    }

    /// The published key `kid`, if any.
    async fn key(&self, kid: &str) -> Result<Option<crate::keys::PublicKey>, Status> {
        self.keys.key(kid).await.map_err(|err| {
            tracing::warn!(error = %err, "verification keys unavailable");
            status::error(
                Code::Unavailable,
                ErrorReason::Unavailable,
                "cannot verify credentials right now; retry later",
            )
        })
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

    async fn authenticate_request(
        &self,
        metadata: &MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Principal, Status> {
        match self.vouched(metadata, extensions)? {
            Some(verified) => Ok(verified.principal.clone()),
            None => self.verify_metadata(metadata).await.map(|v| v.principal),
        }
    }

    async fn authenticate_split(&self, metadata: &MetadataMap) -> Result<Authentication, Status> {
        let verified = self.verify_signed(Self::bearer(metadata)?).await?;
        let pending = crate::PendingCheck::Revocation(self.revocation_check(&verified));
        let headers: &tonic::codegen::http::HeaderMap = metadata.as_ref();
        let vouch = headers
            .get(tonic::codegen::http::header::AUTHORIZATION)
            .map(|authorization| crate::Vouched {
                authorization: authorization.clone(),
                verified: verified.clone(),
                verifier: self.id,
            });
        Ok(Authentication {
            principal: verified.principal,
            pending,
            vouch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Claims, sign};
    use crate::key_source::LocalKeys;
    use crate::keys::PrivateKey;

    fn validation() -> Validation {
        Validation {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway_secs: 5,
        }
    }

    fn token(key: &PrivateKey) -> String {
        let now = unix_now();
        let claims = Claims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: uuid::Uuid::now_v7().to_string(),
            role: "customer".into(),
            sid: Some(uuid::Uuid::now_v7().to_string()),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: Some(now),
            exp: now + 600,
        };
        sign(&claims, key)
    }

    fn verifier(keys: Arc<LocalKeys>) -> JwtAuthenticator {
        JwtAuthenticator::new(validation(), keys, None, RevocationFallback::Open)
    }

    /// A vouch of this authenticator (or a clone) for the exact token stands in for
    /// the whole check (here no store exists and the fallback is Closed, so any
    /// lookup refuses); one for another token, one by another authenticator with the
    /// same keys, or none, does not; a vouched token still expires.
    #[tokio::test]
    async fn only_its_own_vouch_for_this_exact_token_skips_the_check() {
        let key = PrivateKey::generate();
        let keys = Arc::new(LocalKeys::new(vec![key.public()]));
        let v = JwtAuthenticator::new(validation(), keys.clone(), None, RevocationFallback::Closed);
        let stranger = JwtAuthenticator::new(validation(), keys, None, RevocationFallback::Open);
        let (t, other) = (token(&key), token(&key));
        let metadata = |token: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
            metadata
        };
        async fn vouch(by: &JwtAuthenticator, metadata: &MetadataMap) -> tonic::Extensions {
            let split = by.authenticate_split(metadata).await.unwrap();
            let mut extensions = tonic::Extensions::new();
            extensions.insert(split.vouch.expect("a vouch"));
            extensions
        }
        let refused = async |extensions: &tonic::Extensions| {
            let result = v.authenticate_request(&metadata(&t), extensions).await;
            result.unwrap_err().code()
        };

        assert_eq!(refused(&tonic::Extensions::new()).await, Code::Unavailable);
        let for_other = vouch(&v, &metadata(&other)).await;
        assert_eq!(refused(&for_other).await, Code::Unavailable);
        let by_stranger = vouch(&stranger, &metadata(&t)).await;
        assert_eq!(refused(&by_stranger).await, Code::Unavailable);
        let own = vouch(&v.clone(), &metadata(&t)).await;
        assert!(crate::Vouched::covers(&own, &metadata(&t)));
        let shown = format!("{:?}", own.get::<crate::Vouched>().unwrap());
        assert!(!shown.contains(&t[t.len() - 20..]), "{shown}");
        assert!(!crate::Vouched::covers(&own, &metadata(&other)));
        let principal = v.authenticate_request(&metadata(&t), &own).await.unwrap();
        assert_eq!(principal.role, crate::Role::Customer);
        let verified = v.verify_request(&metadata(&t), &own).await.unwrap();
        assert_eq!(verified.principal, principal);

        // A forged token gets no vouch: the signature is checked first.
        let forged = format!("{}x", &t[..t.len() - 1]);
        let err = v
            .authenticate_split(&metadata(&forged))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::Unauthenticated);

        let mut expired = own.clone();
        let mut stale = expired.remove::<crate::Vouched>().unwrap();
        stale.verified.exp = unix_now() - 60;
        expired.insert(stale);
        let err = v
            .authenticate_request(&metadata(&t), &expired)
            .await
            .unwrap_err();
        assert_eq!(
            status::reason(&err).as_deref(),
            Some("ERROR_REASON_TOKEN_EXPIRED")
        );
    }

    /// A verified token is remembered; a one-byte change to it is not served from the
    /// cache but verified (and refused) in full.
    #[tokio::test]
    async fn verified_tokens_are_remembered_by_their_exact_text() {
        let key = PrivateKey::generate();
        let v = verifier(Arc::new(LocalKeys::new(vec![key.public()])));
        let t = token(&key);
        let first = v.verify_signed(&t).await.unwrap();
        assert_eq!(v.verified.get(&t), Some(first.clone()));
        assert_eq!(v.verify_signed(&t).await.unwrap(), first);

        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let err = v.verify_signed(&forged).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(v.verified.get(&forged).is_none());
    }

    /// A remembered token still expires, and stops working as soon as its signing
    /// key is no longer published.
    #[tokio::test]
    async fn remembered_tokens_still_expire_and_follow_key_retirement() {
        let key = PrivateKey::generate();
        let keys = Arc::new(LocalKeys::new(vec![key.public()]));
        let v = verifier(keys.clone());

        let expiring = token(&key);
        v.verify_signed(&expiring).await.unwrap();
        {
            let mut tokens = v.verified.tokens.lock().unwrap();
            tokens.get_mut(expiring.as_str()).unwrap().exp = unix_now() - 60;
        }
        let err = v.verify_signed(&expiring).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(
            status::reason(&err).as_deref(),
            Some("ERROR_REASON_TOKEN_EXPIRED")
        );
        assert!(v.verified.get(&expiring).is_none());

        let t = token(&key);
        v.verify_signed(&t).await.unwrap();
        keys.replace(vec![PrivateKey::generate().public()]);
        let err = v.verify_signed(&t).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(v.verified.get(&t).is_none());
    }

    /// The cache never holds more than its capacity.
    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedCache::default();
        let now = unix_now();
        let verified = Verified {
            principal: crate::Principal {
                user_id: uuid::Uuid::now_v7(),
                role: crate::Role::Customer,
                session_id: None,
            },
            jti: uuid::Uuid::new_v4(),
            exp: now + 600,
            kid: "k".into(),
        };
        for i in 0..=VERIFIED_CACHE_CAPACITY {
            cache.insert(&format!("token-{i}"), &verified, now, 5);
        }
        let len = cache.tokens.lock().unwrap().len();
        assert!(len <= VERIFIED_CACHE_CAPACITY, "{len} entries");
        assert!(
            cache
                .get(&format!("token-{VERIFIED_CACHE_CAPACITY}"))
                .is_some()
        );
    }
}
