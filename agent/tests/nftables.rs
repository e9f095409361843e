//! The agent's table on the real kernel: each test runs `nft` inside a user and network
//! namespace of its own (`unshare -Urn`, no root needed), entered with nsenter, so nothing
//! touches the host's firewall.

#[path = "support/netns.rs"]
mod netns;

use netns::Namespace;
use portcullis_agent::nft::Changes;
use portcullis_agent::state::{Desired, Grant, HostResource, Protocol};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

fn ssh(resource_id: &str, grants: &[(&str, Duration, &[&str])]) -> HostResource {
    let now = SystemTime::now();
    HostResource {
        resource_id: resource_id.into(),
        protocol: Protocol::Tcp,
        ports: vec![22, 2222],
        grants: grants
            .iter()
            .map(|(address, left, sessions)| {
                let grant =
                    Grant { expires_at: now + *left, session_ids: sessions.iter().map(|s| s.to_string()).collect() };
                (address.parse::<IpAddr>().unwrap(), grant)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

fn desired(resources: Vec<HostResource>) -> Desired {
    Desired { resources }
}

const HOUR: Duration = Duration::from_secs(3_600);

#[test]
fn a_sync_writes_sets_with_timeouts_and_a_chain_that_rejects_other_sources() {
    let ns = Namespace::new();
    let nft = ns.nft("portcullis");
    let wanted = desired(vec![ssh("res-1", &[("203.0.113.7", HOUR, &["s1", "s2"]), ("2001:db8::7", HOUR, &["s3"])])]);
    let changes = nft.sync(&wanted, SystemTime::now()).unwrap();
    assert_eq!(changes, Changes { added: 2, ..Changes::default() });

    let current = nft.read().unwrap();
    let v4 = &current.sets["allow4_rres1"];
    let element = &v4[&"203.0.113.7".parse::<IpAddr>().unwrap()];
    assert_eq!(element.comment, "portcullis s1 s2");
    assert!(element.expires_in > HOUR - Duration::from_secs(5) && element.expires_in <= HOUR, "{element:?}");
    assert!(current.sets["allow6_rres1"].contains_key(&"2001:db8::7".parse::<IpAddr>().unwrap()));

    let ruleset = ns.run(&["list", "chain", "inet", "portcullis", "input_rres1"]);
    assert!(ruleset.contains("hook input"), "{ruleset}");
    assert!(ruleset.contains("tcp dport { 22, 2222 } ip saddr @allow4_rres1 accept"), "{ruleset}");
    assert!(ruleset.contains("tcp dport { 22, 2222 } ip6 saddr @allow6_rres1 accept"), "{ruleset}");
    assert!(ruleset.contains("tcp dport { 22, 2222 } reject with tcp reset"), "{ruleset}");

    // Level-triggered: the same state again changes nothing.
    assert_eq!(nft.sync(&wanted, SystemTime::now()).unwrap(), Changes::default());
}

#[test]
fn elements_deleted_by_hand_come_back_and_unwanted_ones_go() {
    let ns = Namespace::new();
    let nft = ns.nft("portcullis");
    let wanted = desired(vec![ssh("res-1", &[("203.0.113.7", HOUR, &["s1"])])]);
    nft.sync(&wanted, SystemTime::now()).unwrap();
    ns.run(&["delete", "element", "inet", "portcullis", "allow4_rres1", "{ 203.0.113.7 }"]);
    ns.run(&["add", "element", "inet", "portcullis", "allow4_rres1", "{ 198.51.100.9 timeout 1h }"]);

    let changes = nft.sync(&wanted, SystemTime::now()).unwrap();
    assert_eq!(changes, Changes { added: 1, removed: 1, ..Changes::default() });
    let held: Vec<IpAddr> = nft.read().unwrap().sets["allow4_rres1"].keys().copied().collect();
    assert_eq!(held, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
}

#[test]
fn extending_moves_the_kernel_expiry() {
    let ns = Namespace::new();
    let nft = ns.nft("portcullis");
    nft.sync(&desired(vec![ssh("res-1", &[("203.0.113.7", HOUR, &["s1"])])]), SystemTime::now()).unwrap();
    let changes =
        nft.sync(&desired(vec![ssh("res-1", &[("203.0.113.7", 3 * HOUR, &["s1"])])]), SystemTime::now()).unwrap();
    assert_eq!(changes, Changes { refreshed: 1, ..Changes::default() });
    let left = nft.read().unwrap().sets["allow4_rres1"][&"203.0.113.7".parse::<IpAddr>().unwrap()].expires_in;
    assert!(left > 3 * HOUR - Duration::from_secs(5), "the element now expires in {left:?}");
}

#[test]
fn the_kernel_removes_an_element_at_its_expiry_without_the_agent() {
    let ns = Namespace::new();
    let nft = ns.nft("portcullis");
    let started = Instant::now();
    nft.sync(&desired(vec![ssh("res-1", &[("203.0.113.7", Duration::from_secs(2), &["s1"])])]), SystemTime::now())
        .unwrap();
    assert_eq!(nft.read().unwrap().sets["allow4_rres1"].len(), 1);
    // Nothing of the agent runs from here on: only the kernel.
    while !nft.read().unwrap().sets["allow4_rres1"].is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the element outlived its timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("the kernel removed the element {:?} after it was added (timeout 2 s)", started.elapsed());
}

#[test]
fn resources_no_longer_served_go_and_foreign_tables_stay_untouched() {
    let ns = Namespace::new();
    ns.run(&["add", "table", "inet", "site"]);
    ns.run(&["add", "chain", "inet", "site", "input", "{ type filter hook input priority 0; policy accept; }"]);
    ns.run(&["add", "rule", "inet", "site", "input", "tcp", "dport", "22", "ip", "saddr", "192.0.2.1", "accept"]);
    let foreign = ns.run(&["-j", "list", "table", "inet", "site"]);

    let nft = ns.nft("portcullis");
    nft.sync(&desired(vec![ssh("res-1", &[("203.0.113.7", HOUR, &["s1"])]), ssh("res-2", &[])]), SystemTime::now())
        .unwrap();
    let changes = nft.sync(&desired(vec![ssh("res-2", &[])]), SystemTime::now()).unwrap();
    assert_eq!(changes, Changes { removed: 1, resources_removed: 1, ..Changes::default() });
    let current = nft.read().unwrap();
    assert!(!current.chains.contains("input_rres1") && !current.sets.contains_key("allow4_rres1"), "{current:?}");
    assert!(current.chains.contains("input_rres2"));
    assert_eq!(ns.run(&["-j", "list", "table", "inet", "site"]), foreign, "another table is never touched");
}
