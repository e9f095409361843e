//! Firewall resources and who may open them.

use super::Caller;
use crate::domain::{ApprovalPolicy, CloudScopes, ProviderConfig, Violations, new_id, now, validate_name};
use crate::domain::{Invalid, validate_description};
use crate::engine::{Engine, transitions};
use crate::error::{Error, Result, StoreResultExt};
use crate::pb::v1::ErrorReason;
use crate::provider::{CheckOutcome, Providers, Target};
use crate::store::audit::AuditRecord;
use crate::store::entity::resource::approval_json;
use crate::store::entity::{StoredProvider, resource, resource_assignment};
use crate::store::{self, Page, PageRequest, queries};
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel};

/// A resource to create.
#[derive(Debug)]
pub struct NewResource {
    pub name: String,
    pub description: String,
    pub provider: Option<ProviderConfig>,
    /// Who must approve its sessions, if anyone (checked in shape by the caller).
    pub approval: Option<ApprovalPolicy>,
}

/// Changes requested by UpdateResource; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct ResourceChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub provider: Option<ProviderConfig>,
    /// `Some(None)` turns approvals off.
    pub approval: Option<Option<ApprovalPolicy>>,
}

#[derive(Clone)]
pub struct ResourceManager {
    db: DatabaseConnection,
    providers: Providers,
    engine: Engine,
}

/// Checks a provider configuration, and that the server may send its calls (an endpoint the
/// operator allows, a target inside the organization's cloud scopes); `field` is where it sits
/// in the request. Answers it as stored: its endpoint normalized.
fn validate_provider(
    violations: &mut Violations,
    field: &str,
    provider: &ProviderConfig,
    providers: &Providers,
    scopes: &CloudScopes,
) -> ProviderConfig {
    let (name, mut errors) = provider.validate();
    if errors.is_empty()
        && let Some(refused) = providers.refusal(provider, scopes)
    {
        errors.push(refused);
    }
    for (sub_field, description) in errors {
        violations.add(format!("{field}.{name}.{sub_field}"), description);
    }
    provider.clone().with_plain_endpoint()
}

impl ResourceManager {
    pub fn new(db: DatabaseConnection, providers: Providers, engine: Engine) -> ResourceManager {
        ResourceManager { db, providers, engine }
    }

    /// The cloud scopes of the caller's organization.
    async fn scopes(&self, caller: &Caller) -> Result<CloudScopes> {
        let organization =
            queries::organizations::get(&self.db, &caller.organization_id).await.or_not_found("organization")?;
        Ok(queries::organizations::cloud_scopes(&organization)?)
    }

    /// A host resource's agent must be a working agent of the caller's organization.
    async fn check_agent(&self, caller: &Caller, provider: &ProviderConfig, violations: &mut Violations) -> Result<()> {
        let ProviderConfig::HostFirewall(host) = provider else { return Ok(()) };
        if host.agent_id.trim().is_empty() {
            return Ok(());
        }
        match queries::agents::get(&self.db, &caller.organization_id, &host.agent_id).await {
            Ok(agent) if agent.revoked_at.is_none() => {}
            Ok(_) => violations.add("resource.host_firewall.agent_id", "names a revoked agent"),
            Err(crate::store::StoreError::NotFound) => {
                violations.add("resource.host_firewall.agent_id", "names no agent of this organization")
            }
            Err(err) => return Err(err.into()),
        }
        Ok(())
    }

    pub async fn create(&self, caller: &Caller, new: NewResource) -> Result<resource::Model> {
        let scopes = self.scopes(caller).await?;
        let mut violations = Violations::default();
        let name = violations.check("resource.name", validate_name(&new.name));
        let description = violations.check("resource.description", validate_description(&new.description));
        let provider = match &new.provider {
            Some(provider) => {
                self.check_agent(caller, provider, &mut violations).await?;
                Some(validate_provider(&mut violations, "resource", provider, &self.providers, &scopes))
            }
            None => {
                violations.add(
                    "resource.provider",
                    "one of memory, aws_security_group, gcp_firewall, azure_network_security_group, host_firewall is \
                     required",
                );
                None
            }
        };
        let (Some(name), Some(description), Some(provider), true) =
            (name, description, provider, violations.is_empty())
        else {
            return Err(violations.into());
        };
        let at = now();
        let txn = store::begin(&self.db).await?;
        if let Some(policy) = &new.approval {
            super::approvals::check_policy(&txn, &caller.organization_id, policy, &[], "resource.approval").await?;
        }
        let created = queries::resources::insert(
            &txn,
            resource::Model {
                id: new_id(),
                organization_id: caller.organization_id.clone(),
                name,
                description,
                provider_kind: provider.kind().to_owned(),
                provider_config: StoredProvider::new(&provider),
                created_at: at,
                updated_at: at,
                reconciled_at: None,
                checked_at: None,
                check_status: None,
                check_message: None,
                approval: approval_json(new.approval.as_ref()),
            },
        )
        .await
        .or_already_exists("a resource with this name already exists")?;
        let mut record = AuditRecord::new("resource.created", "resource", &created.id)
            .detail("name", &created.name)
            .detail("provider", provider.kind());
        if let Some(approval) = &created.approval {
            record = record.detail("approval", approval);
        }
        record.write(&txn, &caller.actor()).await?;
        store::commit(txn).await?;
        self.engine.check_soon();
        Ok(created)
    }

    /// A resource of the caller's organization; a call that reaches only the caller's own sees
    /// only resources assigned to it.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<resource::Model> {
        let resource = queries::resources::get(&self.db, &caller.organization_id, id).await.or_not_found("resource")?;
        let Some(own) = caller.only_own() else { return Ok(resource) };
        if !queries::resources::is_assigned(&self.db, id, own).await? {
            return Err(Error::not_found("resource"));
        }
        Ok(resource)
    }

    /// Resources of the caller's organization; a call that reaches only the caller's own sees only
    /// its assignments.
    pub async fn list(
        &self,
        caller: &Caller,
        assigned_to: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<resource::Model>> {
        let assigned_to = caller.only_own().or(assigned_to);
        Ok(queries::resources::list(&self.db, &caller.organization_id, assigned_to, page).await?)
    }

    pub async fn update(&self, caller: &Caller, id: &str, changes: ResourceChanges) -> Result<resource::Model> {
        let mut violations = Violations::default();
        let name = changes.name.as_deref().and_then(|n| violations.check("resource.name", validate_name(n)));
        let description = changes
            .description
            .as_deref()
            .and_then(|d| violations.check("resource.description", validate_description(d)));
        let provider = match &changes.provider {
            Some(provider) => {
                let scopes = self.scopes(caller).await?;
                self.check_agent(caller, provider, &mut violations).await?;
                Some(validate_provider(&mut violations, "resource", provider, &self.providers, &scopes))
            }
            None => None,
        };
        if !violations.is_empty() {
            return Err(violations.into());
        }
        let txn = store::begin(&self.db).await?;
        let current =
            queries::resources::get_for_update(&txn, &caller.organization_id, id).await.or_not_found("resource")?;
        let mut record = AuditRecord::new("resource.updated", "resource", id);
        let mut active = current.clone().into_active_model();
        if let Some(name) = name {
            record = record.detail("name", &name);
            active.name = Set(name);
        }
        if let Some(description) = description {
            active.description = Set(description);
        }
        if let Some(approval) = &changes.approval {
            if let Some(policy) = approval {
                let requesters = queries::resources::assignees(&txn, id).await?;
                super::approvals::check_policy(&txn, &caller.organization_id, policy, &requesters, "resource.approval")
                    .await?;
            }
            let stored = approval_json(approval.as_ref());
            record = record.detail("approval", stored.as_deref().unwrap_or("none"));
            active.approval = Set(stored);
        }
        if let Some(provider) = &provider {
            let rules_stay = queries::resources::provider_config(&current)?.opens_same_rules_as(provider);
            if !rules_stay && queries::resources::has_live_rules(&txn, id).await? {
                return Err(Error::failed_precondition(
                    ErrorReason::ResourceInUse,
                    "live sessions hold rules on this firewall as configured; stop them before changing where or \
                     what the resource opens (name and description stay editable)",
                ));
            }
            record = record.detail("provider", provider.kind());
            active.provider_kind = Set(provider.kind().to_owned());
            active.provider_config = Set(StoredProvider::new(provider));
            // What the last check found was about the old firewall: check the new one soon.
            active.checked_at = Set(None);
            active.check_status = Set(None);
            active.check_message = Set(None);
        }
        active.updated_at = Set(now());
        let updated = queries::resources::update(&txn, active)
            .await
            .or_already_exists("a resource with this name already exists")?;
        record.write(&txn, &caller.actor()).await?;
        store::commit(txn).await?;
        if changes.provider.is_some() {
            self.engine.check_soon();
        }
        Ok(updated)
    }

    /// Deletes a resource that holds no rule of a live session.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        let current =
            queries::resources::get_for_update(&txn, &caller.organization_id, id).await.or_not_found("resource")?;
        if queries::resources::has_live_rules(&txn, id).await? {
            return Err(Error::failed_precondition(
                ErrorReason::ResourceInUse,
                "the resource still holds rules of live sessions; stop them first",
            ));
        }
        queries::resources::delete(&txn, id).await?;
        AuditRecord::new("resource.deleted", "resource", id)
            .detail("name", &current.name)
            .write(&txn, &caller.actor())
            .await?;
        store::commit(txn).await?;
        Ok(())
    }

    pub async fn assign(&self, caller: &Caller, resource_id: &str, user_id: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        queries::resources::get(&txn, &caller.organization_id, resource_id).await.or_not_found("resource")?;
        queries::users::get(&txn, &caller.organization_id, user_id).await.or_not_found("user")?;
        let assignment = resource_assignment::Model {
            resource_id: resource_id.to_owned(),
            user_id: user_id.to_owned(),
            organization_id: caller.organization_id.clone(),
            created_at: now(),
            mapped_by: None,
        };
        // An assignment a group mapping made becomes the admin's own: no mapping takes it back.
        let assigned = queries::resources::assign(&txn, assignment).await?
            || queries::resources::adopt_assignment(&txn, resource_id, user_id).await?;
        if assigned {
            AuditRecord::new("resource.assigned", "resource", resource_id)
                .detail("user_id", user_id)
                .write(&txn, &caller.actor())
                .await?;
        }
        store::commit(txn).await?;
        Ok(())
    }

    pub async fn unassign(&self, caller: &Caller, resource_id: &str, user_id: &str) -> Result<()> {
        let txn = store::begin(&self.db).await?;
        queries::resources::get(&txn, &caller.organization_id, resource_id).await.or_not_found("resource")?;
        queries::users::get(&txn, &caller.organization_id, user_id).await.or_not_found("user")?;
        let mut changed = Vec::new();
        if queries::resources::unassign(&txn, resource_id, user_id).await? {
            AuditRecord::new("resource.unassigned", "resource", resource_id)
                .detail("user_id", user_id)
                .write(&txn, &caller.actor())
                .await?;
            // The user's live sessions lose the resource's rules at once.
            changed = transitions::withdraw_resource(&txn, user_id, resource_id, &caller.actor()).await?;
        }
        store::commit(txn).await?;
        self.engine.announce(&changed).await;
        Ok(())
    }

    /// Stored resources whose endpoint is no plain origin (stored before endpoints had to be),
    /// with why: they get no provider call (their rules fail, CheckResource says why) until an
    /// admin corrects the endpoint. The server names them at start.
    pub async fn unusable_endpoints(&self) -> Result<Vec<(resource::Model, Invalid)>> {
        let stored = queries::resources::with_endpoints(&self.db).await?;
        Ok(stored
            .into_iter()
            .filter_map(|resource| {
                let endpoint = resource.provider_config.config().ok()?.endpoint_url()?;
                let why = crate::domain::plain_origin(endpoint).err()?;
                Some((resource, why))
            })
            .collect())
    }

    /// Checks that the resource's firewall is reachable with its credentials.
    pub async fn check(&self, caller: &Caller, id: &str) -> Result<CheckOutcome> {
        let resource = self.get(caller, id).await?;
        let config = queries::resources::provider_config(&resource)?;
        let scopes = self.scopes(caller).await?;
        Ok(match self.providers.for_config(&config, &scopes) {
            Ok(provider) => {
                let target = Target { resource_id: resource.id, organization_id: resource.organization_id, config };
                provider.check(&target).await
            }
            Err(err) => CheckOutcome::Unsupported(err.to_string()),
        })
    }
}
