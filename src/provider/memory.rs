//! Rules kept in memory (optionally mirrored to a JSON file so they survive a restart):
//! for development, demos and tests, with configurable latency and failure injection.

use super::{
    CheckOutcome, FirewallProvider, Listing, OwnedRule, ProviderError, RuleRef, RuleRequest, Target, fail_all,
    is_owned_description, unmanaged_rule_id,
};
use crate::domain::ProviderConfig;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// resource id → address → rule.
    rules: BTreeMap<String, BTreeMap<IpAddr, MemoryRule>>,
    /// resource id → calls made, for transient failure injection.
    #[serde(default)]
    calls: BTreeMap<String, u32>,
    /// resource id → apply and revoke calls made, as a cloud's audit log would count them.
    #[serde(default)]
    writes: BTreeMap<String, u32>,
    /// resource id → why checks are refused, for failure injection.
    #[serde(default)]
    refused_checks: BTreeMap<String, String>,
    next_rule: u64,
}

/// One rule held by the memory provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRule {
    pub rule_id: String,
    pub description: String,
}

pub struct MemoryFirewall {
    state: Mutex<State>,
    state_file: Option<PathBuf>,
}

impl MemoryFirewall {
    /// A provider whose rules live only in this process.
    pub fn in_process() -> MemoryFirewall {
        MemoryFirewall { state: Mutex::new(State::default()), state_file: None }
    }

    /// A provider whose rules are mirrored to `path`, loaded from it when it exists.
    pub fn with_state_file(path: PathBuf) -> std::io::Result<MemoryFirewall> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(err) => return Err(err),
        };
        Ok(MemoryFirewall { state: Mutex::new(state), state_file: Some(path) })
    }

    /// The rules now held on a resource.
    pub fn rules(&self, resource_id: &str) -> BTreeMap<IpAddr, MemoryRule> {
        self.lock().rules.get(resource_id).cloned().unwrap_or_default()
    }

    /// Every rule held, by resource.
    pub fn all_rules(&self) -> BTreeMap<String, BTreeMap<IpAddr, MemoryRule>> {
        self.lock().rules.clone()
    }

    /// How many apply and revoke calls a resource has had.
    pub fn writes(&self, resource_id: &str) -> u32 {
        self.lock().writes.get(resource_id).copied().unwrap_or(0)
    }

    /// Removes a rule the way someone else would, outside Portcullis (for tests of drift repair).
    pub fn pull(&self, resource_id: &str, address: IpAddr) -> Result<(), ProviderError> {
        let mut state = self.lock();
        if let Some(held) = state.rules.get_mut(resource_id) {
            held.remove(&address);
        }
        self.persist(&state)
    }

    /// Adds a rule the way someone else would, outside Portcullis (for tests of the reconciler).
    pub fn plant(&self, resource_id: &str, address: IpAddr, description: &str) -> Result<String, ProviderError> {
        let mut state = self.lock();
        state.next_rule += 1;
        let rule_id = format!("mem-{}", state.next_rule);
        let held = MemoryRule { rule_id: rule_id.clone(), description: description.to_owned() };
        state.rules.entry(resource_id.to_owned()).or_default().insert(address, held);
        self.persist(&state)?;
        Ok(rule_id)
    }

    /// Makes checks of a resource answer access denied with `reason`, the way withdrawn
    /// credentials would, or (None) pass again.
    pub fn refuse_checks(&self, resource_id: &str, reason: Option<&str>) -> Result<(), ProviderError> {
        let mut state = self.lock();
        match reason {
            Some(reason) => state.refused_checks.insert(resource_id.to_owned(), reason.to_owned()),
            None => state.refused_checks.remove(resource_id),
        };
        self.persist(&state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is one insert or remove.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn persist(&self, state: &State) -> Result<(), ProviderError> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let bytes = serde_json::to_vec(state).map_err(|e| ProviderError::Transient(e.to_string()))?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| ProviderError::Transient(format!("saving memory provider state: {e}")))
    }

    /// Counts a mutating call on `target`, then enters it.
    async fn enter_write(&self, target: &Target) -> Result<(), ProviderError> {
        *self.lock().writes.entry(target.resource_id.clone()).or_default() += 1;
        self.enter(target).await
    }

    /// Applies latency and transient-failure injection for one call on `target`.
    async fn enter(&self, target: &Target) -> Result<(), ProviderError> {
        let ProviderConfig::Memory(config) = &target.config else {
            return Err(ProviderError::Rejected("not a memory resource".into()));
        };
        if config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(config.latency_ms))).await;
        }
        let mut state = self.lock();
        let calls = state.calls.entry(target.resource_id.clone()).or_default();
        *calls += 1;
        if *calls <= config.transient_failures {
            return Err(ProviderError::Transient(format!("injected transient failure {calls}")));
        }
        Ok(())
    }
}

fn refused(target: &Target, address: IpAddr) -> bool {
    matches!(&target.config, ProviderConfig::Memory(config) if config.fail_addresses.contains(&address))
}

#[async_trait]
impl FirewallProvider for MemoryFirewall {
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        tracing::debug!(resource_id = %target.resource_id, rules = rules.len(), "memory firewall apply");
        if let Err(err) = self.enter_write(target).await {
            return fail_all(rules.len(), &err);
        }
        let mut state = self.lock();
        let mut results = Vec::with_capacity(rules.len());
        for rule in rules {
            if refused(target, rule.address) {
                results.push(Err(ProviderError::Rejected(format!("{} refused by failure injection", rule.address))));
                continue;
            }
            let existing = state.rules.get(&target.resource_id).and_then(|held| held.get(&rule.address)).cloned();
            let rule_id = match existing {
                Some(held) if is_owned_description(&held.description) => held.rule_id,
                Some(foreign) => unmanaged_rule_id(&foreign.rule_id),
                None => {
                    state.next_rule += 1;
                    let rule_id = format!("mem-{}", state.next_rule);
                    let held = MemoryRule { rule_id: rule_id.clone(), description: rule.owner.description() };
                    state.rules.entry(target.resource_id.clone()).or_default().insert(rule.address, held);
                    rule_id
                }
            };
            results.push(Ok(rule_id));
        }
        if let Err(err) = self.persist(&state) {
            return fail_all(rules.len(), &err);
        }
        results
    }

    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        // One line per call, as a cloud's audit log would show it (the bench counts them).
        tracing::debug!(resource_id = %target.resource_id, rules = rules.len(), "memory firewall revoke");
        if let Err(err) = self.enter_write(target).await {
            return fail_all(rules.len(), &err);
        }
        let mut state = self.lock();
        if let Some(held) = state.rules.get_mut(&target.resource_id) {
            for rule in rules {
                let ours = held.get(&rule.address).is_some_and(|found| match &rule.rule_id {
                    Some(id) => *id == found.rule_id,
                    None => is_owned_description(&found.description),
                });
                if ours {
                    held.remove(&rule.address);
                }
            }
            if held.is_empty() {
                state.rules.remove(&target.resource_id);
            }
        }
        match self.persist(&state) {
            Ok(()) => rules.iter().map(|_| Ok(())).collect(),
            Err(err) => fail_all(rules.len(), &err),
        }
    }

    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        self.enter(target).await?;
        let mut listing = Listing::default();
        for (address, rule) in self.rules(&target.resource_id) {
            if is_owned_description(&rule.description) {
                listing.owned.push(OwnedRule { rule_id: rule.rule_id, address, description: rule.description });
            } else {
                listing.foreign.insert(address);
            }
        }
        Ok(listing)
    }

    async fn check(&self, target: &Target) -> CheckOutcome {
        match self.lock().refused_checks.get(&target.resource_id) {
            Some(reason) => CheckOutcome::AccessDenied(reason.clone()),
            None => CheckOutcome::Ok("the memory provider is always reachable".into()),
        }
    }
}
