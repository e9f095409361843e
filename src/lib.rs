//! Portcullis: just-in-time IP allowlisting for cloud firewalls, over gRPC.

pub mod chore;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod monitoring;
pub mod pb;
pub mod provider;
pub mod sealing;
pub mod server;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod sso;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhook;
