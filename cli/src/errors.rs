//! pcl's one error type, [`Failure`], read as one line: for a refused call, what the gRPC code
//! means, the ErrorInfo reason and each field violation — never a debug dump. Every failure
//! exits 1 (see [`crate::exit`] for the others).

use tonic::Code;
use tonic_types::StatusExt;

/// What the user reads for a failed call.
pub fn describe(status: &tonic::Status) -> String {
    let meaning = match status.code() {
        Code::InvalidArgument => "invalid request",
        Code::Unauthenticated => "not logged in or the credential is invalid",
        Code::PermissionDenied => "not allowed",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "not possible now",
        Code::ResourceExhausted => "limit reached",
        Code::Unavailable => "server unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::Unimplemented => "not supported by this server",
        _ => "server error",
    };
    let details = status.get_error_details();
    let mut line = format!("{meaning}: {}", status.message());
    if let Some(info) = details.error_info() {
        line.push_str(&format!(" [{}]", info.reason));
    }
    if let Some(bad) = details.bad_request() {
        for violation in &bad.field_violations {
            line.push_str(&format!("; {}: {}", violation.field, violation.description));
        }
    }
    line
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The server refused a call.
    Call(tonic::Status),
    /// Anything else: the settings, a file, the terminal, the command run.
    Local(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Call(status) => f.write_str(&describe(status)),
            Failure::Local(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::Call(status)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Local(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Local(message.to_owned())
    }
}
