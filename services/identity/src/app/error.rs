//! `IdentityError`: every way a use case fails, named for what the caller can do. The
//! api layer maps it to a status exactly once.

use std::time::Duration;

use ferrobank_db::StoreError;
use uuid::Uuid;

/// See the module docs.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A request field is missing or malformed.
    #[error("invalid field {field}: {description}")]
    InvalidField {
        /// The field's path in the request.
        field: &'static str,
        /// What is wrong with it.
        description: String,
    },
    /// The password fails the policy.
    #[error("weak password: {rule}")]
    WeakPassword {
        /// The field (`password` or `new_password`).
        field: &'static str,
        /// The rule it breaks, said so a person can fix it.
        rule: String,
    },
    /// The username or email is taken.
    #[error("{field} already exists")]
    AlreadyExists {
        /// `username` or `email`.
        field: &'static str,
    },
    /// The request id was used for a different request.
    #[error("request id reused")]
    RequestIdReused {
        /// The id.
        request_id: Uuid,
    },
    /// The page token is malformed or was made for other filters.
    #[error("invalid page token")]
    InvalidPageToken,
    /// No such user.
    #[error("user {user_id} not found")]
    UserNotFound {
        /// The id.
        user_id: Uuid,
    },
    /// Username and password (or service id and secret) do not match.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed logins; retry after the wait.
    #[error("login throttled")]
    LoginThrottled {
        /// How long until the window ends.
        retry_after: Duration,
    },
    /// The refresh token is unknown, expired, or its session is over.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A spent refresh token was presented again; the session is revoked.
    #[error("refresh token reused")]
    RefreshTokenReused {
        /// The revoked session.
        session_id: Uuid,
    },
    /// The user is disabled.
    #[error("user disabled")]
    UserDisabled,
    /// The caller may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// Redis (throttling, revocation) cannot be reached.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or broken invariant.
    #[error("internal: {0}")]
    Internal(String),
}

impl IdentityError {
    /// Shorthand for [`IdentityError::InvalidField`].
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            description: description.into(),
        }
    }
}
