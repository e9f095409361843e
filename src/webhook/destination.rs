//! Posting to a receiver. A webhook URL is chosen by an organization's admin, so the server
//! must not become their way into the operator's network: only https to public addresses,
//! checked on the address actually connected to (resolved once, then connected by address, so
//! a DNS answer that changes in between cannot point the request elsewhere), no redirects
//! followed. Plain http and private destinations are allowed under the URL prefixes the
//! operator lists in `webhooks.allowed_private_endpoints`.

use crate::domain::{Invalid, check_public_address, clean_path, under_prefix};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where webhooks may post, and how.
#[derive(Clone)]
pub struct Destinations {
    allowed_private: Arc<Vec<String>>,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

/// A receiver's answer to one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
}

impl Answer {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a post got no answer: a reason fit for the webhook's owner (stored with the delivery)
/// and the detail, for the server's log only. The detail can tell how this server resolves and
/// reaches names (an internal name resolving to 10.1.2.3), which is no tenant's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub reason: &'static str,
    pub detail: String,
}

impl Undelivered {
    /// Not allowed, not resolved, or not connected: one reason, so the answer is no oracle of
    /// the operator's network.
    fn unreachable(detail: impl Into<String>) -> Undelivered {
        Undelivered { reason: "destination not allowed or not reachable", detail: detail.into() }
    }

    fn tls(detail: impl Into<String>) -> Undelivered {
        Undelivered { reason: "the TLS handshake with the receiver failed", detail: detail.into() }
    }

    fn http(detail: impl Into<String>) -> Undelivered {
        Undelivered { reason: "the receiver's answer was not HTTP", detail: detail.into() }
    }
}

/// Why webhook delivery cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the TLS client: {0}")]
pub struct SetupError(#[from] rustls::Error);

/// A URL taken apart for connecting.
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// Whether the operator allows this URL plain http and private addresses.
    private_allowed: bool,
    uri: http::Uri,
}

impl Destinations {
    pub fn new(allowed_private: Vec<String>, timeout: Duration) -> Result<Destinations, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Destinations {
            allowed_private: Arc::new(allowed_private),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// The longest one post may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether `url` can be a webhook's: absolute http(s) without credentials or fragment,
    /// https unless allowed, and not a literal private address unless allowed. (Names are
    /// resolved and checked on every delivery.)
    pub fn check_url(&self, url: &str) -> Result<(), Invalid> {
        let target = self.target(url)?;
        if !target.private_allowed
            && let Ok(address) = target.host.trim_matches(['[', ']']).parse()
        {
            check_public_address(address)?;
        }
        Ok(())
    }

    fn target(&self, url: &str) -> Result<Target, Invalid> {
        if url.len() > 2048 {
            return Err("is longer than 2048 characters".into());
        }
        let uri: http::Uri = url.parse().map_err(|_| Invalid::from("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("must be an https URL".into()),
        };
        let authority = uri.authority().ok_or(Invalid::from("must name a host"))?;
        if authority.as_str().contains('@') {
            return Err("must not carry credentials".into());
        }
        if url.contains('#') {
            return Err("must not have a fragment".into());
        }
        // A receiver may read such a path as one elsewhere on its host than the URL shows.
        if clean_path(uri.path()).is_none() {
            return Err(
                "must have a plain path: no dot segments, backslashes, encoded slashes or double encoding".into()
            );
        }
        let private_allowed = under_prefix(url, &self.allowed_private);
        if !https && !private_allowed {
            return Err("must be an https URL (plain http only under webhooks.allowed_private_endpoints)".into());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target { https, host: authority.host().to_owned(), port, private_allowed, uri })
    }

    /// Posts `body` to `url` with `headers`, within the timeout, following no redirect.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, Undelivered> {
        let target = self.target(url).map_err(|why| Undelivered::unreachable(format!("the URL {why}")))?;
        match tokio::time::timeout(self.timeout, self.send(&target, headers, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(Undelivered {
                reason: "no answer within the timeout",
                detail: format!("no answer within {} s", self.timeout.as_secs()),
            }),
        }
    }

    async fn send(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, Undelivered> {
        let stream = self.connect(target).await?;
        let path = target.uri.path_and_query().map_or("/", |path| path.as_str());
        let mut request = http::Request::post(path)
            .header(http::header::HOST, target.uri.authority().map_or("", |authority| authority.as_str()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("Portcullis-Webhooks/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body)).map_err(|err| Undelivered::http(err.to_string()))?;
        let response = if target.https {
            let name = rustls_pki_types::ServerName::try_from(target.host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| Undelivered::tls(format!("{} is not a valid TLS server name", target.host)))?;
            let tls = self.tls.connect(name, stream).await.map_err(|err| Undelivered::tls(format!("TLS: {err}")))?;
            exchange(TokioIo::new(tls), request).await?
        } else {
            exchange(TokioIo::new(stream), request).await?
        };
        Ok(Answer { status: response })
    }

    /// Resolves the host and connects to the first acceptable address.
    async fn connect(&self, target: &Target) -> Result<TcpStream, Undelivered> {
        let host = target.host.trim_matches(['[', ']']);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, target.port))
            .await
            .map_err(|err| Undelivered::unreachable(format!("{host} does not resolve: {err}")))?
            .collect();
        let mut refusals = Vec::new();
        for address in addresses {
            if !target.private_allowed
                && let Err(refused) = check_public_address(address.ip())
            {
                refusals.push(refused.to_string());
                continue;
            }
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(err) => refusals.push(format!("{address}: {err}")),
            }
        }
        Err(Undelivered::unreachable(if refusals.is_empty() {
            format!("{host} has no address")
        } else {
            refusals.join("; ")
        }))
    }
}

/// One HTTP/1.1 request on a fresh connection; answers the status. The body is not read.
async fn exchange<S>(io: TokioIo<S>, request: http::Request<Full<Bytes>>) -> Result<u16, Undelivered>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|err| Undelivered::http(format!("HTTP: {err}")))?;
    let driver = tokio::spawn(connection);
    let answer = sender.send_request(request).await.map(|response| response.status().as_u16());
    driver.abort();
    answer.map_err(|err| Undelivered::http(format!("HTTP: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destinations(allowed: &[&str]) -> Destinations {
        Destinations::new(allowed.iter().map(|s| s.to_string()).collect(), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn only_https_to_public_hosts_unless_the_operator_allows_it() {
        let strict = destinations(&[]);
        assert!(strict.check_url("https://hooks.example.com/portcullis").is_ok());
        assert!(strict.check_url("http://hooks.example.com/portcullis").is_err());
        assert!(strict.check_url("https://127.0.0.1/").is_err());
        assert!(strict.check_url("https://169.254.169.254/latest/meta-data").is_err());
        assert!(strict.check_url("https://[::1]/").is_err());
        assert!(strict.check_url("https://[::ffff:10.0.0.1]/").is_err());
        assert!(strict.check_url("https://user:pw@hooks.example.com/").is_err());
        assert!(strict.check_url("ftp://hooks.example.com/").is_err());
        assert!(strict.check_url("/relative").is_err());
        let lenient = destinations(&["http://127.0.0.1:*"]);
        assert!(lenient.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(lenient.check_url("http://10.0.0.1:8080/hook").is_err());
        assert!(lenient.check_url("http://127.0.0.1:8080/hook/%2e%2e/admin").is_err());
        assert!(strict.check_url("https://hooks.example.com/a/../b").is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_not_connected() {
        let strict = destinations(&[]);
        let refused = strict.post("https://localhost:9/", &[], Bytes::new()).await.unwrap_err();
        assert!(refused.detail.contains("loopback"), "{refused:?}");
        assert_eq!(refused.reason, "destination not allowed or not reachable", "the owner learns nothing more");
        let unknown = strict.post("https://no-such-host.invalid/", &[], Bytes::new()).await.unwrap_err();
        assert_eq!(unknown.reason, refused.reason, "an unknown name reads the same as a refused one");
    }
}
