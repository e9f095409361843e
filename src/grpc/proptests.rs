//! Properties over request validation and proto → domain conversion: whatever a client sends,
//! these answer a value or a field error, and never panic.

use super::convert::{UpdateMask, page_request, parse_timestamp, provider_from_pb, require_id};
use crate::domain::{
    self, IpVersion, Requested, client_address, normalize_email, parse_session_address, requested, validate_name,
};
use crate::pb::v1 as pb;
use crate::service::credentials::parse_api_key;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use prost_types::{FieldMask, Timestamp};
use std::net::IpAddr;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,40}", "[0-9a-f:./]{0,45}"]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4), any::<std::net::Ipv6Addr>().prop_map(IpAddr::V6)]
}

fn provider() -> impl Strategy<Value = pb::resource::Provider> {
    let memory = (any::<u32>(), prop::collection::vec(text(), 0..4), any::<u32>()).prop_map(
        |(latency_ms, fail_addresses, transient_failures)| {
            pb::resource::Provider::Memory(pb::MemoryProvider { latency_ms, fail_addresses, transient_failures })
        },
    );
    let aws = (text(), text(), text(), any::<u32>(), any::<u32>(), prop::option::of(text()), any::<Option<u32>>())
        .prop_map(|(region, group_id, protocol, from_port, to_port, endpoint_url, max_rules)| {
            pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup {
                region,
                group_id,
                protocol,
                from_port,
                to_port,
                endpoint_url,
                role_arn: None,
                max_rules,
            })
        });
    let gcp = (text(), text(), prop::collection::vec(text(), 0..4), any::<u32>(), prop::option::of(text())).prop_map(
        |(project, network, ports, priority, endpoint_url)| {
            pb::resource::Provider::GcpFirewall(pb::GcpFirewall {
                project,
                network,
                protocol: "tcp".into(),
                ports,
                priority,
                endpoint_url,
                ..Default::default()
            })
        },
    );
    let azure = (
        text(),
        text(),
        text(),
        prop::collection::vec(text(), 0..4),
        prop::option::of((any::<u32>(), any::<u32>())),
        prop::option::of(text()),
    )
        .prop_map(|(subscription_id, nsg_name, protocol, destination_port_ranges, priorities, endpoint_url)| {
            pb::resource::Provider::AzureNetworkSecurityGroup(pb::AzureNetworkSecurityGroup {
                subscription_id,
                resource_group: "rg".into(),
                nsg_name,
                protocol,
                destination_port_ranges,
                priority_range: priorities.map(|(first, last)| pb::PriorityRange { first, last }),
                endpoint_url,
                ..Default::default()
            })
        });
    let host = (text(), text(), prop::collection::vec(any::<u32>(), 0..40)).prop_map(|(agent_id, protocol, ports)| {
        pb::resource::Provider::HostFirewall(pb::HostFirewall { agent_id, protocol, ports })
    });
    prop_oneof![memory, aws, gcp, azure, host]
}

proptest! {
    #[test]
    fn session_addresses_parse_or_explain(text in text(), v6 in any::<bool>(), private in any::<bool>()) {
        let version = if v6 { IpVersion::V6 } else { IpVersion::V4 };
        if let Ok(address) = parse_session_address(&text, version, private) {
            prop_assert_eq!(IpVersion::of(address), version);
        }
    }

    #[test]
    fn forwarded_headers_never_panic(peer in any_ip(), forwarded in prop::option::of(text()), real in prop::option::of(text())) {
        let proxies = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        let _ = client_address(peer, forwarded.as_deref(), real.as_deref(), &proxies);
        prop_assert_eq!(client_address(peer, forwarded.as_deref(), real.as_deref(), &[]), Ok(domain::normalize(peer)));
    }

    #[test]
    fn pages_are_bounded(size in any::<i32>(), token in text()) {
        if let Ok(page) = page_request(size, &token) {
            prop_assert!((1..=1000).contains(&page.size));
        }
    }

    #[test]
    fn durations_of_any_size_are_checked(hours in any::<Option<u32>>(), minutes in any::<Option<u32>>(), max in 1u32..=24, offset in -10_000_000i64..10_000_000) {
        match requested(("duration_hours", hours), ("duration_minutes", minutes)) {
            Ok(Some(asked)) => {
                let span = asked.span();
                prop_assert!(span.is_some(), "every u32 of hours or minutes is a span");
                // What ExtendSession does with it: checked, whatever the expiry.
                let expiry = DateTime::<Utc>::from_timestamp(1_800_000_000 + offset * 3600, 0).unwrap_or_default();
                let end = span.and_then(|span| expiry.checked_add_signed(span));
                if asked.within_hours(max) {
                    prop_assert!(end.is_some());
                }
            }
            Ok(None) => prop_assert!(hours.is_none() && minutes.is_none()),
            Err(violation) => prop_assert_eq!(violation.field, "duration_minutes"),
        }
        let _ = Requested::hours("duration_hours", hours.unwrap_or_default()).within_hours(max);
    }

    #[test]
    fn timestamps_convert_or_are_refused(seconds in any::<i64>(), nanos in any::<i32>()) {
        let _ = parse_timestamp("expires_at", &Timestamp { seconds, nanos });
    }

    #[test]
    fn providers_convert_and_validate(provider in provider()) {
        if let Ok(config) = provider_from_pb(provider) {
            let _ = config.validate();
        }
    }

    #[test]
    fn names_ids_masks_and_keys_never_panic(value in text(), paths in prop::collection::vec(text(), 0..4)) {
        let _ = validate_name(&value);
        let _ = normalize_email(&value);
        let _ = require_id("id", &value);
        let _ = parse_api_key(&value);
        let _ = UpdateMask::parse(Some(&FieldMask { paths }), &["name", "description", "provider"]);
    }
}
