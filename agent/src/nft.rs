//! The agent's nftables table, driven through `nft -j` (the JSON interface). The agent owns one
//! table (`inet portcullis` unless configured otherwise) and never reads or writes any other.
//!
//! Per host resource the table holds two sets, `allow4_<key>` and `allow6_<key>`, declared with
//! `flags timeout`, and a base chain `input_<key>` on the input hook that accepts the resource's
//! ports from those sets and rejects every other source on them. Each element carries its own
//! timeout (the latest expiry among the sessions holding the address, who its comment names),
//! so the kernel removes it at that time whatever happens to the agent.
//!
//! A sync is level-triggered: it reads the table, compares it with the desired state and sends
//! one atomic batch that adds what is missing, refreshes what changed (delete and add in the
//! same batch, which every kernel honours; from 6.12 a plain re-add would refresh too) and
//! removes what nobody wants.

use crate::state::{Desired, HostResource, Protocol};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// An element whose kernel expiry is this close to the wanted one is left as it is.
const EXPIRY_TOLERANCE: Duration = Duration::from_secs(2);
/// The kernel keeps at most this many bytes of an element's comment.
const COMMENT_MAX: usize = 127;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("could not run {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("nft {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("nft answered what this agent cannot read: {0}")]
    Unreadable(String),
}

/// The table as the kernel holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub chains: BTreeSet<String>,
    /// Each set's elements by address.
    pub sets: BTreeMap<String, BTreeMap<IpAddr, Element>>,
}

impl Current {
    /// The element for `address` in `resource_id`'s set, if the table holds one.
    pub fn element(&self, resource_id: &str, address: IpAddr) -> Option<&Element> {
        self.sets.get(&set_name(resource_id, address))?.get(&address)
    }
}

/// The set holding `resource_id`'s addresses of `address`'s family.
pub fn set_name(resource_id: &str, address: IpAddr) -> String {
    let (set4, set6) = sets(&key(resource_id));
    if address.is_ipv4() { set4 } else { set6 }
}

/// A resource's IPv4 and IPv6 sets, by its key.
fn sets(key: &str) -> (String, String) {
    (format!("allow4_{key}"), format!("allow6_{key}"))
}

/// One element of a set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// What is left of its timeout.
    pub expires_in: Duration,
    pub comment: String,
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub refreshed: usize,
    pub removed: usize,
    pub resources_removed: usize,
}

/// The agent's table and how to reach `nft`.
#[derive(Debug, Clone)]
pub struct Nft {
    /// The command that runs nft: `["nft"]`, or a prefix such as `nsenter … nft` in tests.
    command: Vec<String>,
    table: String,
}

impl Nft {
    pub fn new(table: impl Into<String>) -> Nft {
        Nft::with_command(vec!["nft".to_owned()], table)
    }

    pub fn with_command(command: Vec<String>, table: impl Into<String>) -> Nft {
        Nft { command, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
        let (program, prefix) = self.command.split_first().ok_or_else(|| NftError::Spawn {
            command: String::new(),
            source: std::io::Error::other("no nft command configured"),
        })?;
        let mut child = Command::new(program)
            .args(prefix)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NftError::Spawn { command: self.command.join(" "), source })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| NftError::Spawn { command: self.command.join(" "), source })?;
        }
        let output =
            child.wait_with_output().map_err(|source| NftError::Spawn { command: self.command.join(" "), source })?;
        if !output.status.success() {
            return Err(NftError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The agent's table as the kernel holds it (empty when it does not exist yet).
    pub fn read(&self) -> Result<Current, NftError> {
        let tables: Value = parse(&self.run(&["-j", "list", "tables", "inet"], None)?)?;
        let exists = objects(&tables, "table").any(|table| table["name"] == self.table.as_str());
        if !exists {
            return Ok(Current::default());
        }
        let listing: Value = parse(&self.run(&["-j", "list", "table", "inet", &self.table], None)?)?;
        let mut current = Current::default();
        for chain in objects(&listing, "chain") {
            if let Some(name) = chain["name"].as_str() {
                current.chains.insert(name.to_owned());
            }
        }
        for set in objects(&listing, "set") {
            let Some(name) = set["name"].as_str() else { continue };
            let elements = set["elem"].as_array().map(Vec::as_slice).unwrap_or_default();
            let parsed = elements.iter().filter_map(element_of).collect();
            current.sets.insert(name.to_owned(), parsed);
        }
        Ok(current)
    }

    /// Makes the table say what `desired` says, in one atomic batch; answers what changed.
    pub fn sync(&self, desired: &Desired, now: SystemTime) -> Result<Changes, NftError> {
        let current = self.read()?;
        let (batch, changes) = plan(&self.table, desired, &current, now);
        let text = json!({ "nftables": batch }).to_string();
        self.run(&["-j", "-f", "-"], Some(&text))?;
        Ok(changes)
    }
}

fn parse(text: &str) -> Result<Value, NftError> {
    serde_json::from_str(text).map_err(|err| NftError::Unreadable(err.to_string()))
}

/// The objects of one kind (`"set"`, `"chain"`, …) in an `nft -j list` answer.
fn objects<'a>(listing: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    listing["nftables"].as_array().into_iter().flatten().filter_map(move |object| object.get(kind))
}

/// An element of a `flags timeout` set: `{"elem": {"val", "timeout", "expires", "comment"}}`.
fn element_of(entry: &Value) -> Option<(IpAddr, Element)> {
    let elem = entry.get("elem").unwrap_or(entry);
    let address: IpAddr = elem.get("val").unwrap_or(elem).as_str()?.parse().ok()?;
    let expires = elem.get("expires").and_then(Value::as_u64).unwrap_or(0);
    let comment = elem.get("comment").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((address, Element { expires_in: Duration::from_secs(expires), comment }))
}

/// A resource's part of every name in the table: `r` and the id's letters and digits.
fn key(resource_id: &str) -> String {
    let mut key = String::from("r");
    key.extend(resource_id.chars().filter(char::is_ascii_alphanumeric).take(60));
    key
}

fn chain_name(key: &str) -> String {
    format!("input_{key}")
}

/// `portcullis <session> <session>…`, cut to what the kernel keeps.
fn comment(session_ids: &[String]) -> String {
    let mut text = String::from("portcullis");
    for id in session_ids {
        if text.len() + 1 + id.len() > COMMENT_MAX {
            break;
        }
        text.push(' ');
        text.push_str(id);
    }
    text
}

/// Whole seconds from `now` to `until`, rounded up; `None` once it has passed.
fn seconds_left(until: SystemTime, now: SystemTime) -> Option<u64> {
    let left = until.duration_since(now).ok()?;
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    (seconds > 0).then_some(seconds)
}

/// The batch that turns `current` into `desired`, and what it changes.
pub fn plan(table: &str, desired: &Desired, current: &Current, now: SystemTime) -> (Vec<Value>, Changes) {
    let mut batch = vec![json!({ "add": { "table": { "family": "inet", "name": table } } })];
    let mut changes = Changes::default();
    let mut wanted_sets = BTreeSet::new();
    let mut wanted_chains = BTreeSet::new();
    let empty = BTreeMap::new();
    for resource in &desired.resources {
        let key = key(&resource.resource_id);
        let ((set4, set6), chain) = (sets(&key), chain_name(&key));
        for (set, kind) in [(&set4, "ipv4_addr"), (&set6, "ipv6_addr")] {
            batch.push(json!({ "add": { "set": {
                "family": "inet", "table": table, "name": set, "type": kind, "flags": ["timeout"] } } }));
        }
        batch.push(json!({ "add": { "chain": {
            "family": "inet", "table": table, "name": chain,
            "type": "filter", "hook": "input", "prio": 0, "policy": "accept" } } }));
        // The chain's rules are written whole each time, in the same batch: packets see the
        // old rules or the new ones, never none.
        batch.push(json!({ "flush": { "chain": { "family": "inet", "table": table, "name": chain } } }));
        for rule in rules(resource, &set4, &set6) {
            batch
                .push(json!({ "add": { "rule": { "family": "inet", "table": table, "chain": chain, "expr": rule } } }));
        }

        let mut wanted: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
        for (address, grant) in &resource.grants {
            let set = if address.is_ipv4() { &set4 } else { &set6 };
            let Some(seconds) = seconds_left(grant.expires_at, now) else { continue };
            wanted.entry(set.as_str()).or_default().insert(*address);
            let text = comment(&grant.session_ids);
            let held = current.sets.get(set).unwrap_or(&empty).get(address);
            let element = |verb: &str, body: Value| json!({ verb: { "element": { "family": "inet", "table": table, "name": set, "elem": [body] } } });
            let fresh =
                element("add", json!({ "elem": { "val": address.to_string(), "timeout": seconds, "comment": text } }));
            match held {
                None => {
                    batch.push(fresh);
                    changes.added += 1;
                }
                Some(element_now) => {
                    let drift = Duration::from_secs(seconds).abs_diff(element_now.expires_in);
                    if drift > EXPIRY_TOLERANCE || element_now.comment != text {
                        batch.push(element("delete", json!(address.to_string())));
                        batch.push(fresh);
                        changes.refreshed += 1;
                    }
                }
            }
        }
        for set in [&set4, &set6] {
            let keep = wanted.get(set.as_str());
            for address in current.sets.get(set).map(BTreeMap::keys).into_iter().flatten() {
                if !keep.is_some_and(|keep| keep.contains(address)) {
                    batch.push(json!({ "delete": { "element": {
                        "family": "inet", "table": table, "name": set, "elem": [address.to_string()] } } }));
                    changes.removed += 1;
                }
            }
            wanted_sets.insert(set.clone());
        }
        wanted_chains.insert(chain);
    }
    // Resources the agent no longer serves: their chain first (its rules name the sets).
    for chain in current.chains.iter().filter(|chain| chain.starts_with("input_r") && !wanted_chains.contains(*chain)) {
        batch.push(json!({ "delete": { "chain": { "family": "inet", "table": table, "name": chain } } }));
        changes.resources_removed += 1;
    }
    for set in current.sets.keys().filter(|set| is_ours(set) && !wanted_sets.contains(*set)) {
        changes.removed += current.sets[set].len();
        batch.push(json!({ "delete": { "set": { "family": "inet", "table": table, "name": set } } }));
    }
    (batch, changes)
}

fn is_ours(set: &str) -> bool {
    set.starts_with("allow4_r") || set.starts_with("allow6_r")
}

/// Accept the ports from the resource's sets; reject every other source on them.
fn rules(resource: &HostResource, set4: &str, set6: &str) -> Vec<Value> {
    let protocol = resource.protocol.name();
    let ports = match resource.ports.as_slice() {
        [port] => json!(port),
        ports => json!({ "set": ports }),
    };
    let dport = json!({ "match": { "op": "==", "left": { "payload": { "protocol": protocol, "field": "dport" } }, "right": ports } });
    let from = |family: &str, set: &str| json!({ "match": { "op": "==", "left": { "payload": { "protocol": family, "field": "saddr" } }, "right": format!("@{set}") } });
    let reject = match resource.protocol {
        Protocol::Tcp => json!({ "reject": { "type": "tcp reset" } }),
        Protocol::Udp => json!({ "reject": { "type": "icmpx", "expr": "port-unreachable" } }),
    };
    vec![
        json!([dport.clone(), from("ip", set4), { "accept": null }]),
        json!([dport.clone(), from("ip6", set6), { "accept": null }]),
        json!([dport, reject]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_name_the_sessions_within_what_the_kernel_keeps() {
        assert_eq!(comment(&["a".into(), "b".into()]), "portcullis a b");
        let many: Vec<String> = (0..10).map(|n| format!("0192a3b4-0000-7000-8000-00000000000{n}")).collect();
        let text = comment(&many);
        assert!(text.len() <= COMMENT_MAX, "{}", text.len());
        assert_eq!(text.matches(' ').count(), 3, "as many whole ids as fit: {text}");
    }

    #[test]
    fn seconds_left_round_up_and_end() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(seconds_left(now + Duration::from_millis(1_500), now), Some(2));
        assert_eq!(seconds_left(now, now), None);
        assert_eq!(seconds_left(now - Duration::from_secs(1), now), None);
    }

    #[test]
    fn keys_keep_only_letters_and_digits() {
        assert_eq!(key("01a24eec-d8cf-75bf"), "r01a24eecd8cf75bf");
    }
}
