//! IdentityProviderService: an organization's OpenID Connect providers.

use super::auth::caller;
use super::convert::{UpdateMask, identity_provider_to_pb, mapped_role_from_pb, page_request, require_id};
use crate::domain::IdentityProviderInput;
use crate::error::Error;
use crate::pb::v1::identity_provider_service_server::IdentityProviderService;
use crate::pb::v1::*;
use crate::service::{IdentityProviderManager, ProviderChanges};
use tonic::{Request, Response, Status};

pub struct IdentityProviderApi(pub IdentityProviderManager);

const UPDATABLE: &[&str] = &[
    "display_name",
    "issuer_url",
    "client_id",
    "client_secret",
    "scopes",
    "groups_claim",
    "allowed_email_domains",
    "group_mappings",
    "jit_users",
    "sso_required",
];
/// An empty mask changes these: the secret is kept unless named.
const UPDATED_BY_DEFAULT: &[&str] = &[
    "display_name",
    "issuer_url",
    "client_id",
    "scopes",
    "groups_claim",
    "allowed_email_domains",
    "group_mappings",
    "jit_users",
    "sso_required",
];

/// The provider a request states, before the service checks it.
fn input_of(provider: &IdentityProvider) -> IdentityProviderInput<'_> {
    IdentityProviderInput {
        display_name: &provider.display_name,
        issuer_url: &provider.issuer_url,
        client_id: &provider.client_id,
        scopes: &provider.scopes,
        groups_claim: &provider.groups_claim,
        allowed_email_domains: &provider.allowed_email_domains,
        group_mappings: provider
            .group_mappings
            .iter()
            .map(|mapping| (mapping.group.as_str(), mapped_role_from_pb(mapping.role), mapping.resource_ids.as_slice()))
            .collect(),
        jit_users: provider.jit_users,
        sso_required: provider.sso_required,
    }
}

#[tonic::async_trait]
impl IdentityProviderService for IdentityProviderApi {
    async fn create_identity_provider(
        &self,
        request: Request<CreateIdentityProviderRequest>,
    ) -> Result<Response<CreateIdentityProviderResponse>, Status> {
        let caller = caller(&request)?;
        let provider = request
            .get_ref()
            .identity_provider
            .as_ref()
            .ok_or_else(|| Error::invalid("identity_provider", "is required"))?;
        let created =
            self.0.create(caller, &provider.organization_id, input_of(provider), &provider.client_secret).await?;
        Ok(Response::new(CreateIdentityProviderResponse { identity_provider: Some(identity_provider_to_pb(created)?) }))
    }

    async fn get_identity_provider(
        &self,
        request: Request<GetIdentityProviderRequest>,
    ) -> Result<Response<GetIdentityProviderResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let found = self.0.get(caller(&request)?, id).await?;
        Ok(Response::new(GetIdentityProviderResponse { identity_provider: Some(identity_provider_to_pb(found)?) }))
    }

    async fn list_identity_providers(
        &self,
        request: Request<ListIdentityProvidersRequest>,
    ) -> Result<Response<ListIdentityProvidersResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let listed = self.0.list(caller(&request)?, &message.organization_id, &page).await?;
        Ok(Response::new(ListIdentityProvidersResponse {
            identity_providers: listed.items.into_iter().map(identity_provider_to_pb).collect::<Result<_, _>>()?,
            next_page_token: listed.next_page_token,
        }))
    }

    async fn update_identity_provider(
        &self,
        request: Request<UpdateIdentityProviderRequest>,
    ) -> Result<Response<UpdateIdentityProviderResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let provider =
            message.identity_provider.as_ref().ok_or_else(|| Error::invalid("identity_provider", "is required"))?;
        let id = require_id("identity_provider.id", &provider.id)?;
        let named = message.update_mask.as_ref().is_some_and(|mask| !mask.paths.is_empty());
        let mask = UpdateMask::parse(message.update_mask.as_ref(), if named { UPDATABLE } else { UPDATED_BY_DEFAULT })?;
        let changes = ProviderChanges {
            display_name: mask.contains("display_name"),
            issuer_url: mask.contains("issuer_url"),
            client_id: mask.contains("client_id"),
            client_secret: mask.contains("client_secret"),
            scopes: mask.contains("scopes"),
            groups_claim: mask.contains("groups_claim"),
            allowed_email_domains: mask.contains("allowed_email_domains"),
            group_mappings: mask.contains("group_mappings"),
            jit_users: mask.contains("jit_users"),
            sso_required: mask.contains("sso_required"),
        };
        let updated = self.0.update(caller, id, input_of(provider), &provider.client_secret, &changes).await?;
        Ok(Response::new(UpdateIdentityProviderResponse { identity_provider: Some(identity_provider_to_pb(updated)?) }))
    }

    async fn delete_identity_provider(
        &self,
        request: Request<DeleteIdentityProviderRequest>,
    ) -> Result<Response<DeleteIdentityProviderResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        self.0.delete(caller(&request)?, id).await?;
        Ok(Response::new(DeleteIdentityProviderResponse {}))
    }
}
