//! Housekeeping a replica does at most once a period, on the requests that come (no task of
//! its own): forgetting rows nobody needs any more, reading figures that need not be fresher.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One such chore.
#[derive(Clone)]
pub struct Chore {
    period: Duration,
    /// When this replica last did it; None: not yet.
    last: Arc<Mutex<Option<Instant>>>,
}

impl Chore {
    /// Due `period` from now; `at_once`, due on the first request too.
    pub fn new(period: Duration, at_once: bool) -> Chore {
        Chore { period, last: Arc::new(Mutex::new((!at_once).then(Instant::now))) }
    }

    /// Whether it is due now (and, if so, counts it as done).
    pub fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= self.period);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}
