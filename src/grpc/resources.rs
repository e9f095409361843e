use super::auth::caller;
use super::convert::{UpdateMask, approval_from_pb, page_request, provider_from_pb, require_id, resource_to_pb};
use crate::error::Error;
use crate::pb::v1::resource_service_server::ResourceService;
use crate::pb::v1::*;
use crate::provider::CheckOutcome;
use crate::service::{NewResource, ResourceChanges, ResourceManager};
use tonic::{Request, Response, Status};

pub struct ResourceApi(pub ResourceManager);

const UPDATABLE: &[&str] = &["name", "description", "provider", "approval"];
/// An empty mask changes these (an approval policy changes only when named).
const UPDATED_BY_DEFAULT: &[&str] = &["name", "description", "provider"];

fn to_pb(model: crate::store::entity::resource::Model) -> Result<Resource, Status> {
    resource_to_pb(model).map_err(|err| Status::from(Error::from(err)))
}

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn create_resource(
        &self,
        request: Request<CreateResourceRequest>,
    ) -> Result<Response<CreateResourceResponse>, Status> {
        let caller = caller(&request)?;
        let resource = request.get_ref().resource.clone().ok_or_else(|| Error::invalid("resource", "is required"))?;
        let provider = resource.provider.map(provider_from_pb).transpose()?;
        let approval = approval_from_pb(resource.approval.as_ref())?;
        let new = NewResource { name: resource.name, description: resource.description, provider, approval };
        let created = self.0.create(caller, new).await?;
        Ok(Response::new(CreateResourceResponse { resource: Some(to_pb(created)?) }))
    }

    async fn get_resource(
        &self,
        request: Request<GetResourceRequest>,
    ) -> Result<Response<GetResourceResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let resource = self.0.get(caller(&request)?, id).await?;
        Ok(Response::new(GetResourceResponse { resource: Some(to_pb(resource)?) }))
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let user_id = if message.user_id.is_empty() { None } else { Some(require_id("user_id", &message.user_id)?) };
        let resources = self.0.list(caller(&request)?, user_id, &page).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: resources.items.into_iter().map(to_pb).collect::<Result<_, _>>()?,
            next_page_token: resources.next_page_token,
        }))
    }

    async fn update_resource(
        &self,
        request: Request<UpdateResourceRequest>,
    ) -> Result<Response<UpdateResourceResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let resource = message.resource.clone().ok_or_else(|| Error::invalid("resource", "is required"))?;
        let id = require_id("resource.id", &resource.id)?.to_owned();
        let named = message.update_mask.as_ref().is_some_and(|mask| !mask.paths.is_empty());
        let mask = UpdateMask::parse(message.update_mask.as_ref(), if named { UPDATABLE } else { UPDATED_BY_DEFAULT })?;
        let provider = if mask.contains("provider") {
            let provider = resource.provider.ok_or_else(|| {
                Error::invalid(
                    "resource.provider",
                    "one of memory, aws_security_group, gcp_firewall, azure_network_security_group is required",
                )
            })?;
            Some(provider_from_pb(provider)?)
        } else {
            None
        };
        let changes = ResourceChanges {
            name: mask.contains("name").then_some(resource.name),
            description: mask.contains("description").then_some(resource.description),
            provider,
            approval: if mask.contains("approval") {
                Some(approval_from_pb(resource.approval.as_ref())?)
            } else {
                None
            },
        };
        let updated = self.0.update(caller, &id, changes).await?;
        Ok(Response::new(UpdateResourceResponse { resource: Some(to_pb(updated)?) }))
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResourceResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        self.0.delete(caller(&request)?, id).await?;
        Ok(Response::new(DeleteResourceResponse {}))
    }

    async fn assign_resource(
        &self,
        request: Request<AssignResourceRequest>,
    ) -> Result<Response<AssignResourceResponse>, Status> {
        let message = request.get_ref();
        let resource_id = require_id("resource_id", &message.resource_id)?;
        let user_id = require_id("user_id", &message.user_id)?;
        self.0.assign(caller(&request)?, resource_id, user_id).await?;
        Ok(Response::new(AssignResourceResponse {}))
    }

    async fn unassign_resource(
        &self,
        request: Request<UnassignResourceRequest>,
    ) -> Result<Response<UnassignResourceResponse>, Status> {
        let message = request.get_ref();
        let resource_id = require_id("resource_id", &message.resource_id)?;
        let user_id = require_id("user_id", &message.user_id)?;
        self.0.unassign(caller(&request)?, resource_id, user_id).await?;
        Ok(Response::new(UnassignResourceResponse {}))
    }

    async fn check_resource(
        &self,
        request: Request<CheckResourceRequest>,
    ) -> Result<Response<CheckResourceResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let (status, message) = match self.0.check(caller(&request)?, id).await? {
            CheckOutcome::Ok(m) => (CheckStatus::Ok, m),
            CheckOutcome::NotFound(m) => (CheckStatus::NotFound, m),
            CheckOutcome::AccessDenied(m) => (CheckStatus::AccessDenied, m),
            CheckOutcome::Unreachable(m) => (CheckStatus::Unreachable, m),
            CheckOutcome::Unsupported(m) => (CheckStatus::Unsupported, m),
        };
        Ok(Response::new(CheckResourceResponse { status: status.into(), message }))
    }
}
