//! Cloud scopes: which cloud accounts an organization's resources may act on with the server's
//! cloud identity. The identity can reach every tenant's firewalls; the scopes are what keeps one
//! tenant's resource from naming another's.

use super::ProviderConfig;
use super::Violations;
use serde::{Deserialize, Serialize};

/// Entries per list, so a scope check stays cheap before every provider call.
const MAX_ENTRIES: usize = 100;

/// The accounts, roles and projects an organization's resources may target. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CloudScopes {
    /// Anything the server's identity reaches (a single-tenant install's organization).
    pub unrestricted: bool,
    /// AWS accounts whose roles a resource may assume.
    pub aws_accounts: Vec<String>,
    /// Role ARN patterns a resource may assume; `*` matches any run of characters.
    pub aws_role_arns: Vec<String>,
    pub gcp_projects: Vec<String>,
    pub azure_subscriptions: Vec<String>,
}

impl CloudScopes {
    /// What `portcullis init` gives the organization it makes.
    pub fn unrestricted() -> CloudScopes {
        CloudScopes { unrestricted: true, ..CloudScopes::default() }
    }

    /// Why a resource configured as `config` falls outside these scopes, if it does, with the
    /// config field that puts it there.
    pub fn refusal(&self, config: &ProviderConfig) -> Option<(&'static str, String)> {
        if self.unrestricted {
            return None;
        }
        match config {
            // Nothing leaves the server. (A host's agent must be the organization's own, which
            // the resource service checks.)
            ProviderConfig::Memory(_) | ProviderConfig::HostFirewall(_) => None,
            ProviderConfig::AwsSecurityGroup(group) => match &group.role_arn {
                None => Some((
                    "role_arn",
                    "the organization's AWS resources must assume a role (role_arn) in one of its AWS accounts".into(),
                )),
                Some(arn) => {
                    let account = arn.split(':').nth(4).unwrap_or_default();
                    let granted = self.aws_accounts.iter().any(|a| a == account)
                        || self.aws_role_arns.iter().any(|pattern| glob_matches(pattern, arn));
                    (!granted).then(|| {
                        ("role_arn", format!("role {arn} is outside the organization's AWS accounts and roles"))
                    })
                }
            },
            ProviderConfig::GcpFirewall(firewall) => (!self.gcp_projects.contains(&firewall.project)).then(|| {
                ("project", format!("GCP project {} is outside the organization's projects", firewall.project))
            }),
            ProviderConfig::AzureNetworkSecurityGroup(group) => {
                let subscription = &group.subscription_id;
                let granted = self.azure_subscriptions.iter().any(|s| s.eq_ignore_ascii_case(subscription));
                (!granted).then(|| {
                    (
                        "subscription_id",
                        format!("Azure subscription {subscription} is outside the organization's subscriptions"),
                    )
                })
            }
        }
    }

    /// Field violations of scopes given in a request, under `field`.
    pub fn validate(&self, field: &str, violations: &mut Violations) {
        let lists: [(&str, &Vec<String>, EntryCheck, &str); 4] = [
            ("aws_accounts", &self.aws_accounts, is_aws_account, "must be a 12-digit AWS account id"),
            (
                "aws_role_arns",
                &self.aws_role_arns,
                is_role_pattern,
                "must be an IAM role ARN pattern (arn:aws…:iam::…:role/…)",
            ),
            (
                "gcp_projects",
                &self.gcp_projects,
                is_gcp_project,
                "must be a GCP project id (6-30 lowercase letters, digits, hyphens)",
            ),
            ("azure_subscriptions", &self.azure_subscriptions, is_uuid, "must be an Azure subscription id (a UUID)"),
        ];
        for (name, values, valid, description) in lists {
            if values.len() > MAX_ENTRIES {
                violations.add(format!("{field}.{name}"), format!("must have at most {MAX_ENTRIES} entries"));
            }
            for (index, _) in values.iter().enumerate().filter(|(_, value)| !valid(value)) {
                violations.add(format!("{field}.{name}[{index}]"), description);
            }
        }
    }
}

/// Whether one entry of a scope list is well formed.
type EntryCheck = fn(&str) -> bool;

fn is_aws_account(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

fn is_role_pattern(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    value.len() <= 2048
        && parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[5].starts_with("role/")
}

fn is_gcp_project(value: &str) -> bool {
    (6..=30).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.starts_with(|c: char| c.is_ascii_lowercase())
}

pub(super) fn is_uuid(value: &str) -> bool {
    uuid::Uuid::try_parse(value).is_ok()
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else { return rest.is_empty() };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AwsSecurityGroup, AzureNetworkSecurityGroup, GcpFirewall, MemoryProvider};

    fn aws(role_arn: Option<&str>) -> ProviderConfig {
        ProviderConfig::AwsSecurityGroup(AwsSecurityGroup {
            region: "us-east-1".into(),
            group_id: "sg-1".into(),
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            endpoint_url: None,
            role_arn: role_arn.map(str::to_owned),
            max_rules: None,
        })
    }

    fn gcp(project: &str) -> ProviderConfig {
        ProviderConfig::GcpFirewall(GcpFirewall {
            project: project.into(),
            network: "default".into(),
            protocol: "tcp".into(),
            ports: vec!["22".into()],
            target_tags: Vec::new(),
            target_service_accounts: Vec::new(),
            priority: 1000,
            endpoint_url: None,
        })
    }

    fn azure(subscription_id: &str) -> ProviderConfig {
        ProviderConfig::AzureNetworkSecurityGroup(AzureNetworkSecurityGroup {
            subscription_id: subscription_id.into(),
            resource_group: "rg".into(),
            nsg_name: "nsg".into(),
            protocol: "Tcp".into(),
            destination_port_ranges: vec!["22".into()],
            destination_address_prefix: "*".into(),
            priority_first: 3000,
            priority_last: 3099,
            endpoint_url: None,
        })
    }

    #[test]
    fn scoped_organizations_reach_only_what_they_were_granted() {
        let scopes = CloudScopes {
            aws_accounts: vec!["111122223333".into()],
            aws_role_arns: vec!["arn:aws:iam::444455556666:role/portcullis-*".into()],
            gcp_projects: vec!["acme-prod".into()],
            azure_subscriptions: vec!["6F1C3A52-9D0E-4B8F-A1C2-3D4E5F607182".into()],
            ..CloudScopes::default()
        };
        assert_eq!(scopes.refusal(&aws(Some("arn:aws:iam::111122223333:role/anything"))), None);
        assert_eq!(scopes.refusal(&aws(Some("arn:aws:iam::444455556666:role/portcullis-ssh"))), None);
        assert!(scopes.refusal(&aws(Some("arn:aws:iam::444455556666:role/admin"))).is_some());
        assert!(scopes.refusal(&aws(Some("arn:aws:iam::999999999999:role/portcullis-ssh"))).is_some());
        assert!(scopes.refusal(&aws(None)).is_some(), "the server's own identity is not granted");
        assert_eq!(scopes.refusal(&gcp("acme-prod")), None);
        assert!(scopes.refusal(&gcp("globex-prod")).is_some());
        assert_eq!(scopes.refusal(&azure("6f1c3a52-9d0e-4b8f-a1c2-3d4e5f607182")), None, "ids compare in any case");
        assert!(scopes.refusal(&azure("00000000-0000-0000-0000-000000000000")).is_some());
        assert_eq!(scopes.refusal(&ProviderConfig::Memory(MemoryProvider::default())), None);
        assert_eq!(CloudScopes::default().refusal(&ProviderConfig::Memory(MemoryProvider::default())), None);
        assert_eq!(CloudScopes::unrestricted().refusal(&aws(None)), None);
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_matches("a*c", "abbbc"));
        assert!(glob_matches("a*c", "ac"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxcyyb"));
        assert!(!glob_matches("abc", "abcd"));
        assert!(!glob_matches("a*bc", "abc-bc-x"));
        assert!(glob_matches("a*bc", "abc-bc"));
    }

    #[test]
    fn malformed_scopes_are_named() {
        let scopes = CloudScopes {
            aws_accounts: vec!["12345".into()],
            aws_role_arns: vec!["arn:aws:s3:::bucket".into()],
            gcp_projects: vec!["Acme".into()],
            azure_subscriptions: vec!["nope".into()],
            ..CloudScopes::default()
        };
        let mut violations = Violations::default();
        scopes.validate("cloud_scopes", &mut violations);
        let fields: Vec<String> = violations.0.into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "cloud_scopes.aws_accounts[0]",
                "cloud_scopes.aws_role_arns[0]",
                "cloud_scopes.gcp_projects[0]",
                "cloud_scopes.azure_subscriptions[0]"
            ]
        );
    }
}
