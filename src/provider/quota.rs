//! Client-side token buckets, so the engine paces its calls to a cloud's request quota instead
//! of meeting throttling errors (which are still retried, never a failure).

use crate::settings::Unworkable;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static PACED: PacedTime;
    static PREPAID: Prepaid;
}

/// How long the calls made inside [`PacedTime::count`] were told to wait for their tokens. A
/// provider call's deadline leaves this out: the wait is our own pacing, not a slow provider.
#[derive(Debug, Clone, Default)]
pub struct PacedTime(Arc<AtomicU64>);

impl PacedTime {
    /// Runs `work`, adding to this every wait its calls reserve (counted when reserved, so a
    /// wait still under way counts already).
    pub async fn count<T>(&self, work: impl Future<Output = T>) -> T {
        PACED.scope(self.clone(), work).await
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    fn add(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always answers Some.
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| Some(total.saturating_add(nanos)));
    }
}

/// A token bucket's size: `burst` calls at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    /// Refuses a bucket that would never let a call through.
    pub fn check(self, key: &str) -> Result<(), Unworkable> {
        if self.burst == 0 || !(self.per_second > 0.0 && self.per_second.is_finite()) {
            return Err(format!("{key} needs a burst and a rate per second above 0").into());
        }
        Ok(())
    }

    /// `share` of this rate (what one of several replicas spends of one account's quota).
    pub fn share(self, share: f64) -> Rate {
        let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 1.0 };
        // A replica always keeps one call of burst, or it could never call at all.
        Rate { burst: ((f64::from(self.burst) * share).floor() as u32).max(1), per_second: self.per_second * share }
    }
}

/// Which of a bucket's tokens a piece of work may reserve before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// One that comes within this long, in turn with everyone else (the rule worker's).
    Within(Duration),
    /// Only one the bucket holds now beyond half its burst, with nobody waiting: work that can
    /// wait (the reconciler's) spends what the rest leaves and never makes it wait.
    Spare,
}

/// One bucket. A call takes a token now, or reserves the next one and waits for it: waiters are
/// served in the order they came, and no call is made that the bucket would refuse.
#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    /// Tokens left (negative: reserved ahead by waiters) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket { rate, state: Mutex::new((f64::from(rate.burst), Instant::now())) }
    }

    /// How long a call taken now must wait for its token (zero when one is there).
    fn reserve(&self) -> Duration {
        self.reserve_above(f64::NEG_INFINITY).unwrap_or(Duration::MAX)
    }

    /// Reserves the next token for `claim`, answering the wait for it; or reserves nothing and
    /// answers how long until `claim` would get one (if nobody else takes any meanwhile).
    fn reserve_for(&self, claim: Claim) -> Result<Duration, Duration> {
        let floor = match claim {
            Claim::Within(ahead) => -(ahead.as_secs_f64() * self.rate.per_second),
            Claim::Spare => f64::from(self.rate.burst / 2),
        };
        self.reserve_above(floor)
    }

    /// Reserves a token if the bucket still holds `floor` tokens after it (a negative floor:
    /// reserved ahead by waiters, so -1 is "the token after the next one"), answering the wait
    /// for it; otherwise reserves nothing and answers how long until that would be so.
    fn reserve_above(&self, floor: f64) -> Result<Duration, Duration> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, since) = *state;
        let now = Instant::now();
        let refilled = (tokens + now.duration_since(since).as_secs_f64() * self.rate.per_second)
            .min(f64::from(self.rate.burst))
            - 1.0;
        let seconds = |tokens: f64| {
            if tokens <= 0.0 {
                Duration::ZERO
            } else if self.rate.per_second <= 0.0 {
                Duration::MAX
            } else {
                Duration::try_from_secs_f64(tokens / self.rate.per_second).unwrap_or(Duration::MAX)
            }
        };
        if refilled < floor {
            *state = (refilled + 1.0, now);
            return Err(seconds(floor - refilled));
        }
        *state = (refilled, now);
        Ok(seconds(-refilled))
    }

    /// Waits until a call may be made. A wait cancelled (by the call's deadline) gives its token
    /// back, so calls abandoned in a backlog do not slow the ones after them. A call made under
    /// a [`Prepaid`] ticket of this bucket gives the ticket back as it takes its token: the
    /// ticket kept the call's place while the work got ready, and the token is taken when the
    /// call goes, so however long getting ready took, calls reach the provider no closer
    /// together than the bucket allows.
    pub async fn take(&self) {
        let _ = PREPAID.try_with(|prepaid| prepaid.give_back(self));
        let wait = self.reserve();
        if wait.is_zero() {
            return;
        }
        tracing::debug!(wait_ms = wait.as_millis() as u64, "pacing a call to the provider's quota");
        // Outside a counted call (tests of the bucket alone) there is nothing to tell.
        let _ = PACED.try_with(|paced| paced.add(wait));
        let mut unused = Refund { bucket: self, armed: true };
        tokio::time::sleep(wait).await;
        unused.armed = false;
    }

    /// Whether the bucket holds its whole burst: forgetting it then loses nothing, as a new
    /// one starts full.
    fn is_full(&self) -> bool {
        let (tokens, since) = *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens + since.elapsed().as_secs_f64() * self.rate.per_second >= f64::from(self.rate.burst)
    }

    fn give_back(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 = (state.0 + 1.0).min(f64::from(self.rate.burst));
    }
}

/// Returns a reserved token when its wait is dropped before it ends.
struct Refund<'a> {
    bucket: &'a TokenBucket,
    armed: bool,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.bucket.give_back();
        }
    }
}

/// A token reserved for a piece of work before it starts, given back when its call takes its
/// own token (or when the work ends without one).
#[derive(Debug)]
pub struct Ticket {
    bucket: Arc<TokenBucket>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.bucket.give_back();
    }
}

/// The tickets a piece of work reserved before it started (see [`Buckets::admit`]).
#[derive(Debug, Default)]
pub struct Prepaid(Mutex<Vec<Ticket>>);

impl Prepaid {
    pub fn new(tickets: Vec<Ticket>) -> Prepaid {
        Prepaid(Mutex::new(tickets))
    }

    /// Runs `work` with these tickets; those its calls leave are given back at its end.
    pub async fn spend_in<T>(self, work: impl Future<Output = T>) -> T {
        PREPAID.scope(self, work).await
    }

    /// Gives back a ticket of `bucket`, if there is one.
    fn give_back(&self, bucket: &TokenBucket) {
        let mut tickets = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(index) = tickets.iter().position(|ticket| std::ptr::eq(Arc::as_ptr(&ticket.bucket), bucket)) {
            drop(tickets.swap_remove(index));
        }
    }
}

/// Token buckets by key (an account and API, a project), each made on first use.
#[derive(Debug)]
pub struct Buckets<K> {
    buckets: Mutex<HashMap<K, Arc<TokenBucket>>>,
}

/// Past this many buckets, idle ones (full, unused) are forgotten before another is made.
const KEPT_BUCKETS: usize = 1_024;

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets { buckets: Mutex::default() }
    }
}

impl<K: Eq + Hash> Buckets<K> {
    fn bucket(&self, key: K, rate: Rate) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keys come from resources (endpoints, accounts, projects), which tenants choose: keep
        // only buckets that remember something, those in use or not yet full again.
        if buckets.len() >= KEPT_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| Arc::strong_count(bucket) > 1 || !bucket.is_full());
        }
        buckets.entry(key).or_insert_with(|| Arc::new(TokenBucket::new(rate))).clone()
    }

    /// How many buckets are kept (test hook).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Waits until a call may be made on `key`'s bucket, made with `rate` if it is new.
    pub async fn take(&self, key: K, rate: Rate) {
        self.bucket(key, rate).take().await;
    }

    /// A ticket for a call on `key`'s bucket if `claim` gets its token; otherwise how long
    /// until it would (and nothing is reserved).
    pub fn admit(&self, key: K, rate: Rate, claim: Claim) -> Result<Ticket, Duration> {
        let bucket = self.bucket(key, rate);
        bucket.reserve_for(claim)?;
        Ok(Ticket { bucket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_buckets_are_forgotten_and_busy_ones_kept() {
        let buckets = Buckets::default();
        let slow = Rate { burst: 1, per_second: 0.001 };
        // One bucket emptied: it must be remembered, or its next call would go unpaced.
        buckets.take("busy".to_owned(), slow).await;
        let fast = Rate { burst: 1, per_second: 1_000_000.0 };
        for key in 0..5 * KEPT_BUCKETS {
            buckets.take(format!("endpoint-{key}"), fast).await;
        }
        assert!(buckets.len() <= KEPT_BUCKETS + 1, "{} buckets kept", buckets.len());
        let refused = buckets.admit("busy".to_owned(), slow, Claim::Within(Duration::ZERO));
        assert!(refused.is_err(), "the emptied bucket was forgotten");
    }

    #[tokio::test]
    async fn a_bucket_lets_its_burst_through_then_paces() {
        let bucket = TokenBucket::new(Rate { burst: 3, per_second: 20.0 });
        let began = Instant::now();
        for _ in 0..3 {
            bucket.take().await;
        }
        let burst = began.elapsed();
        assert!(burst < Duration::from_millis(40), "the burst goes at once: {burst:?}");
        // Two more: the second waits for the second token to come, 100 ms after the burst.
        bucket.take().await;
        bucket.take().await;
        let paced = began.elapsed();
        assert!(paced >= Duration::from_millis(95), "{paced:?}");
    }

    #[tokio::test]
    async fn an_abandoned_wait_gives_its_token_back() {
        let bucket = TokenBucket::new(Rate { burst: 1, per_second: 10.0 });
        bucket.take().await;
        // Would wait 100 ms; abandoned after 10.
        assert!(tokio::time::timeout(Duration::from_millis(10), bucket.take()).await.is_err());
        let began = Instant::now();
        bucket.take().await;
        let waited = began.elapsed();
        // The abandoned reservation held 100–200 ms; returned, the next token is the one at 100 ms.
        assert!(waited < Duration::from_millis(150), "{waited:?}");
    }

    #[tokio::test]
    async fn admission_reserves_only_what_comes_soon_and_a_call_takes_its_place() {
        let buckets = Buckets::default();
        let rate = Rate { burst: 1, per_second: 5.0 };
        let ahead = Claim::Within(Duration::from_millis(250));
        let ticket = buckets.admit("k", rate, ahead).expect("the burst's token is there");
        // A call under the ticket takes the ticket's token, not the one after it (200 ms on).
        let began = Instant::now();
        Prepaid::new(vec![ticket]).spend_in(buckets.take("k", rate)).await;
        assert!(began.elapsed() < Duration::from_millis(50), "{:?}", began.elapsed());
        // The next token comes in 200 ms: within 250 ms, so admitted; the one after, in 400 ms, not.
        let next = buckets.admit("k", rate, ahead).expect("within ahead");
        let refused = buckets.admit("k", rate, ahead).expect_err("beyond ahead");
        assert!(refused > Duration::from_millis(100) && refused <= Duration::from_millis(150), "{refused:?}");
        // Work that ends without calling gives its ticket back: that token is free again.
        drop(Prepaid::new(vec![next]));
        assert!(buckets.admit("k", rate, ahead).is_ok(), "an unspent ticket's token returns");
    }

    #[tokio::test]
    async fn spare_claims_take_only_the_upper_half_and_never_jump_the_queue() {
        let buckets = Buckets::default();
        let rate = Rate { burst: 4, per_second: 10.0 };
        let within = Claim::Within(Duration::from_millis(250));
        // Of four tokens, spare claims get the two above half the burst, then wait for a refill.
        let spare: Vec<Ticket> = (0..2).map(|_| buckets.admit("k", rate, Claim::Spare).expect("spare")).collect();
        let refused = buckets.admit("k", rate, Claim::Spare).expect_err("only the lower half is left");
        assert!(refused > Duration::from_millis(50) && refused <= Duration::from_millis(100), "{refused:?}");
        // The lower half is there for work in turn, and work in turn may reserve ahead...
        let in_turn: Vec<Ticket> = (0..4).map(|_| buckets.admit("k", rate, within).expect("in turn")).collect();
        // ...where a spare claim never follows it: tokens reserved ahead are nobody's spare.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(buckets.admit("k", rate, Claim::Spare).is_err(), "a refill first pays what was reserved");
        drop((spare, in_turn));
        assert!(buckets.admit("k", rate, Claim::Spare).is_ok(), "tickets given back are spare again");
    }

    #[test]
    fn shares_split_a_rate() {
        assert_eq!(Rate { burst: 50, per_second: 5.0 }.share(0.5), Rate { burst: 25, per_second: 2.5 });
        assert_eq!(Rate { burst: 50, per_second: 5.0 }.share(0.33).burst, 16);
        assert_eq!(Rate { burst: 2, per_second: 5.0 }.share(0.1).burst, 1);
    }
}
