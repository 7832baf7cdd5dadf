//! The identity use cases: users, sessions and tokens. Knows nothing of tonic; returns
//! [`IdentityError`]. Authorization decisions live here, against the caller's
//! [`Principal`] as the api layer verified it.

mod error;
pub mod password;
pub mod validate;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ferrobank_auth::jwt::{self, Claims, Verified};
use ferrobank_auth::keys::{Jwk, KeyRing};
use ferrobank_auth::revocation::Revocations;
use ferrobank_auth::{Principal, Role};
use ferrobank_db::StoreError;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use error::IdentityError;
use password::Hasher;

use crate::store::throttle::Throttle;
use crate::store::{NewUser, Rotation, Store, User, UserStatus};

/// Token and policy settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_ttl: Duration,
    /// Verifiers' clock leeway: revocations outlive tokens by this much.
    pub leeway: Duration,
    /// Shortest password accepted.
    pub password_min_length: usize,
}

/// Who is signing in, for the session record and throttling.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// The client's IP (see `--identity-trust-forwarded-for`).
    pub ip: String,
    /// The `user-agent` header.
    pub user_agent: String,
}

/// What Login and RefreshSession return.
#[derive(Debug)]
pub struct Tokens {
    /// The JWT.
    pub access_token: String,
    /// When it expires.
    pub access_expire_time: DateTime<Utc>,
    /// The opaque refresh token (secret).
    pub refresh_token: SecretString,
    /// When it expires.
    pub refresh_expire_time: DateTime<Utc>,
    /// The session.
    pub session_id: Uuid,
    /// The user.
    pub user: User,
}

/// A CreateUser request.
#[derive(Debug)]
pub struct CreateUser {
    /// AIP-155 request id.
    pub request_id: Uuid,
    /// Sign-in name.
    pub username: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Initial password.
    pub password: SecretString,
    /// Requested role; `None` means customer.
    pub role: Option<Role>,
}

/// Fields UpdateUser may change.
#[derive(Debug, Default)]
pub struct UserPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New role (admins).
    pub role: Option<Role>,
    /// New status (admins).
    pub status: Option<UserStatus>,
}

/// The identity application.
#[derive(Clone)]
pub struct App {
    store: Store,
    hasher: Hasher,
    keys: KeyRing,
    throttle: Option<Throttle>,
    revocations: Option<Revocations>,
    settings: Settings,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A fresh opaque refresh token: 256 random bits, base64url.
fn new_refresh_token() -> Result<(SecretString, Vec<u8>), IdentityError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| IdentityError::Internal(format!("rng: {e}")))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_hash(&token);
    Ok((SecretString::from(token), hash))
}

fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn is_staff(p: &Principal) -> bool {
    matches!(p.role, Role::Operator | Role::Admin | Role::Service)
}

impl App {
    /// Assembles the application.
    pub fn new(
        store: Store,
        hasher: Hasher,
        keys: KeyRing,
        throttle: Option<Throttle>,
        revocations: Option<Revocations>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            hasher,
            keys,
            throttle,
            revocations,
            settings,
        }
    }

    /// The store (health checks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates a user. `caller: None` is public sign-up (customers only); admins may
    /// create any role but `service`. `trusted` bypasses the caller check (the CLI
    /// that creates the first admin).
    pub async fn create_user(
        &self,
        caller: Option<&Principal>,
        trusted: bool,
        req: CreateUser,
    ) -> Result<User, IdentityError> {
        let role = req.role.unwrap_or(Role::Customer);
        if role == Role::Service {
            return Err(IdentityError::invalid(
                "role",
                "ROLE_SERVICE is not a user role",
            ));
        }
        let is_admin = caller.is_some_and(|p| p.role == Role::Admin);
        if role != Role::Customer && !is_admin && !trusted {
            return Err(IdentityError::PermissionDenied);
        }
        validate::username(&req.username)?;
        validate::email("email", &req.email)?;
        validate::display_name("display_name", &req.display_name)?;
        validate::password(
            "password",
            req.password.expose_secret(),
            self.settings.password_min_length,
            &req.username,
        )?;
        // A replay returns the original user without hashing again.
        if let Some(existing) = self.store.user_by_request_id(req.request_id).await? {
            return replayed(existing, &req);
        }
        let hash = self.hasher.hash(req.password.clone()).await?;
        let new = NewUser {
            id: Uuid::now_v7(),
            username: &req.username,
            email: &req.email,
            display_name: &req.display_name,
            password_hash: &hash,
            role,
            request_id: Some(req.request_id),
        };
        match self.store.insert_user(&new).await {
            Ok(user) => {
                tracing::info!(user_id = %user.id, role = %user.role, "user created");
                Ok(user)
            }
            Err(StoreError::UniqueViolation { constraint, .. }) => match constraint.as_str() {
                "users_username_key" => Err(IdentityError::AlreadyExists { field: "username" }),
                "users_email_key" => Err(IdentityError::AlreadyExists { field: "email" }),
                "users_create_request_id_key" => {
                    let existing = self
                        .store
                        .user_by_request_id(req.request_id)
                        .await?
                        .ok_or_else(|| IdentityError::Internal("request id row vanished".into()))?;
                    replayed(existing, &req)
                }
                other => Err(IdentityError::Internal(format!(
                    "unexpected constraint {other}"
                ))),
            },
            Err(err) => Err(err.into()),
        }
    }

    /// One user, if the caller may see them (checked before existence).
    pub async fn get_user(&self, caller: &Principal, id: Uuid) -> Result<User, IdentityError> {
        if caller.user_id != id && !is_staff(caller) {
            return Err(IdentityError::PermissionDenied);
        }
        self.store
            .user(id)
            .await?
            .ok_or(IdentityError::UserNotFound { user_id: id })
    }

    /// Updates a user: themselves (display name, email) or an admin (anything).
    /// Disabling a user ends their sessions.
    pub async fn update_user(
        &self,
        caller: &Principal,
        id: Uuid,
        patch: UserPatch,
    ) -> Result<User, IdentityError> {
        let is_admin = caller.role == Role::Admin;
        if !is_admin && (caller.user_id != id || patch.role.is_some() || patch.status.is_some()) {
            return Err(IdentityError::PermissionDenied);
        }
        if patch.role == Some(Role::Service) {
            return Err(IdentityError::invalid(
                "user.role",
                "ROLE_SERVICE is not a user role",
            ));
        }
        if let Some(email) = &patch.email {
            validate::email("user.email", email)?;
        }
        if let Some(name) = &patch.display_name {
            validate::display_name("user.display_name", name)?;
        }
        let updated = self
            .store
            .update_user(
                id,
                patch.display_name.as_deref(),
                patch.email.as_deref(),
                patch.role,
                patch.status,
            )
            .await
            .map_err(|e| match e {
                StoreError::UniqueViolation { .. } => {
                    IdentityError::AlreadyExists { field: "email" }
                }
                other => other.into(),
            })?
            .ok_or(IdentityError::UserNotFound { user_id: id })?;
        if patch.status == Some(UserStatus::Disabled) || patch.role.is_some() {
            // Tokens carry the role: a changed role or a disabled user must sign in again.
            let reason = if patch.status == Some(UserStatus::Disabled) {
                "user_disabled"
            } else {
                "role_changed"
            };
            self.end_sessions(id, None, reason).await?;
        }
        Ok(updated)
    }

    /// Changes the caller's password and ends their other sessions.
    pub async fn change_password(
        &self,
        caller: &Principal,
        current: SecretString,
        new: SecretString,
        client: &ClientInfo,
    ) -> Result<usize, IdentityError> {
        if caller.role == Role::Service {
            return Err(IdentityError::PermissionDenied);
        }
        let user = self
            .store
            .user(caller.user_id)
            .await?
            .ok_or(IdentityError::UserNotFound {
                user_id: caller.user_id,
            })?;
        // Guessing the current password here is guessing it at Login: the same
        // counters (per username and per client IP) throttle both.
        let throttle = self
            .throttle
            .as_ref()
            .ok_or_else(|| IdentityError::Unavailable("password throttling has no Redis".into()))?;
        if let Some(wait) = throttle
            .check(&user.username, &client.ip)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?
        {
            tracing::info!(ip = %client.ip, "change password throttled");
            return Err(IdentityError::LoginThrottled { retry_after: wait });
        }
        let hash = self.store.password_hash(caller.user_id).await?;
        if !self.hasher.verify(current, hash).await? {
            throttle
                .record_failure(&user.username, &client.ip)
                .await
                .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
            tracing::info!(ip = %client.ip, "change password: wrong current password");
            return Err(IdentityError::InvalidCredentials);
        }
        validate::password(
            "new_password",
            new.expose_secret(),
            self.settings.password_min_length,
            &user.username,
        )?;
        let hash = self.hasher.hash(new).await?;
        self.store.set_password_hash(caller.user_id, &hash).await?;
        if let Err(err) = throttle.reset_user(&user.username).await {
            tracing::warn!(error = %err, "could not reset the password failure counter");
        }
        let revoked = self
            .end_sessions(caller.user_id, caller.session_id, "password_changed")
            .await?;
        Ok(revoked.len())
    }

    /// A page of users (admins only). The page token binds the filters.
    pub async fn list_users(
        &self,
        caller: &Principal,
        page_size: i32,
        page_token: &str,
        role: Option<Role>,
        status: Option<UserStatus>,
    ) -> Result<(Vec<User>, String), IdentityError> {
        if caller.role != Role::Admin {
            return Err(IdentityError::PermissionDenied);
        }
        if page_size < 0 {
            return Err(IdentityError::invalid("page_size", "must not be negative"));
        }
        let size = match page_size {
            0 => 50,
            n => n.min(500),
        };
        let filter = format!(
            "{}|{}",
            role.map_or("", Role::as_str),
            status.map_or("", UserStatus::as_str)
        );
        let after = if page_token.is_empty() {
            String::new()
        } else {
            let raw = URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(IdentityError::InvalidPageToken)?;
            let (f, after) = raw
                .rsplit_once('|')
                .ok_or(IdentityError::InvalidPageToken)?;
            if f != filter || after.is_empty() {
                return Err(IdentityError::InvalidPageToken);
            }
            after.to_owned()
        };
        let mut users = self
            .store
            .list_users(&after, role, status, i64::from(size) + 1)
            .await?;
        let next = if users.len() > usize::try_from(size).unwrap_or(usize::MAX) {
            users.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            let last = users.last().map(|u| u.username.clone()).unwrap_or_default();
            URL_SAFE_NO_PAD.encode(format!("{filter}|{last}"))
        } else {
            String::new()
        };
        Ok((users, next))
    }

    /// Signs in: throttled per username and client IP, the same answer and about the
    /// same time for an unknown user as for a wrong password.
    pub async fn login(
        &self,
        username: &str,
        password: SecretString,
        client: &ClientInfo,
    ) -> Result<Tokens, IdentityError> {
        let throttle = self
            .throttle
            .as_ref()
            .ok_or_else(|| IdentityError::Unavailable("login throttling has no Redis".into()))?;
        if let Some(wait) = throttle
            .check(username, &client.ip)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?
        {
            tracing::info!(ip = %client.ip, "login throttled");
            return Err(IdentityError::LoginThrottled { retry_after: wait });
        }
        let found = self.store.user_with_hash(&username.to_lowercase()).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = self.hasher.verify(password, hash).await?;
        let user = match (ok, user) {
            (true, Some(user)) => user,
            _ => {
                throttle
                    .record_failure(username, &client.ip)
                    .await
                    .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
                tracing::info!(ip = %client.ip, "login failed");
                return Err(IdentityError::InvalidCredentials);
            }
        };
        if user.status == UserStatus::Disabled {
            return Err(IdentityError::UserDisabled);
        }
        if let Err(err) = throttle.reset_user(username).await {
            tracing::warn!(error = %err, "could not reset the login failure counter");
        }
        let session_id = Uuid::now_v7();
        let (refresh, refresh_hash) = new_refresh_token()?;
        let refresh_expire_time = now() + chrono_dur(self.settings.refresh_ttl);
        self.store
            .create_session(
                session_id,
                user.id,
                &refresh_hash,
                &client.user_agent,
                &client.ip,
                refresh_expire_time,
            )
            .await?;
        let (access_token, access_expire_time) =
            self.access_token(user.id, user.role, Some(session_id));
        tracing::info!(user_id = %user.id, session_id = %session_id, "login");
        Ok(Tokens {
            access_token,
            access_expire_time,
            refresh_token: refresh,
            refresh_expire_time,
            session_id,
            user,
        })
    }

    /// Rotates a refresh token. A spent token revokes its whole session.
    pub async fn refresh(&self, token: SecretString) -> Result<Tokens, IdentityError> {
        let old = refresh_hash(token.expose_secret());
        let (refresh, new_hash) = new_refresh_token()?;
        let refresh_expire_time = now() + chrono_dur(self.settings.refresh_ttl);
        match self
            .store
            .rotate_refresh(&old, &new_hash, refresh_expire_time)
            .await?
        {
            Rotation::Rotated { session_id, user } => {
                if user.status == UserStatus::Disabled {
                    return Err(IdentityError::UserDisabled);
                }
                let (access_token, access_expire_time) =
                    self.access_token(user.id, user.role, Some(session_id));
                Ok(Tokens {
                    access_token,
                    access_expire_time,
                    refresh_token: refresh,
                    refresh_expire_time,
                    session_id,
                    user,
                })
            }
            Rotation::Reused { session_id } => {
                tracing::warn!(%session_id, "spent refresh token presented again; session revoked");
                self.revoke_in_redis(&[session_id]).await?;
                Err(IdentityError::RefreshTokenReused { session_id })
            }
            Rotation::Invalid => Err(IdentityError::InvalidRefreshToken),
        }
    }

    /// Ends the caller's session and refuses this access token until it expires.
    pub async fn logout(&self, token: &Verified) -> Result<(), IdentityError> {
        let principal = &token.principal;
        let Some(session_id) = principal.session_id else {
            return Err(IdentityError::invalid(
                "authorization",
                "service tokens have no session",
            ));
        };
        self.store
            .revoke_session(session_id, principal.user_id, "logout")
            .await?;
        let revocations = self.revocations()?;
        let remaining = token.exp.saturating_sub(ferrobank_auth::unix_now()).max(0);
        let ttl = Duration::from_secs(remaining.unsigned_abs()) + self.settings.leeway;
        revocations
            .revoke_token(token.jti, ttl)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
        self.revoke_in_redis(&[session_id]).await?;
        tracing::info!(user_id = %principal.user_id, %session_id, "logout");
        Ok(())
    }

    /// Ends every session of `user_id` (default the caller): self or admin.
    pub async fn revoke_all(
        &self,
        caller: &Principal,
        user_id: Option<Uuid>,
    ) -> Result<usize, IdentityError> {
        let user_id = user_id.unwrap_or(caller.user_id);
        if user_id != caller.user_id && caller.role != Role::Admin {
            return Err(IdentityError::PermissionDenied);
        }
        let sessions = self.end_sessions(user_id, None, "revoke_all").await?;
        tracing::info!(%user_id, count = sessions.len(), "sessions revoked");
        Ok(sessions.len())
    }

    /// The published verification keys.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.keys.public_keys().iter().map(|k| k.to_jwk()).collect()
    }

    /// Client credentials → a service token (no session, no refresh token).
    pub async fn issue_service_token(
        &self,
        service_id: &str,
        secret: SecretString,
    ) -> Result<(String, DateTime<Utc>), IdentityError> {
        let account = self.store.service_account(service_id).await?;
        let (id, hash) = match account {
            Some((id, hash)) => (Some(id), Some(hash)),
            None => (None, None),
        };
        if !self.hasher.verify(secret, hash).await? {
            tracing::info!(service_id, "service token refused");
            return Err(IdentityError::InvalidCredentials);
        }
        let id = id.ok_or(IdentityError::InvalidCredentials)?;
        Ok(self.access_token(id, Role::Service, None))
    }

    /// Registers a service account (command line and tests).
    pub async fn create_service_account(
        &self,
        name: &str,
        secret: SecretString,
    ) -> Result<Uuid, IdentityError> {
        if secret.expose_secret().len() < 32 {
            return Err(IdentityError::WeakPassword {
                field: "secret",
                rule: "must be at least 32 characters".into(),
            });
        }
        let hash = self.hasher.hash(secret).await?;
        let id = Uuid::now_v7();
        self.store
            .insert_service_account(id, name, &hash)
            .await
            .map_err(|e| match e {
                StoreError::UniqueViolation { .. } => {
                    IdentityError::AlreadyExists { field: "name" }
                }
                other => other.into(),
            })?;
        Ok(id)
    }

    fn access_token(&self, sub: Uuid, role: Role, sid: Option<Uuid>) -> (String, DateTime<Utc>) {
        let iat = ferrobank_auth::unix_now();
        let ttl = i64::try_from(self.settings.access_ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = iat.saturating_add(ttl);
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: sub.to_string(),
            role: role.as_str().to_owned(),
            sid: sid.map(|s| s.to_string()),
            jti: Uuid::new_v4().to_string(),
            iat,
            nbf: Some(iat),
            exp,
        };
        let token = jwt::sign(&claims, self.keys.signing());
        let expire = DateTime::from_timestamp(exp, 0).unwrap_or_else(now);
        (token, expire)
    }

    fn revocations(&self) -> Result<&Revocations, IdentityError> {
        self.revocations
            .as_ref()
            .ok_or_else(|| IdentityError::Unavailable("revocation has no Redis".into()))
    }

    /// Ends every session of `user_id` except `keep`; returns those newly revoked.
    ///
    /// Redis first, then the database: if Redis fails the call fails with nothing marked,
    /// and a retry does both. (The other order would let a retry find no live session in
    /// the database and never tell Redis, leaving access tokens valid until they expire.)
    async fn end_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<Vec<Uuid>, IdentityError> {
        let window = self.settings.access_ttl + self.settings.leeway;
        let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        let live = self
            .store
            .sessions_to_revoke(user_id, keep, window_secs)
            .await?;
        self.revoke_in_redis(&live).await?;
        let revoked = self
            .store
            .revoke_user_sessions(user_id, keep, reason)
            .await?;
        // A session started between the two statements is revoked in Redis as well.
        let late: Vec<Uuid> = revoked
            .iter()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        self.revoke_in_redis(&late).await?;
        Ok(revoked)
    }

    /// Marks sessions revoked in Redis for as long as any of their tokens could live.
    async fn revoke_in_redis(&self, sessions: &[Uuid]) -> Result<(), IdentityError> {
        if sessions.is_empty() {
            return Ok(());
        }
        self.revocations()?
            .revoke_sessions(sessions, self.settings.access_ttl + self.settings.leeway)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))
    }
}

/// The original user of a replayed CreateUser, if the payload matches.
fn replayed(existing: User, req: &CreateUser) -> Result<User, IdentityError> {
    if existing.username == req.username && existing.email == req.email {
        Ok(existing)
    } else {
        Err(IdentityError::RequestIdReused {
            request_id: req.request_id,
        })
    }
}

/// The request-id type (a UUID), re-exported for callers outside the service.
pub type RequestId = Uuid;
