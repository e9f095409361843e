//! What the providers that keep all of a resource's addresses in one rule per address family
//! share (GCP, Azure): the rules' names and descriptions, and how a batch of opens or removals
//! becomes one read-modify-write of each family's rule. A cloud's own module says how a rule is
//! read and written ([`FamilyRules::update`]).

use super::{OWNERSHIP_MARKER, ProviderError, RuleRef, RuleRequest, Target, fail_all};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// An address family: clouds keep IPv4 and IPv6 sources in separate rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn of(address: IpAddr) -> Family {
        if address.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// The rule holding a resource's addresses of one family: `portcullis-<id>-v4`, in the
/// characters every cloud accepts in a rule name (lowercase letters, digits, hyphens).
pub(crate) fn rule_name(resource_id: &str, family: Family) -> String {
    let id: String = resource_id.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{OWNERSHIP_MARKER}-{}-{}", id.to_ascii_lowercase(), family.suffix())
}

/// The description that marks a family rule as ours, for this resource.
pub(crate) fn rule_description(resource_id: &str) -> String {
    format!("{OWNERSHIP_MARKER} resource {resource_id}: managed by Portcullis, manual edits are overwritten")
}

/// An edit of a rule's hosts (named for all lifetimes: `async_trait` would tie an elided one
/// to the call).
pub(crate) type HostsChange<'c> = dyn for<'h> Fn(&'h mut BTreeSet<IpAddr>) + Send + Sync + 'c;

/// What [`FamilyRules::update`] did.
pub(crate) enum Updated {
    /// The rule of this name now holds the changed addresses.
    Written(String),
    /// A rule of this name is not ours: it was left alone.
    Foreign(String),
}

/// One cloud's family rules. Writes to one resource never interleave: the engine serializes
/// them (a database lease per resource), as the clouds offer no conditional write for these.
#[async_trait]
pub(crate) trait FamilyRules: Send + Sync {
    /// Reads the family's rule, lets `change` edit its hosts, and writes the result (deleting
    /// the rule when no host is left: a rule without sources would let everyone in).
    async fn update(&self, target: &Target, family: Family, change: &HostsChange<'_>)
    -> Result<Updated, ProviderError>;
}

/// Opens `rules` with one update per family; each answers its family rule's name.
pub(crate) async fn apply(
    cloud: &dyn FamilyRules,
    target: &Target,
    rules: &[RuleRequest],
) -> Vec<Result<String, ProviderError>> {
    let mut results = fail_all(rules.len(), &ProviderError::Transient("not attempted".into()));
    for family in Family::BOTH {
        let wanted: Vec<usize> = (0..rules.len()).filter(|&i| Family::of(rules[i].address) == family).collect();
        if wanted.is_empty() {
            continue;
        }
        let add = |hosts: &mut BTreeSet<IpAddr>| hosts.extend(wanted.iter().map(|&i| rules[i].address));
        let outcome = match cloud.update(target, family, &add).await {
            Ok(Updated::Written(name)) => Ok(name),
            Ok(Updated::Foreign(name)) => Err(ProviderError::Rejected(format!(
                "firewall rule {name} exists but is not managed by Portcullis; rename or delete it"
            ))),
            Err(err) => Err(err),
        };
        for &index in &wanted {
            results[index] = outcome.clone();
        }
    }
    results
}

/// Removes `rules` with one update per family.
pub(crate) async fn revoke(
    cloud: &dyn FamilyRules,
    target: &Target,
    rules: &[RuleRef],
) -> Vec<Result<(), ProviderError>> {
    let mut results = fail_all(rules.len(), &ProviderError::Transient("not attempted".into()));
    for family in Family::BOTH {
        let gone: Vec<usize> = (0..rules.len()).filter(|&i| Family::of(rules[i].address) == family).collect();
        if gone.is_empty() {
            continue;
        }
        let remove = |hosts: &mut BTreeSet<IpAddr>| {
            for &index in &gone {
                hosts.remove(&rules[index].address);
            }
        };
        let outcome = match cloud.update(target, family, &remove).await {
            // Someone else's rule under our name holds nothing of ours to remove.
            Ok(Updated::Written(_) | Updated::Foreign(_)) => Ok(()),
            Err(err) => Err(err),
        };
        for &index in &gone {
            results[index] = outcome.clone();
        }
    }
    results
}
