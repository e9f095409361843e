//! AuthService over gRPC on every backend: API keys (created, listed, revoked; never stronger
//! than their creator; their secret shown once).

mod common;

use common::{TestDb, TestServer, each_backend, violated_fields, with_key};
use portcullis::domain::{Permission, now};
use portcullis::pb::v1::auth_service_client::AuthServiceClient;
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use tonic::Code;
use tonic::transport::Channel;

fn create(name: &str, permissions: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: name.into(),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        expires_at: None,
    }
}

async fn clients(server: &TestServer) -> (AuthServiceClient<Channel>, UserServiceClient<Channel>) {
    let channel = server.channel().await;
    (AuthServiceClient::new(channel.clone()), UserServiceClient::new(channel))
}

#[tokio::test]
async fn api_keys_are_shown_once_and_never_stronger_than_their_creator() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let (mut auth, mut users) = clients(&server).await;
        let admin = server.admin_key.clone();

        let created =
            auth.create_api_key(with_key(create("ci", &["sessions:read"]), &admin)).await.unwrap().into_inner();
        let key = created.api_key.unwrap();
        assert!(created.secret.starts_with("pcl_") && created.secret.starts_with(&key.prefix), "{}", key.prefix);
        assert_eq!(key.permissions, ["sessions:read"]);
        assert_eq!(key.user_id, server.admin_id);

        // The new key works, within its permissions only.
        users.get_current_user(with_key(GetCurrentUserRequest {}, &created.secret)).await.expect("key works");
        let request = CreateUserRequest {
            user: Some(User { email: "x@example.com".into(), role: Role::User.into(), ..Default::default() }),
        };
        let err = users.create_user(with_key(request, &created.secret)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        // A key cannot mint a stronger key, nor a USER a key with admin permissions.
        let err =
            auth.create_api_key(with_key(create("escalate", &["users:write"]), &created.secret)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "a narrow key cannot create a broader one");
        let user_id = server.insert_user(&server.organization_id, "user@example.com", "USER").await;
        let user_key =
            server.insert_api_key(&user_id, &Permission::for_role(portcullis::domain::Role::User), None).await;
        let err = auth.create_api_key(with_key(create("audit", &["audit:read"]), &user_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "a USER cannot grant audit:read");

        // Bad input names every bad field.
        let past = prost_types::Timestamp { seconds: now().timestamp() - 60, nanos: 0 };
        let bad = CreateApiKeyRequest { name: " ".into(), permissions: vec!["root".into()], expires_at: Some(past) };
        let err = auth.create_api_key(with_key(bad, &admin)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["name", "permissions[0]", "expires_at"]);
        let err = auth.create_api_key(with_key(create("none", &[]), &admin)).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["permissions"]);

        // Listing shows the caller's own keys, never a secret.
        let listed = auth.list_api_keys(with_key(ListApiKeysRequest::default(), &admin)).await.unwrap().into_inner();
        let names: Vec<&str> = listed.api_keys.iter().map(|k| k.name.as_str()).collect();
        assert!(names.contains(&"ci"), "{names:?}");
        assert!(listed.api_keys.iter().all(|k| k.user_id == server.admin_id));
        let theirs = auth.list_api_keys(with_key(ListApiKeysRequest::default(), &user_key)).await.unwrap().into_inner();
        assert!(theirs.api_keys.iter().all(|k| k.user_id == user_id), "users see their own keys only");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    each_backend(|db: TestDb| async move {
        let server = TestServer::start(&db).await;
        let (mut auth, mut users) = clients(&server).await;
        let user_id = server.insert_user(&server.organization_id, "user@example.com", "USER").await;
        let user_key = server.insert_api_key(&user_id, &[Permission::SessionsRead], None).await;
        let created =
            auth.create_api_key(with_key(create("laptop", &["sessions:read"]), &user_key)).await.unwrap().into_inner();
        let id = created.api_key.unwrap().id;
        users
            .get_current_user(with_key(GetCurrentUserRequest {}, &created.secret))
            .await
            .expect("works, and is cached");

        // Another user's key is not found for a USER; an admin of the organization revokes it.
        let mine =
            auth.create_api_key(with_key(create("admin's", &["sessions:read"]), &server.admin_key)).await.unwrap();
        let admin_key_id = mine.into_inner().api_key.unwrap().id;
        let err = auth.revoke_api_key(with_key(RevokeApiKeyRequest { id: admin_key_id }, &user_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let revoked = auth
            .revoke_api_key(with_key(RevokeApiKeyRequest { id: id.clone() }, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert!(revoked.revoked_at.is_some());

        let err = users.get_current_user(with_key(GetCurrentUserRequest {}, &created.secret)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "revoked through the API: no cache delay");
        let again = auth.revoke_api_key(with_key(RevokeApiKeyRequest { id }, &user_key)).await.unwrap().into_inner();
        assert_eq!(again.api_key.unwrap().revoked_at, revoked.revoked_at, "revoking twice changes nothing");
        server.stop().await;
    })
    .await;
}
