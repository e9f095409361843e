//! End-to-end tests of the administration API over gRPC, on every configured backend.

use crate::common;

use crate::common::{
    CALLER_CACHE_TTL, TestDb, TestServer, each_backend, reason, violated_fields, with_key, with_token,
};
use portcullis::domain::{Permission, new_id, now};
use portcullis::pb::v1::audit_service_client::AuditServiceClient;
use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use portcullis::provider::Providers;
use portcullis::provider::memory::MemoryFirewall;
use portcullis::service::credentials::Claims;
use portcullis::store::entity::login_session;
use portcullis::store::queries;
use prost_types::FieldMask;
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn new_user(email: &str, role: Role) -> CreateUserRequest {
    CreateUserRequest {
        user: Some(User {
            email: email.into(),
            full_name: "Test User".into(),
            role: role.into(),
            ..Default::default()
        }),
    }
}

fn memory_resource(name: &str) -> CreateResourceRequest {
    CreateResourceRequest {
        resource: Some(Resource {
            name: name.into(),
            provider: Some(resource::Provider::Memory(MemoryProvider::default())),
            ..Default::default()
        }),
    }
}

async fn users(server: &TestServer) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(server.channel().await)
}

#[tokio::test]
async fn authentication_matrix() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut client = users(&server).await;
        let backend = db.backend;

        let err = client.get_current_user(GetCurrentUserRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{backend}: no credentials");
        assert_eq!(reason(&err), "ERROR_REASON_MISSING_CREDENTIALS");

        for bad in ["garbage", "pcl_0000000000000000000000000000000000000000000000", &server.admin_key[..49]] {
            let err = client.get_current_user(with_key(GetCurrentUserRequest {}, bad)).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{backend}: bad key {bad}");
            assert_eq!(reason(&err), "ERROR_REASON_INVALID_CREDENTIALS");
        }

        // A well-formed key with a valid checksum that was never issued.
        let unknown =
            portcullis::service::credentials::generate_api_key(portcullis::service::credentials::KeyKind::Member)
                .secret;
        let err = client.get_current_user(with_key(GetCurrentUserRequest {}, &unknown)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{backend}: unknown key");

        let me =
            client.get_current_user(with_key(GetCurrentUserRequest {}, &server.admin_key)).await.unwrap().into_inner();
        assert_eq!(me.user.unwrap().email, "admin@example.com");
        // Every permission but those a key holds only by naming them (skipping approval).
        assert_eq!(me.permissions.len(), Permission::ALL.len() - Permission::EXPLICIT_ONLY.len());

        let expired =
            server.insert_api_key(&server.admin_id, Permission::ALL, Some(now() - chrono::TimeDelta::minutes(1))).await;
        let err = client.get_current_user(with_key(GetCurrentUserRequest {}, &expired)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{backend}: expired key");

        let revoked = server.insert_api_key(&server.admin_id, Permission::ALL, None).await;
        client
            .get_current_user(with_key(GetCurrentUserRequest {}, &revoked))
            .await
            .expect("key works before revocation");
        // Revoked straight in the database, as another replica would: effective once this
        // server's remembered caller is older than the cache TTL.
        let key_row = queries::api_keys::find_by_prefix(&server.db, &revoked[..16]).await.unwrap();
        queries::api_keys::revoke(&server.db, &key_row.id, now()).await.unwrap();
        tokio::time::sleep(CALLER_CACHE_TTL + std::time::Duration::from_millis(100)).await;
        let err = client.get_current_user(with_key(GetCurrentUserRequest {}, &revoked)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{backend}: revoked key");

        // An admin's key limited to sessions:read cannot create users.
        let narrow = server.insert_api_key(&server.admin_id, &[Permission::SessionsRead], None).await;
        let err = client.create_user(with_key(new_user("x@example.com", Role::User), &narrow)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{backend}: narrow key");
        assert_eq!(reason(&err), "ERROR_REASON_PERMISSION_MISSING");

        // A USER's key cannot administer, whatever it claims to carry.
        let user_id = server.insert_user(&server.organization_id, "user@example.com", "USER").await;
        let user_key = server.insert_api_key(&user_id, Permission::ALL, None).await;
        let err = client.create_user(with_key(new_user("y@example.com", Role::User), &user_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{backend}: user role");
        assert_eq!(reason(&err), "ERROR_REASON_ADMIN_REQUIRED");
        let me = client.get_current_user(with_key(GetCurrentUserRequest {}, &user_key)).await.unwrap().into_inner();
        assert_eq!(me.permissions, ["sessions:read", "sessions:write", "resources:read", "approvals:write"]);

        // A disabled user's key stops working.
        client
            .disable_user(with_key(DisableUserRequest { id: user_id.clone() }, &server.admin_key))
            .await
            .expect("disable user");
        let err = client.get_current_user(with_key(GetCurrentUserRequest {}, &user_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{backend}: disabled user");

        // Both credentials at once are ambiguous.
        let mut both = with_key(GetCurrentUserRequest {}, &server.admin_key);
        both.metadata_mut().insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(client.get_current_user(both).await.unwrap_err().code(), Code::Unauthenticated);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bearer_tokens_are_checked() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut client = users(&server).await;
        let login_id = new_id();
        let at = now();
        queries::login_sessions::insert(
            &server.db,
            login_session::Model {
                id: login_id.clone(),
                organization_id: server.organization_id.clone(),
                user_id: server.admin_id.clone(),
                created_at: at,
                active_at: at,
                expires_at: at + chrono::TimeDelta::hours(1),
                idle_timeout_minutes: 30,
                ip: "127.0.0.1".into(),
                user_agent: "test".into(),
                authenticators: "otp".into(),
                closed_at: None,
            },
        )
        .await
        .unwrap();
        let keys = server.services.auth.token_keys();
        let claims = |exp_offset: i64| Claims {
            sub: server.admin_id.clone(),
            org: server.organization_id.clone(),
            sid: login_id.clone(),
            iss: String::new(),
            aud: String::new(),
            iat: at.timestamp(),
            nbf: at.timestamp(),
            exp: at.timestamp() + exp_offset,
        };
        let token = keys.sign(claims(300)).unwrap();
        let me = client.get_current_user(with_token(GetCurrentUserRequest {}, &token)).await.expect("valid token");
        assert_eq!(me.into_inner().user.unwrap().id, server.admin_id);

        let expired = keys.sign(claims(-300)).unwrap();
        assert_eq!(
            client.get_current_user(with_token(GetCurrentUserRequest {}, &expired)).await.unwrap_err().code(),
            Code::Unauthenticated
        );

        // alg=none: header and payload with an empty signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT","kid":"config"}"#));
        assert_eq!(
            client.get_current_user(with_token(GetCurrentUserRequest {}, &none)).await.unwrap_err().code(),
            Code::Unauthenticated
        );

        // Tampered payload: another user id under the original signature.
        let mut forged_claims = claims(300);
        forged_claims.sub = new_id();
        let forged_payload = b64.encode(serde_json_payload(&forged_claims));
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            client.get_current_user(with_token(GetCurrentUserRequest {}, &tampered)).await.unwrap_err().code(),
            Code::Unauthenticated
        );

        // Signed with the right secret but wrong in one claim or header field each.
        let secret = common::test_config().auth.jwt_secret.unwrap();
        let forge = |alg: jsonwebtoken::Algorithm, kid: &str, iss: &str, aud: &str, nbf_offset: i64, key: &[u8]| {
            let mut header = jsonwebtoken::Header::new(alg);
            header.kid = Some(kid.to_owned());
            let mut forged = claims(300);
            forged.iss = iss.to_owned();
            forged.aud = aud.to_owned();
            forged.nbf += nbf_offset;
            jsonwebtoken::encode(&header, &forged, &jsonwebtoken::EncodingKey::from_secret(key)).unwrap()
        };
        let hs256 = jsonwebtoken::Algorithm::HS256;
        let right = secret.expose().as_bytes();
        assert!(
            client
                .get_current_user(with_token(
                    GetCurrentUserRequest {},
                    &forge(hs256, "config", "portcullis", "portcullis", 0, right)
                ))
                .await
                .is_ok(),
            "the forging itself is right"
        );
        let attacks = [
            ("wrong aud", forge(hs256, "config", "portcullis", "someone-else", 0, right)),
            ("wrong iss", forge(hs256, "config", "evil", "portcullis", 0, right)),
            ("unknown kid", forge(hs256, "retired", "portcullis", "portcullis", 0, right)),
            ("not yet valid", forge(hs256, "config", "portcullis", "portcullis", 600, right)),
            (
                "other secret",
                forge(hs256, "config", "portcullis", "portcullis", 0, b"guessed-secret-guessed-secret-00"),
            ),
            (
                "HS384 instead of the pinned HS256",
                forge(jsonwebtoken::Algorithm::HS384, "config", "portcullis", "portcullis", 0, right),
            ),
            // Algorithm confusion: an RS256 header over an HMAC signature.
            (
                "RS256 header",
                format!("{}.{}.{}", b64.encode(r#"{"alg":"RS256","typ":"JWT","kid":"config"}"#), parts[1], parts[2]),
            ),
        ];
        for (name, token) in attacks {
            let err = client.get_current_user(with_token(GetCurrentUserRequest {}, &token)).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{name}");
        }

        // A login session closed straight in the database, as another replica would: its token
        // stops working once this server's remembered caller is older than the cache TTL.
        use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
        let mut login = queries::login_sessions::get(&server.db, &login_id).await.unwrap().into_active_model();
        login.closed_at = Set(Some(now()));
        login.update(&server.db).await.unwrap();
        tokio::time::sleep(CALLER_CACHE_TTL + std::time::Duration::from_millis(100)).await;
        assert_eq!(
            client.get_current_user(with_token(GetCurrentUserRequest {}, &token)).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        server.stop().await;
    })
    .await;
}

fn serde_json_payload(claims: &Claims) -> String {
    format!(
        r#"{{"sub":"{}","org":"{}","sid":"{}","iss":"portcullis","aud":"portcullis","iat":{},"nbf":{},"exp":{}}}"#,
        claims.sub, claims.org, claims.sid, claims.iat, claims.nbf, claims.exp
    )
}

#[tokio::test]
async fn other_organizations_are_invisible() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let (_, other_key) = server.insert_organization("Other", "boss@other.example").await;
        let mut resources = ResourceServiceClient::new(server.channel().await);
        let mut client = users(&server).await;
        let resource = resources
            .create_resource(with_key(memory_resource("ours"), &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();

        let err =
            client.get_user(with_key(GetUserRequest { id: server.admin_id.clone() }, &other_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}: user of another org", db.backend);
        let err = resources
            .get_resource(with_key(GetResourceRequest { id: resource.id.clone() }, &other_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = resources
            .delete_resource(with_key(DeleteResourceRequest { id: resource.id.clone() }, &other_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let listed = client.list_users(with_key(ListUsersRequest::default(), &other_key)).await.unwrap().into_inner();
        assert_eq!(listed.users.len(), 1, "only the other org's admin");
        let listed =
            resources.list_resources(with_key(ListResourcesRequest::default(), &other_key)).await.unwrap().into_inner();
        assert!(listed.resources.is_empty());
        let events = AuditServiceClient::new(server.channel().await)
            .list_audit_events(with_key(ListAuditEventsRequest::default(), &other_key))
            .await
            .unwrap()
            .into_inner();
        assert!(events.audit_events.is_empty(), "no audit events leak across organizations");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn lists_are_keyset_paginated() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut client = users(&server).await;
        for i in 0..7 {
            client
                .create_user(with_key(new_user(&format!("user{i}@example.com"), Role::User), &server.admin_key))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = client
                .list_users(with_key(ListUsersRequest { page_size: 3, page_token: token.clone() }, &server.admin_key))
                .await
                .unwrap()
                .into_inner();
            assert!(page.users.len() <= 3);
            seen.extend(page.users.into_iter().map(|u| u.email));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3, "{}: 8 users in pages of 3", db.backend);
        let mut expected = vec!["admin@example.com".to_owned()];
        expected.extend((0..7).map(|i| format!("user{i}@example.com")));
        assert_eq!(seen, expected, "creation order, no duplicates, nothing missed");

        let all =
            client.list_users(with_key(ListUsersRequest::default(), &server.admin_key)).await.unwrap().into_inner();
        assert_eq!(all.users.len(), 8);
        assert!(all.next_page_token.is_empty());

        let err = client
            .list_users(with_key(
                ListUsersRequest { page_size: 3, page_token: "not-a-token".into() },
                &server.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "ERROR_REASON_INVALID_PAGE_TOKEN");
        assert_eq!(violated_fields(&err), ["page_token"]);
        let err = client
            .list_users(with_key(ListUsersRequest { page_size: -1, ..Default::default() }, &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["page_size"]);

        // Audit events come newest first, in pages too.
        let mut audit = AuditServiceClient::new(server.channel().await);
        let first = audit
            .list_audit_events(with_key(
                ListAuditEventsRequest { page_size: 2, ..Default::default() },
                &server.admin_key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.audit_events.len(), 2);
        assert_eq!(first.audit_events[0].details.get("email").map(String::as_str), Some("user6@example.com"));
        let second = audit
            .list_audit_events(with_key(
                ListAuditEventsRequest {
                    page_size: 2,
                    page_token: first.next_page_token.clone(),
                    ..Default::default()
                },
                &server.admin_key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(first.audit_events[1].id > second.audit_events[0].id, "newest first across pages");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_with_field_violations() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let mut client = users(&server).await;
        let mut resources = ResourceServiceClient::new(server.channel().await);

        let err = client
            .create_user(with_key(
                CreateUserRequest { user: Some(User { email: "not-an-email".into(), ..Default::default() }) },
                &server.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", db.backend);
        assert_eq!(reason(&err), "ERROR_REASON_INVALID_INPUT");
        assert_eq!(violated_fields(&err), ["user.email", "user.role"]);

        client.create_user(with_key(new_user("dup@example.com", Role::User), &server.admin_key)).await.unwrap();
        let err = client
            .create_user(with_key(new_user("DUP@example.com", Role::Admin), &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "emails are unique, case-insensitively");
        assert_eq!(reason(&err), "ERROR_REASON_ALREADY_EXISTS");

        let err = resources
            .create_resource(with_key(
                CreateResourceRequest { resource: Some(Resource { name: "x".into(), ..Default::default() }) },
                &server.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["resource.provider"]);

        let aws = AwsSecurityGroup {
            region: "eu-west-1".into(),
            group_id: "sg-1".into(),
            protocol: "tcp".into(),
            from_port: 70000,
            to_port: 22,
            ..Default::default()
        };
        let err = resources
            .create_resource(with_key(
                CreateResourceRequest {
                    resource: Some(Resource {
                        name: "aws".into(),
                        provider: Some(resource::Provider::AwsSecurityGroup(aws)),
                        ..Default::default()
                    }),
                },
                &server.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["resource.aws_security_group.from_port"]);

        // A memory resource may not park a worker for an hour.
        let hour = MemoryProvider { latency_ms: 3_600_000, ..Default::default() };
        let request = CreateResourceRequest {
            resource: Some(Resource {
                name: "slow".into(),
                provider: Some(resource::Provider::Memory(hour)),
                ..Default::default()
            }),
        };
        let err = resources.create_resource(with_key(request, &server.admin_key)).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["resource.memory.latency_ms"]);

        // Azure: each field at fault is named; a valid one is stored in Azure's spelling, with
        // the default priorities and destination.
        let nsg = |subscription_id: &str, resource_group: &str, protocol: &str, ports: &[&str], last: u32| {
            resource::Provider::AzureNetworkSecurityGroup(AzureNetworkSecurityGroup {
                subscription_id: subscription_id.into(),
                resource_group: resource_group.into(),
                nsg_name: "nsg-bastion".into(),
                protocol: protocol.into(),
                destination_port_ranges: ports.iter().map(|p| (*p).to_owned()).collect(),
                priority_range: (last > 0).then_some(PriorityRange { first: 50, last }),
                ..Default::default()
            })
        };
        let create = |name: &str, provider| CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let bad = create("azure", nsg("not-a-uuid", "rg prod", "ssh", &["22-21"], 5000));
        let err = resources.create_resource(with_key(bad, &server.admin_key)).await.unwrap_err();
        let field = |name: &str| format!("resource.azure_network_security_group.{name}");
        let expected: Vec<String> =
            ["subscription_id", "resource_group", "protocol", "destination_port_ranges", "priority_range"]
                .iter()
                .map(|name| field(name))
                .collect();
        assert_eq!(violated_fields(&err), expected);
        let bad = create("azure", nsg("6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182", "rg", "tcp", &["22"], 70_000));
        let err = resources.create_resource(with_key(bad, &server.admin_key)).await.unwrap_err();
        assert_eq!(violated_fields(&err), [field("priority_range.last")]);
        let good = create("azure", nsg("6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182", "rg-prod", "tcp", &["22", "*"], 0));
        let created = resources.create_resource(with_key(good, &server.admin_key)).await.unwrap().into_inner();
        let Some(resource::Provider::AzureNetworkSecurityGroup(stored)) = created.resource.unwrap().provider else {
            panic!("not an Azure resource")
        };
        assert_eq!((stored.protocol.as_str(), stored.destination_address_prefix.as_str()), ("Tcp", "*"));
        assert_eq!(stored.priority_range, Some(PriorityRange { first: 3000, last: 3099 }));

        let err = resources
            .get_resource(with_key(GetResourceRequest { id: "../etc/passwd".into() }, &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["id"]);
        let err =
            resources.get_resource(with_key(GetResourceRequest { id: new_id() }, &server.admin_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        resources.create_resource(with_key(memory_resource("db"), &server.admin_key)).await.unwrap();
        let err = resources.create_resource(with_key(memory_resource("db"), &server.admin_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);

        let err = client
            .update_user(with_key(
                UpdateUserRequest {
                    user: Some(User { id: server.admin_id.clone(), ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["email".into()] }),
                },
                &server.admin_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["update_mask"]);

        // An admin cannot lock itself out.
        let err = client
            .disable_user(with_key(DisableUserRequest { id: server.admin_id.clone() }, &server.admin_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);

        // Nothing was lost: the admin still works and only the valid objects exist.
        let listed =
            client.list_users(with_key(ListUsersRequest::default(), &server.admin_key)).await.unwrap().into_inner();
        assert_eq!(
            listed.users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
            ["admin@example.com", "dup@example.com"]
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn resources_users_and_audit_end_to_end() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let key = &server.admin_key;
        let mut client = users(&server).await;
        let mut resources = ResourceServiceClient::new(server.channel().await);
        let mut audit = AuditServiceClient::new(server.channel().await);
        let started = now();

        let ada = client
            .create_user(with_key(new_user("ada@example.com", Role::User), key))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let ada_key =
            server.insert_api_key(&ada.id, &[Permission::ResourcesRead, Permission::SessionsRead], None).await;
        let db_res = resources
            .create_resource(with_key(memory_resource("db"), key))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        let web = resources
            .create_resource(with_key(memory_resource("web"), key))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        assert!(matches!(db_res.provider, Some(resource::Provider::Memory(_))));

        resources
            .assign_resource(with_key(
                AssignResourceRequest { resource_id: db_res.id.clone(), user_id: ada.id.clone() },
                key,
            ))
            .await
            .unwrap();
        // Assigning twice is fine and records one event.
        resources
            .assign_resource(with_key(
                AssignResourceRequest { resource_id: db_res.id.clone(), user_id: ada.id.clone() },
                key,
            ))
            .await
            .unwrap();

        // Ada sees only what is assigned to her.
        let hers =
            resources.list_resources(with_key(ListResourcesRequest::default(), &ada_key)).await.unwrap().into_inner();
        assert_eq!(hers.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["db"]);
        let err =
            resources.get_resource(with_key(GetResourceRequest { id: web.id.clone() }, &ada_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let filtered = resources
            .list_resources(with_key(ListResourcesRequest { user_id: ada.id.clone(), ..Default::default() }, key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(filtered.resources.len(), 1);

        let renamed = resources
            .update_resource(with_key(
                UpdateResourceRequest {
                    resource: Some(Resource {
                        id: web.id.clone(),
                        name: "web-2".into(),
                        description: "ignored".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["name".into()] }),
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        assert_eq!(renamed.name, "web-2");
        assert_eq!(renamed.description, "", "fields outside the mask are untouched");
        assert!(matches!(renamed.provider, Some(resource::Provider::Memory(_))));

        let checked = resources
            .check_resource(with_key(CheckResourceRequest { id: db_res.id.clone() }, key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(checked.status(), CheckStatus::Ok);

        resources
            .unassign_resource(with_key(
                UnassignResourceRequest { resource_id: db_res.id.clone(), user_id: ada.id.clone() },
                key,
            ))
            .await
            .unwrap();
        let hers =
            resources.list_resources(with_key(ListResourcesRequest::default(), &ada_key)).await.unwrap().into_inner();
        assert!(hers.resources.is_empty());
        resources.delete_resource(with_key(DeleteResourceRequest { id: web.id.clone() }, key)).await.unwrap();
        let err = resources.get_resource(with_key(GetResourceRequest { id: web.id.clone() }, key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let promoted = client
            .update_user(with_key(
                UpdateUserRequest {
                    user: Some(User {
                        id: ada.id.clone(),
                        role: Role::Admin.into(),
                        full_name: "Ada L".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["role".into()] }),
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(promoted.role(), Role::Admin);
        assert_eq!(promoted.full_name, "Test User");

        // Every admin action is in the audit trail, with actor, target and time.
        let events = audit
            .list_audit_events(with_key(ListAuditEventsRequest::default(), key))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
        assert_eq!(
            types,
            [
                "user.updated",
                "resource.deleted",
                "resource.unassigned",
                "resource.updated",
                "resource.assigned",
                "resource.created",
                "resource.created",
                "user.created",
                "organization.initialized",
            ],
            "{}",
            db.backend
        );
        let assigned = &events[4];
        assert_eq!(assigned.actor_id, server.admin_id);
        assert_eq!(assigned.target_id, db_res.id);
        assert_eq!(assigned.details.get("user_id"), Some(&ada.id));

        let only_created = audit
            .list_audit_events(with_key(
                ListAuditEventsRequest { types: vec!["resource.created".into()], ..Default::default() },
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(only_created.audit_events.len(), 2);
        let by_admin = audit
            .list_audit_events(with_key(
                ListAuditEventsRequest {
                    actor_id: server.admin_id.clone(),
                    start_time: Some(timestamp(started)),
                    ..Default::default()
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_admin.audit_events.len(), 8, "everything but the initialization, which has no actor");
        let before_start = audit
            .list_audit_events(with_key(
                ListAuditEventsRequest { end_time: Some(timestamp(started)), ..Default::default() },
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            before_start.audit_events.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
            ["organization.initialized"]
        );

        let err = audit.list_audit_events(with_key(ListAuditEventsRequest::default(), &ada_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "audit:read is for admins");
        server.stop().await;
    })
    .await;
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

async fn wait_for_health(server: &TestServer, service: &str, wanted: ServingStatus) {
    let mut health = HealthClient::new(server.channel().await);
    common::eventually(&format!("{service:?} never reported {wanted:?}"), Duration::from_secs(10), async || {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status();
        common::when(status == wanted, status)
    })
    .await;
}

#[tokio::test]
async fn health_follows_the_database() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        wait_for_health(&server, "", ServingStatus::Serving).await;
        wait_for_health(&server, "portcullis.v1.SessionService", ServingStatus::Serving).await;
        let mut health = HealthClient::new(server.channel().await);
        let err = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        if db.is_postgres() {
            // Only PostgreSQL can be taken away from under an open pool.
            db.drop_database().await;
            wait_for_health(&server, "", ServingStatus::NotServing).await;
            wait_for_health(&server, "portcullis.v1.UserService", ServingStatus::NotServing).await;
            db.recreate_database().await;
            wait_for_health(&server, "portcullis.v1.UserService", ServingStatus::Serving).await;
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn generated_token_key_survives_restarts() {
    each_backend(|db: TestDb| async move {
        let connection = db.connect().await;
        portcullis::store::migrate(&connection).await.unwrap();
        let config = portcullis::config::Config::default();
        assert!(config.auth.jwt_secret.is_none());
        let providers = || Providers::new(MemoryFirewall::in_process(), &Default::default(), Duration::from_secs(8));
        let first = portcullis::service::Services::new(connection.clone(), &config, providers()).await.unwrap();
        let claims = Claims {
            sub: "u".into(),
            org: "o".into(),
            sid: "s".into(),
            iss: String::new(),
            aud: String::new(),
            iat: now().timestamp(),
            nbf: now().timestamp(),
            exp: now().timestamp() + 60,
        };
        let token = first.auth.token_keys().sign(claims.clone()).unwrap();
        // A restarted server (or another replica) on the same database verifies it.
        let second = portcullis::service::Services::new(connection.clone(), &config, providers()).await.unwrap();
        assert_eq!(second.auth.token_keys().verify(&token).unwrap().sub, "u", "{}", db.backend);
        // A server with a different database does not.
        let other_db = TestDb::sqlite();
        let other_connection = other_db.connect().await;
        portcullis::store::migrate(&other_connection).await.unwrap();
        let stranger = portcullis::service::Services::new(other_connection, &config, providers()).await.unwrap();
        assert!(stranger.auth.token_keys().verify(&token).is_err());

        // Rotation: a restarted server signs with the new key and still accepts the old one's
        // tokens, until that key is retired.
        let kid = portcullis::service::rotate_token_key(&connection, config.auth.jwt_algorithm, None).await.unwrap();
        let rotated = portcullis::service::Services::new(connection.clone(), &config, providers()).await.unwrap();
        assert!(rotated.auth.token_keys().verify(&token).is_ok(), "the old key still verifies");
        let fresh = rotated.auth.token_keys().sign(claims.clone()).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some(kid.as_str()),
            "the new key signs"
        );
        let old_kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        portcullis::service::retire_token_key(&connection, &old_kid).await.unwrap();
        let retired = portcullis::service::Services::new(connection.clone(), &config, providers()).await.unwrap();
        assert!(retired.auth.token_keys().verify(&token).is_err(), "a retired key's tokens are refused");
        assert!(retired.auth.token_keys().verify(&fresh).is_ok());
        let err = portcullis::service::retire_token_key(&connection, &kid).await.unwrap_err();
        assert!(matches!(err, portcullis::error::Error::FailedPrecondition { .. }), "the last key stays");

        // Switching to EdDSA: an Ed25519 key is generated and signs; HS256 tokens still verify.
        let mut ed_config = config.clone();
        ed_config.auth.jwt_algorithm = portcullis::config::TokenAlgorithm::EdDSA;
        let ed = portcullis::service::Services::new(connection.clone(), &ed_config, providers()).await.unwrap();
        let ed_token = ed.auth.token_keys().sign(claims.clone()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&ed_token).unwrap().alg, jsonwebtoken::Algorithm::EdDSA);
        assert!(ed.auth.token_keys().verify(&ed_token).is_ok());
        assert!(ed.auth.token_keys().verify(&fresh).is_ok(), "HS256 tokens of a live key still verify");
    })
    .await;
}
