use super::auth::caller;
use super::convert::{UpdateMask, organization_to_pb, tier_from_pb};
use crate::error::Error;
use crate::pb::v1::organization_service_server::OrganizationService;
use crate::pb::v1::{
    GetOrganizationRequest, GetOrganizationResponse, UpdateOrganizationRequest, UpdateOrganizationResponse,
};
use crate::service::{OrganizationChanges, OrganizationManager};
use tonic::{Request, Response, Status};

pub struct OrganizationApi(pub OrganizationManager);

const UPDATABLE: &[&str] = &["name", "tier", "suspended", "allow_private_addresses"];

#[tonic::async_trait]
impl OrganizationService for OrganizationApi {
    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Result<Response<GetOrganizationResponse>, Status> {
        let organization = self.0.get(caller(&request)?).await?;
        Ok(Response::new(GetOrganizationResponse { organization: Some(organization_to_pb(organization)) }))
    }

    async fn update_organization(
        &self,
        request: Request<UpdateOrganizationRequest>,
    ) -> Result<Response<UpdateOrganizationResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let organization = message.organization.clone().ok_or_else(|| Error::invalid("organization", "is required"))?;
        let mask = UpdateMask::parse(message.update_mask.as_ref(), UPDATABLE)?;
        let tier = if mask.contains("tier") {
            Some(tier_from_pb(organization.tier).ok_or_else(|| {
                Error::invalid("organization.tier", "must be TIER_FREE, TIER_BUSINESS or TIER_ENTERPRISE")
            })?)
        } else {
            None
        };
        let changes = OrganizationChanges {
            name: mask.contains("name").then_some(organization.name),
            tier,
            suspended: mask.contains("suspended").then_some(organization.suspended),
            allow_private_addresses: mask
                .contains("allow_private_addresses")
                .then_some(organization.allow_private_addresses),
        };
        let updated = self.0.update(caller, changes).await?;
        Ok(Response::new(UpdateOrganizationResponse { organization: Some(organization_to_pb(updated)) }))
    }
}
