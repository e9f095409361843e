//! The error every use-case returns. The gRPC layer maps it to a `tonic::Status` in one place
//! (`grpc::status`); nothing below the gRPC layer knows about status codes.

use crate::domain::{FieldViolation, Violations};
use crate::pb::v1::ErrorReason;
use crate::store::StoreError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {violations:?}")]
    InvalidArgument { reason: ErrorReason, violations: Vec<FieldViolation> },
    /// An extension past the longest the session may last; says how far it could go.
    #[error("{field}: the session would last longer than the maximum of {max_hours} hours")]
    ExceedsMaximum { field: &'static str, max_hours: u32, latest_expires_at: chrono::DateTime<chrono::Utc> },
    #[error("unauthenticated: {message}")]
    Unauthenticated { reason: ErrorReason, message: String },
    #[error("permission denied: {message}")]
    PermissionDenied { reason: ErrorReason, message: String },
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("already exists: {message}")]
    AlreadyExists { reason: ErrorReason, message: String },
    #[error("failed precondition: {message}")]
    FailedPrecondition { reason: ErrorReason, message: String },
    #[error("rate limited: {message}")]
    ResourceExhausted { message: String, retry_after: Duration },
    /// A cap on what a user or organization may hold, named by its setting.
    #[error("limit reached: {message}")]
    LimitReached { limit: &'static str, max: u32, message: String },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// One bad field.
    pub fn invalid(field: impl Into<String>, description: impl std::fmt::Display) -> Error {
        let mut violations = Violations::default();
        violations.add(field, description.to_string());
        Error::from(violations)
    }

    pub fn not_found(kind: &'static str) -> Error {
        Error::NotFound { kind }
    }

    pub fn failed_precondition(reason: ErrorReason, message: impl Into<String>) -> Error {
        Error::FailedPrecondition { reason, message: message.into() }
    }

    /// `limit` (a setting) allows `max`, and they are all taken: `what` says of what.
    pub fn limit_reached(limit: &'static str, max: u32, what: &str) -> Error {
        Error::LimitReached { limit, max, message: format!("{what}: at most {max} ({limit}); give one up first") }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Error {
        Error::Internal(err.into())
    }
}

impl From<Violations> for Error {
    fn from(violations: Violations) -> Self {
        Error::InvalidArgument { reason: ErrorReason::InvalidInput, violations: violations.0 }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Error::NotFound { kind: "object" },
            StoreError::AlreadyExists(_) => {
                Error::AlreadyExists { reason: ErrorReason::AlreadyExists, message: "the object already exists".into() }
            }
            StoreError::MissingReference(_) => Error::NotFound { kind: "referenced object" },
            StoreError::Unavailable(err) => Error::Unavailable(err.to_string()),
            err @ (StoreError::Database(_) | StoreError::Corrupt(_)) => Error::Internal(err.into()),
        }
    }
}

/// Adds what a missing or duplicate row was, where the store could only say "not found".
pub trait StoreResultExt<T> {
    /// NotFound → `kind` not found.
    fn or_not_found(self, kind: &'static str) -> Result<T>;
    /// AlreadyExists → `message`.
    fn or_already_exists(self, message: &str) -> Result<T>;
}

impl<T> StoreResultExt<T> for Result<T, StoreError> {
    fn or_not_found(self, kind: &'static str) -> Result<T> {
        self.map_err(|err| match err {
            StoreError::NotFound => Error::NotFound { kind },
            other => other.into(),
        })
    }

    fn or_already_exists(self, message: &str) -> Result<T> {
        self.map_err(|err| match err {
            StoreError::AlreadyExists(_) => {
                Error::AlreadyExists { reason: ErrorReason::AlreadyExists, message: message.to_owned() }
            }
            other => other.into(),
        })
    }
}
