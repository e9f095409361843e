//! An organization's OpenID Connect identity provider as an admin writes it, checked field by
//! field (violations named by the API's field paths) before anything is fetched or stored.

use super::{Invalid, Role, Violations, is_valid_id, plain_origin, validate_name};

/// Requested when an admin names no scopes.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];
/// The claim groups are read from when an admin names none.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
const MAX_TEXT: usize = 255;
const MAX_SECRET: usize = 1024;
const MAX_ITEMS: usize = 100;

/// One group's grant: a role and resources while its members are in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMapping {
    pub group: String,
    pub role: Role,
    pub resource_ids: Vec<String>,
}

/// The settings of an identity provider, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProviderSpec {
    pub display_name: String,
    pub issuer_url: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub allowed_email_domains: Vec<String>,
    pub group_mappings: Vec<GroupMapping>,
    pub jit_users: bool,
    pub sso_required: bool,
}

/// An identity provider as a request states it, before checking.
#[derive(Debug, Clone, Default)]
pub struct IdentityProviderInput<'a> {
    pub display_name: &'a str,
    pub issuer_url: &'a str,
    pub client_id: &'a str,
    pub scopes: &'a [String],
    pub groups_claim: &'a str,
    pub allowed_email_domains: &'a [String],
    /// (group, role, resource ids); a role the API does not know is `None`.
    pub group_mappings: Vec<(&'a str, Option<Role>, &'a [String])>,
    pub jit_users: bool,
    pub sso_required: bool,
}

impl IdentityProviderSpec {
    /// Checks `input`, recording each problem under `prefix` (for example `identity_provider`).
    /// `private_issuer` says whether the operator allows the issuer plain http or a private
    /// address (`sso.allowed_private_issuers`).
    pub fn check(
        input: &IdentityProviderInput<'_>,
        prefix: &str,
        private_issuer: bool,
        violations: &mut Violations,
    ) -> Option<IdentityProviderSpec> {
        let field = |name: &str| format!("{prefix}.{name}");
        let display_name = violations.check(&field("display_name"), validate_name(input.display_name));
        let issuer_url = violations.check(&field("issuer_url"), check_issuer(input.issuer_url, private_issuer));
        let client_id = violations.check(&field("client_id"), check_token_text(input.client_id, "a client id"));
        let scopes = violations.check(&field("scopes"), check_scopes(input.scopes));
        let groups_claim = violations.check(&field("groups_claim"), check_groups_claim(input.groups_claim));
        let allowed_email_domains =
            violations.check(&field("allowed_email_domains"), check_domains(input.allowed_email_domains));
        let mut group_mappings = Vec::new();
        if input.group_mappings.len() > MAX_ITEMS {
            violations.add(field("group_mappings"), format!("at most {MAX_ITEMS} mappings"));
        }
        for (index, (group, role, resource_ids)) in input.group_mappings.iter().enumerate() {
            let at = |name: &str| format!("{prefix}.group_mappings[{index}].{name}");
            let group = violations.check(&at("group"), check_token_text(group, "a group name"));
            let role = violations.check(&at("role"), check_mapped_role(*role));
            let resource_ids = violations.check(&at("resource_ids"), check_resource_ids(resource_ids));
            if let (Some(group), Some(role), Some(resource_ids)) = (group, role, resource_ids) {
                group_mappings.push(GroupMapping { group, role, resource_ids });
            }
        }
        let mut groups: Vec<&str> = group_mappings.iter().map(|mapping| mapping.group.as_str()).collect();
        groups.sort_unstable();
        if groups.windows(2).any(|pair| pair[0] == pair[1]) {
            violations.add(field("group_mappings"), "each group may be mapped once");
        }
        if !violations.is_empty() {
            return None;
        }
        Some(IdentityProviderSpec {
            display_name: display_name?,
            issuer_url: issuer_url?,
            client_id: client_id?,
            scopes: scopes?,
            groups_claim: groups_claim?,
            allowed_email_domains: allowed_email_domains?,
            group_mappings,
            jit_users: input.jit_users,
            sso_required: input.sso_required,
        })
    }

    /// The role a user in `groups` gets: the highest any of them maps to; `None` when none maps.
    pub fn role_for(&self, groups: &[String]) -> Option<Role> {
        self.mappings_for(groups).map(|mapping| mapping.role).max()
    }

    /// The resources a user in `groups` is assigned through mappings, each once.
    pub fn resources_for(&self, groups: &[String]) -> Vec<String> {
        let mut ids: Vec<String> =
            self.mappings_for(groups).flat_map(|mapping| mapping.resource_ids.iter().cloned()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether `email`'s domain may log in through this provider.
    pub fn allows_email(&self, email: &str) -> bool {
        let domain = email.rsplit_once('@').map(|(_, domain)| domain.to_ascii_lowercase());
        self.allowed_email_domains.is_empty()
            || domain.is_some_and(|domain| self.allowed_email_domains.contains(&domain))
    }

    fn mappings_for<'s>(&'s self, groups: &'s [String]) -> impl Iterator<Item = &'s GroupMapping> {
        self.group_mappings.iter().filter(move |mapping| groups.contains(&mapping.group))
    }
}

/// An issuer is an https URL without query, fragment or credentials (a path is allowed: many
/// providers have one); plain http only when the operator allows it.
fn check_issuer(url: &str, private_issuer: bool) -> Result<String, Invalid> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err("is required".into());
    }
    if url.len() > MAX_TEXT * 4 {
        return Err(format!("must be at most {} characters", MAX_TEXT * 4).into());
    }
    let parsed = url::Url::parse(url).map_err(|err| Invalid(format!("is not a URL: {err}")))?;
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err("must not carry a query, a fragment or credentials".into());
    }
    // The origin as written, not as the parser normalized it: `0x7f.1` is no host name.
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Invalid::from("is not a URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    plain_origin(&format!("{scheme}://{authority}"))?;
    match parsed.scheme() {
        "https" => Ok(url.to_owned()),
        "http" if private_issuer => Ok(url.to_owned()),
        _ => Err("must be https (plain http only under the operator's sso.allowed_private_issuers)".into()),
    }
}

/// A client id, a group name: printable, no spaces at the ends, not too long.
pub(super) fn check_token_text(value: &str, what: &str) -> Result<String, Invalid> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.len() > MAX_TEXT || value.trim() != value || value.chars().any(char::is_control) {
        return Err(
            format!("must be {what} of at most {MAX_TEXT} printable characters without surrounding spaces").into()
        );
    }
    Ok(value.to_owned())
}

/// Scopes requested at login: `openid` first (added when missing), each a scope token once.
fn check_scopes(scopes: &[String]) -> Result<Vec<String>, Invalid> {
    if scopes.len() > MAX_ITEMS {
        return Err(format!("at most {MAX_ITEMS} scopes").into());
    }
    let named: Vec<&str> =
        if scopes.is_empty() { DEFAULT_SCOPES.to_vec() } else { scopes.iter().map(String::as_str).collect() };
    let mut kept = vec!["openid".to_owned()];
    for scope in named {
        // RFC 6749 §3.3: printable ASCII except space, quote and backslash.
        let token = !scope.is_empty()
            && scope.bytes().all(|b| b == b'!' || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !token {
            return Err(format!("{scope:?} is not a scope").into());
        }
        if !kept.iter().any(|kept| kept == scope) {
            kept.push(scope.to_owned());
        }
    }
    Ok(kept)
}

fn check_groups_claim(claim: &str) -> Result<String, Invalid> {
    if claim.is_empty() { Ok(DEFAULT_GROUPS_CLAIM.to_owned()) } else { check_token_text(claim, "a claim name") }
}

/// Email domains, lower-cased: each a domain name with a dot, once.
fn check_domains(domains: &[String]) -> Result<Vec<String>, Invalid> {
    if domains.len() > MAX_ITEMS {
        return Err(format!("at most {MAX_ITEMS} domains").into());
    }
    let mut kept: Vec<String> = Vec::new();
    for domain in domains {
        let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !domain.contains('.') || domain.len() > 253 || !labels_ok {
            return Err(format!("{domain:?} is not a domain name like example.com").into());
        }
        if !kept.contains(&domain) {
            kept.push(domain);
        }
    }
    Ok(kept)
}

/// A mapping grants USER or ADMIN: the operator role belongs to no organization's member.
fn check_mapped_role(role: Option<Role>) -> Result<Role, Invalid> {
    match role {
        Some(role @ (Role::User | Role::Admin)) => Ok(role),
        Some(Role::Operator) => Err("a group may not map to the operator role".into()),
        None => Err("must be ROLE_USER or ROLE_ADMIN".into()),
    }
}

fn check_resource_ids(ids: &[String]) -> Result<Vec<String>, Invalid> {
    if ids.len() > MAX_ITEMS {
        return Err(format!("at most {MAX_ITEMS} resources").into());
    }
    let mut kept: Vec<String> = Vec::new();
    for id in ids {
        if !is_valid_id(id) {
            return Err(format!("{id:?} is not a resource id").into());
        }
        if !kept.contains(id) {
            kept.push(id.clone());
        }
    }
    Ok(kept)
}

/// A client secret as written: present and not absurdly long (it is sealed, never shown).
pub fn check_client_secret(secret: &str) -> Result<String, Invalid> {
    if secret.is_empty() {
        return Err("is required".into());
    }
    if secret.len() > MAX_SECRET {
        return Err(format!("must be at most {MAX_SECRET} bytes").into());
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "0192e4a8-2b3c-7d4e-8f90-123456789abc";

    fn input<'a>(mappings: Vec<(&'a str, Option<Role>, &'a [String])>) -> IdentityProviderInput<'a> {
        IdentityProviderInput {
            display_name: "Okta",
            issuer_url: "https://example.okta.com/oauth2/default/",
            client_id: "portcullis",
            group_mappings: mappings,
            ..IdentityProviderInput::default()
        }
    }

    fn refused(input: &IdentityProviderInput<'_>, private: bool) -> Vec<(String, String)> {
        let mut violations = Violations::default();
        let spec = IdentityProviderSpec::check(input, "identity_provider", private, &mut violations);
        assert_eq!(spec.is_none(), !violations.is_empty(), "a spec exactly when nothing was refused");
        violations.0.into_iter().map(|v| (v.field, v.description)).collect()
    }

    #[test]
    fn a_plain_provider_gets_the_defaults() {
        let mut violations = Violations::default();
        let spec = IdentityProviderSpec::check(&input(Vec::new()), "p", false, &mut violations).unwrap();
        assert_eq!(spec.issuer_url, "https://example.okta.com/oauth2/default", "the trailing slash goes");
        assert_eq!(spec.scopes, DEFAULT_SCOPES);
        assert_eq!(spec.groups_claim, "groups");
        assert!(spec.allows_email("anyone@anywhere.example"));
    }

    #[test]
    fn bad_fields_are_named_each() {
        let ids = vec![RESOURCE.to_owned()];
        let not_ids = vec!["not-an-id".to_owned()];
        let mut bad =
            input(vec![("ops", Some(Role::Operator), &ids), ("", Some(Role::User), &ids), ("dev", None, &not_ids)]);
        bad.issuer_url = "http://idp.example.com";
        bad.client_id = " padded ";
        let scopes = vec!["openid".to_owned(), "has space".to_owned()];
        bad.scopes = &scopes;
        let domains = vec!["localhost".to_owned()];
        bad.allowed_email_domains = &domains;
        let fields: Vec<String> = refused(&bad, false).into_iter().map(|(field, _)| field).collect();
        for expected in [
            "identity_provider.issuer_url",
            "identity_provider.client_id",
            "identity_provider.scopes",
            "identity_provider.allowed_email_domains",
            "identity_provider.group_mappings[0].role",
            "identity_provider.group_mappings[1].group",
            "identity_provider.group_mappings[2].role",
            "identity_provider.group_mappings[2].resource_ids",
        ] {
            assert!(fields.iter().any(|field| field == expected), "{expected} in {fields:?}");
        }
    }

    #[test]
    fn issuers_are_https_unless_the_operator_allows_otherwise() {
        let mut local = input(Vec::new());
        local.issuer_url = "http://127.0.0.1:5556/dex";
        assert!(!refused(&local, false).is_empty());
        assert!(refused(&local, true).is_empty());
        for bad in [
            "https://idp.example.com/?tenant=1",
            "https://user:pw@idp.example.com",
            "https://idp.example.com#x",
            "ftp://idp.example.com",
            "https://0x7f.1/",
        ] {
            let mut issuer = input(Vec::new());
            issuer.issuer_url = bad;
            assert!(!refused(&issuer, true).is_empty(), "{bad}");
        }
    }

    #[test]
    fn a_group_is_mapped_once_and_the_highest_role_wins() {
        let ids = vec![RESOURCE.to_owned()];
        let none: Vec<String> = Vec::new();
        assert!(
            !refused(&input(vec![("ops", Some(Role::User), &ids), ("ops", Some(Role::Admin), &none)]), false)
                .is_empty()
        );
        let mut violations = Violations::default();
        let spec = IdentityProviderSpec::check(
            &input(vec![
                ("ops", Some(Role::User), &ids),
                ("leads", Some(Role::Admin), &none),
                ("dev", Some(Role::User), &ids),
            ]),
            "p",
            false,
            &mut violations,
        )
        .unwrap();
        let groups = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(spec.role_for(&groups(&["ops", "leads"])), Some(Role::Admin));
        assert_eq!(spec.role_for(&groups(&["ops"])), Some(Role::User));
        assert_eq!(spec.role_for(&groups(&["sales"])), None, "no mapped group, no role");
        assert_eq!(spec.resources_for(&groups(&["ops", "dev"])), [RESOURCE], "each resource once");
    }

    #[test]
    fn email_domains_limit_who_may_log_in() {
        let domains = vec!["Example.com".to_owned(), "@corp.example".to_owned()];
        let mut limited = input(Vec::new());
        limited.allowed_email_domains = &domains;
        let mut violations = Violations::default();
        let spec = IdentityProviderSpec::check(&limited, "p", false, &mut violations).unwrap();
        assert_eq!(spec.allowed_email_domains, ["example.com", "corp.example"]);
        assert!(spec.allows_email("ada@EXAMPLE.com"));
        assert!(!spec.allows_email("ada@example.com.evil.net"));
        assert!(!spec.allows_email("ada@sub.example.com"), "a subdomain is another domain");
    }
}
