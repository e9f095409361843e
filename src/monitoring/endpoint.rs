//! The `/metrics` page: the Prometheus recorder, served over HTTP, with the deployment-wide
//! gauges read from the database as each scrape comes (a replica nobody scrapes reads nothing).

use super::{BUILD_INFO, DB_CONNECTIONS, DUE_RULES, OLDEST_DUE_AGE, RULES, SESSIONS};
use crate::chore::Chore;
use crate::domain::{ResourceIpStatus, SessionStatus, now};
use crate::store::queries::sessions;
use crate::store::{self, StoreResult};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sea_orm::DatabaseConnection;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;

/// Histogram buckets, in seconds: from a cached read (~1 ms) to a provider call at its deadline.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often recorded histogram samples are folded into their buckets between scrapes, so
/// they never pile up in memory when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's one recorder (the `metrics` facade has one global recorder; servers run in
/// one process, as tests do, share it).
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the recorder (once per process), so what happens from now on is counted.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let mut handle = HANDLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new().set_buckets(BUCKETS)?.build_recorder();
    let installed = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    *handle = Some(installed.clone());
    Ok(installed)
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    /// The deployment-wide figures count whole tables: read at most once a period
    /// (`metrics.database_refresh_secs`), however often the page is scraped.
    cluster: Chore,
}

/// Serves `/metrics` of `handle` on `listener` until `stop` completes, reading the
/// deployment-wide figures at most once per `database_refresh`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    (writer, reader): (DatabaseConnection, DatabaseConnection),
    database_refresh: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP);
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    let router = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(Scrape {
        handle,
        writer,
        reader,
        cluster: Chore::new(database_refresh, true),
    });
    let served = axum::serve(listener, router).with_graceful_shutdown(stop).await;
    upkeep.abort();
    served
}

async fn scrape(State(scrape): State<Scrape>) -> Response {
    // A database that cannot answer leaves the last values; the rest of the page still helps.
    if scrape.cluster.due()
        && let Err(err) = cluster_gauges(&scrape.reader).await
    {
        tracing::warn!(error = %err, "reading the metrics' database figures failed");
    }
    for (pool, db) in [("writer", &scrape.writer), ("reader", &scrape.reader)] {
        let (in_use, idle) = store::pool_usage(db);
        gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "in_use").set(f64::from(in_use));
        gauge!(DB_CONNECTIONS, "pool" => pool, "state" => "idle").set(f64::from(idle));
    }
    scrape.handle.run_upkeep();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], scrape.handle.render()).into_response()
}

/// Sessions and rules by status and the engine's queue, as the shared database holds them.
async fn cluster_gauges(db: &DatabaseConnection) -> StoreResult<()> {
    let sessions = sessions::count_by_status(db).await?;
    for status in SessionStatus::ALL {
        let count = sessions.iter().find(|(counted, _)| counted == status).map_or(0, |(_, count)| *count);
        gauge!(SESSIONS, "status" => status.as_str()).set(count as f64);
    }
    let rules = sessions::count_rules_by_status(db).await?;
    for status in ResourceIpStatus::ALL {
        let count = rules.iter().find(|(counted, _)| counted == status).map_or(0, |(_, count)| *count);
        gauge!(RULES, "status" => status.as_str()).set(count as f64);
    }
    let at = now();
    let (due, oldest) = sessions::due_backlog(db, at).await?;
    gauge!(DUE_RULES).set(due as f64);
    let waited = oldest.and_then(|since| (at - since).to_std().ok()).unwrap_or_default();
    gauge!(OLDEST_DUE_AGE).set(waited.as_secs_f64());
    Ok(())
}
