//! Who is calling: the `Principal` every RPC acts for, and the `Authenticator` a service
//! uses to turn request metadata into one. Services authenticate every call themselves,
//! even behind the gateway (defence in depth); only a gateway in the same process,
//! sharing the service's own verifier, may vouch for a token it just checked
//! ([`Vouched`]).
//!
//! Production services use [`JwtAuthenticator`]: access tokens (JWT, EdDSA) issued by
//! the identity service, verified against its published keys ([`keys`], [`jwt`],
//! [`key_source`]) and checked against Redis for revocation ([`revocation`]).
//! [`DevHeaderAuthenticator`] trusts a metadata header and therefore is off unless
//! explicitly enabled (`--insecure-dev-principals`) and says so loudly at startup.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use uuid::Uuid;

pub mod jwt;
pub mod key_source;
pub mod keys;
pub mod revocation;
mod verifier;

pub use verifier::{JwtAuthenticator, unix_now, validation_from};

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sees and moves only their own money.
    Customer,
    /// Books cash in and out against system accounts, reads any account.
    Operator,
    /// Manages users and may do everything.
    Admin,
    /// Another Ferrobank service (service-to-service calls).
    Service,
}

impl Role {
    /// The lowercase name used in tokens and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "customer" => Ok(Role::Customer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user (or service account) id.
    pub user_id: Uuid,
    /// What it may do.
    pub role: Role,
    /// The session the access token belongs to, when it came from a login.
    pub session_id: Option<Uuid>,
}

impl Principal {
    /// Whether the principal is staff that may read any account.
    pub fn can_read_any_account(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Admin | Role::Service)
    }
}

/// The part of an authentication that needs a round trip, not made yet: see
/// [`Authenticator::authenticate_split`].
pub enum PendingCheck {
    /// Nothing is left to check.
    Done,
    /// A token revocation lookup.
    Revocation(revocation::RevocationLookup),
    /// Any other check.
    Other(std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Status>> + Send>>),
}

impl PendingCheck {
    /// Makes the check.
    pub async fn run(self) -> Result<(), Status> {
        match self {
            PendingCheck::Done => Ok(()),
            PendingCheck::Revocation(lookup) => lookup.run().await,
            PendingCheck::Other(check) => check.await,
        }
    }
}

/// What [`Authenticator::authenticate_split`] found.
pub struct Authentication {
    /// Who the credentials name; not authenticated until `pending` has passed.
    pub principal: Principal,
    /// What is left to check.
    pub pending: PendingCheck,
    /// The authenticator's word for a service in the same process, to hand on once
    /// `pending` has passed (never before): see [`Vouched`].
    pub vouch: Option<Vouched>,
}

/// Put in a request's extensions by a gateway in the same process (`ferrobank all`)
/// once the request's token has passed every check of a [`JwtAuthenticator`] —
/// signature, claims, expiry, the key still published, revocation — a moment ago.
/// Extensions never cross the network, so no client can set one, and only this crate
/// makes one (from [`Authenticator::authenticate_split`]).
///
/// A service honours it only when its own authenticator is the one that made it (a
/// clone sharing its keys, settings and cache, as in `ferrobank all`), and only for
/// the exact `authorization` value it was made for; it still refuses the token once
/// expired. Then the service's own check would repeat the same steps against the same
/// keys and answer the same, so it is skipped. Any other authenticator, another token,
/// or no vouch: the service checks everything itself.
#[derive(Clone)]
pub struct Vouched {
    authorization: tonic::codegen::http::HeaderValue,
    verified: jwt::Verified,
    verifier: u64,
}

/// Never shows the token it was made for.
impl fmt::Debug for Vouched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vouched")
            .field("principal", &self.verified.principal)
            .field("exp", &self.verified.exp)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl Vouched {
    /// Whether `extensions` hold a vouch for the `authorization` value in `metadata`,
    /// by any authenticator.
    pub fn covers(extensions: &tonic::Extensions, metadata: &MetadataMap) -> bool {
        Self::for_token(extensions, metadata).is_some()
    }

    /// The vouch in `extensions` for the `authorization` value in `metadata`, if any.
    fn for_token<'a>(
        extensions: &'a tonic::Extensions,
        metadata: &MetadataMap,
    ) -> Option<&'a Vouched> {
        let vouch = extensions.get::<Self>()?;
        let value = metadata.get("authorization")?;
        (vouch.authorization.as_bytes() == value.as_bytes()).then_some(vouch)
    }
}

/// Turns request metadata into a principal, or UNAUTHENTICATED.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status>;

    /// [`Authenticator::authenticate`] for a request whose extensions may hold a
    /// [`Vouched`] from a gateway in the same process. The default ignores them.
    async fn authenticate_request(
        &self,
        metadata: &MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Result<Principal, Status> {
        let _ = extensions;
        self.authenticate(metadata).await
    }

    /// [`Authenticator::authenticate`] in two steps, for a caller that overlaps the
    /// round trip with other work: the local checks (signature, claims, expiry) now,
    /// and the remote ones (revocation) in the returned [`PendingCheck`]. The request
    /// is authenticated only when both succeed; until the check has succeeded the
    /// principal may be used to count the call, never to act on it. The default does
    /// everything in the first step and vouches for nothing.
    async fn authenticate_split(&self, metadata: &MetadataMap) -> Result<Authentication, Status> {
        let principal = self.authenticate(metadata).await?;
        Ok(Authentication {
            principal,
            pending: PendingCheck::Done,
            vouch: None,
        })
    }
}

/// A shareable authenticator.
pub type SharedAuthenticator = Arc<dyn Authenticator>;

/// UNAUTHENTICATED with a generic message; the reason belongs in the log only.
pub fn unauthenticated(log_reason: &str) -> Status {
    tracing::info!(reason = log_reason, "request refused: unauthenticated");
    status::error(
        Code::Unauthenticated,
        ErrorReason::Unauthenticated,
        "missing or invalid credentials",
    )
}

/// The header [`DevHeaderAuthenticator`] reads: `<role>:<user uuid>`.
pub const DEV_PRINCIPAL_HEADER: &str = "x-ferrobank-dev-principal";

/// Trusts `x-ferrobank-dev-principal: <role>:<uuid>` — for local development and
/// tests only, until identity issues verified tokens. Never enable it in production.
#[derive(Clone, Copy, Debug, Default)]
pub struct DevHeaderAuthenticator;

#[tonic::async_trait]
impl Authenticator for DevHeaderAuthenticator {
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let Some(value) = metadata.get(DEV_PRINCIPAL_HEADER) else {
            return Err(unauthenticated("no dev principal header"));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("dev principal header is not ASCII"))?;
        let (role, id) = value
            .split_once(':')
            .ok_or_else(|| unauthenticated("dev principal header is not role:uuid"))?;
        let role = role
            .parse::<Role>()
            .map_err(|()| unauthenticated("dev principal header has an unknown role"))?;
        let user_id = Uuid::parse_str(id)
            .map_err(|_| unauthenticated("dev principal header has a bad uuid"))?;
        Ok(Principal {
            user_id,
            role,
            session_id: None,
        })
    }
}

/// Refuses every request: what a service uses when no authenticator is configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyAll;

#[tonic::async_trait]
impl Authenticator for DenyAll {
    async fn authenticate(&self, _metadata: &MetadataMap) -> Result<Principal, Status> {
        Err(unauthenticated("no authenticator configured"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert(DEV_PRINCIPAL_HEADER, value.parse().unwrap());
        md
    }

    /// A well-formed header yields the principal; anything else is UNAUTHENTICATED.
    #[tokio::test]
    async fn dev_header_parses_or_refuses() {
        let id = Uuid::now_v7();
        let p = DevHeaderAuthenticator
            .authenticate(&md(&format!("operator:{id}")))
            .await
            .unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.user_id, id);
        for bad in [
            "operator",
            "king:00000000-0000-0000-0000-000000000000",
            "customer:xyz",
        ] {
            let err = DevHeaderAuthenticator
                .authenticate(&md(bad))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
        }
        let err = DevHeaderAuthenticator
            .authenticate(&MetadataMap::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let err = DenyAll.authenticate(&md("admin:x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
}
