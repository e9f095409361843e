//! The engine's clock for leases and claims: the database server's, so that replicas whose own
//! clocks disagree never take each other's leases early. Every lease time is written and
//! compared in it; this process's clock is only corrected by the offset measured against the
//! database, now and then.

use crate::store::{self, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DatabaseConnection;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Default)]
pub struct Clock {
    /// The database's clock minus this process's, in microseconds.
    offset_micros: AtomicI64,
    /// How far this process's clock is wrong (only tests set it, to play a replica whose clock is).
    skew_micros: AtomicI64,
}

impl Clock {
    /// The time on the database's clock, as last measured.
    pub fn now(&self) -> DateTime<Utc> {
        self.local() + TimeDelta::microseconds(self.offset_micros.load(Ordering::Relaxed))
    }

    fn local(&self) -> DateTime<Utc> {
        crate::domain::now() + TimeDelta::microseconds(self.skew_micros.load(Ordering::Relaxed))
    }

    /// Measures the offset to the database's clock, halving the round trip.
    pub async fn measure(&self, db: &DatabaseConnection) -> StoreResult<()> {
        let before = self.local();
        let database = store::database_time(db).await?;
        let after = self.local();
        let midpoint = before + (after - before) / 2;
        let offset = (database - midpoint).num_microseconds().unwrap_or_default();
        self.offset_micros.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Sets this process's clock `by` wrong, as a replica whose clock drifted has it (tests).
    pub fn skew_local_clock(&self, by: TimeDelta) {
        self.skew_micros.store(by.num_microseconds().unwrap_or_default(), Ordering::Relaxed);
    }
}
