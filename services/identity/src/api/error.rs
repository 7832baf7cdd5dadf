//! The one mapping from [`IdentityError`] to a gRPC status with `ErrorInfo` (and
//! `BadRequest` / `RetryInfo` where they apply). Exhaustive: no wildcard arm.

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status::{self, ERROR_DOMAIN};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::IdentityError;

impl From<IdentityError> for Status {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::InvalidField { field, description } => {
                status::invalid_field(field, description)
            }
            IdentityError::WeakPassword { field, rule } => {
                let mut details = ErrorDetails::with_error_info(
                    ErrorReason::WeakPassword.as_str_name(),
                    ERROR_DOMAIN,
                    [("field".to_owned(), field.to_owned())],
                );
                details.add_bad_request_violation(field, rule.clone());
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("{field}: {rule}"),
                    details,
                )
            }
            IdentityError::AlreadyExists { field } => status::error_with_metadata(
                Code::AlreadyExists,
                ErrorReason::AlreadyExists,
                format!("{field} is already taken"),
                [("field".to_owned(), field.to_owned())],
            ),
            IdentityError::RequestIdReused { request_id } => status::error_with_metadata(
                Code::InvalidArgument,
                ErrorReason::RequestIdReused,
                "request_id was used for a different request",
                [("request_id".to_owned(), request_id.to_string())],
            ),
            IdentityError::InvalidPageToken => status::error(
                Code::InvalidArgument,
                ErrorReason::InvalidPageToken,
                "invalid page_token; start again without one",
            ),
            IdentityError::UserNotFound { user_id } => status::error_with_metadata(
                Code::NotFound,
                ErrorReason::UserNotFound,
                "user not found",
                [("user_id".to_owned(), user_id.to_string())],
            ),
            IdentityError::InvalidCredentials => status::error(
                Code::Unauthenticated,
                ErrorReason::InvalidCredentials,
                "invalid credentials",
            ),
            IdentityError::LoginThrottled { retry_after } => {
                let mut details = ErrorDetails::with_error_info(
                    ErrorReason::LoginThrottled.as_str_name(),
                    ERROR_DOMAIN,
                    [],
                );
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(
                    Code::ResourceExhausted,
                    "too many failed logins; retry later",
                    details,
                )
            }
            IdentityError::InvalidRefreshToken => {
                ferrobank_auth::unauthenticated("invalid refresh token")
            }
            IdentityError::RefreshTokenReused { .. } => status::error(
                Code::Unauthenticated,
                ErrorReason::RefreshTokenReused,
                "refresh token already used; the session is revoked, sign in again",
            ),
            IdentityError::UserDisabled => status::error(
                Code::PermissionDenied,
                ErrorReason::UserDisabled,
                "the user is disabled",
            ),
            IdentityError::PermissionDenied => status::error(
                Code::PermissionDenied,
                ErrorReason::PermissionDenied,
                "permission denied",
            ),
            IdentityError::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                status::error(
                    Code::Unavailable,
                    ErrorReason::Unavailable,
                    "a dependency is unavailable; retry later",
                )
            }
            IdentityError::Store(store) => store.into(),
            IdentityError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                status::error(Code::Internal, ErrorReason::Internal, "internal error")
            }
        }
    }
}
