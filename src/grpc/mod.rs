//! The gRPC API: thin adapters from protobuf to the use-cases in `service`, the layers every
//! call passes (gRPC-Web for browsers, metering, panics, request size, authentication), health
//! and reflection. The
//! supervisor (`server`) runs it beside the background work.

mod agents;
mod approvals;
mod audit;
pub mod auth;
mod browser;
mod convert;
mod identity_providers;
mod limits;
mod logins;
mod metering;
mod organizations;
mod panics;
pub mod policy;
#[cfg(test)]
mod proptests;
mod resource_ips;
mod resources;
mod sessions;
pub mod status;
pub mod tls;
mod users;
mod webhooks;

use crate::config::{LimitsConfig, NetworkConfig, WebConfig};
use crate::pb::{self, v1};
use crate::service::Services;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// Every service name reported by the health service (besides "" for the whole server).
const SERVICE_NAMES: &[&str] = &[
    <v1::session_service_server::SessionServiceServer<sessions::SessionApi> as NamedService>::NAME,
    <v1::resource_ip_service_server::ResourceIpServiceServer<resource_ips::ResourceIpApi> as NamedService>::NAME,
    <v1::auth_service_server::AuthServiceServer<logins::AuthApi> as NamedService>::NAME,
    <v1::resource_service_server::ResourceServiceServer<resources::ResourceApi> as NamedService>::NAME,
    <v1::user_service_server::UserServiceServer<users::UserApi> as NamedService>::NAME,
    <v1::organization_service_server::OrganizationServiceServer<organizations::OrganizationApi> as NamedService>::NAME,
    <v1::audit_service_server::AuditServiceServer<audit::AuditApi> as NamedService>::NAME,
    <v1::webhook_service_server::WebhookServiceServer<webhooks::WebhookApi> as NamedService>::NAME,
    <v1::identity_provider_service_server::IdentityProviderServiceServer<identity_providers::IdentityProviderApi> as NamedService>::NAME,
    <v1::approval_service_server::ApprovalServiceServer<approvals::ApprovalApi> as NamedService>::NAME,
    <v1::agent_service_server::AgentServiceServer<agents::AgentApi> as NamedService>::NAME,
];

/// The webhook payload renderer: the API's own JSON of events and sessions.
pub fn webhook_render() -> std::sync::Arc<dyn crate::webhook::Render> {
    std::sync::Arc::new(webhooks::ProtoJson)
}

/// The settings that shape how the API is served.
pub struct ApiSettings<'a> {
    pub network: &'a NetworkConfig,
    pub limits: &'a LimitsConfig,
    pub web: &'a WebConfig,
}

/// Serves every API service with its layers on `incoming` until `shutdown` completes, then
/// drains in-flight calls. Watch streams end once `stopped` turns true, so connections can
/// drain.
pub async fn serve_api<IO, IE>(
    incoming: impl futures::Stream<Item = Result<IO, IE>>,
    services: &Services,
    ApiSettings { network, limits, web }: ApiSettings<'_>,
    health_service: HealthServer<impl Health>,
    stopped: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl before 1.9 and some other clients only speak the v1alpha protocol.
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(v1::session_service_server::SessionServiceServer::new(sessions::SessionApi {
            sessions: services.sessions.clone(),
            trusted_proxies: network.trusted_proxies.clone(),
            shutdown: stopped.clone(),
            recheck_every: services.callers.ttl().max(Duration::from_secs(1)),
            watch_slots: limits::WatchSlots::new(
                limits.max_watch_streams_per_caller.as_u32(),
                limits.max_watch_streams_per_user.as_u32(),
            ),
        }))
        .add_service(v1::resource_ip_service_server::ResourceIpServiceServer::new(resource_ips::ResourceIpApi(
            services.sessions.clone(),
        )))
        .add_service(v1::auth_service_server::AuthServiceServer::new(logins::AuthApi {
            api_keys: services.api_keys.clone(),
            logins: services.logins.clone(),
            sso: services.sso.clone(),
            trusted_proxies: network.trusted_proxies.clone(),
        }))
        .add_service(v1::resource_service_server::ResourceServiceServer::new(resources::ResourceApi(
            services.resources.clone(),
        )))
        .add_service(v1::user_service_server::UserServiceServer::new(users::UserApi(services.users.clone())))
        .add_service(v1::organization_service_server::OrganizationServiceServer::new(organizations::OrganizationApi(
            services.organizations.clone(),
        )))
        .add_service(v1::audit_service_server::AuditServiceServer::new(audit::AuditApi(services.audit.clone())))
        .add_service(v1::webhook_service_server::WebhookServiceServer::new(webhooks::WebhookApi(
            services.webhooks.clone(),
        )))
        .add_service(v1::identity_provider_service_server::IdentityProviderServiceServer::new(
            identity_providers::IdentityProviderApi(services.identity_providers.clone()),
        ))
        .add_service(v1::approval_service_server::ApprovalServiceServer::new(approvals::ApprovalApi {
            approvals: services.approvals.clone(),
            sessions: services.sessions.clone(),
        }))
        .add_service(v1::agent_service_server::AgentServiceServer::new(agents::AgentApi {
            agents: services.agents.clone(),
            shutdown: stopped.clone(),
        }));
    // The page and the SSO callback share the port: browsers reach them over HTTP/1.1 as well as h2.
    let routes =
        tonic::service::Routes::from(routes.into_axum_router().merge(crate::web::router(services.sso.clone())));
    Server::builder()
        .accept_http1(true)
        // Browsers call from pages hosted elsewhere only when the operator allows their origins.
        .layer(tower::util::option_layer(crate::web::cors(&web.origins())))
        // Outside the size and auth layers: a `grpc-web-text` body is sized once decoded, and
        // every layer below sees a plain gRPC call whichever protocol the browser spoke.
        .layer(browser::BrowserLayer)
        // Pings end connections whose peer is gone; a healthy idle client answers them, so an
        // open watch that has nothing to say stays open.
        .http2_keepalive_interval(Some(limits.keepalive_interval_secs.get()))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout_secs.get()))
        // Outermost, so calls refused by the layers below are counted too.
        .layer(metering::MeteringLayer)
        .layer(panics::CatchPanicLayer)
        .layer(limits::RequestSizeLayer { max_bytes: limits.max_request_bytes.as_usize() })
        .layer(auth::AuthLayer::new(services.auth.clone(), &network.trusted_proxies))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Reflection over our services, health, and the google.rpc error details, so grpcurl can
/// describe every service and print ErrorInfo / BadRequest details in errors.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Reports `status` for the whole server and for each service.
pub async fn report_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}
