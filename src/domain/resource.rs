use super::ProviderKind;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where a resource's firewall lives and how to reach it. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Memory(MemoryProvider),
    AwsSecurityGroup(AwsSecurityGroup),
    GcpFirewall(GcpFirewall),
    AzureNetworkSecurityGroup(AzureNetworkSecurityGroup),
    HostFirewall(HostFirewall),
}

/// Ports on a Linux host, opened by the host's agent in its nftables table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFirewall {
    pub agent_id: String,
    pub protocol: String,
    pub ports: Vec<u16>,
}

/// Rules kept in the server's memory, with optional latency and failure injection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryProvider {
    pub latency_ms: u32,
    pub fail_addresses: Vec<IpAddr>,
    #[serde(default)]
    pub transient_failures: u32,
}

/// An EC2 security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSecurityGroup {
    pub region: String,
    pub group_id: String,
    pub protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    /// Ingress rules the group may hold per address family; `None` means the AWS default.
    #[serde(default)]
    pub max_rules: Option<u32>,
}

/// GCP VPC firewall rules on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcpFirewall {
    pub project: String,
    pub network: String,
    pub protocol: String,
    pub ports: Vec<String>,
    pub target_tags: Vec<String>,
    pub target_service_accounts: Vec<String>,
    pub priority: u16,
    pub endpoint_url: Option<String>,
}

/// An Azure network security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureNetworkSecurityGroup {
    pub subscription_id: String,
    pub resource_group: String,
    pub nsg_name: String,
    /// As Azure spells it: `Tcp`, `Udp`, `Icmp`, `Esp`, `Ah` or `*`.
    pub protocol: String,
    pub destination_port_ranges: Vec<String>,
    pub destination_address_prefix: String,
    /// The priorities our rules may take, both ends included.
    pub priority_first: u16,
    pub priority_last: u16,
    pub endpoint_url: Option<String>,
}

impl ProviderConfig {
    /// Whether rules opened under `self` are exactly the rules `other` would open: the same
    /// firewall and the same grant. Settings that only tune how Portcullis works (the memory
    /// provider's injections, an AWS quota) may differ; anything else would leave live rules
    /// where removal no longer looks, or granting what their sessions never asked for.
    pub fn opens_same_rules_as(&self, other: &ProviderConfig) -> bool {
        match (self, other) {
            (ProviderConfig::Memory(_), ProviderConfig::Memory(_)) => true,
            (ProviderConfig::AwsSecurityGroup(a), ProviderConfig::AwsSecurityGroup(b)) => {
                AwsSecurityGroup { max_rules: None, ..a.clone() } == AwsSecurityGroup { max_rules: None, ..b.clone() }
            }
            (a, b) => a == b,
        }
    }

    /// Where the provider's calls go instead of the cloud's default endpoint, if anywhere.
    pub fn endpoint_url(&self) -> Option<&str> {
        match self {
            ProviderConfig::Memory(_) => None,
            ProviderConfig::AwsSecurityGroup(aws) => aws.endpoint_url.as_deref(),
            ProviderConfig::GcpFirewall(gcp) => gcp.endpoint_url.as_deref(),
            ProviderConfig::AzureNetworkSecurityGroup(azure) => azure.endpoint_url.as_deref(),
            ProviderConfig::HostFirewall(_) => None,
        }
    }

    /// The same, its endpoint (if any) written as the plain origin it names, so every spelling
    /// of one endpoint is stored, compared and keyed alike. An endpoint that is no origin stays
    /// as it is (validation refuses it).
    pub fn with_plain_endpoint(mut self) -> ProviderConfig {
        let endpoint = match &mut self {
            ProviderConfig::Memory(_) => None,
            ProviderConfig::AwsSecurityGroup(aws) => aws.endpoint_url.as_mut(),
            ProviderConfig::GcpFirewall(gcp) => gcp.endpoint_url.as_mut(),
            ProviderConfig::AzureNetworkSecurityGroup(azure) => azure.endpoint_url.as_mut(),
            ProviderConfig::HostFirewall(_) => None,
        };
        if let Some(endpoint) = endpoint
            && let Ok(origin) = super::plain_origin(endpoint)
        {
            *endpoint = origin;
        }
        self
    }

    /// Checks the fields: the provider message's name in the API, and each error with the field
    /// relative to that message.
    pub fn validate(&self) -> (&'static str, Vec<(&'static str, String)>) {
        match self {
            ProviderConfig::Memory(memory) => ("memory", memory.validate()),
            ProviderConfig::AwsSecurityGroup(aws) => ("aws_security_group", aws.validate()),
            ProviderConfig::GcpFirewall(gcp) => ("gcp_firewall", gcp.validate()),
            ProviderConfig::AzureNetworkSecurityGroup(azure) => ("azure_network_security_group", azure.validate()),
            ProviderConfig::HostFirewall(host) => ("host_firewall", host.validate()),
        }
    }

    /// Which provider opens the rules.
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::Memory(_) => ProviderKind::Memory,
            ProviderConfig::AwsSecurityGroup(_) => ProviderKind::Aws,
            ProviderConfig::GcpFirewall(_) => ProviderKind::Gcp,
            ProviderConfig::AzureNetworkSecurityGroup(_) => ProviderKind::Azure,
            ProviderConfig::HostFirewall(_) => ProviderKind::Host,
        }
    }
}

impl MemoryProvider {
    /// The longest injected latency: enough to show a slow firewall, not to park a worker.
    pub const MAX_LATENCY_MS: u32 = 60_000;
    /// The most injected transient failures.
    pub const MAX_TRANSIENT_FAILURES: u32 = 1_000;

    /// Checks the fields; each error names the field relative to the provider message.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.latency_ms > Self::MAX_LATENCY_MS {
            errors.push(("latency_ms", format!("must be at most {}", Self::MAX_LATENCY_MS)));
        }
        if self.transient_failures > Self::MAX_TRANSIENT_FAILURES {
            errors.push(("transient_failures", format!("must be at most {}", Self::MAX_TRANSIENT_FAILURES)));
        }
        errors
    }
}

const AWS_PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "icmpv6", "-1"];
const GCP_PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "sctp", "all"];

impl AwsSecurityGroup {
    /// The AWS default quota of inbound rules per security group and address family.
    pub const DEFAULT_MAX_RULES: u32 = 60;

    pub fn max_rules(&self) -> u32 {
        self.max_rules.unwrap_or(Self::DEFAULT_MAX_RULES)
    }

    /// Checks the fields; each error names the field relative to the provider message.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if !is_token(&self.region) {
            errors.push(("region", "must be an AWS region such as eu-west-1".to_owned()));
        }
        if !self.group_id.starts_with("sg-") || !is_token(&self.group_id) {
            errors.push(("group_id", "must be a security group id such as sg-0123456789abcdef0".to_owned()));
        }
        if !AWS_PROTOCOLS.contains(&self.protocol.as_str()) {
            errors.push(("protocol", format!("must be one of {}", AWS_PROTOCOLS.join(", "))));
        }
        if self.from_port > self.to_port {
            errors.push(("to_port", "must not be below from_port".to_owned()));
        }
        check_endpoint(&self.endpoint_url, &mut errors);
        if let Some(arn) = &self.role_arn
            && !arn.starts_with("arn:")
        {
            errors.push(("role_arn", "must be an IAM role ARN".to_owned()));
        }
        if self.max_rules.is_some_and(|max| !(1..=1000).contains(&max)) {
            errors.push(("max_rules", "must be between 1 and 1000".to_owned()));
        }
        errors
    }
}

impl GcpFirewall {
    /// Checks the fields; each error names the field relative to the provider message.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if !is_token(&self.project) {
            errors.push(("project", "must be a GCP project id".to_owned()));
        }
        if !is_token(&self.network) && !self.network.contains("/networks/") {
            errors.push(("network", "must be a network name or URL".to_owned()));
        }
        if !GCP_PROTOCOLS.contains(&self.protocol.as_str()) {
            errors.push(("protocol", format!("must be one of {}", GCP_PROTOCOLS.join(", "))));
        }
        if self.ports.iter().any(|p| !is_port_or_range(p, 1)) {
            errors.push(("ports", "each must be a port (22) or a range (5432-5433)".to_owned()));
        }
        check_endpoint(&self.endpoint_url, &mut errors);
        errors
    }
}

impl HostFirewall {
    pub const PROTOCOLS: &'static [&'static str] = &["tcp", "udp"];
    /// The most ports one host resource opens.
    pub const MAX_PORTS: usize = 32;

    /// Checks the fields; each error names the field relative to the provider message. (That
    /// the agent exists in the organization is the service's to check.)
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.agent_id.trim().is_empty() {
            errors.push(("agent_id", "is required".to_owned()));
        }
        if !Self::PROTOCOLS.contains(&self.protocol.as_str()) {
            errors.push(("protocol", format!("must be one of {}", Self::PROTOCOLS.join(", "))));
        }
        let mut distinct = self.ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if self.ports.is_empty() || self.ports.len() > Self::MAX_PORTS {
            errors.push(("ports", format!("must name from 1 to {} ports", Self::MAX_PORTS)));
        } else if self.ports.contains(&0) {
            errors.push(("ports", "each must be from 1 to 65535".to_owned()));
        } else if distinct.len() != self.ports.len() {
            errors.push(("ports", "must not repeat a port".to_owned()));
        }
        errors
    }
}

impl AzureNetworkSecurityGroup {
    /// Protocols as Azure spells them.
    pub const PROTOCOLS: &'static [&'static str] = &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"];
    /// Priorities Azure accepts for a security rule.
    pub const PRIORITIES: std::ops::RangeInclusive<u16> = 100..=4096;
    /// Our rules' priorities unless the resource names others.
    pub const DEFAULT_PRIORITIES: (u16, u16) = (3000, 3099);

    /// Azure's spelling of a protocol given in any case (`tcp` → `Tcp`), if it is one.
    pub fn protocol_named(name: &str) -> Option<&'static str> {
        Self::PROTOCOLS.iter().copied().find(|known| known.eq_ignore_ascii_case(name))
    }

    /// Checks the fields; each error names the field relative to the provider message.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if !super::scope::is_uuid(&self.subscription_id) {
            errors.push(("subscription_id", "must be an Azure subscription id (a UUID)".to_owned()));
        }
        // Azure's own rules for the names (resource groups may hold parentheses, and neither
        // may end with a period).
        let named = |value: &str, max: usize, extra: &[char]| {
            !value.is_empty()
                && value.len() <= max
                && !value.ends_with('.')
                && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(&c))
        };
        if !named(&self.resource_group, 90, &['(', ')']) {
            errors.push(("resource_group", "must be a resource group name (letters, digits, -_.() up to 90)".into()));
        }
        if !named(&self.nsg_name, 80, &[]) {
            errors.push(("nsg_name", "must be a network security group name (letters, digits, -_. up to 80)".into()));
        }
        if !Self::PROTOCOLS.contains(&self.protocol.as_str()) {
            errors.push(("protocol", format!("must be one of {}", Self::PROTOCOLS.join(", "))));
        }
        // Azure takes port 0 where GCP does not.
        let range_ok = |value: &str| value == "*" || is_port_or_range(value, 0);
        if self.destination_port_ranges.is_empty() || !self.destination_port_ranges.iter().all(|r| range_ok(r)) {
            errors.push(("destination_port_ranges", "each must be *, a port (22) or a range (5432-5433)".into()));
        }
        if self.destination_address_prefix.is_empty()
            || self.destination_address_prefix.len() > 128
            || self.destination_address_prefix.chars().any(char::is_whitespace)
        {
            errors.push(("destination_address_prefix", "must be *, an address, a CIDR or a service tag".into()));
        }
        let priorities = Self::PRIORITIES;
        if !priorities.contains(&self.priority_first)
            || !priorities.contains(&self.priority_last)
            || self.priority_first > self.priority_last
        {
            errors.push((
                "priority_range",
                format!(
                    "first and last must lie in {}..{}, first not above last",
                    priorities.start(),
                    priorities.end()
                ),
            ));
        }
        check_endpoint(&self.endpoint_url, &mut errors);
        errors
    }
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn check_endpoint(endpoint_url: &Option<String>, errors: &mut Vec<(&'static str, String)>) {
    if let Some(Err(why)) = endpoint_url.as_deref().map(super::plain_origin) {
        errors.push(("endpoint_url", why.to_string()));
    }
}

/// Whether `value` is a port no lower than `lowest` (22) or a range of them (5432-5433).
fn is_port_or_range(value: &str, lowest: u16) -> bool {
    let port = |s: &str| s.parse::<u16>().is_ok_and(|p| p >= lowest);
    match value.split_once('-') {
        Some((from, to)) => port(from) && port(to) && from.parse::<u16>().ok() <= to.parse::<u16>().ok(),
        None => port(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> AwsSecurityGroup {
        AwsSecurityGroup {
            region: "eu-west-1".into(),
            group_id: "sg-0123".into(),
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            endpoint_url: None,
            role_arn: None,
            max_rules: None,
        }
    }

    #[test]
    fn aws_config_is_checked_field_by_field() {
        assert!(aws().validate().is_empty());
        let bad = AwsSecurityGroup { group_id: "0123".into(), from_port: 23, protocol: "ssh".into(), ..aws() };
        let fields: Vec<_> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["group_id", "protocol", "to_port"]);
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = ProviderConfig::AwsSecurityGroup(aws());
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""kind":"aws_security_group""#));
        assert_eq!(serde_json::from_str::<ProviderConfig>(&json).unwrap(), config);
    }

    #[test]
    fn only_tuning_settings_keep_the_same_rules() {
        let group = ProviderConfig::AwsSecurityGroup(aws());
        let quota = ProviderConfig::AwsSecurityGroup(AwsSecurityGroup { max_rules: Some(100), ..aws() });
        assert!(group.opens_same_rules_as(&quota));
        for other in [
            AwsSecurityGroup { group_id: "sg-0456".into(), ..aws() },
            AwsSecurityGroup { to_port: 23, ..aws() },
            AwsSecurityGroup { region: "us-east-1".into(), ..aws() },
            AwsSecurityGroup { endpoint_url: Some("https://ec2.example.com".into()), ..aws() },
            AwsSecurityGroup { role_arn: Some("arn:aws:iam::1:role/x".into()), ..aws() },
        ] {
            assert!(!group.opens_same_rules_as(&ProviderConfig::AwsSecurityGroup(other)));
        }
        let memory = ProviderConfig::Memory(MemoryProvider::default());
        assert!(!group.opens_same_rules_as(&memory));
        assert!(
            memory.opens_same_rules_as(&ProviderConfig::Memory(MemoryProvider { latency_ms: 5, ..Default::default() }))
        );
    }

    #[test]
    fn gcp_ports_accept_ports_and_ranges_only() {
        assert!(is_port_or_range("22", 1));
        assert!(is_port_or_range("5432-5433", 1));
        assert!(!is_port_or_range("0", 1));
        assert!(!is_port_or_range("9-8", 1));
        assert!(!is_port_or_range("ssh", 1));
        assert!(is_port_or_range("0", 0), "Azure's lowest port");
    }
}
