//! What the server wants a host to allow: per host resource, the ports and the addresses that
//! may reach them until their expiry.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// A transport protocol a host resource opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One host resource: its ports, and who may reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResource {
    pub resource_id: String,
    pub protocol: Protocol,
    /// Ports (1–65535), at least one.
    pub ports: Vec<u16>,
    /// Each address with the latest expiry among the sessions holding it.
    pub grants: BTreeMap<IpAddr, Grant>,
}

/// Why and until when one address may reach a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The latest expiry among the sessions holding the address.
    pub expires_at: SystemTime,
    /// The sessions holding it, named in the element's comment.
    pub session_ids: Vec<String>,
}

/// Everything a host should allow: one entry per host resource the agent serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub resources: Vec<HostResource>,
}
