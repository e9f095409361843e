//! Linux hosts served by agents: what a host should allow, as the server sends it to the host's
//! agent, and what the agent reports its firewall holds.

use chrono::{DateTime, TimeDelta, Utc};
use std::net::IpAddr;

/// An agent that spoke within this long holds a stream now.
pub const AGENT_CONNECTED_WITHIN: TimeDelta = TimeDelta::seconds(30);

/// One host resource as its host should allow it (or, in a report, as it does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResourceState {
    pub resource_id: String,
    pub protocol: String,
    pub ports: Vec<u16>,
    /// One per address, ordered by address.
    pub grants: Vec<HostGrant>,
}

/// One address allowed to reach a host resource until the latest expiry of its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    pub address: IpAddr,
    pub expires_at: DateTime<Utc>,
    pub session_ids: Vec<String>,
}

/// Whether an agent last seen at `last_seen_at` counts as connected at `now`.
pub fn agent_connected(last_seen_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_seen_at.is_some_and(|seen| now - seen <= AGENT_CONNECTED_WITHIN)
}
