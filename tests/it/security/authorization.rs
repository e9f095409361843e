//! Who may call what: one policy for every RPC, operators over tenants, client addresses only from trusted proxies, and changes of role reaching live calls.

use super::*;

/// Behind a trusted proxy the audit trail records the client the proxy names, not the proxy;
/// a malformed rightmost `x-forwarded-for` hop is refused, never a reason to believe
/// `x-real-ip` instead; and tunnel or translator addresses carrying a refused host are refused.
#[tokio::test]
async fn addresses_come_from_trusted_proxies_and_are_held_to_the_policy() {
    use portcullis::pb::v1::audit_service_client::AuditServiceClient;
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    let db = TestDb::sqlite();
    let mut config = common::test_config();
    config.network.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = TestServer::start_with(&db, config).await;
    fn forwarded<T>(message: T, key: &str, xff: &str, real: Option<&str>) -> tonic::Request<T> {
        let mut request = with_key(message, key);
        request.metadata_mut().insert("x-forwarded-for", xff.parse().unwrap());
        if let Some(real) = real {
            request.metadata_mut().insert("x-real-ip", real.parse().unwrap());
        }
        request
    }
    let key = server.admin_key.clone();
    let user = User { email: "ada@example.com".into(), role: Role::User.into(), ..Default::default() };
    UserServiceClient::new(server.channel().await)
        .create_user(forwarded(CreateUserRequest { user: Some(user) }, &key, "198.51.100.77", None))
        .await
        .unwrap();
    let request = ListAuditEventsRequest { types: vec!["user.created".into()], ..Default::default() };
    let events = AuditServiceClient::new(server.channel().await)
        .list_audit_events(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(events[0].client_ip, "198.51.100.77", "the client the proxy named, not the proxy");

    let mut sessions = SessionServiceClient::new(server.channel().await);
    let start = StartSessionRequest::default();
    let err = sessions.start_session(forwarded(start, &key, "203.0.113.5, not-an-address", Some("203.0.113.6"))).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(common::violated_fields(&err), ["x-forwarded-for"]);
    for carried in ["2002:0a00:0001::1", "64:ff9b::7f00:1", "::203.0.113.9", "240.0.0.1"] {
        let field = if carried.contains(':') { "ipv6_address" } else { "ipv4_address" };
        let mut request = StartSessionRequest::default();
        if carried.contains(':') {
            request.ipv6_address = Some(carried.into());
        } else {
            request.ipv4_address = Some(carried.into());
        }
        let err = sessions.start_session(with_key(request, &server.admin_key)).await.unwrap_err();
        assert_eq!(common::violated_fields(&err), [field], "{carried}");
    }
    server.stop().await;
}

/// An admin's key that carries only session permissions cannot revoke another user's keys:
/// that is user administration (`users:write`), whatever the key owner's role.
#[tokio::test]
async fn revoking_another_users_key_needs_users_write_on_the_calling_key() {
    use portcullis::domain::Permission;
    use portcullis::pb::v1::auth_service_client::AuthServiceClient;
    common::each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let narrow =
            server.insert_api_key(&server.admin_id, &[Permission::SessionsRead, Permission::SessionsWrite], None).await;
        let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
        let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
        let mut keys = AuthServiceClient::new(server.channel().await);
        let request =
            CreateApiKeyRequest { name: "ci".into(), permissions: vec!["sessions:read".into()], expires_at: None };
        let target = keys.create_api_key(with_key(request, &user_key)).await.unwrap().into_inner().api_key.unwrap().id;

        // Without users:write the call reaches only the caller's own keys.
        let err = keys.revoke_api_key(with_key(RevokeApiKeyRequest { id: target.clone() }, &narrow)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{}: {err:?}", db.backend);
        let revoked =
            keys.revoke_api_key(with_key(RevokeApiKeyRequest { id: target }, &server.admin_key)).await.unwrap();
        assert!(revoked.into_inner().api_key.unwrap().revoked_at.is_some());
        server.stop().await;
    })
    .await;
}

/// Whether an answer shows the call got past authorization (whatever the handler made of it).
fn admitted(answer: &Result<Vec<u8>, tonic::Status>) -> bool {
    !matches!(answer, Err(status) if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::Unimplemented))
}

/// Every RPC of every service, read from the descriptor set, against the policy: a key without
/// the RPC's permission is denied, each role is admitted exactly where it should be, and
/// another organization's objects are NOT_FOUND and never show up in an answer.
#[tokio::test]
async fn every_rpc_is_authorized_by_one_policy() {
    use common::raw_grpc::{Api, Fill, call};
    use portcullis::domain::{Permission, Rule};
    use portcullis::grpc::policy::POLICY;
    common::each_backend(|db: TestDb| async move {
        let api = Api::load();
        let server = TestServer::start(&db).await;
        let channel = server.channel().await;
        let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
        let user_key = server.insert_api_key(&user, Permission::ALL, None).await;
        let foreign = ForeignObjects::create(&server).await;

        for method in &api.methods {
            let name = format!("{}/{}", method.service, method.name);
            let rule = POLICY.iter().find(|(s, m, _)| *s == method.service && *m == method.name).map(|(_, _, r)| *r);
            let Some(Rule::Guarded { members, .. }) = rule else {
                if rule == Some(Rule::Agent) {
                    // Only an agent's own credential opens it: no member's or operator's key.
                    for key in [&server.admin_key, &user_key, &server.operator_key] {
                        let refused = call(&channel, method, Vec::new(), key).await.unwrap_err();
                        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{name}: {refused:?}");
                    }
                    continue;
                }
                assert_eq!(rule, Some(Rule::Public), "{name} has no policy entry");
                continue;
            };
            let empty = Vec::new();

            // Each role, with every permission the role grants.
            let as_admin = call(&channel, method, empty.clone(), &server.admin_key).await;
            assert_eq!(admitted(&as_admin), members.is_some(), "{name} as ADMIN: {as_admin:?}");
            let as_user = call(&channel, method, empty.clone(), &user_key).await;
            assert_eq!(admitted(&as_user), USER_MAY_CALL.contains(&name.as_str()), "{name} as USER: {as_user:?}");
            let as_operator = call(&channel, method, empty.clone(), &server.operator_key).await;
            let operator_may = OPERATOR_MAY_CALL.contains(&name.as_str());
            assert_eq!(admitted(&as_operator), operator_may, "{name} as OPERATOR: {as_operator:?}");

            // An admin key lacking the permission the RPC needs (and whatever implies it).
            if let Some(needed) = members.and_then(|access| access.needs) {
                let without: Vec<Permission> = Permission::ALL
                    .iter()
                    .copied()
                    .filter(|p| *p != needed && !p.implied().contains(&needed))
                    .collect();
                let narrow = server.insert_api_key(&server.admin_id, &without, None).await;
                let denied = call(&channel, method, empty.clone(), &narrow).await.unwrap_err();
                assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{name} without {needed}: {denied:?}");
                assert_eq!(common::reason(&denied), "ERROR_REASON_PERMISSION_MISSING", "{name}");
            }

            // The other organization's objects, as this organization's admin.
            if members.is_none() {
                continue;
            }
            let targets = std::cell::Cell::new(false);
            let fill = |path: &str| {
                let value = foreign.fill(&method.service, &method.name, path);
                if matches!(value, Some(Fill::Text(_)))
                    && (path == "id" || path.ends_with("_id") || path.ends_with(".id"))
                {
                    targets.set(true);
                }
                value
            };
            let body = api.encode(&method.input, &fill);
            let answer = call(&channel, method, body, &server.admin_key).await;
            // A list filtered by another organization's object finds nothing; anything else that
            // names one finds nothing either.
            if targets.get() && !method.name.starts_with("List") {
                let status = answer.as_ref().expect_err(&name);
                assert_eq!(status.code(), tonic::Code::NotFound, "{name} on another organization's object: {status:?}");
            }
            if let Ok(bytes) = &answer {
                for id in foreign.ids() {
                    assert!(!contains(bytes, id.as_bytes()), "{name} answered with another organization's {id}");
                }
            }
        }
        server.stop().await;
    })
    .await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The platform operator founds, lists, suspends and resumes organizations and sets their tier;
/// an organization's admin can rename it but neither raise its tier, widen its scopes nor lift
/// its suspension, and while suspended its members may only read it.
#[tokio::test]
async fn operators_own_tenants() {
    use portcullis::domain::Permission;
    common::each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let channel = server.channel().await;
        let mut orgs = organizations(&channel);
        let operator = server.operator_key.clone();
        let admin = server.admin_key.clone();
        let user = server.insert_user(&server.organization_id, "ada@example.com", "USER").await;
        let user_key = server.insert_api_key(&user, Permission::ALL, None).await;

        // Founding: the new organization has an admin whose key works, and no cloud scopes.
        let request = CreateOrganizationRequest {
            organization: Some(Organization {
                name: "Globex".into(),
                tier: Tier::Business.into(),
                ..Default::default()
            }),
            admin_email: "Hank@Globex.example".into(),
            admin_full_name: "Hank Scorpio".into(),
        };
        let created = orgs.create_organization(with_key(request.clone(), &operator)).await.unwrap().into_inner();
        let globex = created.organization.unwrap();
        assert_eq!((globex.name.as_str(), globex.tier()), ("Globex", Tier::Business), "{}", db.backend);
        assert_eq!(globex.cloud_scopes.unwrap_or_default(), CloudScopes::default(), "created without scopes");
        assert_eq!(created.admin.unwrap().email, "hank@globex.example");
        let hank = UserServiceClient::new(channel.clone())
            .get_current_user(with_key(GetCurrentUserRequest {}, &created.admin_api_key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hank.user.unwrap().organization_id, globex.id);
        let listed = orgs.list_organizations(with_key(ListOrganizationsRequest::default(), &operator)).await.unwrap();
        let names: Vec<String> = listed.into_inner().organizations.into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["Acme", "Globex"]);
        let acme = orgs.get_organization(with_key(GetOrganizationRequest::default(), &admin)).await.unwrap();
        assert!(acme.into_inner().organization.unwrap().cloud_scopes.unwrap().unrestricted, "init's is unrestricted");

        // Operators are members of nothing; members are not operators.
        let err = orgs.create_organization(with_key(request, &admin)).await.unwrap_err();
        assert_eq!(
            (err.code(), common::reason(&err).as_str()),
            (tonic::Code::PermissionDenied, "ERROR_REASON_OPERATOR_REQUIRED")
        );
        let err = UserServiceClient::new(channel.clone())
            .list_users(with_key(ListUsersRequest::default(), &operator))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), common::reason(&err).as_str()),
            (tonic::Code::PermissionDenied, "ERROR_REASON_MEMBER_REQUIRED")
        );
        let err = orgs.get_organization(with_key(GetOrganizationRequest::default(), &operator)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "the operator names the organization");

        // The admin renames the organization, and cannot raise its tier or widen its scopes.
        let own = |organization: Organization, paths: &[&str]| UpdateOrganizationRequest {
            organization: Some(organization),
            update_mask: mask(paths),
        };
        let renamed = Organization { name: "Acme Corp".into(), ..Default::default() };
        orgs.update_organization(with_key(own(renamed, &["name"]), &admin)).await.unwrap();
        for (organization, path) in [
            (Organization { tier: Tier::Enterprise.into(), ..Default::default() }, "tier"),
            (
                Organization {
                    cloud_scopes: Some(CloudScopes { gcp_projects: vec!["globex-prod".into()], ..Default::default() }),
                    ..Default::default()
                },
                "cloud_scopes",
            ),
        ] {
            let err = orgs.update_organization(with_key(own(organization, &[path]), &admin)).await.unwrap_err();
            assert_eq!(common::reason(&err), "ERROR_REASON_OPERATOR_REQUIRED", "{path}: {err:?}");
        }
        let err = orgs
            .suspend_organization(with_key(
                SuspendOrganizationRequest { organization_id: server.organization_id.clone(), reason: String::new() },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(common::reason(&err), "ERROR_REASON_OPERATOR_REQUIRED");
        let tier =
            Organization { id: server.organization_id.clone(), tier: Tier::Enterprise.into(), ..Default::default() };
        let raised = orgs.update_organization(with_key(own(tier, &["tier"]), &operator)).await.unwrap();
        assert_eq!(raised.into_inner().organization.unwrap().tier(), Tier::Enterprise);

        // Suspended: members, admins included, may only read their organization.
        let request =
            SuspendOrganizationRequest { organization_id: server.organization_id.clone(), reason: "unpaid".into() };
        orgs.suspend_organization(with_key(request, &operator)).await.unwrap();
        for key in [&admin, &user_key] {
            let err = UserServiceClient::new(channel.clone())
                .get_current_user(with_key(GetCurrentUserRequest {}, key))
                .await
                .unwrap_err();
            assert_eq!(common::reason(&err), "ERROR_REASON_ORGANIZATION_SUSPENDED", "{}", db.backend);
            let read = orgs.get_organization(with_key(GetOrganizationRequest::default(), key)).await.unwrap();
            assert!(read.into_inner().organization.unwrap().suspended);
        }
        let renamed = Organization { name: "Free At Last".into(), ..Default::default() };
        let err = orgs.update_organization(with_key(own(renamed, &["name"]), &admin)).await.unwrap_err();
        assert_eq!(common::reason(&err), "ERROR_REASON_ORGANIZATION_SUSPENDED", "no exemption for admins");
        let request = ResumeOrganizationRequest { organization_id: server.organization_id.clone() };
        orgs.resume_organization(with_key(request, &operator)).await.unwrap();
        UserServiceClient::new(channel.clone())
            .get_current_user(with_key(GetCurrentUserRequest {}, &admin))
            .await
            .expect("works again");

        // The trail shows the operator's key as the author.
        let events = audit_service_client::AuditServiceClient::new(channel.clone())
            .list_audit_events(with_key(
                ListAuditEventsRequest { types: vec!["organization.suspended".into()], ..Default::default() },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].actor_id, "", "the operator is no user");
        assert!(!events[0].actor_api_key_id.is_empty());
        assert_eq!(events[0].details.get("reason").map(String::as_str), Some("unpaid"));
        server.stop().await;
    })
    .await;
}

/// An admin watching another member's session is cut off once demoted to USER: the watch
/// checks again that its caller still reaches the session's owner, not only its credential.
#[tokio::test]
async fn a_demoted_admin_loses_the_watch_of_anothers_session() {
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    let db = TestDb::sqlite();
    let mut f = common::Fixture::new(&db).await;
    f.resource("db", MemoryProvider::default()).await;
    let key = f.user_key.clone();
    let session = f.start(&key, Some("203.0.113.70"), None).await.unwrap();
    let deputy = f.server.insert_user(&f.server.organization_id, "deputy@example.com", "ADMIN").await;
    let deputy_key = f.server.insert_api_key(&deputy, portcullis::domain::Permission::ALL, None).await;
    let channel = f.server.channel().await;
    let mut watch = SessionServiceClient::new(channel.clone())
        .watch_session(with_key(WatchSessionRequest { id: session.id.clone() }, &deputy_key))
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().expect("the current state");

    let demote = User { id: deputy.clone(), role: Role::User.into(), ..Default::default() };
    let request = UpdateUserRequest {
        user: Some(demote),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
    };
    UserServiceClient::new(channel).update_user(with_key(request, &f.server.admin_key)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the demoted admin's watch stayed open");
    assert_eq!(ended.map(|status| status.code()), Some(tonic::Code::PermissionDenied));
    f.server.stop().await;
}

/// A user's change to their own things (a preference, a key revoked) forgets their cached
/// callers only: nobody can send every other caller of every replica back to the database.
#[tokio::test]
async fn a_users_own_change_forgets_only_their_cached_callers() {
    let db = TestDb::sqlite();
    let mut config = common::test_config();
    config.auth.caller_cache_secs = Seconds::of::<60>();
    let f = common::Fixture::with_server(TestServer::start_with(&db, config).await).await;
    let channel = f.server.channel().await;
    let whoami = |key: String| {
        let channel = channel.clone();
        async move {
            UserServiceClient::new(channel).get_current_user(with_key(GetCurrentUserRequest {}, &key)).await.unwrap()
        }
    };
    whoami(f.server.admin_key.clone()).await;
    whoami(f.user_key.clone()).await;
    let cache = &f.server.services.callers;
    assert!(cache.get(&f.server.admin_key).is_some() && cache.get(&f.user_key).is_some(), "both cached");
    let request = UpdateCurrentUserRequest { expiry_emails: Some(false) };
    UserServiceClient::new(channel.clone()).update_current_user(with_key(request, &f.user_key)).await.unwrap();
    assert!(cache.get(&f.user_key).is_none(), "the user's own caller is read again");
    assert!(cache.get(&f.server.admin_key).is_some(), "another user's cached caller stays");
    f.server.stop().await;
}

/// What a member with a USER role may call: written out here, apart from the policy, so that
/// loosening the policy fails this test.
const USER_MAY_CALL: &[&str] = &[
    "AuthService/GetCurrentLogin",
    "AuthService/ListLoginSessions",
    "AuthService/ExtendLoginSession",
    "AuthService/CloseLoginSession",
    "AuthService/CreateApiKey",
    "AuthService/ListApiKeys",
    "AuthService/RevokeApiKey",
    "SessionService/StartSession",
    "SessionService/GetSession",
    "SessionService/ListSessions",
    "SessionService/StopSession",
    "SessionService/ExtendSession",
    "SessionService/WatchSession",
    "SessionService/GetClientAddress",
    "SessionService/ChangeSessionAddress",
    "ResourceIpService/GetResourceIp",
    "ResourceIpService/ListResourceIps",
    "ResourceIpService/RetryResourceIp",
    "ResourceService/GetResource",
    "ResourceService/ListResources",
    "UserService/GetUser",
    "UserService/GetCurrentUser",
    "UserService/UpdateCurrentUser",
    "OrganizationService/GetOrganization",
    "ApprovalService/ListApprovalRequests",
    "ApprovalService/ApproveSession",
    "ApprovalService/DenySession",
];

/// What the platform operator may call, likewise written out apart from the policy.
const OPERATOR_MAY_CALL: &[&str] = &[
    "OrganizationService/GetOrganization",
    "OrganizationService/UpdateOrganization",
    "OrganizationService/CreateOrganization",
    "OrganizationService/ListOrganizations",
    "OrganizationService/SuspendOrganization",
    "OrganizationService/ResumeOrganization",
    "IdentityProviderService/CreateIdentityProvider",
    "IdentityProviderService/GetIdentityProvider",
    "IdentityProviderService/ListIdentityProviders",
    "IdentityProviderService/UpdateIdentityProvider",
    "IdentityProviderService/DeleteIdentityProvider",
];

/// One of each object in a second organization.
struct ForeignObjects {
    organization: String,
    user: String,
    resource: String,
    session: String,
    resource_ip: String,
    api_key: String,
    login_session: String,
    identity_provider: String,
    agent: String,
}

impl ForeignObjects {
    async fn create(server: &TestServer) -> ForeignObjects {
        use portcullis::pb::v1::agent_service_client::AgentServiceClient;
        use portcullis::pb::v1::auth_service_client::AuthServiceClient;
        use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
        use portcullis::pb::v1::session_service_client::SessionServiceClient;
        let (organization, key) = server.insert_organization("Globex", "boss@globex.example").await;
        let channel = server.channel().await;
        let me = UserServiceClient::new(channel.clone())
            .get_current_user(with_key(GetCurrentUserRequest {}, &key))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let mut resources = ResourceServiceClient::new(channel.clone());
        let provider = resource::Provider::Memory(MemoryProvider::default());
        let request = CreateResourceRequest {
            resource: Some(Resource { name: "vault".into(), provider: Some(provider), ..Default::default() }),
        };
        let resource = resources.create_resource(with_key(request, &key)).await.unwrap().into_inner().resource.unwrap();
        let request = AssignResourceRequest { resource_id: resource.id.clone(), user_id: me.id.clone() };
        resources.assign_resource(with_key(request, &key)).await.unwrap();
        let request = StartSessionRequest { ipv4_address: Some("203.0.113.9".into()), ..Default::default() };
        let session = SessionServiceClient::new(channel.clone())
            .start_session(with_key(request, &key))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        let api_key = AuthServiceClient::new(channel)
            .list_api_keys(with_key(ListApiKeysRequest::default(), &key))
            .await
            .unwrap()
            .into_inner()
            .api_keys
            .remove(0)
            .id;
        let login_session = common::insert_login_session(&server.db, &me.id).await;
        let identity_provider = common::insert_identity_provider(&server.db, &organization).await;
        let agent = AgentServiceClient::new(server.channel().await)
            .create_agent(with_key(CreateAgentRequest { name: "globex-bastion".into() }, &key))
            .await
            .unwrap()
            .into_inner()
            .agent
            .unwrap()
            .id;
        ForeignObjects {
            organization,
            user: me.id,
            resource: resource.id,
            resource_ip: session.resource_ips[0].id.clone(),
            session: session.id,
            api_key,
            login_session,
            identity_provider,
            agent,
        }
    }

    fn ids(&self) -> [&str; 9] {
        [
            &self.organization,
            &self.user,
            &self.resource,
            &self.session,
            &self.resource_ip,
            &self.api_key,
            &self.login_session,
            &self.identity_provider,
            &self.agent,
        ]
    }

    /// What to put at `path` of a `service`/`method` request aimed at these objects.
    fn fill(&self, service: &str, method: &str, path: &str) -> Option<common::raw_grpc::Fill> {
        use common::raw_grpc::Fill::{Number, Text, Texts};
        let text = |id: &str| Some(Text(id.to_owned()));
        // The object an `id` names is the service's own.
        let own_object = || match (service, method) {
            // A new object's id is the server's to choose.
            (_, create) if create.starts_with("Create") => None,
            ("SessionService" | "ApprovalService", _) => text(&self.session),
            ("ResourceIpService", _) => text(&self.resource_ip),
            ("ResourceService", _) => text(&self.resource),
            ("UserService", _) => text(&self.user),
            ("OrganizationService", _) => text(&self.organization),
            ("IdentityProviderService", _) => text(&self.identity_provider),
            ("AgentService", _) => text(&self.agent),
            ("AuthService", "RevokeApiKey") => text(&self.api_key),
            ("AuthService", "ExtendLoginSession" | "CloseLoginSession") => text(&self.login_session),
            _ => None,
        };
        match path {
            "id" | "user.id" | "resource.id" | "organization.id" | "identity_provider.id" => own_object(),
            "session_id" => text(&self.session),
            "resource_id" => text(&self.resource),
            "user_id" => text(&self.user),
            "organization_id" | "identity_provider.organization_id" => text(&self.organization),
            "identity_provider.display_name" => text("Hijacked"),
            "reason" => text("reviewed"),
            // Enough for the changes to pass validation, so only the lookup can refuse them.
            "additional_hours" => Some(Number(1)),
            "ipv4_address" if method == "ChangeSessionAddress" => text("203.0.113.99"),
            "user.full_name" => text("Mallory"),
            "resource.name" => text("hijacked"),
            "organization.name" => text("Hijacked"),
            "update_mask.paths" => match service {
                "UserService" => Some(Texts(vec!["full_name".into()])),
                "IdentityProviderService" => Some(Texts(vec!["display_name".into()])),
                _ => Some(Texts(vec!["name".into()])),
            },
            _ => None,
        }
    }
}
