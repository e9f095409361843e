//! The host provider passes the conformance suite with the real agent in process, keeping its
//! table in a network namespace of its own. Its desired state comes from the sessions in the
//! database (so extends, shortening and addresses shared between sessions reach the kernel
//! level-triggered), so a stand-in plays the engine's part around each call: it writes each
//! requested rule as an applied rule of a live session before `apply`, and marks the address's
//! rules removed before `revoke`.

use super::{FOREIGN, Rules, conformance};
use crate::agents::{RunningAgent, create_agent, host_firewall};
use crate::common::{self, TestDb, TestServer, with_key};
use async_trait::async_trait;
use chrono::TimeDelta;
use portcullis::domain::{ProviderConfig, ResourceIpStatus, SessionStatus, new_id, now};
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::{CreateResourceRequest, Resource, resource};
use portcullis::provider::host::HostFirewalls;
use portcullis::provider::{CheckOutcome, FirewallProvider, Listing, ProviderError, RuleRef, RuleRequest, Target};
use portcullis::store::entity::{resource_ip, session};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter};
use std::time::Duration;

/// The host provider with the engine's database writes around it.
struct EngineStandIn {
    inner: HostFirewalls,
    db: DatabaseConnection,
    organization_id: String,
    user_id: String,
}

impl EngineStandIn {
    async fn hold(&self, target: &Target, request: &RuleRequest) {
        let at = now();
        let session_id = request.owner.session_id.clone();
        if session::Entity::find_by_id(session_id.clone()).one(&self.db).await.unwrap().is_none() {
            session::Model {
                id: session_id.clone(),
                organization_id: self.organization_id.clone(),
                user_id: self.user_id.clone(),
                ipv4_address: None,
                ipv6_address: None,
                status: SessionStatus::Active,
                started_at: at,
                expires_at: request.owner.expires_at,
                ended_at: None,
                ended_reason: None,
                revision: 1,
                live_ipv4_key: None,
                live_ipv6_key: None,
                created_at: at,
                updated_at: at,
                heartbeat_seconds: None,
                heartbeat_due_at: None,
                expiry_warned_for: None,
                approval: None,
                justification: None,
                ticket: None,
            }
            .into_active_model()
            .insert(&self.db)
            .await
            .unwrap();
        }
        resource_ip::Model {
            id: new_id(),
            session_id,
            organization_id: self.organization_id.clone(),
            resource_id: target.resource_id.clone(),
            resource_name: "host".into(),
            ip_version: if request.address.is_ipv4() { 4 } else { 6 },
            ip_address: request.address.to_string(),
            status: ResourceIpStatus::Applied,
            provider_rule_id: None,
            applied_at: Some(at),
            removed_at: None,
            error_message: None,
            attempts: 0,
            lease_owner: None,
            lease_expires_at: None,
            next_attempt_at: at + TimeDelta::hours(1),
            created_at: at,
            updated_at: at,
            replaced_by: None,
        }
        .into_active_model()
        .insert(&self.db)
        .await
        .unwrap();
    }
}

#[async_trait]
impl FirewallProvider for EngineStandIn {
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        for rule in rules {
            self.hold(target, rule).await;
        }
        self.inner.apply(target, rules).await
    }

    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        for rule in rules {
            resource_ip::Entity::update_many()
                .col_expr(resource_ip::Column::Status, Expr::value(ResourceIpStatus::Removed))
                .filter(resource_ip::Column::ResourceId.eq(target.resource_id.clone()))
                .filter(resource_ip::Column::IpAddress.eq(rule.address.to_string()))
                .exec(&self.db)
                .await
                .unwrap();
        }
        self.inner.revoke(target, rules).await
    }

    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        self.inner.list(target).await
    }

    async fn check(&self, target: &Target) -> CheckOutcome {
        self.inner.check(target).await
    }
}

#[tokio::test]
async fn host_firewalls_pass_the_conformance_suite_with_the_agent_in_process() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let (agent_id, credential) = create_agent(&server, "bastion-1").await;
    let request = CreateResourceRequest {
        resource: Some(Resource {
            name: "host".into(),
            provider: Some(host_firewall(&agent_id)),
            ..Default::default()
        }),
    };
    let created = ResourceServiceClient::new(server.channel().await)
        .create_resource(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .resource
        .unwrap();
    let Some(resource::Provider::HostFirewall(host)) = created.provider else { panic!("{:?}", created.provider) };
    let config = ProviderConfig::HostFirewall(portcullis::domain::HostFirewall {
        agent_id: host.agent_id,
        protocol: host.protocol,
        ports: host.ports.iter().map(|port| u16::try_from(*port).unwrap()).collect(),
    });
    let target = Target { resource_id: created.id.clone(), organization_id: server.organization_id.clone(), config };

    let agent = RunningAgent::start(server.addr, &credential);
    // Someone else's table, with a rule for the FOREIGN address: it must come out untouched.
    agent.namespace.run(&["add", "table", "inet", "site"]);
    agent.namespace.run(&[
        "add",
        "chain",
        "inet",
        "site",
        "input",
        "{ type filter hook input priority 0; policy accept; }",
    ]);
    agent
        .namespace
        .run(&["add", "rule", "inet", "site", "input", "ip", "saddr", FOREIGN, "tcp", "dport", "22", "accept"]);
    let foreign = agent.namespace.run(&["-j", "list", "table", "inet", "site"]);
    let provider = EngineStandIn {
        inner: HostFirewalls::new(server.db.clone()),
        db: server.db.clone(),
        organization_id: server.organization_id.clone(),
        user_id: server.admin_id.clone(),
    };
    common::eventually("the agent connects", Duration::from_secs(10), async || {
        let check = provider.check(&target).await;
        common::when(matches!(check, CheckOutcome::Ok(_)), check)
    })
    .await;

    // Elements live in the resource's sets (one per address family), not one rule per owner.
    conformance(&provider, &target, Rules::Shared).await;
    assert_eq!(
        agent.namespace.run(&["-j", "list", "table", "inet", "site"]),
        foreign,
        "another table is never touched"
    );
    agent.stop().await;
    server.stop().await;
}
