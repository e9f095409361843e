//! Every firewall provider passes one conformance suite; the AWS provider runs against moto's
//! EC2 server (`PORTCULLIS_TEST_MOTO_URL`, started by scripts/test.sh) and is checked through an
//! independent client (boto3).

mod common;

use chrono::TimeDelta;
use portcullis::domain::{MemoryProvider, ProviderConfig, now};
use portcullis::provider::memory::MemoryFirewall;
use portcullis::provider::{CheckOutcome, FirewallProvider, Owner, RuleRef, RuleRequest, Target, is_unmanaged};
use std::collections::BTreeSet;
use std::net::IpAddr;

const V4: &str = "203.0.113.10";
const V6: &str = "2001:db8::10";
/// Opened by someone else before the suite runs; must survive it untouched.
const FOREIGN: &str = "198.51.100.7";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn request(address: &str, session_id: &str) -> RuleRequest {
    RuleRequest {
        address: ip(address),
        owner: Owner { session_id: session_id.into(), expires_at: now() + TimeDelta::hours(1) },
    }
}

/// What every provider must do, whatever its API. `target` must hold the FOREIGN rule and no
/// rule of ours.
async fn conformance(provider: &dyn FirewallProvider, target: &Target) {
    assert!(matches!(provider.check(target).await, CheckOutcome::Ok(_)), "check of an existing firewall");
    assert_eq!(provider.list_owned(target).await.unwrap(), [], "foreign rules are never listed as ours");

    // One batch, both address families, in request order.
    let batch = [request(V4, "session-a"), request(V6, "session-b")];
    let opened: Vec<String> = provider.apply(target, &batch).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(opened.len(), 2);
    assert_ne!(opened[0], opened[1]);
    let owned = provider.list_owned(target).await.unwrap();
    let listed: BTreeSet<(IpAddr, String, String)> =
        owned.into_iter().map(|rule| (rule.address, rule.rule_id, rule.description)).collect();
    let expected: BTreeSet<(IpAddr, String, String)> = batch
        .iter()
        .zip(&opened)
        .map(|(request, id)| (request.address, id.clone(), request.owner.description()))
        .collect();
    assert_eq!(listed, expected, "listed rules carry their owner's description");

    // Applying again answers the existing rule: after a crash the engine may re-apply.
    let again = provider.apply(target, &[request(V4, "session-c")]).await;
    assert_eq!(again, [Ok(opened[0].clone())]);

    // An address a foreign rule already opens is ridden on, never taken over.
    let foreign = provider.apply(target, &[request(FOREIGN, "session-d")]).await;
    assert!(matches!(&foreign[..], [Ok(id)] if is_unmanaged(id)), "foreign rule adopted as unmanaged: {foreign:?}");

    // Revoke by id, and by address when the id was never recorded; then once more: already gone.
    let refs =
        [RuleRef { address: ip(V4), rule_id: Some(opened[0].clone()) }, RuleRef { address: ip(V6), rule_id: None }];
    assert_eq!(provider.revoke(target, &refs).await, [Ok(()), Ok(())]);
    assert_eq!(provider.list_owned(target).await.unwrap(), []);
    assert_eq!(provider.revoke(target, &refs[..1]).await, [Ok(())], "revoking a removed rule succeeds");
}

#[tokio::test]
async fn memory_provider_conforms() {
    let memory = MemoryFirewall::in_process();
    let target = Target { resource_id: "memory-1".into(), config: ProviderConfig::Memory(MemoryProvider::default()) };
    memory.plant(&target.resource_id, ip(FOREIGN), "office VPN").unwrap();
    conformance(&memory, &target).await;
    let left: Vec<IpAddr> = memory.rules(&target.resource_id).into_keys().collect();
    assert_eq!(left, [ip(FOREIGN)], "only the foreign rule is left");
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use common::moto::{REGION, ec2, moto, new_group, resource_on_moto, rules_in};
    use common::{Fixture, TestDb, TestServer};
    use portcullis::domain::AwsSecurityGroup;
    use portcullis::pb::v1::SessionStatus;
    use portcullis::provider::ProviderError;
    use portcullis::provider::aws::{AwsFirewall, RESOURCE_TAG};

    fn group(endpoint: &str, group_id: &str) -> AwsSecurityGroup {
        AwsSecurityGroup {
            region: REGION.into(),
            group_id: group_id.into(),
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            endpoint_url: Some(endpoint.into()),
            role_arn: None,
            max_rules: None,
        }
    }

    fn target(config: AwsSecurityGroup) -> Target {
        Target { resource_id: portcullis::domain::new_id(), config: ProviderConfig::AwsSecurityGroup(config) }
    }

    #[tokio::test]
    async fn aws_provider_conforms() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        ec2(&endpoint, &["plant", &group_id, &format!("{FOREIGN}/32"), "office VPN"]);
        conformance(&AwsFirewall::new(), &target(group(&endpoint, &group_id))).await;
        let left = rules_in(&endpoint, &group_id);
        assert_eq!(left, BTreeSet::from([(format!("{FOREIGN}/32"), "office VPN".into(), String::new())]));
    }

    #[tokio::test]
    async fn aws_check_tells_a_missing_group() {
        let Some(endpoint) = moto() else { return };
        let outcome = AwsFirewall::new().check(&target(group(&endpoint, "sg-0000000000deadbee"))).await;
        assert!(matches!(outcome, CheckOutcome::NotFound(_)), "{outcome:?}");
    }

    /// moto enforces EC2's 60-rule quota: a batch past it fails only the addresses beyond it.
    #[tokio::test]
    async fn aws_quota_fails_only_what_does_not_fit() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let target = target(group(&endpoint, &group_id));
        let batch: Vec<RuleRequest> = (1..=62).map(|n| request(&format!("192.0.2.{n}"), "session-q")).collect();
        let results = AwsFirewall::new().apply(&target, &batch).await;
        let opened = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(opened, 60, "the group's room is used");
        for result in &results[60..] {
            assert!(
                matches!(result, Err(ProviderError::Rejected(message)) if message.contains("is full")),
                "{result:?}"
            );
        }
        assert_eq!(rules_in(&endpoint, &group_id).len(), 60);
    }

    /// A session on a moto security group opens our rules (seen through boto3) and removes them
    /// when stopped.
    #[tokio::test]
    async fn aws_session_opens_and_closes_rules() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let db = TestDb::sqlite();
        let mut f = Fixture::new(&db).await;
        let resource_id = f.resource_on("bastion", resource_on_moto(&endpoint, &group_id)).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), Some(V6)).await.unwrap();
        let seen = f.watch_until(&key, &session.id, SessionStatus::Active).await;
        let active = seen.last().unwrap();
        assert_eq!(active.status(), SessionStatus::Active, "{active:#?}");
        assert!(active.resource_ips.iter().all(|rule| rule.provider_rule_id.starts_with("sgr-")), "{active:#?}");

        let held = rules_in(&endpoint, &group_id);
        let cidrs: BTreeSet<&str> = held.iter().map(|(cidr, _, _)| cidr.as_str()).collect();
        assert_eq!(cidrs, BTreeSet::from(["203.0.113.10/32", "2001:db8::10/128"]));
        for (cidr, description, tag) in &held {
            assert!(
                description.starts_with(&format!("portcullis session {} until ", session.id)),
                "{cidr}: {description}"
            );
            assert_eq!(tag, &resource_id, "{cidr} is tagged with its resource");
        }

        f.stop(&key, &session.id).await;
        let seen = f.watch_until(&key, &session.id, SessionStatus::Cancelled).await;
        assert_eq!(seen.last().unwrap().status(), SessionStatus::Cancelled);
        assert_eq!(rules_in(&endpoint, &group_id), BTreeSet::new(), "every rule is gone");
        f.server.stop().await;
    }

    #[tokio::test]
    async fn aws_sweep_removes_orphans_and_never_foreign_rules() {
        let Some(endpoint) = moto() else { return };
        let group_id = new_group(&endpoint);
        let db = TestDb::sqlite();
        let mut config = common::test_config();
        config.engine.sweep_interval_secs = 1;
        let mut f = Fixture::with_server(TestServer::start_with(&db, config).await).await;
        let resource_id = f.resource_on("bastion", resource_on_moto(&endpoint, &group_id)).await;
        let key = f.user_key.clone();
        let session = f.start(&key, Some(V4), None).await.unwrap();
        f.watch_until(&key, &session.id, SessionStatus::Active).await;

        let ours = format!("{RESOURCE_TAG}={resource_id}");
        let lost = "portcullis session 0192-lost until 2026-01-01T00:00:00Z";
        ec2(&endpoint, &["plant", &group_id, "198.51.100.1/32", lost, &ours]);
        ec2(&endpoint, &["plant", &group_id, "198.51.100.2/32", "office VPN"]);
        // Marked, but for another Portcullis resource on the same group: not this resource's orphan.
        let other = format!("{RESOURCE_TAG}=another-resource");
        ec2(&endpoint, &["plant", &group_id, "198.51.100.3/32", lost, &other]);
        let cidrs =
            || -> BTreeSet<String> { rules_in(&endpoint, &group_id).into_iter().map(|(cidr, _, _)| cidr).collect() };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        while cidrs().contains("198.51.100.1/32") {
            assert!(tokio::time::Instant::now() < deadline, "the orphan outlived the sweeps");
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let expected = ["198.51.100.2/32", "198.51.100.3/32", "203.0.113.10/32"].map(String::from);
        assert_eq!(cidrs(), BTreeSet::from(expected));
        f.server.stop().await;
    }
}
