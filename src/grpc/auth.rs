//! The authentication layer: every call except login, health and reflection must carry
//! `x-api-key: <key>` or `authorization: Bearer <token>`, and is admitted by its RPC's entry in
//! the [policy](super::policy). The resulting [`Caller`] travels to the handlers in the request
//! extensions.

use super::policy::rule_for;
use crate::domain::{Rule, client_address};
use crate::error::Error;
use crate::pb::v1::ErrorReason;
use crate::service::{AgentCaller, Authenticator, Caller, Credential};
use http::{Request, Response};
use ipnet::IpNet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

/// Long-lived calls that check their credential again while they run (see [`Recheck`]).
const RECHECKED_PATHS: &[&str] = &["/portcullis.v1.SessionService/WatchSession"];

/// What a long-lived call needs to check, while it runs, that its credential still holds: a
/// revoked key, a closed login, a disabled user or a suspended organization ends it.
#[derive(Clone)]
pub struct Recheck {
    authenticator: Authenticator,
    /// Only the credential headers of the call.
    headers: http::HeaderMap,
    rule: Rule,
    peer_ip: Option<IpAddr>,
}

impl Recheck {
    /// UNAUTHENTICATED or PERMISSION_DENIED once the credential no longer holds, or no longer
    /// reaches `owner`'s objects (an admin demoted while watching another member's session).
    pub async fn check(&self, owner: &str) -> Result<(), Status> {
        let caller = authorize(&self.authenticator, &self.headers, self.rule, self.peer_ip).await?;
        if !caller.reaches(owner) {
            return Err(Status::from(Error::PermissionDenied {
                reason: ErrorReason::PermissionMissing,
                message: "the caller may no longer read this session".into(),
            }));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
    /// Proxies whose forwarding headers name the caller (for the audit trail's client address).
    trusted_proxies: Arc<[IpNet]>,
}

impl AuthLayer {
    pub fn new(authenticator: Authenticator, trusted_proxies: &[IpNet]) -> AuthLayer {
        AuthLayer { authenticator, trusted_proxies: trusted_proxies.into() }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            authenticator: self.authenticator.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    authenticator: Authenticator,
    trusted_proxies: Arc<[IpNet]>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthMiddleware<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let authenticator = self.authenticator.clone();
        let trusted_proxies = self.trusted_proxies.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let rule = match rule_for(&path) {
                Some(Rule::Public) => return inner.call(request).await,
                Some(Rule::Agent) => {
                    let agent = match credential_from(request.headers()) {
                        Ok(Credential::ApiKey(secret)) => authenticator.authenticate_agent(secret).await,
                        Ok(Credential::Bearer(_)) => Err(unauthenticated(
                            ErrorReason::InvalidCredentials,
                            "an agent authenticates with `x-api-key: <its credential>`",
                        )),
                        Err(err) => Err(err),
                    };
                    return match agent {
                        Ok(agent) => {
                            request.extensions_mut().insert(agent);
                            inner.call(request).await
                        }
                        Err(err) => Ok(Status::from(err).into_http()),
                    };
                }
                Some(rule) => rule,
                // Fail closed: a method without a policy entry never reaches a handler.
                None => return Ok(Status::unimplemented(format!("unknown method {path}")).into_http()),
            };
            // The caller as detected (through trusted proxies only): what the audit trail records.
            let peer_ip = detected_address(request.headers(), request.extensions(), &trusted_proxies);
            match authorize(&authenticator, request.headers(), rule, peer_ip).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    if RECHECKED_PATHS.contains(&path.as_str()) {
                        let headers = CREDENTIAL_HEADERS
                            .iter()
                            .filter_map(|name| Some((name.clone(), request.headers().get(name)?.clone())))
                            .collect();
                        let recheck = Recheck { authenticator, headers, rule, peer_ip };
                        request.extensions_mut().insert(recheck);
                    }
                    inner.call(request).await
                }
                Err(err) => Ok(Status::from(err).into_http()),
            }
        })
    }
}

/// The caller's address through trusted proxies; the peer itself when their headers are unusable
/// (the calls that need the address refuse those headers themselves).
fn detected_address(
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = extensions.get::<TcpConnectInfo>().and_then(|info| info.remote_addr())?.ip();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Some(client_address(peer, header("x-forwarded-for"), header("x-real-ip"), trusted_proxies).unwrap_or(peer))
}

/// The caller behind the call's credential, admitted under `rule`.
async fn authorize(
    authenticator: &Authenticator,
    headers: &http::HeaderMap,
    rule: Rule,
    peer_ip: Option<IpAddr>,
) -> Result<Caller, Error> {
    let credential = credential_from(headers)?;
    let mut caller = authenticator.authenticate(credential, peer_ip).await?;
    caller.admit(rule)?;
    Ok(caller)
}

fn unauthenticated(reason: ErrorReason, message: &str) -> Error {
    Error::Unauthenticated { reason, message: message.to_owned() }
}

/// The headers a credential travels in.
const CREDENTIAL_HEADERS: [http::header::HeaderName; 2] =
    [http::header::HeaderName::from_static("x-api-key"), http::header::AUTHORIZATION];

fn credential_from(headers: &http::HeaderMap) -> Result<Credential<'_>, Error> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim));
    match (text("x-api-key"), text("authorization")) {
        (None, None) => Err(unauthenticated(
            ErrorReason::MissingCredentials,
            "send `x-api-key: <key>` or `authorization: Bearer <token>`",
        )),
        (Some(_), Some(_)) => {
            Err(unauthenticated(ErrorReason::InvalidCredentials, "send either x-api-key or authorization, not both"))
        }
        (Some(Ok(key)), None) => Ok(Credential::ApiKey(key)),
        (None, Some(Ok(value))) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Credential::Bearer(token.trim()))
            }
            _ => Err(unauthenticated(ErrorReason::InvalidCredentials, "authorization must be `Bearer <token>`")),
        },
        _ => Err(unauthenticated(ErrorReason::InvalidCredentials, "credentials must be visible ASCII")),
    }
}

/// The host agent of a call that passed [`AuthLayer`] under [`Rule::Agent`].
pub fn agent_caller<T>(request: &tonic::Request<T>) -> Result<AgentCaller, Status> {
    request
        .extensions()
        .get::<AgentCaller>()
        .cloned()
        .ok_or_else(|| Status::from(unauthenticated(ErrorReason::MissingCredentials, "the call was not authenticated")))
}

/// The authenticated caller of a request that passed [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::from(unauthenticated(ErrorReason::MissingCredentials, "the call was not authenticated")))
}
