//! The gRPC server: thin adapters from protobuf to the use-cases in `service`, the
//! authentication layer, health and reflection.

mod audit;
pub mod auth;
mod convert;
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

use crate::config::{LimitsConfig, MetricsConfig, NetworkConfig, TlsConfig};
use crate::pb::{self, v1};
use crate::service::Services;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
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
];

/// How the server runs, beyond the services themselves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub health_check_interval: Duration,
    pub network: NetworkConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
}

/// Serves every service on `listener` and runs the session engine until `shutdown` completes;
/// then stops accepting calls, drains in-flight ones and lets in-flight provider calls finish.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Turns true when shutdown begins: watch streams end (so connections can drain), then the
    // engine finishes its in-flight provider calls and stops.
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    if options.limits.max_request_bytes > limits::CEILING_BYTES {
        anyhow::bail!("limits.max_request_bytes may be at most {} (4 MiB)", limits::CEILING_BYTES);
    }
    // First, so a certificate that cannot be loaded stops the start before anything runs.
    let incoming = tls::incoming(listener, &options.tls, background_stopped.clone())?;
    let stop_background = std::sync::Arc::new(stop_background);
    let stop_on_signal = stop_background.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = stop_on_signal.send(true);
    };
    // The server has just reached its database; the probe loop reports any change from here on.
    report(&reporter, ServingStatus::Serving).await;
    let health_task = tokio::spawn(watch_database(
        services.db.clone(),
        reporter,
        options.health_check_interval,
        background_stopped.clone(),
    ));
    let metrics_task = match options.metrics.listen {
        Some(address) => {
            let handle = crate::monitoring::endpoint::install()?;
            let listener = TcpListener::bind(address).await?;
            tracing::info!(address = %listener.local_addr()?, "metrics listening");
            let mut stopped = background_stopped.clone();
            let stop = async move { crate::shutdown::stopping(&mut stopped).await };
            let pools = (services.db.clone(), services.reader.clone());
            let refresh = Duration::from_secs(options.metrics.database_refresh_secs);
            Some(tokio::spawn(crate::monitoring::endpoint::serve(listener, handle, pools, refresh, stop)))
        }
        None => None,
    };
    let engine = services.engine.clone();
    let follow_task = tokio::spawn(crate::service::changes::follow(
        services.db.clone(),
        services.engine.clone(),
        services.callers.clone(),
        services.auth.clone(),
        background_stopped.clone(),
    ));
    let dispatcher = crate::webhook::Dispatcher::new(
        services.db.clone(),
        services.webhook_setup.clone(),
        std::sync::Arc::new(webhooks::ProtoJson),
    );
    let webhook_task = tokio::spawn(dispatcher.run(background_stopped.clone()));
    let warnings_task = tokio::spawn(services.expiry_warnings.clone().run(background_stopped.clone()));
    let engine_task = tokio::spawn(async move { engine.run(background_stopped).await });

    let reflection_v1 = reflection().build_v1()?;
    // grpcurl before 1.9 and some other clients only speak the v1alpha protocol.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let result = Server::builder()
        // Pings end connections whose peer is gone; a healthy idle client answers them, so an
        // open watch that has nothing to say stays open.
        .http2_keepalive_interval(Some(Duration::from_secs(options.limits.keepalive_interval_secs.max(1))))
        .http2_keepalive_timeout(Some(Duration::from_secs(options.limits.keepalive_timeout_secs.max(1))))
        // Outermost, so calls refused by the layers below are counted too.
        .layer(metering::MeteringLayer)
        .layer(panics::CatchPanicLayer)
        .layer(limits::RequestSizeLayer { max_bytes: options.limits.max_request_bytes })
        .layer(auth::AuthLayer::new(services.auth.clone(), &options.network.trusted_proxies))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(v1::session_service_server::SessionServiceServer::new(sessions::SessionApi {
            sessions: services.sessions.clone(),
            trusted_proxies: options.network.trusted_proxies.clone(),
            shutdown: stop_background.subscribe(),
            recheck_every: services.callers.ttl().max(Duration::from_secs(1)),
            watch_slots: limits::WatchSlots::new(
                options.limits.max_watch_streams_per_caller,
                options.limits.max_watch_streams_per_user,
            ),
        }))
        .add_service(v1::resource_ip_service_server::ResourceIpServiceServer::new(resource_ips::ResourceIpApi(
            services.sessions.clone(),
        )))
        .add_service(v1::auth_service_server::AuthServiceServer::new(logins::AuthApi {
            api_keys: services.api_keys.clone(),
            logins: services.logins.clone(),
            trusted_proxies: options.network.trusted_proxies.clone(),
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
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_background.send(true);
    let _ = health_task.await;
    let _ = engine_task.await;
    let _ = follow_task.await;
    let _ = webhook_task.await;
    let _ = warnings_task.await;
    if let Some(metrics_task) = metrics_task
        && let Ok(Err(err)) = metrics_task.await
    {
        tracing::warn!(error = %err, "the metrics endpoint failed");
    }
    result.map_err(Into::into)
}

/// Reflection over our services, health, and the google.rpc error details, so grpcurl can
/// describe every service and print ErrorInfo / BadRequest details in errors.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Reports SERVING while the database answers and NOT_SERVING while it does not. The first
/// report is made before the server accepts calls, so health never answers NOT_FOUND.
async fn watch_database(
    db: sea_orm::DatabaseConnection,
    reporter: HealthReporter,
    interval: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = ServingStatus::Serving;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::shutdown::stopping(&mut stopped) => return,
        }
        let status = probe(&db).await;
        if status != last {
            if status == ServingStatus::NotServing {
                tracing::warn!("database unreachable; reporting NOT_SERVING");
            } else {
                tracing::info!("database reachable again; reporting SERVING");
            }
            report(&reporter, status).await;
            last = status;
        }
    }
}

async fn probe(db: &sea_orm::DatabaseConnection) -> ServingStatus {
    if crate::store::ping(db).await { ServingStatus::Serving } else { ServingStatus::NotServing }
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}
