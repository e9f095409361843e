use super::{Role, named_enum};
use std::fmt;
use std::str::FromStr;

named_enum!(
    /// A capability an API key may carry. A user's role grants a set of them; a key grants
    /// at most what its user's role grants.
    Permission {
        SessionsRead => "sessions:read",
        SessionsWrite => "sessions:write",
        ResourcesRead => "resources:read",
        ResourcesWrite => "resources:write",
        UsersRead => "users:read",
        UsersWrite => "users:write",
        AuditRead => "audit:read",
        WebhooksWrite => "webhooks:write",
        /// Approving or denying sessions waiting for approval (whom the resources' policies name).
        ApprovalsWrite => "approvals:write",
        /// Sessions started with an API key carrying it skip approval (CI, break-glass); only
        /// admins hold it, and a login never uses it.
        SessionsAutoApprove => "sessions:auto-approve",
        /// Creating, listing and revoking host agents (admins).
        AgentsWrite => "agents:write",
    }
);

impl Permission {
    /// Whether `role` grants this permission. Operators hold none: they act on organizations
    /// only through the RPCs the policy opens to them.
    pub fn granted_to(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::User => {
                matches!(
                    self,
                    Permission::SessionsRead
                        | Permission::SessionsWrite
                        | Permission::ResourcesRead
                        | Permission::ApprovalsWrite
                )
            }
            Role::Operator => false,
        }
    }

    /// The permissions holding this one brings along: writing users includes reading them.
    pub fn implied(self) -> &'static [Permission] {
        match self {
            Permission::UsersWrite => &[Permission::UsersRead],
            _ => &[],
        }
    }

    /// `granted` with what it implies, each once.
    pub fn with_implied(granted: &[Permission]) -> Vec<Permission> {
        Permission::ALL.iter().copied().filter(|p| granted.iter().any(|g| g == p || g.implied().contains(p))).collect()
    }

    /// Every permission `role` grants.
    pub fn for_role(role: Role) -> Vec<Permission> {
        Permission::ALL.iter().copied().filter(|p| p.granted_to(role)).collect()
    }

    /// Permissions a key holds only when it names them: never a login's, nor part of "all".
    pub const EXPLICIT_ONLY: &'static [Permission] = &[Permission::SessionsAutoApprove];

    /// What `role` holds acting as itself (a login): the role's permissions but those a key
    /// must name.
    pub fn for_login(role: Role) -> Vec<Permission> {
        let mut held = Permission::for_role(role);
        held.retain(|p| !Permission::EXPLICIT_ONLY.contains(p));
        held
    }

    /// What a user of `role` holds acting through a key that grants `key` (None: as themselves,
    /// a login): the role's permissions, narrowed by the key's (with what they imply).
    pub fn held(role: Role, key: Option<&[Permission]>) -> Vec<Permission> {
        let Some(key) = key else { return Permission::for_login(role) };
        let mut held = Permission::for_role(role);
        let granted = Permission::with_implied(key);
        held.retain(|p| granted.contains(p));
        held
    }

    /// The permission that reads what an audit event (and the webhook event of the same name)
    /// tells, across the organization: sessions and rules are every member's (`users:read`),
    /// resources every one, assigned or not (`resources:write`), keys those of other users too
    /// (`users:write`). `audit:read` reads them all (the audit trail holds every one).
    pub fn to_see_event(event_type: &str) -> Permission {
        match event_type.split('.').next().unwrap_or_default() {
            "resource" => Permission::ResourcesWrite,
            "api_key" => Permission::UsersWrite,
            "webhook" => Permission::WebhooksWrite,
            // Sessions, rules, users, logins, the organization: what members do.
            _ => Permission::UsersRead,
        }
    }

    /// Whether holding `held` reads events of `event_type` (see [`Permission::to_see_event`]).
    pub fn sees_event(held: &[Permission], event_type: &str) -> bool {
        held.contains(&Permission::AuditRead) || held.contains(&Permission::to_see_event(event_type))
    }

    /// Encodes a set of permissions for storage: names separated by single spaces.
    pub fn join(permissions: &[Permission]) -> String {
        permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// Decodes [`Permission::join`]'s output; unknown names (from a newer version) are skipped.
    pub fn split(stored: &str) -> Vec<Permission> {
        stored.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_approval_is_never_implied() {
        assert!(!Permission::for_login(Role::Admin).contains(&Permission::SessionsAutoApprove));
        assert!(!Permission::held(Role::Admin, None).contains(&Permission::SessionsAutoApprove));
        let named = Permission::held(Role::Admin, Some(&[Permission::SessionsAutoApprove]));
        assert_eq!(named, [Permission::SessionsAutoApprove], "a key that names it holds it");
        assert!(Permission::held(Role::User, Some(&[Permission::SessionsAutoApprove])).is_empty());
    }

    #[test]
    fn users_cannot_administer() {
        assert!(Permission::SessionsWrite.granted_to(Role::User));
        assert!(!Permission::ResourcesWrite.granted_to(Role::User));
        assert!(!Permission::UsersWrite.granted_to(Role::User));
        assert!(!Permission::AuditRead.granted_to(Role::User));
        assert_eq!(Permission::for_role(Role::Admin), Permission::ALL);
        assert!(Permission::for_role(Role::Operator).is_empty());
    }

    #[test]
    fn writing_users_includes_reading_them() {
        let granted = Permission::with_implied(&[Permission::UsersWrite, Permission::SessionsRead]);
        assert_eq!(granted, vec![Permission::SessionsRead, Permission::UsersRead, Permission::UsersWrite]);
        assert_eq!(Permission::with_implied(&[Permission::UsersRead]), vec![Permission::UsersRead]);
    }

    #[test]
    fn storage_round_trip() {
        let stored = Permission::join(&[Permission::SessionsRead, Permission::AuditRead]);
        assert_eq!(stored, "sessions:read audit:read");
        assert_eq!(Permission::split(&stored), vec![Permission::SessionsRead, Permission::AuditRead]);
        assert_eq!("users:write".parse(), Ok(Permission::UsersWrite));
        assert!("users:delete".parse::<Permission>().is_err());
    }
}
