//! The server's integration tests, one binary: a module per topic, sharing `common` (a real
//! server per test on SQLite and, when configured, PostgreSQL). `cargo test --test it security::`
//! runs one topic.

mod common;

mod agents;
mod api;
mod approvals;
mod auth;
mod cli;
mod crash;
mod notifications;
mod providers;
mod security;
mod sessions;
mod sso;
mod store;
mod web;
