//! Approvals: a resource's approval policy, checked when it is set (shape, named approvers, and
//! whether anyone could ever satisfy it), on every backend.

use crate::common::{TestDb, TestServer, each_backend, violated_fields, with_key};
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
    create_on(resources, key, name, approval, resource::Provider::Memory(MemoryProvider::default())).await
}

async fn create_on(
    resources: &mut ResourceServiceClient<Channel>,
    key: &str,
    name: &str,
    approval: ApprovalPolicy,
    provider: resource::Provider,
) -> Result<Resource, tonic::Status> {
    let resource =
        Resource { name: name.into(), provider: Some(provider), approval: Some(approval), ..Default::default() };
    let created = resources.create_resource(with_key(CreateResourceRequest { resource: Some(resource) }, key)).await?;
    Ok(created.into_inner().resource.unwrap())
}

/// Where a test's resource lives: moto's EC2 when the suite has it (a real cloud API), else the
/// memory provider.
enum Firewall {
    Memory,
    #[cfg(feature = "aws")]
    Moto {
        endpoint: String,
        group: String,
    },
}

impl Firewall {
    fn pick() -> Firewall {
        #[cfg(feature = "aws")]
        if let Ok(endpoint) = std::env::var("PORTCULLIS_TEST_MOTO_URL") {
            let group = crate::common::moto::new_group(&endpoint);
            return Firewall::Moto { endpoint, group };
        }
        Firewall::Memory
    }

    fn provider(&self) -> resource::Provider {
        match self {
            Firewall::Memory => resource::Provider::Memory(MemoryProvider::default()),
            #[cfg(feature = "aws")]
            Firewall::Moto { endpoint, group } => crate::common::moto::resource_on_moto(endpoint, group),
        }
    }

    /// The addresses open on the firewall now.
    fn open(&self, server: &TestServer, resource_id: &str) -> Vec<std::net::IpAddr> {
        match self {
            Firewall::Memory => server.memory_rules(resource_id),
            #[cfg(feature = "aws")]
            Firewall::Moto { endpoint, group } => crate::common::moto::rules_in(endpoint, group)
                .into_iter()
                .filter_map(|(cidr, _, _)| cidr.split('/').next().and_then(|ip| ip.parse().ok()))
                .collect(),
        }
    }
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

/// Two admins approve a user's session on a security group (moto's EC2 when the suite has it):
/// nothing opens before the second approval, the requester and a repeated approver do not
/// count, and the duration starts at the deciding approval. A denial opens nothing, ever; an
/// auto-approve key starts at once.
#[tokio::test]
async fn a_session_waits_for_its_approvers_and_its_clock_starts_at_the_deciding_approval() {
    use crate::common::{self, insert_api_key};
    use portcullis::domain::Permission;
    use portcullis::pb::v1::approval_service_client::ApprovalServiceClient;
    use std::time::Duration;
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let channel = server.channel().await;
        let (mut resources, mut sessions) =
            (ResourceServiceClient::new(channel.clone()), SessionServiceClient::new(channel.clone()));
        let mut approvals = ApprovalServiceClient::new(channel);
        let (first, key) = (server.admin_id.clone(), server.admin_key.clone());
        let second = server.insert_user(&server.organization_id, "grace@example.com", "ADMIN").await;
        let second_key = server.insert_api_key(&second, Permission::ALL, None).await;
        let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
        let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
        let firewall = Firewall::pick();
        let created = create_on(&mut resources, &key, "prod-db", policy(2), firewall.provider()).await.unwrap();
        for assignee in [&user, &first] {
            let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: assignee.clone() };
            resources.assign_resource(with_key(assign, &key)).await.unwrap();
        }
        let start = |address: &str| StartSessionRequest {
            ipv4_address: Some(address.into()),
            duration_minutes: Some(30),
            justification: "INC-42: replica lag".into(),
            ..Default::default()
        };

        let waiting = sessions.start_session(with_key(start("203.0.113.7"), &user_key)).await.unwrap().into_inner();
        let waiting = waiting.session.unwrap();
        assert_eq!(waiting.status(), SessionStatus::AwaitingApproval);
        assert_eq!(
            (waiting.approval.as_ref().unwrap().required, waiting.justification.as_str()),
            (2, "INC-42: replica lag")
        );
        assert!(firewall.open(&server, &created.id).is_empty(), "no rule before the approvals");
        let inbox = approvals.list_approval_requests(with_key(ListApprovalRequestsRequest::default(), &key)).await;
        assert_eq!(inbox.unwrap().into_inner().sessions.len(), 1, "the admins' inbox");
        let own = approvals.list_approval_requests(with_key(ListApprovalRequestsRequest::default(), &user_key)).await;
        assert!(own.unwrap().into_inner().sessions.is_empty(), "nobody decides their own request");

        let approve = |id: &str| ApproveSessionRequest { id: id.into(), reason: "ok".into() };
        let refused = approvals.approve_session(with_key(approve(&waiting.id), &user_key)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "self-approval: {refused:?}");
        for _ in 0..2 {
            let once = approvals.approve_session(with_key(approve(&waiting.id), &key)).await.unwrap().into_inner();
            let once = once.session.unwrap();
            assert_eq!((once.status(), once.approval.unwrap().decisions.len()), (SessionStatus::AwaitingApproval, 1));
        }
        assert!(firewall.open(&server, &created.id).is_empty(), "one approval of two opens nothing");
        let opened = approvals.approve_session(with_key(approve(&waiting.id), &second_key)).await.unwrap();
        let opened = opened.into_inner().session.unwrap();
        assert_ne!(opened.status(), SessionStatus::AwaitingApproval);
        let approval = opened.approval.clone().unwrap();
        let decided = approval.decisions[1].decided_at.unwrap();
        assert_eq!(
            opened.expires_at.unwrap().seconds,
            decided.seconds + 30 * 60,
            "the duration counts from the deciding approval"
        );
        assert_eq!(approval.approved_at, Some(decided));
        let address: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        common::eventually("the approved rule", Duration::from_secs(10), async || {
            let rules = firewall.open(&server, &created.id);
            common::when(rules.contains(&address), rules)
        })
        .await;

        // The approvers granted 30 minutes: more needs a new request.
        let extend = ExtendSessionRequest { id: opened.id.clone(), additional_minutes: 30, ..Default::default() };
        let refused = sessions.extend_session(with_key(extend, &user_key)).await.unwrap_err();
        assert_eq!(crate::common::reason(&refused), "ERROR_REASON_APPROVAL_REQUIRED", "{refused:?}");

        // A denial ends the request at once, with the reason; nothing ever opens.
        let denied_one = sessions.start_session(with_key(start("203.0.113.8"), &user_key)).await.unwrap();
        let denied_one = denied_one.into_inner().session.unwrap();
        let deny = DenySessionRequest { id: denied_one.id.clone(), reason: "not during the freeze".into() };
        let denied = approvals.deny_session(with_key(deny, &second_key)).await.unwrap().into_inner().session.unwrap();
        assert_eq!((denied.status(), denied.ended_reason()), (SessionStatus::Cancelled, EndedReason::Denied));
        assert!(!firewall.open(&server, &created.id).contains(&"203.0.113.8".parse().unwrap()));

        // Skipping approval is never implied: a key passes it on only when it holds it by name.
        let mut auth = portcullis::pb::v1::auth_service_client::AuthServiceClient::new(server.channel().await);
        let skip = CreateApiKeyRequest {
            name: "ci".into(),
            permissions: vec!["sessions:write".into(), "sessions:auto-approve".into()],
            expires_at: None,
        };
        let refused = auth.create_api_key(with_key(skip, &key)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "the bootstrap key does not hold it: {refused:?}");

        // An admin's key carrying sessions:auto-approve starts at once.
        let breakglass =
            insert_api_key(&server.db, &first, &[Permission::SessionsWrite, Permission::SessionsAutoApprove], None)
                .await;
        let at_once = sessions.start_session(with_key(start("203.0.113.9"), &breakglass)).await.unwrap();
        assert_ne!(at_once.into_inner().session.unwrap().status(), SessionStatus::AwaitingApproval);

        // A waiting request holds its address, and taking the user's access away ends it.
        let held = sessions.start_session(with_key(start("203.0.113.10"), &user_key)).await.unwrap();
        let held = held.into_inner().session.unwrap();
        let again = sessions.start_session(with_key(start("203.0.113.10"), &user_key)).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
        let mut users = portcullis::pb::v1::user_service_client::UserServiceClient::new(server.channel().await);
        users.disable_user(with_key(DisableUserRequest { id: user.clone() }, &key)).await.unwrap();
        let ended = server.services.engine.session(&held.id).await.unwrap();
        assert_eq!(ended.session.status, portcullis::domain::SessionStatus::Cancelled, "{:?}", ended.session);
        server.stop().await;
    })
    .await;
}

/// A request nobody decides expires at its pending timeout, with nothing ever opened; a webhook
/// receiver gets the request, the decision on another and the expiry, each signed.
#[tokio::test]
async fn an_undecided_request_expires_at_its_pending_timeout_and_webhooks_tell_each_step() {
    use crate::common::receiver::{Receiver, signed_with};
    use crate::common::{self, test_config};
    use portcullis::domain::Permission;
    use portcullis::pb::v1::approval_service_client::ApprovalServiceClient;
    use portcullis::pb::v1::webhook_service_client::WebhookServiceClient;
    use std::time::{Duration, Instant};
    let db = TestDb::sqlite();
    let mut config = test_config();
    config.sealing_key = Some(portcullis::config::Secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    config.webhooks.allowed_private_endpoints = vec!["http://127.0.0.1:*".into()];
    config.webhooks.poll_interval_ms = portcullis::settings::Millis::try_from(50).unwrap();
    let server = TestServer::start_with(&db, config).await;
    let channel = server.channel().await;
    let receiver = Receiver::start().await;
    let hook = CreateWebhookRequest { url: receiver.url.clone(), ..Default::default() };
    let hook = WebhookServiceClient::new(channel.clone()).create_webhook(with_key(hook, &server.admin_key)).await;
    let secret = hook.unwrap().into_inner().secret;
    let (mut resources, mut sessions) =
        (ResourceServiceClient::new(channel.clone()), SessionServiceClient::new(channel.clone()));
    let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
    let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
    let quick = ApprovalPolicy { pending_timeout: Some(prost_types::Duration { seconds: 10, nanos: 0 }), ..policy(1) };
    let created = create(&mut resources, &server.admin_key, "prod-db", quick).await.unwrap();
    let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: user.clone() };
    resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();
    let start = |address: &str| StartSessionRequest { ipv4_address: Some(address.into()), ..Default::default() };

    let decided = sessions.start_session(with_key(start("203.0.113.6"), &user_key)).await.unwrap();
    let approve = ApproveSessionRequest { id: decided.into_inner().session.unwrap().id, reason: "ok".into() };
    ApprovalServiceClient::new(channel).approve_session(with_key(approve, &server.admin_key)).await.unwrap();
    let waiting = sessions.start_session(with_key(start("203.0.113.7"), &user_key)).await.unwrap();
    let waiting = waiting.into_inner().session.unwrap();
    let asked = Instant::now();
    let id = waiting.id.clone();
    let ended = common::eventually("the request to expire", Duration::from_secs(30), async || {
        let got = sessions.get_session(with_key(GetSessionRequest { id: id.clone() }, &user_key)).await;
        let session = got.map_err(|err| err.to_string())?.into_inner().session.unwrap();
        common::when(session.status() == SessionStatus::Expired, session).map_err(|s| format!("{:?}", s.status()))
    })
    .await;
    println!("the request expired {:.1} s after it was made (pending timeout 10 s)", asked.elapsed().as_secs_f64());
    assert_eq!(ended.ended_reason(), EndedReason::ApprovalTimeout);
    assert!(!server.memory_rules(&created.id).contains(&"203.0.113.7".parse().unwrap()), "nothing opened, ever");

    let count = |posts: &[crate::common::receiver::Received], kind: &str| {
        posts.iter().filter(|p| p.event_type() == kind).count()
    };
    let received = receiver
        .wait_for("the approval events", |posts| {
            count(posts, "approval.requested") == 2
                && count(posts, "approval.decided") == 1
                && count(posts, "approval.expired") == 1
        })
        .await;
    assert!(received.iter().all(|post| signed_with(&secret, post)), "every post signed");
    server.stop().await;
}

/// On a real cloud API (moto's EC2): a waiting session writes nothing to the security group; the
/// request survives its server's restart; the deciding approval, made on the new server, opens
/// the address.
#[cfg(feature = "aws")]
#[tokio::test]
async fn on_moto_nothing_is_written_before_the_deciding_approval_which_survives_a_restart() {
    use crate::common::moto::{moto, new_group, resource_on_moto, rules_in};
    use crate::common::{self, test_config};
    use portcullis::domain::Permission;
    use portcullis::pb::v1::approval_service_client::ApprovalServiceClient;
    use std::time::Duration;
    let Some(endpoint) = moto() else { return };
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let group = new_group(&endpoint);
    let resource = Resource {
        name: "bastion".into(),
        provider: Some(resource_on_moto(&endpoint, &group)),
        approval: Some(policy(1)),
        ..Default::default()
    };
    let created =
        resources.create_resource(with_key(CreateResourceRequest { resource: Some(resource) }, &server.admin_key));
    let created = created.await.unwrap().into_inner().resource.unwrap();
    let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
    let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
    let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: user.clone() };
    resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();
    let start = StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), ..Default::default() };
    let mut sessions = SessionServiceClient::new(server.channel().await);
    let waiting = sessions.start_session(with_key(start, &user_key)).await.unwrap().into_inner().session.unwrap();
    assert_eq!(waiting.status(), SessionStatus::AwaitingApproval);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rules_in(&endpoint, &group).is_empty(), "nothing written while waiting");

    // The server restarts (a new one on the same database first, then the old one stops).
    let restarted = server.replica(&db, test_config()).await;
    let admin_key = server.admin_key.clone();
    server.stop().await;
    let mut approvals = ApprovalServiceClient::new(restarted.channel().await);
    let inbox = approvals.list_approval_requests(with_key(ListApprovalRequestsRequest::default(), &admin_key)).await;
    assert_eq!(inbox.unwrap().into_inner().sessions[0].id, waiting.id, "the request outlived its server");
    let approve = ApproveSessionRequest { id: waiting.id.clone(), reason: "ok".into() };
    approvals.approve_session(with_key(approve, &admin_key)).await.unwrap();
    common::eventually("the approved address in the security group", Duration::from_secs(20), async || {
        let rules = rules_in(&endpoint, &group);
        common::when(rules.iter().any(|(cidr, _, _)| cidr == "203.0.113.7/32"), rules)
    })
    .await;
    restarted.stop().await;
}

/// Identity provider groups decide who approves and who needs no approval: a member of the
/// approver group approves (an admin outside it may not), a member of an auto-approve group
/// starts at once.
#[tokio::test]
async fn identity_provider_groups_name_the_approvers_and_the_auto_approved() {
    use crate::common::insert_identity_provider;
    use portcullis::domain::Permission;
    use portcullis::pb::v1::approval_service_client::ApprovalServiceClient;
    use portcullis::store::entity::user_identity;
    use sea_orm::ActiveModelTrait;
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let provider = insert_identity_provider(&server.db, &server.organization_id).await;
    let member = |email: &'static str, groups: &'static str| {
        let server = &server;
        let provider = provider.clone();
        async move {
            let id = server.insert_user(&server.organization_id, email, "USER").await;
            let at = portcullis::domain::now();
            let identity = user_identity::Model {
                id: portcullis::domain::new_id(),
                organization_id: server.organization_id.clone(),
                user_id: id.clone(),
                identity_provider_id: provider,
                subject: email.into(),
                groups: groups.into(),
                mapped_role: None,
                refresh_token_sealed: None,
                checked_at: at,
                check_failing_since: None,
                created_at: at,
                updated_at: at,
            };
            user_identity::ActiveModel::from(identity).insert(&server.db).await.unwrap();
            let key = server.insert_api_key(&id, Permission::ALL, None).await;
            (id, key)
        }
    };
    let (dba, dba_key) = member("bob@example.com", r#"["dba"]"#).await;
    let (oncall, oncall_key) = member("ada@example.com", r#"["oncall"]"#).await;
    let (carl, carl_key) = member("carl@example.com", "[]").await;
    let channel = server.channel().await;
    let mut resources = ResourceServiceClient::new(channel.clone());
    let grouped =
        ApprovalPolicy { approver_groups: vec!["dba".into()], auto_approve_groups: vec!["oncall".into()], ..policy(1) };
    let created = create(&mut resources, &server.admin_key, "prod-db", grouped).await.unwrap();
    for user in [&dba, &oncall, &carl] {
        let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: user.clone() };
        resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();
    }
    let mut sessions = SessionServiceClient::new(channel.clone());
    let start = |address: &str| StartSessionRequest { ipv4_address: Some(address.into()), ..Default::default() };

    let at_once = sessions.start_session(with_key(start("203.0.113.5"), &oncall_key)).await.unwrap();
    assert_eq!(at_once.into_inner().session.unwrap().status(), SessionStatus::Pending, "oncall needs no approval");
    let waiting = sessions.start_session(with_key(start("203.0.113.6"), &carl_key)).await.unwrap();
    let waiting = waiting.into_inner().session.unwrap();
    assert_eq!(waiting.status(), SessionStatus::AwaitingApproval);

    let mut approvals = ApprovalServiceClient::new(channel);
    let approve = || ApproveSessionRequest { id: waiting.id.clone(), reason: "ok".into() };
    let refused = approvals.approve_session(with_key(approve(), &server.admin_key)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "an admin outside the approver group: {refused:?}");
    let inbox = approvals.list_approval_requests(with_key(ListApprovalRequestsRequest::default(), &dba_key)).await;
    assert_eq!(inbox.unwrap().into_inner().sessions.len(), 1, "the dba's inbox");
    let opened = approvals.approve_session(with_key(approve(), &dba_key)).await.unwrap().into_inner();
    let status = opened.session.unwrap().status();
    assert!(matches!(status, SessionStatus::Pending | SessionStatus::Active), "a dba's approval opens it: {status:?}");
    server.stop().await;
}

/// An approval grants what was asked for, but never more than the requester may hold when it
/// comes: an admin demoted while waiting gets a user's maximum.
#[tokio::test]
async fn an_approval_grants_no_more_than_the_requester_may_hold_when_it_comes() {
    use crate::common::test_config;
    use portcullis::domain::Permission;
    use portcullis::pb::v1::approval_service_client::ApprovalServiceClient;
    use portcullis::pb::v1::user_service_client::UserServiceClient;
    let db = TestDb::sqlite();
    let mut config = test_config();
    config.sessions.max_hours_user = portcullis::settings::Count::try_from(1).unwrap();
    let server = TestServer::start_with(&db, config).await;
    let channel = server.channel().await;
    let mut resources = ResourceServiceClient::new(channel.clone());
    let (grace, hank) = (
        server.insert_user(&server.organization_id, "grace@example.com", "ADMIN").await,
        server.insert_user(&server.organization_id, "hank@example.com", "ADMIN").await,
    );
    // Every permission but skipping approval, which a key must name.
    let grace_key = server.insert_api_key(&grace, &Permission::for_login(portcullis::domain::Role::Admin), None).await;
    let created = create(&mut resources, &server.admin_key, "prod-db", policy(1)).await.unwrap();
    let assign = AssignResourceRequest { resource_id: created.id.clone(), user_id: grace.clone() };
    resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();
    let start =
        StartSessionRequest { ipv4_address: Some("203.0.113.7".into()), duration_hours: Some(2), ..Default::default() };
    let mut sessions = SessionServiceClient::new(channel.clone());
    let waiting = sessions.start_session(with_key(start, &grace_key)).await.unwrap().into_inner().session.unwrap();

    // Demoted while waiting: a user may hold one hour.
    let demote = UpdateUserRequest {
        user: Some(User { id: grace.clone(), role: Role::User.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
    };
    let demoted = UserServiceClient::new(channel.clone()).update_user(with_key(demote, &server.admin_key)).await;
    assert_eq!(demoted.unwrap().into_inner().user.unwrap().role(), Role::User);
    let hank_key = server.insert_api_key(&hank, Permission::ALL, None).await;
    let approve = ApproveSessionRequest { id: waiting.id.clone(), reason: "ok".into() };
    let opened = ApprovalServiceClient::new(channel).approve_session(with_key(approve, &hank_key)).await.unwrap();
    let opened = opened.into_inner().session.unwrap();
    let approved_at = opened.approval.unwrap().approved_at.unwrap().seconds;
    assert_eq!(opened.expires_at.unwrap().seconds, approved_at + 3600, "one hour, not the two asked for");
    server.stop().await;
}
