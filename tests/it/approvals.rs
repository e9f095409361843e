//! Approvals: a resource's approval policy, checked when it is set (shape, named approvers, and
//! whether anyone could ever satisfy it), on every backend.

use crate::common::{TestDb, TestServer, each_backend, reason, violated_fields, with_key};
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::session_service_client::SessionServiceClient;
use portcullis::pb::v1::*;
use tonic::transport::Channel;

fn policy(approvals: u32) -> ApprovalPolicy {
    ApprovalPolicy { required: true, approvals, ..Default::default() }
}

async fn create(
    resources: &mut ResourceServiceClient<Channel>,
    key: &str,
    name: &str,
    approval: ApprovalPolicy,
) -> Result<Resource, tonic::Status> {
    let resource = Resource {
        name: name.into(),
        provider: Some(resource::Provider::Memory(MemoryProvider::default())),
        approval: Some(approval),
        ..Default::default()
    };
    let created = resources.create_resource(with_key(CreateResourceRequest { resource: Some(resource) }, key)).await?;
    Ok(created.into_inner().resource.unwrap())
}

fn set_approval(id: &str, approval: ApprovalPolicy) -> UpdateResourceRequest {
    UpdateResourceRequest {
        resource: Some(Resource { id: id.into(), approval: Some(approval), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["approval".into()] }),
    }
}

#[tokio::test]
async fn an_approval_policy_is_refused_when_no_one_could_ever_satisfy_it() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut resources = ResourceServiceClient::new(server.channel().await);
        let key = server.admin_key.clone();

        // One admin cannot give two approvals.
        let refused = create(&mut resources, &key, "db", policy(2)).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["resource.approval.approvals"], "{refused:?}");
        assert!(refused.message().contains("fewer than the 2 approvals"), "{}", refused.message());

        // With a second admin it can be met; the defaults are filled in.
        let second = server.insert_user(&server.organization_id, "grace@example.com", "ADMIN").await;
        let created = create(&mut resources, &key, "db", policy(2)).await.unwrap();
        let approval = created.approval.clone().unwrap();
        assert_eq!((approval.approvals, approval.pending_timeout.unwrap().seconds), (2, 3_600));

        // Once an approver may open it, their own request needs two others: refused.
        let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: second.clone() };
        resources.assign_resource(with_key(assign, &key)).await.unwrap();
        let refused =
            resources.update_resource(with_key(set_approval(&created.id, policy(2)), &key)).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["resource.approval.approvals"]);
        assert!(refused.message().contains("never their own request"), "{}", refused.message());

        // Named approvers must be enabled users of the organization; bad shapes are named.
        let stranger = portcullis::domain::new_id();
        let named = ApprovalPolicy { approver_user_ids: vec![stranger], ..policy(1) };
        let refused = resources.update_resource(with_key(set_approval(&created.id, named), &key)).await.unwrap_err();
        assert!(violated_fields(&refused).contains(&"resource.approval.approver_user_ids".to_owned()));
        let quick =
            ApprovalPolicy { pending_timeout: Some(prost_types::Duration { seconds: 5, nanos: 0 }), ..policy(1) };
        let refused = resources.update_resource(with_key(set_approval(&created.id, quick), &key)).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["resource.approval.pending_timeout"]);

        // No session opens it without the approvals.
        let grace = server.insert_api_key(&second, portcullis::domain::Permission::ALL, None).await;
        let mut sessions = SessionServiceClient::new(server.channel().await);
        let start = StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), ..Default::default() };
        let refused = sessions.start_session(with_key(start, &grace)).await.unwrap_err();
        assert_eq!(reason(&refused), "ERROR_REASON_APPROVAL_REQUIRED", "{refused:?}");
        assert!(server.memory_rules(&created.id).is_empty());

        // An update that does not name the policy keeps it; naming it with required false ends it.
        let renamed = UpdateResourceRequest {
            resource: Some(Resource { id: created.id.clone(), name: "db-prod".into(), ..created.clone() }),
            update_mask: None,
        };
        let kept = resources.update_resource(with_key(renamed, &key)).await.unwrap().into_inner().resource.unwrap();
        assert_eq!(kept.approval, created.approval);
        let off = ApprovalPolicy::default();
        let updated = resources.update_resource(with_key(set_approval(&created.id, off), &key)).await.unwrap();
        assert_eq!(updated.into_inner().resource.unwrap().approval, None);
        server.stop().await;
    })
    .await;
}
