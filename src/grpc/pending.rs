//! Services whose messages are in the contract but whose behaviour lands in later releases:
//! they answer UNIMPLEMENTED with ErrorInfo reason ERROR_REASON_NOT_IMPLEMENTED.

use crate::error::Error;
use crate::pb::v1::auth_service_server::AuthService;
use crate::pb::v1::*;
use tonic::{Request, Response, Status};

pub struct PendingApi;

fn pending<T>(method: &'static str) -> Result<Response<T>, Status> {
    Err(Error::Unimplemented(method).into())
}

/// Implements `$service` for [`PendingApi`] with every listed method answering [`pending`].
macro_rules! pending_service {
    ($service:ident $($method:ident($request:ty) -> $response:ty;)+) => {
        #[tonic::async_trait]
        impl $service for PendingApi {
            $(
                async fn $method(&self, _request: Request<$request>) -> Result<Response<$response>, Status> {
                    pending(concat!(stringify!($service), ".", stringify!($method)))
                }
            )+
        }
    };
}

pending_service! { AuthService
    start_login(StartLoginRequest) -> StartLoginResponse;
    verify_login(VerifyLoginRequest) -> VerifyLoginResponse;
    get_current_login(GetCurrentLoginRequest) -> GetCurrentLoginResponse;
    list_login_sessions(ListLoginSessionsRequest) -> ListLoginSessionsResponse;
    extend_login_session(ExtendLoginSessionRequest) -> ExtendLoginSessionResponse;
    close_login_session(CloseLoginSessionRequest) -> CloseLoginSessionResponse;
    create_api_key(CreateApiKeyRequest) -> CreateApiKeyResponse;
    list_api_keys(ListApiKeysRequest) -> ListApiKeysResponse;
    revoke_api_key(RevokeApiKeyRequest) -> RevokeApiKeyResponse;
}
