//! One organization's OpenID Connect provider, as the server (the only client) talks to it:
//! discovery, the authorization URL (code flow with PKCE, state and nonce), the code exchange,
//! ID token validation and refresh. ID tokens are checked for signature (through the
//! provider's keys, fetched again once when a token names a key not yet known: rotation),
//! an asymmetric algorithm the provider advertises (never `none`, never an HMAC), issuer,
//! audience, expiry and nonce; a verified email is required.

use super::http::{HttpError, IdpHttp};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenFields, IdTokenVerifier,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

/// Claims beyond the standard ones, kept whole: the groups claim's name is the provider's choice.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type Fields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type OidcIdToken = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The signature algorithms an ID token may use: asymmetric ones only, so a token can never
/// be forged with the client secret or sent unsigned.
const ASYMMETRIC: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why single sign-on could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached, or answered something that is not OpenID Connect.
    #[error("the identity provider could not be used: {0}")]
    Provider(String),
    /// An ID token or a callback that must not be believed.
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
    /// The provider or this server is configured so that login cannot work.
    #[error("single sign-on is misconfigured: {0}")]
    Misconfigured(String),
}

impl From<HttpError> for SsoError {
    fn from(err: HttpError) -> Self {
        SsoError::Provider(err.to_string())
    }
}

/// Where the browser goes to log in, and what the callback must match.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: String,
    /// Comes back with the callback; it names the login.
    pub state: String,
    /// Must come back inside the ID token.
    pub nonce: String,
    /// Proves at the code exchange that this server asked for the code.
    pub pkce_verifier: String,
}

/// Who the provider says logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `iss`: with `sub`, the identity's key.
    pub issuer: String,
    pub subject: String,
    /// Always verified by the provider (`email_verified`).
    pub email: String,
    pub name: Option<String>,
    /// The groups claim, from the ID token or else userinfo; empty when neither has it.
    pub groups: Vec<String>,
    /// Kept (sealed) to ask the provider later whether the user still may log in.
    pub refresh_token: Option<String>,
}

/// How a refresh went.
#[derive(Debug)]
pub enum Refreshed {
    /// Still a user of the provider: their groups now, and the refresh token to keep.
    Valid { groups: Option<Vec<String>>, refresh_token: Option<String> },
    /// The provider refused the grant (`invalid_grant`): the user is gone or lost access.
    Revoked(String),
}

/// One provider, discovered.
pub struct Provider {
    http: IdpHttp,
    client: OidcClient,
    metadata: CoreProviderMetadata,
    client_id: ClientId,
    /// The provider's keys, refetched on rotation.
    keys: RwLock<CoreJsonWebKeySet>,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    groups_claim: String,
}

/// Fetches the issuer's discovery document and keys; `issuer` must be exactly the document's
/// `issuer`.
pub async fn discover(http: &IdpHttp, issuer: &str) -> Result<CoreProviderMetadata, SsoError> {
    let issuer = IssuerUrl::new(issuer.to_owned()).map_err(|err| SsoError::Misconfigured(err.to_string()))?;
    CoreProviderMetadata::discover_async(issuer, http).await.map_err(|err| SsoError::Provider(describe(&err)))
}

impl Provider {
    /// The client `client_id` of the provider discovered as `metadata`, redirecting back to
    /// `redirect_url`; groups are read from the claim named `groups_claim`.
    pub fn new(
        http: IdpHttp,
        metadata: CoreProviderMetadata,
        client_id: &str,
        client_secret: &str,
        redirect_url: &str,
        groups_claim: &str,
    ) -> Result<Arc<Provider>, SsoError> {
        let algorithms: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| ASYMMETRIC.contains(alg))
            .cloned()
            .collect();
        if algorithms.is_empty() {
            return Err(SsoError::Misconfigured(
                "the provider signs ID tokens with no asymmetric algorithm this server accepts".into(),
            ));
        }
        for url in [metadata.token_endpoint().map(|url| url.as_str()), Some(metadata.jwks_uri().as_str())]
            .into_iter()
            .flatten()
        {
            http.check_url(url)?;
        }
        let redirect =
            RedirectUrl::new(redirect_url.to_owned()).map_err(|err| SsoError::Misconfigured(err.to_string()))?;
        let client_id = ClientId::new(client_id.to_owned());
        let keys = metadata.jwks().clone();
        let client = OidcClient::from_provider_metadata(
            metadata.clone(),
            client_id.clone(),
            Some(ClientSecret::new(client_secret.to_owned())),
        )
        .set_redirect_uri(redirect);
        Ok(Arc::new(Provider {
            http,
            client,
            metadata,
            client_id,
            keys: RwLock::new(keys),
            algorithms,
            groups_claim: groups_claim.to_owned(),
        }))
    }

    /// A fresh authorization: the URL to send the browser to, with new state, nonce and PKCE.
    pub fn authorize(&self, scopes: &[String]) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in scopes.iter().filter(|scope| scope.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges the callback's `code` and checks the ID token against `nonce`.
    pub async fn finish(&self, code: &str, pkce_verifier: &str, nonce: &str) -> Result<Identity, SsoError> {
        let request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| SsoError::Misconfigured(err.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        let tokens = request.request_async(&self.http).await.map_err(|err| SsoError::Provider(describe(&err)))?;
        let id_token = tokens.id_token().ok_or_else(|| SsoError::Refused("the answer carries no ID token".into()))?;
        let mut identity = self.verify(id_token, nonce).await?;
        identity.refresh_token = tokens.refresh_token().map(|token| token.secret().clone());
        if identity.groups.is_empty() {
            identity.groups =
                self.groups_from_userinfo(tokens.access_token(), Some(&identity.subject)).await?.unwrap_or_default();
        }
        Ok(identity)
    }

    /// Checks `raw` (a compact ID token) as [`Self::finish`] does.
    pub async fn verify_raw(&self, raw: &str, nonce: &str) -> Result<Identity, SsoError> {
        let token = OidcIdToken::from_str(raw).map_err(|err| SsoError::Refused(format!("not an ID token: {err}")))?;
        self.verify(&token, nonce).await
    }

    async fn verify(&self, token: &OidcIdToken, nonce: &str) -> Result<Identity, SsoError> {
        let expected = Nonce::new(nonce.to_owned());
        let claims = match token.claims(&self.verifier(), &expected) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // A key the provider rotated in since the keys were read: read them again, once.
                let keys = CoreJsonWebKeySet::fetch_async(self.metadata.jwks_uri(), &self.http)
                    .await
                    .map_err(|err| SsoError::Provider(describe(&err)))?;
                if let Ok(mut held) = self.keys.write() {
                    *held = keys;
                }
                token.claims(&self.verifier(), &expected)
            }
            other => other,
        }
        .map_err(|err| SsoError::Refused(err.to_string()))?;
        let email = claims.email().map(|email| email.as_str().to_owned());
        let Some(email) = email.filter(|_| claims.email_verified() == Some(true)) else {
            return Err(SsoError::Refused("the ID token carries no verified email".into()));
        };
        Ok(Identity {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: email.to_lowercase(),
            name: claims.name().and_then(|name| name.get(None)).map(|name| name.as_str().to_owned()),
            groups: groups_of(&claims.additional_claims().claims, &self.groups_claim).unwrap_or_default(),
            refresh_token: None,
        })
    }

    fn verifier(&self) -> IdTokenVerifier<'_, CoreJsonWebKey> {
        let keys = self.keys.read().map(|keys| keys.clone()).unwrap_or_else(|held| held.into_inner().clone());
        IdTokenVerifier::new_public_client(self.client_id.clone(), self.metadata.issuer().clone(), keys)
            .set_allowed_algs(self.algorithms.iter().cloned())
    }

    /// The groups claim from userinfo, when the provider has the endpoint (none when the answer
    /// lacks the claim); its `sub` must be `subject` when one is known (a refresh without an ID
    /// token names none). `None`: the provider has no userinfo endpoint.
    async fn groups_from_userinfo(
        &self,
        access_token: &openidconnect::AccessToken,
        subject: Option<&str>,
    ) -> Result<Option<Vec<String>>, SsoError> {
        let subject = subject.map(|subject| openidconnect::SubjectIdentifier::new(subject.to_owned()));
        let Ok(request) = self.client.user_info(access_token.clone(), subject) else {
            return Ok(None);
        };
        let claims: openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim> =
            request.request_async(&self.http).await.map_err(|err| SsoError::Provider(describe(&err)))?;
        Ok(Some(groups_of(&claims.additional_claims().claims, &self.groups_claim).unwrap_or_default()))
    }

    /// Asks the provider whether `refresh_token` still holds. The grant is refused when the
    /// provider answers 4xx with `invalid_grant`, or with `invalid_request` (what Dex answers
    /// for a token it no longer has: our refresh request carries nothing else that could be
    /// wrong). Anything else (`invalid_client` and the other configuration errors, 5xx, no
    /// answer) is the provider's or ours and says nothing about the user: one bad client
    /// secret never disables anyone.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Refreshed, SsoError> {
        let token = RefreshToken::new(refresh_token.to_owned());
        let request =
            self.client.exchange_refresh_token(&token).map_err(|err| SsoError::Misconfigured(err.to_string()))?;
        match request.request_async(&self.http).await {
            Ok(tokens) => {
                let verifier = self.verifier();
                let claims =
                    tokens.id_token().and_then(|token| token.claims(&verifier, |_: Option<&Nonce>| Ok(())).ok());
                let subject = claims.map(|claims| claims.subject().as_str().to_owned());
                // A provider leaves an empty groups claim out (Dex does): without it in the ID
                // token, userinfo says what the groups are now.
                let groups = match claims
                    .and_then(|claims| groups_of(&claims.additional_claims().claims, &self.groups_claim))
                {
                    Some(groups) => Some(groups),
                    None => self.groups_from_userinfo(tokens.access_token(), subject.as_deref()).await.ok().flatten(),
                };
                Ok(Refreshed::Valid { groups, refresh_token: tokens.refresh_token().map(|t| t.secret().clone()) })
            }
            Err(RequestTokenError::ServerResponse(answer))
                if matches!(
                    answer.error(),
                    CoreErrorResponseType::InvalidGrant | CoreErrorResponseType::InvalidRequest
                ) =>
            {
                Ok(Refreshed::Revoked(answer.to_string()))
            }
            Err(err) => Err(SsoError::Provider(describe(&err))),
        }
    }
}

/// The groups `claim` lists, as strings; `None` when the claim is absent.
fn groups_of(claims: &serde_json::Map<String, serde_json::Value>, claim: &str) -> Option<Vec<String>> {
    match claims.get(claim)? {
        serde_json::Value::Array(items) => {
            Some(items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
        }
        serde_json::Value::String(one) => Some(vec![one.clone()]),
        _ => None,
    }
}

/// An error with its causes, for the log and the caller.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
