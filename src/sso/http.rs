//! The one HTTP client of single sign-on. Organization admins name the identity provider, so
//! every URL fetched for it (discovery, keys, token, userinfo) is held to the same rule as a
//! webhook's: https to public addresses only, checked on the addresses a name resolves to, and
//! connected by those addresses; plain http and private addresses only under a prefix the
//! operator allows (`sso.allowed_private_issuers`). No redirect is followed and no proxy is
//! used (a proxy would resolve names itself).

use crate::domain::{check_public_address, under_prefix};
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to an identity provider got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL may not be fetched: not https, or a private address, outside the allowed prefixes.
    #[error("{url} may not be fetched: {why}")]
    NotAllowed { url: String, why: String },
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    /// The provider failed (5xx): whatever its body says, it is no answer about a user.
    #[error("{url} answered {status}")]
    ServerError { url: String, status: u16 },
    #[error("the request could not be built: {0}")]
    Build(#[from] http::Error),
}

/// Fetches identity provider URLs under the destination rule above.
#[derive(Clone)]
pub struct IdpHttp {
    /// Names resolve to public addresses only; https only.
    public: reqwest::Client,
    /// For URLs under an allowed prefix (a test IdP on this machine or the private network).
    private: reqwest::Client,
    allowed_private: Arc<[String]>,
}

impl IdpHttp {
    /// A client whose every request ends within `timeout`.
    pub fn new(allowed_private: Vec<String>, timeout: Duration) -> Result<IdpHttp, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(timeout)
                .user_agent(concat!("Portcullis/", env!("CARGO_PKG_VERSION")))
        };
        Ok(IdpHttp {
            public: builder().https_only(true).dns_resolver(PublicOnly).build()?,
            private: builder().build()?,
            allowed_private: allowed_private.into(),
        })
    }

    /// Whether `url` is under a prefix the operator allows private (and plain http).
    pub fn allows_private(&self, url: &str) -> bool {
        under_prefix(url, &self.allowed_private)
    }

    /// Refuses a URL the rule forbids before anything is sent. Names are checked again as they
    /// resolve ([`PublicOnly`]); an address written in the URL is checked here.
    pub fn check_url(&self, url: &str) -> Result<(), HttpError> {
        let refuse = |why: String| HttpError::NotAllowed { url: url.to_owned(), why };
        if self.allows_private(url) {
            return Ok(());
        }
        let parsed = url::Url::parse(url).map_err(|err| refuse(err.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(refuse("it must be https".into()));
        }
        let address = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(refuse("it names no host".into())),
        };
        if let Some(address) = address {
            check_public_address(address).map_err(|why| refuse(why.to_string()))?;
        }
        Ok(())
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = request.uri().to_string();
        self.check_url(&url)?;
        let client = if self.allows_private(&url) { &self.private } else { &self.public };
        let (parts, body) = request.into_parts();
        let mut outgoing = client.request(parts.method, &url).body(body);
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let answer = outgoing.send().await?;
        if answer.status().is_server_error() {
            return Err(HttpError::ServerError { url, status: answer.status().as_u16() });
        }
        let mut response = http::Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            response = response.header(name, value);
        }
        Ok(response.body(answer.bytes().await?.to_vec())?)
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// Resolves names to their public addresses only: a name that resolves to none is refused,
/// and the connection goes to the addresses checked here, never to a second lookup.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                resolved.iter().copied().filter(|address| check_public_address(address.ip()).is_ok()).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(allowed: &[&str]) -> IdpHttp {
        IdpHttp::new(allowed.iter().map(|prefix| (*prefix).to_owned()).collect(), Duration::from_secs(2)).unwrap()
    }

    fn get(url: &str) -> HttpRequest {
        http::Request::get(url).body(Vec::new()).unwrap()
    }

    #[test]
    fn only_https_to_public_addresses_unless_the_operator_allows_it() {
        let strict = http(&[]);
        assert!(strict.check_url("https://accounts.example.com/.well-known/openid-configuration").is_ok());
        for refused in [
            "http://accounts.example.com/",
            "https://127.0.0.1/",
            "https://10.1.2.3/keys",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:192.168.0.1]/",
            "file:///etc/passwd",
        ] {
            assert!(strict.check_url(refused).is_err(), "{refused}");
        }
        let lenient = http(&["http://127.0.0.1:5556/dex"]);
        assert!(lenient.check_url("http://127.0.0.1:5556/dex/keys").is_ok());
        assert!(lenient.check_url("http://127.0.0.1:5557/dex/keys").is_err(), "another port");
        assert!(lenient.check_url("http://127.0.0.1:5556/other").is_err(), "another path");
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_never_connected() {
        let answer = http(&[]).call(get("https://localhost:9/.well-known/openid-configuration")).await;
        let err = answer.expect_err("localhost is loopback");
        assert!(format!("{err:?}").contains("no public address"), "{err:?}");
    }

    #[tokio::test]
    async fn redirects_are_answered_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/dex/keys",
            axum::routing::get(|| async {
                (http::StatusCode::FOUND, [(http::header::LOCATION, "http://169.254.169.254/latest/meta-data")])
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = http(&[&format!("http://127.0.0.1:{port}/dex")]);
        let answer = client.call(get(&format!("http://127.0.0.1:{port}/dex/keys"))).await.unwrap();
        assert_eq!(answer.status(), http::StatusCode::FOUND);
    }
}
