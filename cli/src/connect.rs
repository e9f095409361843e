//! The channel to the server and the credential every call carries.

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
}

impl Settings {
    /// Flags and environment first (clap read both), the profile for what they leave out.
    pub fn resolve(
        server: Option<String>,
        api_key: Option<String>,
        ca_file: Option<PathBuf>,
        insecure: bool,
        profile: Profile,
    ) -> Result<Settings, String> {
        let server = server.or(profile.server).ok_or_else(|| {
            "no server: pass --server HOST:PORT, set PORTCULLIS_SERVER, or add `server` to the profile".to_owned()
        })?;
        Ok(Settings {
            server,
            api_key: api_key.or(profile.api_key),
            access_token: profile.access_token,
            ca_file: ca_file.or(profile.ca_file),
            insecure,
        })
    }

    /// The server's URL: TLS unless it says `http://` or `--insecure` is given.
    fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else if self.insecure {
            format!("http://{}", self.server)
        } else {
            format!("https://{}", self.server)
        }
    }

    pub async fn connect(&self) -> Result<Channel, String> {
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
        endpoint.connect().await.map_err(|err| format!("cannot reach {url}: {err}"))
    }

    /// The credential every call carries: the API key, else the login's token.
    pub fn credential(&self) -> Result<Credential, String> {
        let (header, value) = match (&self.api_key, &self.access_token) {
            (Some(key), _) => ("x-api-key", key.clone()),
            (None, Some(token)) => ("authorization", format!("Bearer {token}")),
            (None, None) => {
                return Err("not logged in: run `pcl login --email …`, or give an API key (--api-key, \
                            PORTCULLIS_API_KEY or `api_key` in the profile)"
                    .to_owned());
            }
        };
        let value = MetadataValue::try_from(value).map_err(|_| "the credential must be visible ASCII".to_owned())?;
        Ok(Credential { header, value: std::sync::Arc::new(std::sync::RwLock::new(value)) })
    }
}

/// Sends the credential with every call. Clones share it, so a renewed token reaches every
/// client made with it.
#[derive(Clone)]
pub struct Credential {
    header: &'static str,
    value: std::sync::Arc<std::sync::RwLock<MetadataValue<tonic::metadata::Ascii>>>,
}

impl Credential {
    /// From now on, calls carry this access token.
    pub fn renew(&self, token: &str) -> Result<(), String> {
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
