//! Prometheus metrics: every name in one place, and the calls that record them. Without the
//! endpoint (`metrics.listen` unset) no recorder is installed and each call does nothing.
//!
//! Two kinds of figure: what this replica did (requests, provider calls, rule outcomes, open
//! streams, its pool), and what the whole deployment holds (sessions and rules by status, due
//! rules), read from the shared database at each scrape, so every replica reports the same value.

pub mod endpoint;

use metrics::{counter, gauge, histogram};
use std::time::Duration;

/// Requests answered, by `service`, `method` and `code`.
pub const GRPC_REQUESTS: &str = "portcullis_grpc_requests_total";
/// Time to a request's response (a stream's first), by `service` and `method`.
pub const GRPC_DURATION: &str = "portcullis_grpc_request_duration_seconds";
/// Sessions by `status` (cluster-wide).
pub const SESSIONS: &str = "portcullis_sessions";
/// Rules (a session's address on a resource) by `status` (cluster-wide).
pub const RULES: &str = "portcullis_rules";
/// What the engine recorded for a rule after a provider call, by `provider` and `outcome`
/// (`applied`, `removed`, `failed`, `retried`).
pub const RULE_OUTCOMES: &str = "portcullis_rule_outcomes_total";
/// A provider call's time at the provider (our own pacing left out), by `provider` and `operation`.
pub const PROVIDER_CALL_DURATION: &str = "portcullis_provider_call_duration_seconds";
/// Provider calls that answered an error, by `provider`, `operation` and `error` (`throttled`,
/// `transient`, `timeout`, `rejected`, `forbidden`); all but the last two are retried.
pub const PROVIDER_ERRORS: &str = "portcullis_provider_errors_total";
/// Reconcile passes over one resource.
pub const RECONCILE_PASSES: &str = "portcullis_reconcile_passes_total";
/// Rules found missing at the provider and opened again.
pub const RULES_REPAIRED: &str = "portcullis_rules_repaired_total";
/// Rules carrying our marker that no live session wanted, removed by the reconciler.
pub const ORPHANS_REMOVED: &str = "portcullis_orphan_rules_removed_total";
/// Open WatchSession streams on this replica.
pub const WATCH_STREAMS: &str = "portcullis_watch_streams";
/// Session heartbeats this replica wrote (one per session and beat interval, however many of
/// the owner's watches are open).
pub const HEARTBEAT_WRITES: &str = "portcullis_heartbeat_writes_total";
/// Rules waiting for a provider call now (cluster-wide): the engine's queue.
pub const DUE_RULES: &str = "portcullis_due_rules";
/// How long the longest-waiting due rule has waited (cluster-wide; 0 when none is due).
pub const OLDEST_DUE_AGE: &str = "portcullis_oldest_due_rule_age_seconds";
/// This replica's database connections, by `pool` (`writer`, `reader`) and `state` (`in_use`, `idle`).
pub const DB_CONNECTIONS: &str = "portcullis_db_connections";
/// Periodic resource checks made by this replica, by `provider` and `status` (`ok`,
/// `not_found`, `access_denied`, `unreachable`, `unsupported`).
pub const RESOURCE_CHECKS: &str = "portcullis_resource_checks_total";
/// Webhook delivery attempts made by this replica, by `outcome` (`delivered`, `failed`).
pub const WEBHOOK_ATTEMPTS: &str = "portcullis_webhook_attempts_total";
/// SSO refresh checks made by this replica, by `outcome` (`valid`, `revoked`, `no_answer`): a
/// growing `no_answer` means a provider (or its client secret) is broken, and its users are
/// not being checked.
pub const SSO_REFRESH_CHECKS: &str = "portcullis_sso_refresh_checks_total";
/// Always 1, labelled with the server's `version`.
pub const BUILD_INFO: &str = "portcullis_build_info";

pub fn grpc_request(service: &'static str, method: &'static str, code: &'static str, took: Duration) {
    counter!(GRPC_REQUESTS, "service" => service, "method" => method, "code" => code).increment(1);
    histogram!(GRPC_DURATION, "service" => service, "method" => method).record(took.as_secs_f64());
}

pub fn provider_call(provider: &'static str, operation: &'static str, took: Duration) {
    histogram!(PROVIDER_CALL_DURATION, "provider" => provider, "operation" => operation).record(took.as_secs_f64());
}

pub fn provider_error(provider: &'static str, operation: &'static str, error: &'static str) {
    counter!(PROVIDER_ERRORS, "provider" => provider, "operation" => operation, "error" => error).increment(1);
}

pub fn rule_outcomes(provider: &'static str, outcome: &'static str, count: usize) {
    if count > 0 {
        counter!(RULE_OUTCOMES, "provider" => provider, "outcome" => outcome).increment(count as u64);
    }
}

pub fn reconciled(repaired: usize, orphans_removed: usize) {
    counter!(RECONCILE_PASSES).increment(1);
    counter!(RULES_REPAIRED).increment(repaired as u64);
    counter!(ORPHANS_REMOVED).increment(orphans_removed as u64);
}

pub fn resource_checked(provider: &str, status: &'static str) {
    let (provider, status) = (provider.to_owned(), status.to_ascii_lowercase());
    counter!(RESOURCE_CHECKS, "provider" => provider, "status" => status).increment(1);
}

pub fn watch_stream_opened() {
    gauge!(WATCH_STREAMS).increment(1.0);
}

pub fn watch_stream_closed() {
    gauge!(WATCH_STREAMS).decrement(1.0);
}

pub fn heartbeat_written() {
    counter!(HEARTBEAT_WRITES).increment(1);
}

pub fn sso_refresh_checked(outcome: &'static str) {
    counter!(SSO_REFRESH_CHECKS, "outcome" => outcome).increment(1);
}

pub fn webhook_attempt(outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
}
