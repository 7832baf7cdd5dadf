//! Builds `tonic::Status` values that carry `google.rpc.ErrorInfo` (and `BadRequest`
//! field violations where a field is at fault), so clients match on a stable reason
//! instead of message text.

use crate::common::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Ferrobank error.
pub const ERROR_DOMAIN: &str = "ferrobank.dev";

/// A status with `ErrorInfo { reason, domain }` and the given message.
pub fn error(code: Code, reason: ErrorReason, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason.as_str_name(), ERROR_DOMAIN, []);
    Status::with_error_details(code, message, details)
}

/// A status with `ErrorInfo` and extra metadata entries in it (e.g. the account id).
pub fn error_with_metadata(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let details = ErrorDetails::with_error_info(
        reason.as_str_name(),
        ERROR_DOMAIN,
        metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT naming the field at fault, with a `BadRequest` field violation.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::with_error_info(
        ErrorReason::InvalidField.as_str_name(),
        ERROR_DOMAIN,
        [("field".to_owned(), field.to_owned())],
    );
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        details,
    )
}

/// UNIMPLEMENTED for an RPC whose service is not built yet.
pub fn unimplemented(method: &str) -> Status {
    error(
        Code::Unimplemented,
        ErrorReason::Unimplemented,
        format!("{method} is not implemented yet"),
    )
}

/// The `ErrorInfo.reason` carried by a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}
