//! Who made a change, as the audit trail records it.

use std::net::IpAddr;

/// The author of a change: an authenticated caller, or the server itself (expiry, the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The organization whose trail records the change.
    pub organization_id: String,
    /// The user who asked for it; `None` when the server acted on its own.
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub client_ip: Option<IpAddr>,
}

impl Actor {
    /// The server acting on its own in `organization_id`.
    pub fn server(organization_id: impl Into<String>) -> Actor {
        Actor { organization_id: organization_id.into(), user_id: None, api_key_id: None, client_ip: None }
    }
}
