use super::auth::caller;
use super::convert::{UpdateMask, page_request, require_id, role_from_pb, user_to_pb};
use crate::error::Error;
use crate::pb::v1::user_service_server::UserService;
use crate::pb::v1::*;
use crate::service::{NewUser, UserChanges, UserManager};
use tonic::{Request, Response, Status};

pub struct UserApi(pub UserManager);

const UPDATABLE: &[&str] = &["full_name", "role", "disabled"];
const ROLE_VALUES: &str = "must be ROLE_USER or ROLE_ADMIN";

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        let caller = caller(&request)?;
        let user = request.get_ref().user.clone().ok_or_else(|| Error::invalid("user", "is required"))?;
        let new = NewUser { email: user.email, full_name: user.full_name, role: role_from_pb(user.role) };
        let created = self.0.create(caller, new).await?;
        Ok(Response::new(CreateUserResponse { user: Some(user_to_pb(created)) }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let user = self.0.get(caller(&request)?, id).await?;
        Ok(Response::new(GetUserResponse { user: Some(user_to_pb(user)) }))
    }

    async fn get_current_user(
        &self,
        request: Request<GetCurrentUserRequest>,
    ) -> Result<Response<GetCurrentUserResponse>, Status> {
        let caller = caller(&request)?;
        let current = self.0.get_current(caller).await?;
        let permissions = caller.permissions.iter().map(|p| p.as_str().to_owned()).collect();
        Ok(Response::new(GetCurrentUserResponse {
            user: Some(user_to_pb(current.user)),
            permissions,
            max_session_minutes: current.max_session_minutes,
            default_session_minutes: current.default_session_minutes,
        }))
    }

    async fn update_current_user(
        &self,
        request: Request<UpdateCurrentUserRequest>,
    ) -> Result<Response<UpdateCurrentUserResponse>, Status> {
        let caller = caller(&request)?;
        let user = self.0.update_current(caller, request.get_ref().expiry_emails).await?;
        Ok(Response::new(UpdateCurrentUserResponse { user: Some(user_to_pb(user)) }))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let users = self.0.list(caller(&request)?, &page).await?;
        Ok(Response::new(ListUsersResponse {
            users: users.items.into_iter().map(user_to_pb).collect(),
            next_page_token: users.next_page_token,
        }))
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Result<Response<UpdateUserResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let user = message.user.clone().ok_or_else(|| Error::invalid("user", "is required"))?;
        let id = require_id("user.id", &user.id)?;
        let mask = UpdateMask::parse(message.update_mask.as_ref(), UPDATABLE)?;
        let role = if mask.contains("role") {
            Some(role_from_pb(user.role).ok_or_else(|| Error::invalid("user.role", ROLE_VALUES))?)
        } else {
            None
        };
        let changes = UserChanges {
            full_name: mask.contains("full_name").then(|| user.full_name.clone()),
            role,
            disabled: mask.contains("disabled").then_some(user.disabled),
        };
        let updated = self.0.update(caller, id, changes).await?;
        Ok(Response::new(UpdateUserResponse { user: Some(user_to_pb(updated)) }))
    }

    async fn disable_user(
        &self,
        request: Request<DisableUserRequest>,
    ) -> Result<Response<DisableUserResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let user = self.0.disable(caller(&request)?, id).await?;
        Ok(Response::new(DisableUserResponse { user: Some(user_to_pb(user)) }))
    }

    async fn unlock_user(&self, request: Request<UnlockUserRequest>) -> Result<Response<UnlockUserResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let user = self.0.unlock(caller(&request)?, id).await?;
        Ok(Response::new(UnlockUserResponse { user: Some(user_to_pb(user)) }))
    }
}
