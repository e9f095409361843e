//! Host agents as admins manage them (AgentService): credentials shown once and stored hashed,
//! unique names, revocation, and the audit trail.

use crate::common::{self, TestDb, TestServer, with_key};
use portcullis::pb::v1::agent_service_client::AgentServiceClient;
use portcullis::pb::v1::audit_service_client::AuditServiceClient;
use portcullis::pb::v1::*;
use portcullis::store::entity::agent;
use sea_orm::EntityTrait;

#[tokio::test]
async fn an_agent_is_created_with_a_credential_shown_once_and_revoked_for_good() {
    common::each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut agents = AgentServiceClient::new(server.channel().await);
        let created = agents
            .create_agent(with_key(CreateAgentRequest { name: "bastion-1".into() }, &server.admin_key))
            .await
            .unwrap()
            .into_inner();
        let credential = created.credential;
        let agent = created.agent.unwrap();
        assert!(credential.starts_with("pca_"), "{credential}");
        assert!(credential.starts_with(&agent.credential_prefix), "{} / {credential}", agent.credential_prefix);
        assert_eq!(agent.name, "bastion-1");
        assert!(agent.revoked_at.is_none());

        // Only the hash is kept.
        let stored = agent::Entity::find_by_id(agent.id.clone()).one(&server.db).await.unwrap().unwrap();
        assert_ne!(stored.secret_hash, credential);
        assert!(!stored.secret_hash.contains(&credential[4..]), "the secret part is not stored");

        let listed = agents
            .list_agents(with_key(ListAgentsRequest::default(), &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .agents;
        assert_eq!(listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [agent.id.as_str()]);

        let twin = agents
            .create_agent(with_key(CreateAgentRequest { name: "bastion-1".into() }, &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(twin.code(), tonic::Code::AlreadyExists, "{twin:?}");
        let nameless = agents
            .create_agent(with_key(CreateAgentRequest { name: " ".into() }, &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(common::violated_fields(&nameless), ["name"], "{nameless:?}");

        let revoked = agents
            .revoke_agent(with_key(RevokeAgentRequest { id: agent.id.clone() }, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap();
        let first_revocation = revoked.revoked_at.expect("revoked");
        let again = agents
            .revoke_agent(with_key(RevokeAgentRequest { id: agent.id.clone() }, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap();
        assert_eq!(again.revoked_at, Some(first_revocation), "revoking twice changes nothing");

        let request = ListAuditEventsRequest {
            types: vec!["agent.created".into(), "agent.revoked".into()],
            ..Default::default()
        };
        let events = AuditServiceClient::new(server.channel().await)
            .list_audit_events(with_key(request, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let mut types: Vec<&str> = events.iter().map(|event| event.r#type.as_str()).collect();
        types.sort_unstable();
        assert_eq!(types, ["agent.created", "agent.revoked"], "one event each");

        // A credential is no API key: it opens no other service.
        let refused = server.channel().await;
        let refused = portcullis::pb::v1::user_service_client::UserServiceClient::new(refused)
            .get_current_user(with_key(GetCurrentUserRequest {}, &credential))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        server.stop().await;
    })
    .await;
}
