//! AuthService: API keys today; the email-code login and login-session RPCs answer
//! UNIMPLEMENTED (ErrorInfo reason ERROR_REASON_NOT_IMPLEMENTED) until they land.

use super::auth::caller;
use super::convert::{api_key_to_pb, page_request, parse_timestamp, require_id};
use crate::error::Error;
use crate::pb::v1::auth_service_server::AuthService;
use crate::pb::v1::*;
use crate::service::{ApiKeyManager, NewApiKey};
use tonic::{Request, Response, Status};

pub struct AuthApi {
    pub api_keys: ApiKeyManager,
}

fn pending<T>(method: &'static str) -> Result<Response<T>, Status> {
    Err(Error::Unimplemented(method).into())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn start_login(&self, _: Request<StartLoginRequest>) -> Result<Response<StartLoginResponse>, Status> {
        pending("AuthService.StartLogin")
    }

    async fn verify_login(&self, _: Request<VerifyLoginRequest>) -> Result<Response<VerifyLoginResponse>, Status> {
        pending("AuthService.VerifyLogin")
    }

    async fn get_current_login(
        &self,
        _: Request<GetCurrentLoginRequest>,
    ) -> Result<Response<GetCurrentLoginResponse>, Status> {
        pending("AuthService.GetCurrentLogin")
    }

    async fn list_login_sessions(
        &self,
        _: Request<ListLoginSessionsRequest>,
    ) -> Result<Response<ListLoginSessionsResponse>, Status> {
        pending("AuthService.ListLoginSessions")
    }

    async fn extend_login_session(
        &self,
        _: Request<ExtendLoginSessionRequest>,
    ) -> Result<Response<ExtendLoginSessionResponse>, Status> {
        pending("AuthService.ExtendLoginSession")
    }

    async fn close_login_session(
        &self,
        _: Request<CloseLoginSessionRequest>,
    ) -> Result<Response<CloseLoginSessionResponse>, Status> {
        pending("AuthService.CloseLoginSession")
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let expires_at = message.expires_at.as_ref().map(|at| parse_timestamp("expires_at", at)).transpose()?;
        let new = NewApiKey { name: message.name.clone(), permissions: message.permissions.clone(), expires_at };
        let (key, secret) = self.api_keys.create(caller, new).await?;
        Ok(Response::new(CreateApiKeyResponse { api_key: Some(api_key_to_pb(key)), secret }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let keys = self.api_keys.list(caller(&request)?, &page).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.items.into_iter().map(api_key_to_pb).collect(),
            next_page_token: keys.next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let key = self.api_keys.revoke(caller(&request)?, id).await?;
        Ok(Response::new(RevokeApiKeyResponse { api_key: Some(api_key_to_pb(key)) }))
    }
}
