//! Persistence: sea-orm entities, migrations and the queries the services run.
//!
//! Every query function takes `&impl ConnectionTrait`, so a service can run several of them in
//! one transaction (an admin action and its audit event commit together).

pub mod audit;
pub mod changes;
pub mod entity;
mod migration;
mod page;
pub mod queries;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

pub use migration::Migrator;
pub use page::{Page, PageRequest};

/// A failed store operation, already translated into what it means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("row not found")]
    NotFound,
    #[error("unique constraint violated: {0}")]
    AlreadyExists(String),
    #[error("referenced row missing: {0}")]
    MissingReference(String),
    #[error("database unreachable: {0}")]
    Unavailable(DbErr),
    #[error("database error: {0}")]
    Database(DbErr),
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => return StoreError::AlreadyExists(detail),
            Some(SqlErr::ForeignKeyConstraintViolation(detail)) => return StoreError::MissingReference(detail),
            _ => {}
        }
        match err {
            DbErr::RecordNotFound(_) => StoreError::NotFound,
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => StoreError::Unavailable(err),
            other => StoreError::Database(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens a connection pool on `url` (`sqlite://…` or `postgres://…`).
///
/// SQLite gets a single connection: it has one writer anyway, and two connections whose
/// transactions both read and then write deadlock (SQLite answers "database is locked" at once).
/// One connection serializes all statements, which for a local file is fast, and an abandoned
/// transaction is rolled back before the connection's next use instead of holding the lock.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<DatabaseConnection> {
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if sqlite { 1 } else { max_connections })
        .min_connections(if sqlite { 1 } else { 0 })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        // WAL with synchronous=NORMAL: commits without an fsync each (a power cut may lose the
        // last ones, never corrupt the file); foreign keys enforced like on PostgreSQL.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite.pragma("journal_mode", "WAL").pragma("synchronous", "NORMAL").pragma("foreign_keys", "ON")
        });
    Ok(Database::connect(options).await?)
}

/// Read-only connections to a SQLite file: enough for the hot reads of one server.
const SQLITE_READERS: u32 = 4;

/// Read connections for `url`, beside [`connect`]'s writer. SQLite in WAL mode lets readers run
/// while the single writer works, so the hot read paths (authentication, session reads) get a
/// small pool of read-only connections; other databases share the writer's pool, which is
/// returned as is.
pub async fn connect_reader(url: &str, writer: &DatabaseConnection) -> StoreResult<DatabaseConnection> {
    if !url.starts_with("sqlite:") {
        return Ok(writer.clone());
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(SQLITE_READERS)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|sqlite| sqlite.pragma("query_only", "ON"));
    Ok(Database::connect(options).await?)
}

/// A small pool of its own beside `db`'s (PostgreSQL), for work that must never queue behind
/// the shared pool (lease renewals); SQLite's single writer is shared as it is.
pub fn dedicated(db: &DatabaseConnection, connections: u32) -> DatabaseConnection {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return db.clone();
    }
    let options = db.get_postgres_connection_pool().connect_options();
    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*options).clone());
    sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
}

/// The database server's clock (PostgreSQL), which every replica shares; SQLite serves one
/// process, whose clock it is.
pub async fn database_time(db: &DatabaseConnection) -> StoreResult<chrono::DateTime<chrono::Utc>> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(crate::domain::now());
    }
    let statement = sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SELECT clock_timestamp() AS now");
    let row = db.query_one_raw(statement).await?.ok_or(StoreError::NotFound)?;
    Ok(row.try_get::<chrono::DateTime<chrono::Utc>>("", "now")?)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> StoreResult<()> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// Whether the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// Starts a transaction.
pub async fn begin(db: &DatabaseConnection) -> StoreResult<DatabaseTransaction> {
    Ok(db.begin().await?)
}

/// Commits a transaction.
pub async fn commit(txn: DatabaseTransaction) -> StoreResult<()> {
    Ok(txn.commit().await?)
}

/// Connections of `db`'s pool: how many are in use and how many idle.
pub fn pool_usage(db: &DatabaseConnection) -> (u32, u32) {
    let (size, idle) = match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    (size - idle, idle)
}
