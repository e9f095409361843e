//! Linux hosts, through their agents. The server never reaches a host: the host's agent holds
//! a stream to some replica, which sends it what the database says the host should allow and
//! stores what the agent reports its firewall holds (see `AgentService.Connect`). So this
//! provider's calls, on whichever replica works the rule, wait for that report: a rule is
//! applied once the agent reports its address held for the rule's session until at least the
//! session's expiry, and revoked once the report no longer names the session.

use super::{CheckOutcome, FirewallProvider, Listing, OwnedRule, ProviderError, RuleRef, RuleRequest, Target};
use crate::domain::host::agent_connected;
use crate::domain::{ProviderConfig, now};
use crate::store::entity::{agent, host_element};
use crate::store::{StoreError, queries};
use async_trait::async_trait;
use chrono::TimeDelta;
use sea_orm::DatabaseConnection;
use std::net::IpAddr;
use std::time::Duration;

/// How long a call waits for the agent's report before it answers "not yet" (and the engine
/// tries again later): within any provider deadline.
const CONFIRM_WITHIN: Duration = Duration::from_millis(4_000);
/// How often a waiting call reads the reports.
const POLL: Duration = Duration::from_millis(100);
/// A reported expiry this much short of the session's still counts (the kernel's timeout is
/// whole seconds).
const EXPIRY_SLACK: TimeDelta = TimeDelta::seconds(2);

pub struct HostFirewalls {
    db: DatabaseConnection,
}

impl HostFirewalls {
    pub fn new(db: DatabaseConnection) -> HostFirewalls {
        HostFirewalls { db }
    }

    /// The agent of a host resource, if the agent may still serve it.
    async fn agent(&self, target: &Target) -> Result<agent::Model, ProviderError> {
        let ProviderConfig::HostFirewall(host) = &target.config else {
            return Err(ProviderError::Rejected("not a host resource".into()));
        };
        let agent = match queries::agents::get(&self.db, &target.organization_id, &host.agent_id).await {
            Ok(agent) => agent,
            Err(StoreError::NotFound) => {
                return Err(ProviderError::Rejected(format!("agent {} does not exist", host.agent_id)));
            }
            Err(err) => return Err(ProviderError::Transient(format!("reading the agent failed: {err}"))),
        };
        if agent.revoked_at.is_some() {
            return Err(ProviderError::Rejected(format!("agent {} was revoked", agent.name)));
        }
        Ok(agent)
    }

    async fn elements(&self, target: &Target, agent: &agent::Model) -> Result<Vec<host_element::Model>, ProviderError> {
        queries::hosts::elements_of(&self.db, &agent.id, &target.resource_id)
            .await
            .map_err(|err| ProviderError::Transient(format!("reading the agent's report failed: {err}")))
    }

    /// Waits until `done` holds for every item of the agent's report; answers each item. An
    /// agent that reports it cannot apply its state fails what is not done when `final_on_error`
    /// (an apply: the rule FAILED, retried by RetryResourceIp); otherwise it is tried again later.
    async fn wait_for<T>(
        &self,
        target: &Target,
        items: &[T],
        done: impl Fn(&T, &[host_element::Model]) -> bool,
        what: &str,
        final_on_error: bool,
    ) -> Vec<Result<(), ProviderError>> {
        let started = tokio::time::Instant::now();
        loop {
            let agent = match self.agent(target).await {
                Ok(agent) => agent,
                Err(err) => return items.iter().map(|_| Err(err.clone())).collect(),
            };
            if !agent_connected(agent.last_seen_at, now()) {
                let offline = ProviderError::Transient(offline(&agent));
                return items.iter().map(|_| Err(offline.clone())).collect();
            }
            let elements = match self.elements(target, &agent).await {
                Ok(elements) => elements,
                Err(err) => return items.iter().map(|_| Err(err.clone())).collect(),
            };
            if items.iter().all(|item| done(item, &elements)) {
                return items.iter().map(|_| Ok(())).collect();
            }
            if started.elapsed() >= CONFIRM_WITHIN {
                let not_done = if agent.report_error.is_empty() {
                    ProviderError::Transient(format!("waiting for agent {} to {what}", agent.name))
                } else {
                    let why = format!("agent {} could not apply its state: {}", agent.name, agent.report_error);
                    if final_on_error { ProviderError::Rejected(why) } else { ProviderError::Transient(why) }
                };
                return items
                    .iter()
                    .map(|item| if done(item, &elements) { Ok(()) } else { Err(not_done.clone()) })
                    .collect();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Why an agent's rules wait: it is not connected.
fn offline(agent: &agent::Model) -> String {
    let seen = agent.last_seen_at.map_or("never".to_owned(), |at| at.to_rfc3339());
    format!("agent {} offline (last seen: {seen})", agent.name)
}

fn element_for(elements: &[host_element::Model], address: IpAddr) -> Option<&host_element::Model> {
    elements.iter().find(|element| element.ip_address.parse::<IpAddr>().ok() == Some(address))
}

fn rule_id(address: IpAddr) -> String {
    format!("host:{address}")
}

#[async_trait]
impl FirewallProvider for HostFirewalls {
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        let held = |rule: &RuleRequest, elements: &[host_element::Model]| {
            element_for(elements, rule.address).is_some_and(|element| {
                element.holds_session(&rule.owner.session_id)
                    && element.expires_at + EXPIRY_SLACK >= rule.owner.expires_at
            })
        };
        let answers = self.wait_for(target, rules, held, "add the address", true).await;
        answers.into_iter().zip(rules).map(|(answer, rule)| answer.map(|()| rule_id(rule.address))).collect()
    }

    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        // A rule is this provider's to remove once no live session holds its address: the
        // agent's report then lacks it. (Rules of sessions still holding the address stay.)
        let gone = |rule: &RuleRef, elements: &[host_element::Model]| element_for(elements, rule.address).is_none();
        match self.agent(target).await {
            // Nobody can reach the host any more: its kernel removes each element at its expiry.
            Err(ProviderError::Rejected(why)) => {
                tracing::warn!(resource_id = %target.resource_id, reason = %why, "host rules left to their kernel expiry");
                rules.iter().map(|_| Ok(())).collect()
            }
            _ => self.wait_for(target, rules, gone, "remove the address", false).await,
        }
    }

    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let agent = self.agent(target).await?;
        let owned = self
            .elements(target, &agent)
            .await?
            .into_iter()
            .filter_map(|element| {
                let address = element.ip_address.parse::<IpAddr>().ok()?;
                let description =
                    format!("{} session {}", super::OWNERSHIP_MARKER, element.session_ids.replace(' ', ","));
                Some(OwnedRule { rule_id: rule_id(address), address, description })
            })
            .collect();
        // The agent's table is its own: nobody else's rules are in it.
        Ok(Listing { owned, foreign: Default::default() })
    }

    async fn check(&self, target: &Target) -> CheckOutcome {
        match self.agent(target).await {
            Err(ProviderError::Rejected(why)) => CheckOutcome::NotFound(why),
            Err(err) => CheckOutcome::Unreachable(err.to_string()),
            Ok(agent) if !agent_connected(agent.last_seen_at, now()) => CheckOutcome::Unreachable(offline(&agent)),
            Ok(agent) if !agent.report_error.is_empty() => CheckOutcome::AccessDenied(format!(
                "agent {} could not apply its state: {}",
                agent.name, agent.report_error
            )),
            Ok(agent) => CheckOutcome::Ok(format!("agent {} connected from {}", agent.name, agent.hostname)),
        }
    }
}
