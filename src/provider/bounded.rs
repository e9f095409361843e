//! The deadline every provider call ends by, whatever the provider does inside it.

use super::{
    CheckOutcome, FirewallProvider, Listing, Pass, ProviderError, RuleRef, RuleRequest, Target, fail_all, quota,
};
use crate::domain::{ProviderConfig, ProviderKind};
use crate::monitoring;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Wraps a provider so every call ends by a deadline: a call still running then is abandoned
/// (dropping it cancels its request) and answers a transient error, retried with backoff. This
/// bounds whatever the provider does inside a call: paging, operation polling, latency. Waits
/// for the quota's tokens do not count: behind a backlog of our own calls, a call that never
/// reached the provider would otherwise time out and back off while the bucket serves others
/// (the lease is renewed through the wait, and dropped work makes no call).
pub(super) struct Bounded {
    pub(super) inner: Arc<dyn FirewallProvider>,
    pub(super) deadline: Duration,
    /// The provider's kind, as metrics name it.
    pub(super) kind: ProviderKind,
}

impl Bounded {
    fn timed_out(&self) -> ProviderError {
        ProviderError::Transient(format!("the provider did not answer within {}s", self.deadline.as_secs_f64()))
    }

    /// `call`'s answer, or None once it has spent the deadline outside its waits for tokens;
    /// timed (without those waits) as `operation`.
    async fn bounded<T>(&self, operation: &'static str, call: impl std::future::Future<Output = T>) -> Option<T> {
        let paced = quota::PacedTime::default();
        let call = paced.count(call);
        tokio::pin!(call);
        let began = tokio::time::Instant::now();
        // Moves on with every wait counted; None (past any instant) only for an endless wait.
        let end = || began.checked_add(self.deadline.saturating_add(paced.total()));
        let answer = loop {
            let Some(until) = end() else { break Some(call.await) };
            tokio::select! {
                answer = &mut call => break Some(answer),
                () = tokio::time::sleep_until(until) => {
                    if end() == Some(until) {
                        break None;
                    }
                }
            }
        };
        monitoring::provider_call(self.kind.as_str(), operation, began.elapsed().saturating_sub(paced.total()));
        if answer.is_none() {
            monitoring::provider_error(self.kind.as_str(), operation, "timeout");
        }
        answer
    }

    /// Counts each kind of error among a call's answers once.
    fn count_errors<'a>(&self, operation: &'static str, errors: impl Iterator<Item = &'a ProviderError>) {
        let mut kinds: Vec<&'static str> = errors.map(ProviderError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            monitoring::provider_error(self.kind.as_str(), operation, kind);
        }
    }
}

#[async_trait]
impl FirewallProvider for Bounded {
    async fn apply(&self, target: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
        let Some(answers) = self.bounded("apply", self.inner.apply(target, rules)).await else {
            return fail_all(rules.len(), &self.timed_out());
        };
        self.count_errors("apply", answers.iter().filter_map(|answer| answer.as_ref().err()));
        answers
    }

    async fn revoke(&self, target: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
        let Some(answers) = self.bounded("revoke", self.inner.revoke(target, rules)).await else {
            return fail_all(rules.len(), &self.timed_out());
        };
        self.count_errors("revoke", answers.iter().filter_map(|answer| answer.as_ref().err()));
        answers
    }

    async fn list(&self, target: &Target) -> Result<Listing, ProviderError> {
        let answer = self.bounded("list", self.inner.list(target)).await.unwrap_or_else(|| Err(self.timed_out()));
        self.count_errors("list", answer.as_ref().err().into_iter());
        answer
    }

    async fn check(&self, target: &Target) -> CheckOutcome {
        self.bounded("check", self.inner.check(target))
            .await
            .unwrap_or_else(|| CheckOutcome::Unreachable(self.timed_out().to_string()))
    }

    fn admit(&self, config: &ProviderConfig, pass: Pass, claim: quota::Claim) -> Result<Vec<quota::Ticket>, Duration> {
        self.inner.admit(config, pass, claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Owner;
    use chrono::Utc;
    use std::net::IpAddr;

    /// A provider whose every call first waits for a token of one shared bucket (one call per
    /// 300 ms), then spends `on_the_wire` at the provider.
    struct Paced {
        bucket: quota::TokenBucket,
        on_the_wire: Duration,
    }

    #[async_trait]
    impl FirewallProvider for Paced {
        async fn apply(&self, _: &Target, rules: &[RuleRequest]) -> Vec<Result<String, ProviderError>> {
            self.bucket.take().await;
            tokio::time::sleep(self.on_the_wire).await;
            rules.iter().map(|rule| Ok(format!("rule-{}", rule.address))).collect()
        }

        async fn revoke(&self, _: &Target, rules: &[RuleRef]) -> Vec<Result<(), ProviderError>> {
            rules.iter().map(|_| Ok(())).collect()
        }

        async fn list(&self, _: &Target) -> Result<Listing, ProviderError> {
            Ok(Listing::default())
        }

        async fn check(&self, _: &Target) -> CheckOutcome {
            CheckOutcome::Ok("paced".into())
        }
    }

    /// Five calls at once, each bounded by `deadline`: their answers.
    async fn five_calls_at_once(on_the_wire: Duration, deadline: Duration) -> Vec<Result<String, ProviderError>> {
        let paced =
            Paced { bucket: quota::TokenBucket::new(quota::Rate { burst: 1, per_second: 1.0 / 0.3 }), on_the_wire };
        let bounded = Bounded { inner: Arc::new(paced), deadline, kind: ProviderKind::Memory };
        let target = Target {
            resource_id: "r".into(),
            organization_id: "o".into(),
            config: ProviderConfig::Memory(Default::default()),
        };
        let owner = Owner { session_id: "s".into(), expires_at: Utc::now() };
        let calls = (1..=5u8).map(|n| {
            let rule = RuleRequest { address: IpAddr::from([198, 51, 100, n]), owner: owner.clone() };
            let (bounded, target) = (&bounded, &target);
            async move { bounded.apply(target, &[rule]).await.remove(0) }
        });
        futures::future::join_all(calls).await
    }

    #[tokio::test]
    async fn waiting_for_the_quota_does_not_count_against_the_deadline() {
        // The fifth call waits 1.2 s for its token, beyond the 1 s deadline, then answers at once.
        let answers = five_calls_at_once(Duration::from_millis(10), Duration::from_secs(1)).await;
        let failed: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
        assert!(failed.is_empty(), "calls behind our own pacing timed out: {failed:?}");
    }

    #[tokio::test]
    async fn a_provider_slower_than_the_deadline_still_times_out() {
        let answers = five_calls_at_once(Duration::from_secs(5), Duration::from_secs(1)).await;
        for answer in answers {
            let err = answer.expect_err("a call 5 s on the wire ends at the 1 s deadline");
            assert!(err.to_string().contains("did not answer within 1s"), "{err}");
        }
    }
}
