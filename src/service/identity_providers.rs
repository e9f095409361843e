//! An organization's identity providers through IdentityProviderService, and the discovered
//! client of each that logins and refresh checks use.
//!
//! A provider is discovered before it is stored, so an issuer that does not answer OpenID
//! discovery (or names URLs the destination rule forbids) is refused at once with why. Its
//! client secret is sealed under the server's sealing key and never shown again.

use super::Caller;
use super::organizations::target;
use crate::domain::identity_provider::check_client_secret;
use crate::domain::{IdentityProviderInput, IdentityProviderSpec, Violations, new_id, now};
use crate::engine::{Engine, transitions};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::sealing::SealingKey;
use crate::sso::SsoConfig;
use crate::sso::http::IdpHttp;
use crate::sso::oidc::{self, Provider};
use crate::store::audit::AuditRecord;
use crate::store::entity::identity_provider::{self, json_list, json_mappings};
use crate::store::queries::{identity_providers, resources};
use crate::store::{self, Page, PageRequest, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, IntoActiveModel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Identity providers one organization may have.
const MAX_PER_ORGANIZATION: u32 = 10;

/// How long a discovered provider is used before it is discovered again (its keys are also
/// fetched again whenever a token names one it does not know).
const DISCOVERY_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Which fields an update changes (the others keep their stored values).
#[derive(Debug, Default)]
pub struct ProviderChanges {
    pub display_name: bool,
    pub issuer_url: bool,
    pub client_id: bool,
    pub client_secret: bool,
    pub scopes: bool,
    pub groups_claim: bool,
    pub allowed_email_domains: bool,
    pub group_mappings: bool,
    pub jit_users: bool,
    pub sso_required: bool,
}

/// What single sign-on works with: the HTTP client of every provider URL, the sealing key, and
/// where providers send browsers back.
#[derive(Clone)]
pub struct SsoSetup {
    pub http: IdpHttp,
    pub key: Option<Arc<SealingKey>>,
    /// `{server.public_url}/sso/callback`, once the public URL is set.
    pub callback_url: Option<String>,
    pub config: SsoConfig,
}

impl SsoSetup {
    pub fn key(&self) -> Result<&SealingKey> {
        self.key.as_deref().ok_or_else(|| {
            Error::failed_precondition(
                ErrorReason::NotConfigured,
                "this server has no sealing_key, so it cannot keep identity provider secrets; ask the operator to set one",
            )
        })
    }

    pub fn callback_url(&self) -> Result<&str> {
        self.callback_url.as_deref().ok_or_else(|| {
            Error::failed_precondition(
                ErrorReason::NotConfigured,
                "this server has no server.public_url, so identity providers cannot send people back to it; ask the \
                 operator to set one",
            )
        })
    }
}

#[derive(Clone)]
pub struct IdentityProviderManager {
    db: DatabaseConnection,
    engine: Engine,
    setup: SsoSetup,
    /// Discovered clients by provider id, with the `updated_at` they were made for.
    clients: Arc<Mutex<HashMap<String, Discovered>>>,
}

#[derive(Clone)]
struct Discovered {
    updated_at: DateTime<Utc>,
    at: DateTime<Utc>,
    client: Arc<Provider>,
}

impl IdentityProviderManager {
    pub fn new(db: DatabaseConnection, engine: Engine, setup: SsoSetup) -> IdentityProviderManager {
        IdentityProviderManager { db, engine, setup, clients: Arc::default() }
    }

    pub fn setup(&self) -> &SsoSetup {
        &self.setup
    }

    /// Registers a provider in the organization `organization_id` names (see [`target`]).
    pub async fn create(
        &self,
        caller: &Caller,
        organization_id: &str,
        input: IdentityProviderInput<'_>,
        client_secret: &str,
    ) -> Result<identity_provider::Model> {
        let organization_id = target(caller, "identity_provider.organization_id", organization_id)?.to_owned();
        let key = self.setup.key()?;
        self.setup.callback_url()?;
        let mut violations = Violations::default();
        let private = self.setup.http.allows_private(input.issuer_url.trim());
        let spec = IdentityProviderSpec::check(&input, "identity_provider", private, &mut violations);
        let secret = violations.check("identity_provider.client_secret", check_client_secret(client_secret));
        let (Some(spec), Some(secret)) = (spec, secret) else { return Err(violations.into()) };
        self.check_resources(&self.db, &organization_id, &spec).await?;
        self.discover(&spec, &secret).await?;
        let (id, at) = (new_id(), now());
        let sealed = key.seal(&id, secret.as_bytes()).map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
        let txn = store::begin(&self.db).await?;
        if identity_providers::count(&txn, &organization_id).await? >= u64::from(MAX_PER_ORGANIZATION) {
            return Err(Error::limit_reached(
                "identity providers per organization",
                MAX_PER_ORGANIZATION,
                "identity providers of this organization",
            ));
        }
        let created = identity_providers::insert(
            &txn,
            identity_provider::Model {
                id,
                organization_id: organization_id.clone(),
                display_name: spec.display_name.clone(),
                issuer_url: spec.issuer_url.clone(),
                client_id: spec.client_id.clone(),
                client_secret_sealed: Some(sealed),
                scopes: json_list(&spec.scopes),
                groups_claim: spec.groups_claim.clone(),
                allowed_email_domains: json_list(&spec.allowed_email_domains),
                group_mappings: json_mappings(&spec.group_mappings),
                jit_users: spec.jit_users,
                sso_required: spec.sso_required,
                created_at: at,
                updated_at: at,
            },
        )
        .await?;
        AuditRecord::new("identity_provider.created", "identity_provider", &created.id)
            .detail("issuer_url", &created.issuer_url)
            .detail("group_mappings", &created.group_mappings)
            .write(&txn, &caller.actor_in(&organization_id))
            .await?;
        store::commit(txn).await?;
        Ok(created)
    }

    /// A provider of the caller's organization (any, for the operator).
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<identity_provider::Model> {
        let found = identity_providers::get_any(&self.db, id).await.or_not_found("identity provider")?;
        target(caller, "id", &found.organization_id).map_err(|_| Error::not_found("identity provider"))?;
        Ok(found)
    }

    pub async fn list(
        &self,
        caller: &Caller,
        organization_id: &str,
        page: &PageRequest,
    ) -> Result<Page<identity_provider::Model>> {
        let organization_id = target(caller, "organization_id", organization_id)?;
        Ok(identity_providers::list(&self.db, organization_id, page).await?)
    }

    /// Changes the fields `changes` names to their values in `input` (and `client_secret`).
    /// Mappings apply from each user's next login or refresh check.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: IdentityProviderInput<'_>,
        client_secret: &str,
        changes: &ProviderChanges,
    ) -> Result<identity_provider::Model> {
        let current = self.get(caller, id).await?;
        let key = self.setup.key()?;
        let stored = current.spec()?;
        // The request's values where named, the stored ones elsewhere, checked as a whole.
        let merged = IdentityProviderInput {
            display_name: if changes.display_name { input.display_name } else { &stored.display_name },
            issuer_url: if changes.issuer_url { input.issuer_url } else { &stored.issuer_url },
            client_id: if changes.client_id { input.client_id } else { &stored.client_id },
            scopes: if changes.scopes { input.scopes } else { &stored.scopes },
            groups_claim: if changes.groups_claim { input.groups_claim } else { &stored.groups_claim },
            allowed_email_domains: if changes.allowed_email_domains {
                input.allowed_email_domains
            } else {
                &stored.allowed_email_domains
            },
            group_mappings: if changes.group_mappings {
                input.group_mappings
            } else {
                stored
                    .group_mappings
                    .iter()
                    .map(|mapping| (mapping.group.as_str(), Some(mapping.role), mapping.resource_ids.as_slice()))
                    .collect()
            },
            jit_users: if changes.jit_users { input.jit_users } else { stored.jit_users },
            sso_required: if changes.sso_required { input.sso_required } else { stored.sso_required },
        };
        let mut violations = Violations::default();
        let private = self.setup.http.allows_private(merged.issuer_url.trim());
        let spec = IdentityProviderSpec::check(&merged, "identity_provider", private, &mut violations);
        let secret = changes
            .client_secret
            .then(|| violations.check("identity_provider.client_secret", check_client_secret(client_secret)));
        let Some(spec) = spec.filter(|_| violations.is_empty()) else { return Err(violations.into()) };
        self.check_resources(&self.db, &current.organization_id, &spec).await?;
        let secret = match secret.flatten() {
            Some(secret) => secret,
            None => self.client_secret(&current)?,
        };
        if changes.issuer_url || changes.client_id || changes.client_secret {
            self.discover(&spec, &secret).await?;
        }
        let txn = store::begin(&self.db).await?;
        let organization_id = current.organization_id.clone();
        let mut active = identity_providers::get(&txn, &organization_id, id)
            .await
            .or_not_found("identity provider")?
            .into_active_model();
        let mut record = AuditRecord::new("identity_provider.updated", "identity_provider", id);
        active.display_name = Set(spec.display_name);
        active.issuer_url = Set(spec.issuer_url.clone());
        active.client_id = Set(spec.client_id);
        active.scopes = Set(json_list(&spec.scopes));
        active.groups_claim = Set(spec.groups_claim);
        active.allowed_email_domains = Set(json_list(&spec.allowed_email_domains));
        active.group_mappings = Set(json_mappings(&spec.group_mappings));
        active.jit_users = Set(spec.jit_users);
        active.sso_required = Set(spec.sso_required);
        if changes.client_secret {
            let sealed = key.seal(id, secret.as_bytes()).map_err(|err| Error::internal(anyhow::Error::msg(err)))?;
            active.client_secret_sealed = Set(Some(sealed));
            record = record.detail("client_secret", "replaced");
        }
        active.updated_at = Set(now());
        let updated = identity_providers::update(&txn, active).await?;
        record
            .detail("issuer_url", &updated.issuer_url)
            .detail("group_mappings", &updated.group_mappings)
            .write(&txn, &caller.actor_in(&organization_id))
            .await?;
        store::commit(txn).await?;
        Ok(updated)
    }

    /// Removes a provider. Its users keep their accounts and log in by code; what its group
    /// mappings granted goes with it (nothing is left to say whether they still may), so their
    /// live sessions lose those rules. Assignments an admin made stay.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let current = self.get(caller, id).await?;
        let actor = caller.actor_in(&current.organization_id);
        let txn = store::begin(&self.db).await?;
        let mut changed = Vec::new();
        for (resource_id, user_id) in resources::mapped_by(&txn, id).await? {
            if resources::unassign(&txn, &resource_id, &user_id).await? {
                AuditRecord::new("resource.unassigned", "resource", &resource_id)
                    .detail("user_id", &user_id)
                    .detail("identity_provider_id", id)
                    .write(&txn, &actor)
                    .await?;
                changed.extend(transitions::withdraw_resource(&txn, &user_id, &resource_id, &actor).await?);
            }
        }
        if !identity_providers::delete(&txn, &current.organization_id, id).await? {
            return Err(Error::not_found("identity provider"));
        }
        AuditRecord::new("identity_provider.deleted", "identity_provider", id)
            .detail("issuer_url", &current.issuer_url)
            .write(&txn, &actor)
            .await?;
        store::commit(txn).await?;
        self.engine.announce(&changed).await;
        self.forget(id);
        Ok(())
    }

    /// The discovered client of `provider`, discovered again after [`DISCOVERY_TTL`] or a change.
    pub async fn client(&self, provider: &identity_provider::Model) -> Result<Arc<Provider>> {
        let at = now();
        let cached = self.lock_clients().get(&provider.id).cloned();
        if let Some(found) =
            cached.filter(|found| found.updated_at == provider.updated_at && at - found.at < DISCOVERY_TTL)
        {
            return Ok(found.client);
        }
        let spec = provider.spec()?;
        let secret = self.client_secret(provider)?;
        let client = self.connect(&spec, &secret).await.map_err(|err| {
            tracing::warn!(identity_provider_id = %provider.id, error = %err, "identity provider unusable");
            Error::Unavailable(format!("the identity provider {:?} cannot be used now: {err}", provider.display_name))
        })?;
        self.lock_clients()
            .insert(provider.id.clone(), Discovered { updated_at: provider.updated_at, at, client: client.clone() });
        Ok(client)
    }

    fn forget(&self, id: &str) {
        self.lock_clients().remove(id);
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Discovered>> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn client_secret(&self, provider: &identity_provider::Model) -> Result<String> {
        let sealed = provider.client_secret_sealed.as_deref().ok_or_else(|| {
            Error::failed_precondition(ErrorReason::NotConfigured, "the identity provider has no client secret")
        })?;
        self.setup.key()?.open_text(&provider.id, sealed).map_err(|err| Error::internal(anyhow::Error::msg(err)))
    }

    async fn connect(&self, spec: &IdentityProviderSpec, secret: &str) -> Result<Arc<Provider>, oidc::SsoError> {
        let metadata = oidc::discover(&self.setup.http, &spec.issuer_url).await?;
        let callback = self.setup.callback_url.as_deref().unwrap_or_default();
        Provider::new(self.setup.http.clone(), metadata, &spec.client_id, secret, callback, &spec.groups_claim)
    }

    /// Refuses an issuer this server cannot log in through, saying why.
    async fn discover(&self, spec: &IdentityProviderSpec, secret: &str) -> Result<()> {
        self.connect(spec, secret)
            .await
            .map(drop)
            .map_err(|err| Error::invalid("identity_provider.issuer_url", format!("OpenID discovery failed: {err}")))
    }

    /// Refuses mappings to resources the organization does not have.
    async fn check_resources(
        &self,
        db: &impl ConnectionTrait,
        organization_id: &str,
        spec: &IdentityProviderSpec,
    ) -> Result<()> {
        let mut violations = Violations::default();
        for (index, mapping) in spec.group_mappings.iter().enumerate() {
            for resource_id in &mapping.resource_ids {
                match resources::get(db, organization_id, resource_id).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound) => violations.add(
                        format!("identity_provider.group_mappings[{index}].resource_ids"),
                        format!("{resource_id} is not a resource of this organization"),
                    ),
                    Err(err) => return Err(err.into()),
                }
            }
        }
        if violations.is_empty() { Ok(()) } else { Err(violations.into()) }
    }
}
