//! The authorization policy: every RPC of every `portcullis.v1` service and who may make it.
//! [`AuthLayer`](super::auth::AuthLayer) admits each call by its entry before the handler runs;
//! a method missing here is refused, and a test checks the table against the descriptor set.

use crate::domain::Permission::{
    AgentsWrite, ApprovalsWrite, AuditRead, ResourcesRead, ResourcesWrite, SessionsRead, SessionsWrite, UsersRead,
    UsersWrite, WebhooksWrite,
};
use crate::domain::Rule;

/// Services outside `portcullis.v1` that are served to anyone.
pub const PUBLIC_SERVICES: &[&str] =
    &["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// `(service, method, rule)`; services are named without the `portcullis.v1.` package.
pub const POLICY: &[(&str, &str, Rule)] = &[
    ("AuthService", "StartLogin", Rule::Public),
    ("AuthService", "VerifyLogin", Rule::Public),
    ("AuthService", "StartSsoLogin", Rule::Public),
    ("AuthService", "WaitSsoLogin", Rule::Public),
    ("AuthService", "GetCurrentLogin", Rule::own(None)),
    ("AuthService", "ListLoginSessions", Rule::own(None)),
    ("AuthService", "ExtendLoginSession", Rule::own(None)),
    ("AuthService", "CloseLoginSession", Rule::own(None)),
    ("AuthService", "CreateApiKey", Rule::own(None)),
    ("AuthService", "ListApiKeys", Rule::own(None)),
    ("AuthService", "RevokeApiKey", Rule::own_or_others(None, UsersWrite)),
    ("SessionService", "StartSession", Rule::own(Some(SessionsWrite))),
    ("SessionService", "GetSession", Rule::own_or_others(Some(SessionsRead), UsersRead)),
    ("SessionService", "ListSessions", Rule::own_or_others(Some(SessionsRead), UsersRead)),
    ("SessionService", "StopSession", Rule::own_or_others(Some(SessionsWrite), UsersWrite)),
    ("SessionService", "ExtendSession", Rule::own_or_others(Some(SessionsWrite), UsersWrite)),
    ("SessionService", "WatchSession", Rule::own_or_others(Some(SessionsRead), UsersRead)),
    ("SessionService", "GetClientAddress", Rule::own(None)),
    ("SessionService", "ChangeSessionAddress", Rule::own_or_others(Some(SessionsWrite), UsersWrite)),
    ("ResourceIpService", "GetResourceIp", Rule::own_or_others(Some(SessionsRead), UsersRead)),
    ("ResourceIpService", "ListResourceIps", Rule::own_or_others(Some(SessionsRead), UsersRead)),
    ("ResourceIpService", "RetryResourceIp", Rule::own_or_others(Some(SessionsWrite), UsersWrite)),
    ("ResourceService", "CreateResource", Rule::organization(ResourcesWrite)),
    ("ResourceService", "GetResource", Rule::own_or_others(Some(ResourcesRead), ResourcesWrite)),
    ("ResourceService", "ListResources", Rule::own_or_others(Some(ResourcesRead), ResourcesWrite)),
    ("ResourceService", "UpdateResource", Rule::organization(ResourcesWrite)),
    ("ResourceService", "DeleteResource", Rule::organization(ResourcesWrite)),
    ("ResourceService", "AssignResource", Rule::organization(ResourcesWrite)),
    ("ResourceService", "UnassignResource", Rule::organization(ResourcesWrite)),
    ("ResourceService", "CheckResource", Rule::organization(ResourcesWrite)),
    ("UserService", "CreateUser", Rule::organization(UsersWrite)),
    ("UserService", "GetUser", Rule::own_or_others(None, UsersRead)),
    ("UserService", "GetCurrentUser", Rule::own(None)),
    ("UserService", "UpdateCurrentUser", Rule::own(None)),
    ("UserService", "ListUsers", Rule::organization(UsersRead)),
    ("UserService", "UpdateUser", Rule::organization(UsersWrite)),
    ("UserService", "DisableUser", Rule::organization(UsersWrite)),
    ("UserService", "UnlockUser", Rule::organization(UsersWrite)),
    ("OrganizationService", "GetOrganization", Rule::own(None).while_suspended().and_operators()),
    ("OrganizationService", "UpdateOrganization", Rule::organization(UsersWrite).and_operators()),
    ("OrganizationService", "CreateOrganization", Rule::OPERATOR),
    ("OrganizationService", "ListOrganizations", Rule::OPERATOR),
    ("OrganizationService", "SuspendOrganization", Rule::OPERATOR),
    ("OrganizationService", "ResumeOrganization", Rule::OPERATOR),
    ("AuditService", "ListAuditEvents", Rule::organization(AuditRead)),
    ("ApprovalService", "ListApprovalRequests", Rule::organization(ApprovalsWrite)),
    ("ApprovalService", "ApproveSession", Rule::organization(ApprovalsWrite)),
    ("ApprovalService", "DenySession", Rule::organization(ApprovalsWrite)),
    ("AgentService", "CreateAgent", Rule::organization(AgentsWrite)),
    ("AgentService", "ListAgents", Rule::organization(AgentsWrite)),
    ("AgentService", "RevokeAgent", Rule::organization(AgentsWrite)),
    ("AgentService", "Connect", Rule::Agent),
    ("IdentityProviderService", "CreateIdentityProvider", Rule::organization(UsersWrite).and_operators()),
    ("IdentityProviderService", "GetIdentityProvider", Rule::organization(UsersWrite).and_operators()),
    ("IdentityProviderService", "ListIdentityProviders", Rule::organization(UsersWrite).and_operators()),
    ("IdentityProviderService", "UpdateIdentityProvider", Rule::organization(UsersWrite).and_operators()),
    ("IdentityProviderService", "DeleteIdentityProvider", Rule::organization(UsersWrite).and_operators()),
    ("WebhookService", "CreateWebhook", Rule::organization(WebhooksWrite)),
    ("WebhookService", "GetWebhook", Rule::organization(WebhooksWrite)),
    ("WebhookService", "ListWebhooks", Rule::organization(WebhooksWrite)),
    ("WebhookService", "UpdateWebhook", Rule::organization(WebhooksWrite)),
    ("WebhookService", "DeleteWebhook", Rule::organization(WebhooksWrite)),
    ("WebhookService", "RotateWebhookSecret", Rule::organization(WebhooksWrite)),
    ("WebhookService", "ListWebhookDeliveries", Rule::organization(WebhooksWrite)),
    ("WebhookService", "RedeliverWebhook", Rule::organization(WebhooksWrite)),
];

/// The rule for a request path (`/package.Service/Method`): `Some(Rule::Public)` for the public
/// services and the HTTP pages beside them ([`crate::web::PATHS`]), `None` for a method the policy does not know (refused).
pub fn rule_for(path: &str) -> Option<Rule> {
    if crate::web::PATHS.contains(&path) {
        return Some(Rule::Public);
    }
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if PUBLIC_SERVICES.contains(&service) {
        return Some(Rule::Public);
    }
    let service = service.strip_prefix("portcullis.v1.")?;
    POLICY.iter().find(|(s, m, _)| *s == service && *m == method).map(|(_, _, rule)| *rule)
}

/// The methods of [`PUBLIC_SERVICES`].
const PUBLIC_METHODS: &[&str] = &["Check", "Watch", "ServerReflectionInfo"];

/// A path's `(service, method)` as names of this table (full service names), or `"unknown"` for
/// what this server does not serve: metrics label calls by them, so a caller inventing paths
/// cannot grow the number of series.
pub fn names_of(path: &str) -> (&'static str, &'static str) {
    const UNKNOWN: (&str, &str) = ("unknown", "unknown");
    let Some((service, method)) = path.strip_prefix('/').and_then(|path| path.split_once('/')) else {
        return UNKNOWN;
    };
    if let Some(public) = PUBLIC_SERVICES.iter().find(|public| **public == service) {
        return PUBLIC_METHODS.iter().find(|known| **known == method).map_or(UNKNOWN, |method| (public, method));
    }
    let Some(short) = service.strip_prefix("portcullis.v1.") else {
        return UNKNOWN;
    };
    let Some(full) = super::SERVICE_NAMES.iter().find(|full| full.strip_prefix("portcullis.v1.") == Some(short)) else {
        return UNKNOWN;
    };
    POLICY.iter().find(|(s, m, _)| *s == short && *m == method).map_or(UNKNOWN, |(_, method, _)| (*full, *method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the descriptor set, as `(service, method)`.
    fn described_methods() -> Vec<(String, String)> {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "portcullis.v1") {
            for service in &file.service {
                for method in &service.method {
                    methods.push((service.name().to_owned(), method.name().to_owned()));
                }
            }
        }
        methods
    }

    /// A new RPC without an entry fails here, and so does an entry whose RPC is gone.
    #[test]
    fn every_rpc_has_exactly_one_entry() {
        let described = described_methods();
        assert!(described.len() > 30, "the descriptor set lists {} methods", described.len());
        for (service, method) in &described {
            let entries = POLICY.iter().filter(|(s, m, _)| s == service && m == method).count();
            assert_eq!(entries, 1, "{service}/{method} has {entries} policy entries");
        }
        for (service, method, _) in POLICY {
            assert!(
                described.iter().any(|(s, m)| s == service && m == method),
                "the policy names {service}/{method}, which the API does not have"
            );
        }
    }

    #[test]
    fn only_served_paths_have_names() {
        assert_eq!(
            names_of("/portcullis.v1.SessionService/StartSession"),
            ("portcullis.v1.SessionService", "StartSession")
        );
        assert_eq!(names_of("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        for invented in
            ["/portcullis.v1.SessionService/Invented", "/portcullis.v1.Nothing/StartSession", "/x", "", "//"]
        {
            assert_eq!(names_of(invented), ("unknown", "unknown"), "{invented}");
        }
        // Every service of the server is named by its full name.
        for service in super::super::SERVICE_NAMES {
            let short = service.strip_prefix("portcullis.v1.").unwrap();
            let (_, method, _) = POLICY.iter().find(|(s, _, _)| *s == short).unwrap();
            assert_eq!(names_of(&format!("/{service}/{method}")), (*service, *method));
        }
    }

    #[test]
    fn paths_find_their_rule() {
        assert_eq!(rule_for("/portcullis.v1.AuthService/StartLogin"), Some(Rule::Public));
        assert_eq!(rule_for("/grpc.health.v1.Health/Check"), Some(Rule::Public));
        assert_eq!(rule_for("/portcullis.v1.UserService/ListUsers"), Some(Rule::organization(UsersRead)));
        assert_eq!(rule_for("/portcullis.v1.UserService/DropUsers"), None);
        assert_eq!(rule_for("/other.v1.UserService/ListUsers"), None);
        assert_eq!(rule_for("garbage"), None);
    }
}
