use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where a resource's firewall lives and how to reach it. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Memory(MemoryProvider),
    AwsSecurityGroup(AwsSecurityGroup),
    GcpFirewall(GcpFirewall),
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
        }
    }

    /// [`ProviderConfig::kind`] of the in-memory provider.
    pub const MEMORY: &'static str = "memory";
    /// [`ProviderConfig::kind`] of AWS security groups (Cargo feature `aws`).
    pub const AWS: &'static str = "aws";
    /// [`ProviderConfig::kind`] of GCP firewall rules (Cargo feature `gcp`).
    pub const GCP: &'static str = "gcp";

    /// The provider's short name, as used in logs and Cargo features.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Memory(_) => Self::MEMORY,
            ProviderConfig::AwsSecurityGroup(_) => Self::AWS,
            ProviderConfig::GcpFirewall(_) => Self::GCP,
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
        if self.ports.iter().any(|p| !is_port_or_range(p)) {
            errors.push(("ports", "each must be a port (22) or a range (5432-5433)".to_owned()));
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
    if let Some(url) = endpoint_url
        && !is_http_url(url)
    {
        errors.push(("endpoint_url", "must be an http:// or https:// URL".to_owned()));
    }
}

fn is_http_url(value: &str) -> bool {
    (value.starts_with("http://") || value.starts_with("https://")) && !value.chars().any(char::is_whitespace)
}

fn is_port_or_range(value: &str) -> bool {
    let port = |s: &str| s.parse::<u16>().is_ok_and(|p| p > 0);
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
        assert!(is_port_or_range("22"));
        assert!(is_port_or_range("5432-5433"));
        assert!(!is_port_or_range("0"));
        assert!(!is_port_or_range("9-8"));
        assert!(!is_port_or_range("ssh"));
    }
}
