//! The one mapping from [`Error`] to `tonic::Status`, with `google.rpc.ErrorInfo` on every error
//! and `google.rpc.BadRequest` / `RetryInfo` where they apply.

use crate::error::Error;
use crate::pb::v1::ErrorReason;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this service sends.
pub const ERROR_DOMAIN: &str = "portcullis";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let mut metadata = HashMap::new();
        let (code, reason, message, mut details) = match err {
            Error::InvalidArgument { reason, violations } => {
                let mut details = ErrorDetails::new();
                for violation in &violations {
                    details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
                }
                let message = match violations.as_slice() {
                    [only] => format!("invalid {}: {}", only.field, only.description),
                    _ => format!("{} invalid fields", violations.len()),
                };
                (Code::InvalidArgument, reason, message, details)
            }
            Error::ExceedsMaximum { field, max_hours, latest_expires_at } => {
                let description = format!(
                    "the session would last longer than the maximum of {max_hours} hours; it can be extended \
                     until {}",
                    latest_expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(field, description.clone());
                metadata.insert("max_hours".to_owned(), max_hours.to_string());
                metadata.insert(
                    "latest_expires_at".to_owned(),
                    latest_expires_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                );
                (
                    Code::InvalidArgument,
                    ErrorReason::DurationExceedsMaximum,
                    format!("invalid {field}: {description}"),
                    details,
                )
            }
            Error::Unauthenticated { reason, message } => (Code::Unauthenticated, reason, message, ErrorDetails::new()),
            Error::PermissionDenied { reason, message } => {
                (Code::PermissionDenied, reason, message, ErrorDetails::new())
            }
            Error::NotFound { kind } => {
                (Code::NotFound, ErrorReason::NotFound, format!("{kind} not found"), ErrorDetails::new())
            }
            Error::AlreadyExists { reason, message } => (Code::AlreadyExists, reason, message, ErrorDetails::new()),
            Error::FailedPrecondition { reason, message } => {
                (Code::FailedPrecondition, reason, message, ErrorDetails::new())
            }
            Error::ResourceExhausted { message, retry_after } => (
                Code::ResourceExhausted,
                ErrorReason::RateLimited,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::LimitReached { limit, max, message } => {
                metadata.insert("limit".to_owned(), limit.to_owned());
                metadata.insert("max".to_owned(), max.to_string());
                (Code::ResourceExhausted, ErrorReason::LimitReached, message, ErrorDetails::new())
            }
            Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                (
                    Code::Unavailable,
                    ErrorReason::Unavailable,
                    "a dependency is unavailable; retry later".into(),
                    ErrorDetails::new(),
                )
            }
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                (Code::Internal, ErrorReason::Internal, "internal error".into(), ErrorDetails::new())
            }
        };
        details.set_error_info(reason.as_str_name(), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_reason_and_violations() {
        let status = Status::from(Error::invalid("resource.name", "must not be empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "ERROR_REASON_INVALID_INPUT");
        assert_eq!(info.domain, "portcullis");
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations[0].field, "resource.name");
    }

    #[test]
    fn internal_errors_are_generic() {
        let status = Status::from(Error::internal(anyhow::anyhow!("password=hunter2 leaked")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
