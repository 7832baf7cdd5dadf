//! Authentication: every non-public method needs credentials the configured
//! `Authenticator` accepts (signature, expiry and revocation once JWTs land), else
//! UNAUTHENTICATED. Public methods (sign-up, login, refresh, JWKS, health, reflection)
//! pass without. The verified caller — or, for anonymous calls, the client's IP — goes
//! into the request's extensions as a [`Caller`], the key fairness, rate limits and
//! idempotency are scoped by. The token's revocation lookup (a Redis round trip) runs
//! together with the caller's rate-limit decision when the layer is given the limits.
//!
//! The original `authorization` (and dev-principal) metadata is forwarded unchanged:
//! a service across the network verifies the token again itself (defence in depth);
//! the gateway asserts nothing on its behalf. In `ferrobank all` the gateway and the
//! services share one verifier, and its [`ferrobank_auth::Vouched`] for the token goes
//! along in the request's extensions: the service takes it instead of repeating the
//! same checks against the same keys.

use std::fmt;
use std::net::IpAddr;
use std::task::{Context, Poll};

use ferrobank_auth::{Authentication, SharedAuthenticator};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use uuid::Uuid;

use super::rate_limit::RateLimitLayer;
use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, refuse, take_ready};
use crate::methods;

/// Who a call is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An authenticated principal.
    User(Uuid),
    /// An anonymous call, by client address.
    Ip(IpAddr),
    /// An anonymous call whose address is unknown (not over TCP).
    Unknown,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User(id) => write!(f, "u:{id}"),
            Caller::Ip(ip) => write!(f, "ip:{ip}"),
            Caller::Unknown => f.write_str("anon"),
        }
    }
}

impl Caller {
    /// The caller recorded by the auth layer (anonymous-unknown if it never ran).
    pub fn of<B>(req: &http::Request<B>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .copied()
            .unwrap_or(Caller::Unknown)
    }
}

/// Adds [`Auth`].
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: SharedAuthenticator,
    limits: Option<RateLimitLayer>,
}

impl AuthLayer {
    /// Authenticates with `authenticator`.
    pub fn new(authenticator: SharedAuthenticator) -> Self {
        Self {
            authenticator,
            limits: None,
        }
    }

    /// Takes the caller's rate-limit decision from `limits` while the revocation
    /// lookup is in flight, so a call waits for one Redis round trip, not two; the
    /// rate-limit layer applies it.
    pub fn with_limits(self, limits: RateLimitLayer) -> Self {
        Self {
            limits: Some(limits),
            ..self
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: SharedAuthenticator,
    limits: Option<RateLimitLayer>,
}

impl<S> Service<GrpcRequest> for Auth<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = GrpcResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: GrpcRequest) -> Self::Future {
        if methods::lookup(req.uri().path()).public {
            let caller = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map_or(Caller::Unknown, |addr| Caller::Ip(addr.ip()));
            req.extensions_mut().insert(caller);
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let mut inner = take_ready(&mut self.inner);
        let authenticator = self.authenticator.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            // Borrow the headers as metadata without copying them, then put them back.
            let metadata = MetadataMap::from_headers(std::mem::take(req.headers_mut()));
            let verdict = authenticator.authenticate_split(&metadata).await;
            *req.headers_mut() = metadata.into_headers();
            let Authentication {
                principal,
                pending,
                vouch,
            } = match verdict {
                Ok(verdict) => verdict,
                Err(status) => return Ok(refuse(status)),
            };
            let caller = Caller::User(principal.user_id);
            // The signature is good, so the call may be counted against the caller
            // while the revocation lookup runs; nothing below runs until it passes.
            let checked = match &limits {
                Some(limits) => {
                    let (checked, prefetched) = limits
                        .check_and_prefetch(caller, req.uri().path(), pending)
                        .await;
                    if let Some(prefetched) = prefetched {
                        req.extensions_mut().insert(prefetched);
                    }
                    checked
                }
                None => pending.run().await,
            };
            match checked {
                Ok(()) => {
                    req.extensions_mut().insert(caller);
                    // For a service in this process (extensions never cross the
                    // network), now that every check passed.
                    if let Some(vouch) = vouch {
                        req.extensions_mut().insert(vouch);
                    }
                    inner.call(req).await.map_err(Into::into)
                }
                Err(status) => Ok(refuse(status)),
            }
        })
    }
}
