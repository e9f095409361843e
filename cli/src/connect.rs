//! The channel to the server and the credential every call carries.

use crate::errors::Failure;
use crate::profile::Profile;
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How to reach the server, after flags, environment and profile were weighed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub api_key: Option<String>,
    /// A login's access token (`pcl login`), used when there is no API key.
    pub access_token: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Plaintext, for a server on this machine.
    pub insecure: bool,
    /// Why the profile's credentials were left out: they belong to another server.
    pub withheld: Option<String>,
    /// What the user should know before anything is sent (plaintext off this machine).
    pub warnings: Vec<String>,
}

impl Settings {
    /// Flags and environment first (clap read both), the profile for what they leave out. A
    /// profile's credentials go only to the profile's own server: another server (from
    /// `--server` or `PORTCULLIS_SERVER`) gets them only if the flags or environment give them.
    pub fn resolve(
        server: Option<String>,
        api_key: Option<String>,
        ca_file: Option<PathBuf>,
        insecure: bool,
        profile: Profile,
    ) -> Result<Settings, Failure> {
        let own = profile.server.as_deref().map(|own| origin(own, insecure)).transpose()?;
        let (server, bound) = match (server, &own) {
            (Some(server), Some(own)) => {
                let bound = origin(&server, insecure)? == *own;
                (server, bound)
            }
            (Some(server), None) => (server, false),
            (None, _) => (
                profile.server.clone().ok_or_else(|| {
                    "no server: pass --server HOST:PORT, set PORTCULLIS_SERVER, or add `server` to the profile"
                        .to_owned()
                })?,
                true,
            ),
        };
        let holds_credentials = profile.api_key.is_some() || profile.access_token.is_some();
        let withheld = (!bound && holds_credentials).then(|| match &profile.server {
            Some(own) => format!(
                "the profile's credentials belong to {own}, not {server}: use a profile of that server's own \
                 (--profile) or give its API key (--api-key, PORTCULLIS_API_KEY)"
            ),
            None => format!(
                "the profile's credentials name no server, so they are not sent to {server}: add `server` to the \
                 profile, or give an API key (--api-key, PORTCULLIS_API_KEY)"
            ),
        });
        let (profile_key, access_token) = if bound { (profile.api_key, profile.access_token) } else { (None, None) };
        let mut settings = Settings {
            server,
            api_key: api_key.or(profile_key),
            access_token,
            ca_file: ca_file.or(profile.ca_file),
            insecure,
            withheld,
            warnings: Vec::new(),
        };
        let (scheme, host, _) = origin(&settings.server, insecure)?;
        if scheme == "http" && !is_this_machine(&host) {
            if !insecure {
                return Err(format!(
                    "refusing to send credentials in plaintext to {host}, which is not this machine: use https \
                     (HOST:PORT), or --insecure if you accept that anyone on the way can read them"
                )
                .into());
            }
            settings.warnings.push(format!(
                "plaintext to {host} (--insecure): anyone on the network between can read and reuse the credential"
            ));
        }
        Ok(settings)
    }

    /// The server's URL: TLS unless it says `http://` or `--insecure` is given.
    fn url(&self) -> String {
        url_of(&self.server, self.insecure)
    }

    pub async fn connect(&self) -> Result<Channel, Failure> {
        let url = self.url();
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|err| format!("--server {url}: {err}"))?;
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(path) = &self.ca_file {
                let pem = std::fs::read(path).map_err(|err| format!("--ca-file {}: {err}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|err| format!("tls: {err}"))?;
        }
        Ok(endpoint.connect().await.map_err(|err| format!("cannot reach {url}: {err}"))?)
    }

    /// The credential every call carries: the API key, else the login's token.
    pub fn credential(&self) -> Result<Credential, Failure> {
        let (header, value) = match (&self.api_key, &self.access_token) {
            (Some(key), _) => ("x-api-key", key.clone()),
            (None, Some(token)) => ("authorization", format!("Bearer {token}")),
            (None, None) if self.withheld.is_some() => return Err(self.withheld.clone().unwrap_or_default().into()),
            (None, None) => {
                return Err(
                    "not logged in: run `pcl login --email …` (or `pcl login --sso`), or give an API key (--api-key, \
                            PORTCULLIS_API_KEY or `api_key` in the profile)"
                        .into(),
                );
            }
        };
        let value = MetadataValue::try_from(value).map_err(|_| "the credential must be visible ASCII".to_owned())?;
        Ok(Credential { header, value: std::sync::Arc::new(std::sync::RwLock::new(value)) })
    }
}

/// The URL `server` names: TLS unless it says `http://` or `insecure`.
fn url_of(server: &str, insecure: bool) -> String {
    if server.contains("://") {
        server.to_owned()
    } else if insecure {
        format!("http://{server}")
    } else {
        format!("https://{server}")
    }
}

/// Scheme, host and port `server` names, however it is spelled (`host:443`, `https://HOST/`).
fn origin(server: &str, insecure: bool) -> Result<(String, String, u16), Failure> {
    let uri: tonic::codegen::http::Uri =
        url_of(server, insecure).parse().map_err(|_| format!("server {server:?} is not HOST:PORT or a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let host = uri.host().ok_or_else(|| format!("server {server:?} names no host"))?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
    Ok((scheme, host, port))
}

/// Whether `host` is this machine (a loopback name or address).
fn is_this_machine(host: &str) -> bool {
    host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// Sends the credential with every call. Clones share it, so a renewed token reaches every
/// client made with it.
#[derive(Clone)]
pub struct Credential {
    header: &'static str,
    value: std::sync::Arc<std::sync::RwLock<MetadataValue<tonic::metadata::Ascii>>>,
}

impl Credential {
    /// Calls carrying access token `token`.
    pub fn bearer(token: &str) -> Result<Credential, Failure> {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| "the token is not ASCII")?;
        Ok(Credential { header: "authorization", value: std::sync::Arc::new(std::sync::RwLock::new(value)) })
    }

    /// From now on, calls carry this access token.
    pub fn renew(&self, token: &str) -> Result<(), Failure> {
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| "the token is not ASCII")?;
        *self.value.write().unwrap_or_else(std::sync::PoisonError::into_inner) = value;
        Ok(())
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = self.value.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        request.metadata_mut().insert(self.header, value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(server: Option<&str>) -> Profile {
        Profile {
            server: server.map(str::to_owned),
            api_key: Some("pcl_profile".into()),
            access_token: Some("token".into()),
            ..Profile::default()
        }
    }

    #[test]
    fn a_profiles_credentials_go_only_to_its_server() {
        let own = Settings::resolve(None, None, None, false, profile(Some("portcullis.example.com:443"))).unwrap();
        assert_eq!(own.api_key.as_deref(), Some("pcl_profile"));
        let spelled = Some("https://Portcullis.example.com/".to_owned());
        let same = Settings::resolve(spelled, None, None, false, profile(Some("portcullis.example.com:443"))).unwrap();
        assert_eq!(same.api_key.as_deref(), Some("pcl_profile"), "another spelling of the same server");

        let elsewhere = Some("attacker.example:443".to_owned());
        let other =
            Settings::resolve(elsewhere.clone(), None, None, false, profile(Some("portcullis.example.com"))).unwrap();
        assert!(other.api_key.is_none() && other.access_token.is_none());
        let refused = other.credential().err().unwrap();
        assert!(refused.to_string().contains("belong to portcullis.example.com"), "{refused}");
        let explicit =
            Settings::resolve(elsewhere.clone(), Some("pcl_given".into()), None, false, profile(Some("p.example")))
                .unwrap();
        assert_eq!(explicit.api_key.as_deref(), Some("pcl_given"), "a credential given for it goes");
        let unbound = Settings::resolve(elsewhere, None, None, false, profile(None)).unwrap();
        assert!(unbound.credential().is_err(), "credentials that name no server go nowhere but their profile's");
    }

    #[test]
    fn plaintext_leaves_this_machine_only_when_asked_and_with_a_warning() {
        let plain =
            |server: &str, insecure| Settings::resolve(Some(server.into()), None, None, insecure, profile(None));
        let refused = plain("http://portcullis.example.com:50051", false).unwrap_err();
        assert!(refused.to_string().contains("--insecure"), "{refused}");
        assert!(plain("portcullis.example.com:50051", true).unwrap().warnings[0].contains("plaintext"));
        assert!(plain("http://203.0.113.1:50051", true).unwrap().warnings[0].contains("203.0.113.1"));
        for local in ["http://127.0.0.1:50051", "http://localhost:50051", "http://[::1]:50051"] {
            assert!(plain(local, false).unwrap().warnings.is_empty(), "{local}");
        }
        assert!(plain("portcullis.example.com:443", false).unwrap().warnings.is_empty(), "TLS");
    }
}
