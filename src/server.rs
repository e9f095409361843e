//! The application's supervisor: starts the background work (the session engine, change
//! following, webhook delivery, expiry warnings, database health, the metrics endpoint) beside
//! the gRPC API, and on shutdown stops taking calls, lets in-flight ones and provider calls
//! finish, and waits for every task.

use crate::config::{Config, LimitsConfig, MetricsConfig, NetworkConfig, TlsConfig, WebConfig};
use crate::grpc;
use crate::service::Services;
use crate::shutdown::stopping;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How the server runs, beyond the services themselves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub health_check_interval: Duration,
    pub network: NetworkConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub web: WebConfig,
}

impl ServeOptions {
    pub fn from_config(config: &Config) -> ServeOptions {
        ServeOptions {
            health_check_interval: config.health_check_interval_secs.get(),
            network: config.network.clone(),
            tls: config.tls.clone(),
            limits: config.limits.clone(),
            metrics: config.metrics.clone(),
            web: config.web.clone(),
        }
    }
}

/// Serves the API on `listener` and runs the background work until `shutdown` completes; then
/// stops accepting calls, drains in-flight ones and lets in-flight provider calls finish.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Turns true when shutdown begins: watch streams end (so connections can drain), then the
    // engine finishes its in-flight provider calls and stops.
    let (stop, stopped) = watch::channel(false);
    // First, so a certificate that cannot be loaded stops the start before anything runs.
    let incoming = grpc::tls::incoming(listener, &options.tls, stopped.clone())?;
    let (health, health_service) = tonic_health::server::health_reporter();
    // The server has just reached its database; the probe loop reports any change from here on.
    grpc::report_health(&health, ServingStatus::Serving).await;
    let mut tasks = start_background(&services, &options, health, &stopped).await?;
    let stop = std::sync::Arc::new(stop);
    let stop_on_signal = stop.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = stop_on_signal.send(true);
    };
    let result = grpc::serve_api(
        incoming,
        &services,
        grpc::ApiSettings { network: &options.network, limits: &options.limits, web: &options.web },
        health_service,
        stopped,
        shutdown,
    )
    .await;
    let _ = stop.send(true);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Err(err)) => tracing::warn!(error = %format!("{err:#}"), "a background task failed"),
            Err(err) if err.is_panic() => tracing::error!(error = %err, "a background task panicked"),
            _ => {}
        }
    }
    result
}

/// Starts every background task; each ends once `stopped` turns true.
async fn start_background(
    services: &Services,
    options: &ServeOptions,
    health: HealthReporter,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut tasks = JoinSet::new();
    if let Some(address) = options.metrics.listen {
        let handle = crate::monitoring::endpoint::install()?;
        let listener = TcpListener::bind(address).await?;
        tracing::info!(address = %listener.local_addr()?, "metrics listening");
        let mut stopped = stopped.clone();
        let stop = async move { stopping(&mut stopped).await };
        let pools = (services.db.clone(), services.reader.clone());
        let refresh = options.metrics.database_refresh_secs.get();
        let endpoint = crate::monitoring::endpoint::serve(listener, handle, pools, refresh, stop);
        tasks.spawn(async move { endpoint.await.map_err(Into::into) });
    }
    let interval = options.health_check_interval;
    tasks.spawn(done(watch_database(services.db.clone(), health, interval, stopped.clone())));
    tasks.spawn(done(crate::service::changes::follow(
        services.db.clone(),
        services.engine.clone(),
        services.callers.clone(),
        services.auth.clone(),
        stopped.clone(),
    )));
    let dispatcher =
        crate::webhook::Dispatcher::new(services.db.clone(), services.webhook_setup.clone(), grpc::webhook_render());
    tasks.spawn(done(dispatcher.run(stopped.clone())));
    tasks.spawn(done(services.expiry_warnings.clone().run(stopped.clone())));
    tasks.spawn(done(services.sso.clone().run(stopped.clone())));
    let engine = services.engine.clone();
    let stopped = stopped.clone();
    tasks.spawn(done(async move { engine.run(stopped).await }));
    Ok(tasks)
}

/// A task that cannot fail, as one of the supervisor's.
async fn done(task: impl Future<Output = ()>) -> anyhow::Result<()> {
    task.await;
    Ok(())
}

/// Reports SERVING while the database answers and NOT_SERVING while it does not.
async fn watch_database(
    db: sea_orm::DatabaseConnection,
    reporter: HealthReporter,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut last = ServingStatus::Serving;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping(&mut stopped) => return,
        }
        let status = if crate::store::ping(&db).await { ServingStatus::Serving } else { ServingStatus::NotServing };
        if status != last {
            if status == ServingStatus::NotServing {
                tracing::warn!("database unreachable; reporting NOT_SERVING");
            } else {
                tracing::info!("database reachable again; reporting SERVING");
            }
            grpc::report_health(&reporter, status).await;
            last = status;
        }
    }
}
