//! Translations between protobuf messages and domain/store types: what every service shares
//! here, the rest in a module per service family (re-exported, so callers name `convert::x`).

use crate::domain::{self, ProviderConfig, Violations};
use crate::error::{Error, Result};
use crate::pb::v1 as pb;
use crate::service::audit::details_of;
use crate::store::entity::{
    agent, api_key, audit_event, identity_provider, login_session, organization, resource, resource_ip, user, webhook,
    webhook_delivery,
};
use crate::store::queries::sessions::SessionRecord;
use crate::store::{PageRequest, StoreError};
use chrono::{DateTime, Utc};
use prost_types::{FieldMask, Timestamp};
use std::net::IpAddr;

mod accounts;
mod events;
mod resources;
mod sessions;

pub use accounts::*;
pub use events::*;
pub use resources::*;
pub use sessions::*;

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A request timestamp, or a violation on `field`.
pub fn parse_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(value.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

/// Reads the list fields common to every List method.
/// The caller's address as the server sees it: the TCP peer, or what a trusted proxy says.
pub fn caller_address<T>(request: &tonic::Request<T>, trusted_proxies: &[ipnet::IpNet]) -> Result<Option<IpAddr>> {
    let Some(peer) = request.remote_addr() else { return Ok(None) };
    let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
    domain::client_address(peer.ip(), header("x-forwarded-for"), header("x-real-ip"), trusted_proxies)
        .map(Some)
        .map_err(|problem| Error::invalid("x-forwarded-for", problem))
}

pub fn page_request(page_size: i32, page_token: &str) -> Result<PageRequest> {
    PageRequest::parse(page_size, page_token).map_err(|err| {
        let reason =
            if err.field == "page_token" { pb::ErrorReason::InvalidPageToken } else { pb::ErrorReason::InvalidInput };
        Error::InvalidArgument {
            reason,
            violations: vec![domain::FieldViolation { field: err.field.into(), description: err.description }],
        }
    })
}

/// An object id from a request: present and well-formed, else a violation on `field`.
pub fn require_id<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if !domain::is_valid_id(value) {
        return Err(Error::invalid(field, "is not a valid id"));
    }
    Ok(value)
}

/// The fields an update names: each must be one of `allowed`; an empty mask means all of them.
pub struct UpdateMask(Vec<String>);

impl UpdateMask {
    pub fn parse(mask: Option<&FieldMask>, allowed: &[&str]) -> Result<UpdateMask> {
        let paths: Vec<String> = mask.map(|m| m.paths.clone()).unwrap_or_default();
        if let Some(unknown) = paths.iter().find(|p| !allowed.contains(&p.as_str())) {
            return Err(Error::invalid(
                "update_mask",
                format!("{unknown:?} cannot be updated; use {}", allowed.join(", ")),
            ));
        }
        Ok(UpdateMask(if paths.is_empty() { allowed.iter().map(|p| (*p).to_owned()).collect() } else { paths }))
    }

    pub fn contains(&self, field: &str) -> bool {
        self.0.iter().any(|p| p == field)
    }
}

/// A stored revision as the API shows it (stored revisions start at 1 and only grow).
pub fn revision_to_pb(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or_default()
}

/// A repeated enum filter from a request: every value must be known and not UNSPECIFIED.
pub fn enum_filter<T>(field: &str, values: &[i32], convert: fn(i32) -> Option<T>) -> Result<Vec<T>> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            convert(*value)
                .ok_or_else(|| Error::invalid(format!("{field}[{index}]"), "is not one of the enum's values"))
        })
        .collect()
}
