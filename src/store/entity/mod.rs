//! sea-orm entities, one per table.

pub mod agent;
pub mod api_key;
pub mod audit_event;
pub mod host_element;
pub mod identity_provider;
pub mod login_session;
pub mod operator_key;
pub mod organization;
pub mod rate_limit;
pub mod resource;
pub mod resource_assignment;
pub mod resource_ip;
pub mod resource_lease;
pub mod session;
pub mod signing_key;
pub mod sso_login;
mod stored;

pub use stored::StoredProvider;
pub mod user;
pub mod user_identity;
pub mod verification_code;
pub mod webhook;
pub mod webhook_delivery;
