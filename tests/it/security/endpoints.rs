//! Where the server's cloud identity may be sent: allowed endpoints only, plain origins only, inside the organization's cloud scopes, and nothing an endpoint answered echoed back.

use super::*;

/// A listener that counts the connections made to it: where an attacker would collect the
/// server's credentials.
async fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = caught.clone();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    (url, caught)
}

fn aws_on(endpoint: &str) -> resource::Provider {
    resource::Provider::AwsSecurityGroup(AwsSecurityGroup {
        region: "eu-west-1".into(),
        group_id: "sg-0123456789abcdef0".into(),
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        endpoint_url: Some(endpoint.into()),
        ..Default::default()
    })
}

/// Creates an AWS resource on `endpoint` and assigns it to the admin; answers its id.
async fn admin_resource_on(server: &TestServer, name: &str, endpoint: &str) -> String {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let create = CreateResourceRequest {
        resource: Some(Resource { name: name.into(), provider: Some(aws_on(endpoint)), ..Default::default() }),
    };
    let created = resources.create_resource(with_key(create, &server.admin_key)).await.unwrap();
    let resource_id = created.into_inner().resource.unwrap().id;
    let assign = AssignResourceRequest { resource_id: resource_id.clone(), user_id: server.admin_id.clone() };
    resources.assign_resource(with_key(assign, &server.admin_key)).await.unwrap();
    resource_id
}

/// Starts the admin's session on 203.0.113.50.
async fn admin_session(server: &TestServer) -> Session {
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    let request = StartSessionRequest { ipv4_address: Some("203.0.113.50".into()), ..Default::default() };
    SessionServiceClient::new(server.channel().await)
        .start_session(with_key(request, &server.admin_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

/// `endpoint_url` must be a cloud endpoint or one the operator allows: anything else is refused
/// when the resource is written, and a stored resource whose endpoint is no longer allowed gets
/// no call at all (its rules wait, with the reason, and the audit trail says so).
#[tokio::test]
async fn no_call_goes_to_an_endpoint_the_operator_does_not_allow() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    let db = TestDb::sqlite();
    let (url, caught) = trap().await;
    // Allowed at first, the endpoint could be checked; counting starts once it is not allowed
    // (the restarted server checks resources as usual, and must not call it either).
    let mut allowing = common::test_config();
    allowing.engine.check_interval_secs = Seconds::of::<0>();
    let server = TestServer::start_with(&db, allowing).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let create = |name: &str, endpoint: &str| CreateResourceRequest {
        resource: Some(Resource { name: name.into(), provider: Some(aws_on(endpoint)), ..Default::default() }),
    };
    for elsewhere in ["https://attacker.example", "http://10.0.0.1:8080", "https://ec2.amazonaws.com@attacker.example"]
    {
        let err = resources.create_resource(with_key(create("evil", elsewhere), &server.admin_key)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{elsewhere}");
        assert_eq!(common::violated_fields(&err), ["resource.aws_security_group.endpoint_url"], "{elsewhere}");
    }
    // Allowed by the test configuration (loopback), so it is stored...
    let resource_id = admin_resource_on(&server, "trapped", &url).await;

    // ...and then the operator narrows the list to the clouds' own endpoints and restarts.
    let mut narrowed = common::test_config();
    narrowed.providers.allowed_endpoints.clear();
    let restarted = server.replica(&db, narrowed).await;
    server.stop().await;
    let server = restarted;
    let session = admin_session(&server).await;
    let message = refused_call(&server, &server.admin_key, &session.id, &resource_id).await;
    assert!(message.contains("not among the operator's allowed endpoints"), "{message}");
    assert_eq!(caught.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection reached the endpoint");
    server.stop().await;
}

/// A resource stored before endpoints had to be plain origins does not stop the server: it is
/// named at start (`unusable_endpoints`), its rules fail saying why, CheckResource reports it,
/// and no call reaches the endpoint.
#[tokio::test]
async fn a_stored_endpoint_with_a_path_is_named_and_never_called() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    use sea_orm::{ConnectionTrait, Statement};
    let db = TestDb::sqlite();
    let (url, caught) = trap().await;
    let mut config = common::test_config();
    config.engine.check_interval_secs = Seconds::of::<0>();
    let server = TestServer::start_with(&db, config).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let spelled = url.replace("http://", "HTTP://") + "/";
    let resource_id = admin_resource_on(&server, "legacy", &spelled).await;
    let stored = portcullis::store::queries::resources::get_by_id(&server.db, &resource_id).await.unwrap();
    assert!(
        stored.provider_config.text().contains(&format!("\"{url}\"")),
        "stored normalized: {}",
        stored.provider_config.text()
    );
    assert!(server.services.resources.unusable_endpoints().await.unwrap().is_empty());

    // As an older server stored it: a path and a fragment after the origin.
    let legacy = stored.provider_config.text().replace(&url, &format!("{url}/x?y#"));
    let backend = server.db.get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        "UPDATE resources SET provider_config = $1 WHERE id = $2",
        [legacy.into(), resource_id.clone().into()],
    );
    server.db.execute_raw(statement).await.unwrap();
    let named = server.services.resources.unusable_endpoints().await.unwrap();
    assert_eq!(named.iter().map(|(resource, _)| resource.id.as_str()).collect::<Vec<_>>(), [resource_id.as_str()]);
    assert!(named[0].1.to_string().contains("must be an origin"), "{}", named[0].1);

    let session = admin_session(&server).await;
    let rule = common::eventually("the rule never failed", Duration::from_secs(10), async || {
        let record = portcullis::store::queries::sessions::load(&server.db, &session.id).await.unwrap();
        common::when(record.rules[0].status.as_str() == "FAILED", record.rules[0].clone())
    })
    .await;
    assert!(rule.error_message.as_deref().unwrap_or_default().contains("must be an origin"), "{rule:?}");
    let check = resources
        .check_resource(with_key(CheckResourceRequest { id: resource_id.clone() }, &server.admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(check.message.contains("must be an origin"), "{check:?}");
    assert_eq!(caught.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection reached the endpoint");
    server.stop().await;
}

/// Waits for the session's first rule to record why its call was not sent, checks that it waits
/// (neither failed nor open) and that `key`'s audit trail tells of it; answers the reason.
async fn refused_call(server: &TestServer, key: &str, session_id: &str, resource_id: &str) -> String {
    let rule = common::eventually("the refusal was never recorded", Duration::from_secs(10), async || {
        let record = portcullis::store::queries::sessions::load(&server.db, session_id).await.unwrap();
        common::when(record.rules[0].error_message.is_some(), record.rules[0].clone())
    })
    .await;
    assert_eq!(rule.status.as_str(), "PENDING", "the rule waits; it neither fails nor opens");
    let request = ListAuditEventsRequest { types: vec!["resource.call_refused".into()], ..Default::default() };
    let events = audit_service_client::AuditServiceClient::new(server.channel().await)
        .list_audit_events(with_key(request, key))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert!(events.iter().any(|event| event.target_id == resource_id), "{events:?}");
    rule.error_message.unwrap_or_default()
}

/// An organization's resources act only inside the cloud scopes the operator granted it: a
/// resource outside them is refused when written, and once a scope is withdrawn the calls of a
/// stored resource are no longer sent.
#[tokio::test]
async fn resources_act_only_inside_their_organizations_cloud_scopes() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    use portcullis::pb::v1::session_service_client::SessionServiceClient;
    common::each_backend(|db: TestDb| async move {
        let (url, caught) = trap().await;
        // Periodic checks would call the resources accepted here: this counts only what is sent
        // once the scopes are withdrawn, when nothing may be.
        let mut config = common::test_config();
        config.engine.check_interval_secs = Seconds::of::<0>();
        let server = TestServer::start_with(&db, config).await;
        let channel = server.channel().await;
        let scopes = CloudScopes {
            aws_accounts: vec!["111122223333".into()],
            aws_role_arns: vec!["arn:aws:iam::444455556666:role/portcullis-*".into()],
            gcp_projects: vec!["globex-prod".into()],
            azure_subscriptions: vec!["6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182".into()],
            ..Default::default()
        };
        let request = CreateOrganizationRequest {
            organization: Some(Organization {
                name: "Globex".into(),
                cloud_scopes: Some(scopes),
                ..Default::default()
            }),
            admin_email: "hank@globex.example".into(),
            admin_full_name: String::new(),
        };
        let created = organizations(&channel).create_organization(with_key(request, &server.operator_key)).await;
        let created = created.unwrap().into_inner();
        let (key, globex) = (created.admin_api_key, created.organization.unwrap().id);
        let admin_id = created.admin.unwrap().id;

        let aws = |role: Option<&str>| match aws_on(&url) {
            resource::Provider::AwsSecurityGroup(group) => {
                resource::Provider::AwsSecurityGroup(AwsSecurityGroup { role_arn: role.map(str::to_owned), ..group })
            }
            other => other,
        };
        let gcp = |project: &str| {
            resource::Provider::GcpFirewall(GcpFirewall {
                project: project.into(),
                network: "default".into(),
                protocol: "tcp".into(),
                ports: vec!["22".into()],
                endpoint_url: Some(url.clone()),
                ..Default::default()
            })
        };
        let azure = |subscription_id: &str| {
            resource::Provider::AzureNetworkSecurityGroup(AzureNetworkSecurityGroup {
                subscription_id: subscription_id.into(),
                resource_group: "rg".into(),
                nsg_name: "nsg".into(),
                protocol: "Tcp".into(),
                destination_port_ranges: vec!["22".into()],
                endpoint_url: Some(url.clone()),
                ..Default::default()
            })
        };
        let create = |name: &str, provider: resource::Provider| CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let mut resources = ResourceServiceClient::new(channel.clone());
        for (provider, field) in [
            (aws(None), "resource.aws_security_group.role_arn"),
            (aws(Some("arn:aws:iam::999999999999:role/portcullis-ssh")), "resource.aws_security_group.role_arn"),
            (aws(Some("arn:aws:iam::444455556666:role/admin")), "resource.aws_security_group.role_arn"),
            (gcp("acme-prod"), "resource.gcp_firewall.project"),
            (azure("00000000-0000-0000-0000-000000000000"), "resource.azure_network_security_group.subscription_id"),
        ] {
            let err = resources.create_resource(with_key(create("outside", provider), &key)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}: {err:?}", db.backend);
            assert_eq!(common::violated_fields(&err), [field]);
        }
        let inside = aws(Some("arn:aws:iam::111122223333:role/portcullis"));
        let bastion = resources.create_resource(with_key(create("bastion", inside), &key)).await.unwrap();
        let bastion = bastion.into_inner().resource.unwrap().id;
        let pattern = aws(Some("arn:aws:iam::444455556666:role/portcullis-ssh"));
        resources.create_resource(with_key(create("jump", pattern), &key)).await.unwrap();
        resources.create_resource(with_key(create("network", gcp("globex-prod")), &key)).await.unwrap();
        let nsg = azure("6F1C3A52-9D0E-4B8F-A1C2-3D4E5F607182");
        resources.create_resource(with_key(create("nsg", nsg), &key)).await.unwrap();
        let moved = UpdateResourceRequest {
            resource: Some(Resource { id: bastion.clone(), provider: Some(aws(None)), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["provider".into()] }),
        };
        let err = resources.update_resource(with_key(moved, &key)).await.unwrap_err();
        assert_eq!(common::violated_fields(&err), ["resource.aws_security_group.role_arn"], "updates are held to it");

        // The operator withdraws the scopes: the stored resource's calls are no longer sent.
        let withdrawn = UpdateOrganizationRequest {
            organization: Some(Organization {
                id: globex,
                cloud_scopes: Some(CloudScopes::default()),
                ..Default::default()
            }),
            update_mask: mask(&["cloud_scopes"]),
        };
        organizations(&channel).update_organization(with_key(withdrawn, &server.operator_key)).await.unwrap();
        let assign = AssignResourceRequest { resource_id: bastion.clone(), user_id: admin_id };
        resources.assign_resource(with_key(assign, &key)).await.unwrap();
        let request = StartSessionRequest { ipv4_address: Some("203.0.113.51".into()), ..Default::default() };
        let session = SessionServiceClient::new(channel.clone()).start_session(with_key(request, &key)).await;
        let session = session.unwrap().into_inner().session.unwrap();
        let message = refused_call(&server, &key, &session.id, &bastion).await;
        assert!(message.contains("outside the organization's AWS accounts"), "{message}");
        assert_eq!(caught.load(std::sync::atomic::Ordering::SeqCst), 0, "no call carried the server's identity");
        server.stop().await;
    })
    .await;
}

/// CheckResource is no oracle for what answers at an endpoint: whatever an endpoint sends back
/// (an internal page, say), callers read only the provider's error code or the kind of failure.
#[tokio::test]
async fn provider_errors_never_echo_what_an_endpoint_answered() {
    use portcullis::pb::v1::resource_service_client::ResourceServiceClient;
    const SECRET: &str = "internal-admin-page-SECRET-42";
    let app = axum::Router::new().fallback(|| async {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("<html>{SECRET} http://10.0.0.7/metadata</html>"))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let gcp = resource::Provider::GcpFirewall(GcpFirewall {
        project: "acme".into(),
        network: "default".into(),
        protocol: "tcp".into(),
        ports: vec!["22".into()],
        priority: 1000,
        endpoint_url: Some(endpoint.clone()),
        ..Default::default()
    });
    let azure = resource::Provider::AzureNetworkSecurityGroup(AzureNetworkSecurityGroup {
        subscription_id: "6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182".into(),
        resource_group: "rg".into(),
        nsg_name: "nsg".into(),
        protocol: "Tcp".into(),
        destination_port_ranges: vec!["22".into()],
        endpoint_url: Some(endpoint.clone()),
        ..Default::default()
    });
    for (name, provider) in [("aws", aws_on(&endpoint)), ("gcp", gcp), ("azure", azure)] {
        let request = CreateResourceRequest {
            resource: Some(Resource { name: name.into(), provider: Some(provider), ..Default::default() }),
        };
        let id = resources
            .create_resource(with_key(request, &server.admin_key))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap()
            .id;
        let checked = resources.check_resource(with_key(CheckResourceRequest { id }, &server.admin_key)).await;
        let said = format!("{checked:?}");
        assert!(!said.contains("SECRET") && !said.contains("10.0.0.7"), "{name}: {said}");
    }
    server.stop().await;
}
