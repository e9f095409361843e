//! AuthService: the email-code login (with an optional password), login sessions and API keys.

use super::auth::caller;
use super::convert::caller_address;
use super::convert::{
    api_key_to_pb, login_session_to_pb, page_request, parse_timestamp, require_id, role_to_pb, timestamp,
};
use crate::error::Error;
use crate::pb::v1::auth_service_server::AuthService;
use crate::pb::v1::*;
use crate::service::{ApiKeyManager, LoginClient, LoginManager, NewApiKey, SsoLogins, SsoOutcome, SsoTarget};
use ipnet::IpNet;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct AuthApi {
    pub api_keys: ApiKeyManager,
    pub logins: LoginManager,
    pub sso: SsoLogins,
    pub trusted_proxies: Vec<IpNet>,
}

impl AuthApi {
    /// The login's client: its address (through trusted proxies only) and user agent.
    fn client<T>(&self, request: &Request<T>) -> Result<LoginClient, Status> {
        let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
        let ip = caller_address(request, &self.trusted_proxies)?
            .ok_or_else(|| Status::failed_precondition("the client address is unknown"))?;
        let user_agent = header("user-agent").unwrap_or_default().chars().take(512).collect();
        Ok(LoginClient { ip, user_agent })
    }
}

/// How often a waiting WaitSsoLogin looks whether the browser came back (on any replica).
const SSO_POLL: Duration = Duration::from_millis(500);

type SsoStream = Pin<Box<dyn futures::Stream<Item = Result<WaitSsoLoginResponse, Status>> + Send>>;

fn verified_to_pb(verified: crate::service::logins::VerifiedLogin) -> VerifyLoginResponse {
    VerifyLoginResponse {
        access_token: verified.access_token,
        expires_at: Some(timestamp(verified.token_expires_at)),
        login_session: Some(login_session_to_pb(verified.login_session, true)),
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    type WaitSsoLoginStream = SsoStream;

    async fn start_sso_login(
        &self,
        request: Request<StartSsoLoginRequest>,
    ) -> Result<Response<StartSsoLoginResponse>, Status> {
        let client = self.client(&request)?;
        let message = request.get_ref();
        let target = match (message.organization_id.as_str(), message.email.trim()) {
            ("", "") => return Err(Error::invalid("organization_id", "name the organization or the email").into()),
            (organization_id, "") => SsoTarget::Organization {
                organization_id: require_id("organization_id", organization_id)?.to_owned(),
                identity_provider_id: match message.identity_provider_id.as_str() {
                    "" => None,
                    id => Some(require_id("identity_provider_id", id)?.to_owned()),
                },
            },
            ("", email) => SsoTarget::Email(email.to_owned()),
            _ => return Err(Error::invalid("email", "name the organization or the email, not both").into()),
        };
        let started = self.sso.start(target, &client).await?;
        Ok(Response::new(StartSsoLoginResponse {
            sso_login_id: started.sso_login_id,
            poll_secret: started.poll_secret,
            authorization_url: started.authorization_url,
            expires_at: Some(timestamp(started.expires_at)),
        }))
    }

    async fn wait_sso_login(
        &self,
        request: Request<WaitSsoLoginRequest>,
    ) -> Result<Response<Self::WaitSsoLoginStream>, Status> {
        let message = request.into_inner();
        let id = require_id("sso_login_id", &message.sso_login_id)?.to_owned();
        if message.poll_secret.is_empty() {
            return Err(Error::invalid("poll_secret", "is required").into());
        }
        // A wrong secret or an unknown login is refused before the stream starts.
        let first = self.sso.poll(&id, &message.poll_secret).await?;
        let sso = self.sso.clone();
        let stream = sso_stream(first, move || {
            let (sso, id, secret) = (sso.clone(), id.clone(), message.poll_secret.clone());
            async move { sso.poll(&id, &secret).await }
        });
        Ok(Response::new(stream))
    }
    async fn start_login(&self, request: Request<StartLoginRequest>) -> Result<Response<StartLoginResponse>, Status> {
        let client = self.client(&request)?;
        let message = request.get_ref();
        let organization_id = match message.organization_id.as_str() {
            "" => None,
            id if crate::domain::is_valid_id(id) => Some(id),
            _ => return Err(Error::invalid("organization_id", "is not a valid id").into()),
        };
        let started = self.logins.start(&message.email, organization_id, message.password.as_deref(), &client).await?;
        Ok(Response::new(StartLoginResponse {
            verification_code_id: started.verification_code_id,
            expires_at: Some(timestamp(started.expires_at)),
        }))
    }

    async fn verify_login(
        &self,
        request: Request<VerifyLoginRequest>,
    ) -> Result<Response<VerifyLoginResponse>, Status> {
        let client = self.client(&request)?;
        let message = request.get_ref();
        let id = require_id("verification_code_id", &message.verification_code_id)?;
        let verified = self.logins.verify(id, &message.code, &client).await?;
        Ok(Response::new(verified_to_pb(verified)))
    }

    async fn get_current_login(
        &self,
        request: Request<GetCurrentLoginRequest>,
    ) -> Result<Response<GetCurrentLoginResponse>, Status> {
        let caller = caller(&request)?;
        let login = self.logins.current(caller).await?;
        Ok(Response::new(GetCurrentLoginResponse {
            user_id: caller.user_id.clone(),
            alias: caller.email.clone(),
            full_name: caller.full_name.clone(),
            roles: vec![role_to_pb(caller.role).into()],
            groups: self.sso.groups_of(&caller.user_id).await?,
            expires_at: Some(timestamp(login.expires_at)),
            ip: login.ip.clone(),
            user_agent: login.user_agent.clone(),
            verified: true,
            login_session: Some(login_session_to_pb(login, true)),
        }))
    }

    async fn list_login_sessions(
        &self,
        request: Request<ListLoginSessionsRequest>,
    ) -> Result<Response<ListLoginSessionsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let logins = self.logins.list(caller, &page).await?;
        let current = caller.login_session_id.as_deref();
        Ok(Response::new(ListLoginSessionsResponse {
            login_sessions: logins
                .items
                .into_iter()
                .map(|login| {
                    let is_current = current == Some(login.id.as_str());
                    login_session_to_pb(login, is_current)
                })
                .collect(),
            next_page_token: logins.next_page_token,
        }))
    }

    async fn extend_login_session(
        &self,
        request: Request<ExtendLoginSessionRequest>,
    ) -> Result<Response<ExtendLoginSessionResponse>, Status> {
        let extended = self.logins.extend(caller(&request)?).await?;
        Ok(Response::new(ExtendLoginSessionResponse {
            login_session: Some(login_session_to_pb(extended.login_session, true)),
            access_token: extended.access_token,
            expires_at: Some(timestamp(extended.token_expires_at)),
        }))
    }

    async fn close_login_session(
        &self,
        request: Request<CloseLoginSessionRequest>,
    ) -> Result<Response<CloseLoginSessionResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        self.logins.close(caller(&request)?, id).await?;
        Ok(Response::new(CloseLoginSessionResponse {}))
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

/// WAITING at once, then the outcome once `poll` has one.
fn sso_stream<F, Fut>(first: SsoOutcome, poll: F) -> SsoStream
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = crate::error::Result<SsoOutcome>> + Send,
{
    let waiting = || WaitSsoLoginResponse { state: SsoLoginState::Waiting.into(), login: None };
    let done =
        |verified| WaitSsoLoginResponse { state: SsoLoginState::Done.into(), login: Some(verified_to_pb(verified)) };
    match first {
        SsoOutcome::Done(verified) => Box::pin(futures::stream::iter([Ok(done(*verified))])),
        SsoOutcome::Waiting => {
            let rest = futures::stream::unfold((poll, false), move |(poll, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    tokio::time::sleep(SSO_POLL).await;
                    match poll().await {
                        Ok(SsoOutcome::Waiting) => continue,
                        Ok(SsoOutcome::Done(verified)) => return Some((Ok(done(*verified)), (poll, true))),
                        Err(err) => return Some((Err(Status::from(err)), (poll, true))),
                    }
                }
            });
            Box::pin(futures::StreamExt::chain(futures::stream::iter([Ok(waiting())]), rest))
        }
    }
}
