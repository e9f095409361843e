//! Named points where a test holds a task, to widen the window between two paths that race
//! and show that a guard closes it. Inert unless a test arms a point: one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The points a task may be held at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// The start writer has a batch of starts and has not begun its transaction.
    StartBeforeWrite,
    /// The start writer has checked and inserted a batch and not yet committed.
    StartBeforeCommit,
    /// RetryResourceIp has found the rule and not begun its transaction.
    RetryBeforeWrite,
    /// The expiry scheduler has read the sessions due and not begun its transaction.
    ExpiryBeforeWrite,
}

#[derive(Default)]
pub struct Pauses {
    armed: AtomicBool,
    gates: Mutex<HashMap<Point, Arc<Gate>>>,
}

/// One armed point: the first task to reach it waits until the gate is released.
pub struct Gate {
    reached: Semaphore,
    released: Semaphore,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate { reached: Semaphore::new(0), released: Semaphore::new(0) }
    }
}

impl Gate {
    /// Waits until a task is held at the point.
    pub async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets the held task (or the next to arrive) go on.
    pub fn release(&self) {
        self.released.add_permits(1);
    }
}

impl Pauses {
    /// Arms `point` once: the next task to reach it is held until the gate is released.
    pub fn arm(&self, point: Point) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.lock().insert(point, gate.clone());
        self.armed.store(true, Ordering::Release);
        gate
    }

    /// Holds the task here if a test armed `point`.
    pub async fn at(&self, point: Point) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let Some(gate) = self.lock().remove(&point) else { return };
        gate.reached.add_permits(1);
        if let Ok(permit) = gate.released.acquire().await {
            permit.forget();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Point, Arc<Gate>>> {
        self.gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
