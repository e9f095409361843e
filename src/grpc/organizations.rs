use super::auth::caller;
use super::convert::{
    UpdateMask, cloud_scopes_from_pb, organization_to_pb, page_request, require_id, tier_from_pb, user_to_pb,
};
use crate::domain::{Reach, is_valid_id};
use crate::error::Error;
use crate::pb::v1::organization_service_server::OrganizationService;
use crate::pb::v1::*;
use crate::service::{NewOrganization, OrganizationChanges, OrganizationManager};
use tonic::{Request, Response, Status};

pub struct OrganizationApi(pub OrganizationManager);

const UPDATABLE: &[&str] = &["name", "allow_private_addresses", "tier", "cloud_scopes"];
/// What an empty mask changes for a member: what members may change.
const UPDATABLE_BY_MEMBERS: &[&str] = &["name", "allow_private_addresses"];
const TIER_VALUES: &str = "must be TIER_FREE, TIER_BUSINESS or TIER_ENTERPRISE";

/// An organization id a request may leave empty (the caller's own).
fn optional_id<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() || is_valid_id(value) { Ok(value) } else { Err(Error::invalid(field, "is not a valid id")) }
}

fn answer<T>(message: T) -> Result<Response<T>, Status> {
    Ok(Response::new(message))
}

#[tonic::async_trait]
impl OrganizationService for OrganizationApi {
    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Result<Response<GetOrganizationResponse>, Status> {
        let id = optional_id("organization_id", &request.get_ref().organization_id)?;
        let organization = self.0.get(caller(&request)?, "organization_id", id).await?;
        answer(GetOrganizationResponse { organization: Some(organization_to_pb(organization)) })
    }

    async fn update_organization(
        &self,
        request: Request<UpdateOrganizationRequest>,
    ) -> Result<Response<UpdateOrganizationResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let organization = message.organization.clone().ok_or_else(|| Error::invalid("organization", "is required"))?;
        let id = optional_id("organization.id", &organization.id)?;
        let empty = message.update_mask.as_ref().is_none_or(|mask| mask.paths.is_empty());
        let allowed = if empty && caller.reach != Reach::Platform { UPDATABLE_BY_MEMBERS } else { UPDATABLE };
        let mask = UpdateMask::parse(message.update_mask.as_ref(), allowed)?;
        let tier = if mask.contains("tier") {
            Some(tier_from_pb(organization.tier).ok_or_else(|| Error::invalid("organization.tier", TIER_VALUES))?)
        } else {
            None
        };
        let changes = OrganizationChanges {
            name: mask.contains("name").then_some(organization.name),
            allow_private_addresses: mask
                .contains("allow_private_addresses")
                .then_some(organization.allow_private_addresses),
            tier,
            cloud_scopes: mask.contains("cloud_scopes").then(|| cloud_scopes_from_pb(organization.cloud_scopes)),
        };
        let updated = self.0.update(caller, id, changes).await?;
        answer(UpdateOrganizationResponse { organization: Some(organization_to_pb(updated)) })
    }

    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Result<Response<CreateOrganizationResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref().clone();
        let organization = message.organization.ok_or_else(|| Error::invalid("organization", "is required"))?;
        let tier = match organization.tier {
            0 => None,
            value => Some(tier_from_pb(value).ok_or_else(|| Error::invalid("organization.tier", TIER_VALUES))?),
        };
        let new = NewOrganization {
            name: organization.name,
            tier,
            allow_private_addresses: organization.allow_private_addresses,
            cloud_scopes: cloud_scopes_from_pb(organization.cloud_scopes),
            admin_email: message.admin_email,
            admin_full_name: message.admin_full_name,
        };
        let created = self.0.create(caller, new).await?;
        answer(CreateOrganizationResponse {
            organization: Some(organization_to_pb(created.organization)),
            admin: Some(user_to_pb(created.admin)),
            admin_api_key: created.api_key,
        })
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let organizations = self.0.list(&page).await?;
        answer(ListOrganizationsResponse {
            organizations: organizations.items.into_iter().map(organization_to_pb).collect(),
            next_page_token: organizations.next_page_token,
        })
    }

    async fn suspend_organization(
        &self,
        request: Request<SuspendOrganizationRequest>,
    ) -> Result<Response<SuspendOrganizationResponse>, Status> {
        let message = request.get_ref();
        let id = require_id("organization_id", &message.organization_id)?;
        if message.reason.chars().count() > 500 {
            return Err(Error::invalid("reason", "must be at most 500 characters").into());
        }
        let suspended = self.0.set_suspended(caller(&request)?, id, true, message.reason.trim()).await?;
        answer(SuspendOrganizationResponse { organization: Some(organization_to_pb(suspended)) })
    }

    async fn resume_organization(
        &self,
        request: Request<ResumeOrganizationRequest>,
    ) -> Result<Response<ResumeOrganizationResponse>, Status> {
        let id = require_id("organization_id", &request.get_ref().organization_id)?;
        let resumed = self.0.set_suspended(caller(&request)?, id, false, "").await?;
        answer(ResumeOrganizationResponse { organization: Some(organization_to_pb(resumed)) })
    }
}
