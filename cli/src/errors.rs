//! Errors as one readable line: what the gRPC code means, the ErrorInfo reason, and each field
//! violation — never a debug dump.

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
