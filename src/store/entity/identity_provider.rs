use sea_orm::entity::prelude::*;

/// An organization's OpenID Connect provider. Lists are stored as JSON; the client secret only
/// sealed under the server's sealing key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_providers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub display_name: String,
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret_sealed: Option<String>,
    /// JSON list of scopes.
    pub scopes: String,
    pub groups_claim: String,
    /// JSON list of domains; empty allows any.
    pub allowed_email_domains: String,
    /// JSON list of `{group, role, resource_ids}`.
    pub group_mappings: String,
    pub jit_users: bool,
    pub sso_required: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A group mapping as stored: the role by its name.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMapping {
    group: String,
    role: String,
    resource_ids: Vec<String>,
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> crate::store::StoreError {
    crate::store::StoreError::Corrupt(format!("identity provider {what}: {err}"))
}

/// JSON of a list, as the list columns store it.
pub fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// JSON of group mappings, as `group_mappings` stores them.
pub fn json_mappings(mappings: &[GroupMapping]) -> String {
    let stored: Vec<StoredMapping> = mappings
        .iter()
        .map(|mapping| StoredMapping {
            group: mapping.group.clone(),
            role: mapping.role.as_str().to_owned(),
            resource_ids: mapping.resource_ids.clone(),
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".to_owned())
}

use crate::domain::{GroupMapping, IdentityProviderSpec};

impl Model {
    /// The provider's settings as the domain reads them.
    pub fn spec(&self) -> crate::store::StoreResult<IdentityProviderSpec> {
        let list = |what: &str, text: &str| serde_json::from_str::<Vec<String>>(text).map_err(|err| corrupt(what, err));
        let stored: Vec<StoredMapping> =
            serde_json::from_str(&self.group_mappings).map_err(|err| corrupt("group_mappings", err))?;
        let mut group_mappings = Vec::with_capacity(stored.len());
        for mapping in stored {
            group_mappings.push(GroupMapping {
                group: mapping.group,
                role: mapping.role.parse().map_err(|err| corrupt("role", err))?,
                resource_ids: mapping.resource_ids,
            });
        }
        Ok(IdentityProviderSpec {
            display_name: self.display_name.clone(),
            issuer_url: self.issuer_url.clone(),
            client_id: self.client_id.clone(),
            scopes: list("scopes", &self.scopes)?,
            groups_claim: self.groups_claim.clone(),
            allowed_email_domains: list("allowed_email_domains", &self.allowed_email_domains)?,
            group_mappings,
            jit_users: self.jit_users,
            sso_required: self.sso_required,
        })
    }
}
