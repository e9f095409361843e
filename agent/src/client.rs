//! The agent's connection to the server: it connects out (the host needs no inbound port), says
//! hello, applies every state the server sends to its nftables table and reports what the table
//! then holds. A resync every `resync` repairs the table even when nothing is sent (elements
//! deleted by hand come back, strangers go). When the stream breaks it connects again with
//! backoff, and each (re)connect starts from the server's full state: level-triggered, so nothing
//! that happened while it was away is lost.

use crate::nft::{Nft, NftError};
use crate::pb;
use crate::state::{Desired, Grant, HostResource, Protocol};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How the agent reaches its server.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `https://host:port` (or `http://` on loopback, for development).
    pub server: String,
    /// The agent's credential (`pca_…`).
    pub credential: String,
    /// A CA certificate (PEM) to trust besides the public roots, for a private CA.
    pub ca_pem: Option<Vec<u8>>,
    pub hostname: String,
}

/// How the agent keeps its table.
#[derive(Debug, Clone)]
pub struct Keeping {
    /// How often the table is made to match the last state, even without news.
    pub resync: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for Keeping {
    fn default() -> Self {
        Keeping { resync: Duration::from_secs(30), max_backoff: Duration::from_secs(30) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the server ended the stream")]
    Ended,
    #[error("{0}")]
    Config(String),
}

impl ConnectError {
    /// A refusal no retry can change (the credential is wrong or revoked).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ConnectError::Status(status) if status.code() == tonic::Code::Unauthenticated)
    }
}

/// Runs until `stop` resolves: connects, keeps the table, reconnects with backoff. Answers the
/// refusal that ended it when the server refuses the credential.
pub async fn run(
    connection: Connection,
    nft: Nft,
    keeping: Keeping,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ConnectError> {
    tokio::pin!(stop);
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = serve(&connection, &nft, &keeping) => outcome,
            () = &mut stop => return Ok(()),
        };
        let err = match outcome {
            Ok(()) => ConnectError::Ended,
            Err(err) => err,
        };
        if err.is_refusal() {
            eprintln!("portcullis-agent: the server refused the credential: {err}");
            return Err(err);
        }
        // A connection that lasted starts the backoff over.
        if started.elapsed() > keeping.max_backoff {
            backoff = Duration::from_secs(1);
        }
        eprintln!("portcullis-agent: disconnected ({err}); connecting again in {}s", backoff.as_secs());
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut stop => return Ok(()),
        }
        backoff = (backoff * 2).min(keeping.max_backoff);
    }
}

async fn channel(connection: &Connection) -> Result<Channel, ConnectError> {
    let mut endpoint = Endpoint::from_shared(connection.server.clone())
        .map_err(|err| ConnectError::Config(format!("server {}: {err}", connection.server)))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    if connection.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &connection.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect().await?)
}

/// One connection: until the stream breaks.
async fn serve(connection: &Connection, nft: &Nft, keeping: &Keeping) -> Result<(), ConnectError> {
    let channel = channel(connection).await?;
    let (outbound, receiver) = mpsc::channel(8);
    let hello = pb::AgentHello { hostname: connection.hostname.clone(), version: env!("CARGO_PKG_VERSION").to_owned() };
    let _ = outbound.send(pb::ConnectRequest { message: Some(pb::connect_request::Message::Hello(hello)) }).await;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let key = connection
        .credential
        .parse()
        .map_err(|_| ConnectError::Config("the credential must be visible ASCII".into()))?;
    request.metadata_mut().insert("x-api-key", key);
    let mut inbound = pb::agent_service_client::AgentServiceClient::new(channel).connect(request).await?.into_inner();
    eprintln!("portcullis-agent: connected to {}", connection.server);

    let mut resources: BTreeMap<String, pb::HostResourceState> = BTreeMap::new();
    let mut generation = 0;
    let mut resync = tokio::time::interval(keeping.resync);
    resync.tick().await;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let Some(state) = message? else { return Ok(()) };
                if state.full {
                    resources.clear();
                }
                for id in &state.removed_resource_ids {
                    resources.remove(id);
                }
                for resource in state.resources {
                    resources.insert(resource.resource_id.clone(), resource);
                }
                generation = state.generation;
            }
            _ = resync.tick() => {}
        }
        let report = keep(nft, &resources, generation).await;
        if outbound
            .send(pb::ConnectRequest { message: Some(pb::connect_request::Message::Report(report)) })
            .await
            .is_err()
        {
            return Err(ConnectError::Ended);
        }
    }
}

/// Makes the table say what `resources` say; answers what it then holds.
async fn keep(nft: &Nft, resources: &BTreeMap<String, pb::HostResourceState>, generation: u64) -> pb::AgentReport {
    let (desired, refused) = desired(resources);
    let nft = nft.clone();
    // What the table holds is read back even when the sync failed; when it cannot be read
    // either, the report holds no resources: the server keeps what it last knew.
    let outcome = tokio::task::spawn_blocking(move || -> (Vec<pb::HostResourceState>, String) {
        let synced = nft.sync(&desired, SystemTime::now()).err().map(|err| err.to_string());
        match held(&nft, &desired) {
            Ok(held) => (held, synced.unwrap_or_default()),
            Err(err) => (Vec::new(), synced.unwrap_or_else(|| err.to_string())),
        }
    })
    .await;
    let (held, error) = outcome.unwrap_or_else(|err| (Vec::new(), format!("the sync panicked: {err}")));
    let error = if error.is_empty() { refused.join("; ") } else { error };
    if !error.is_empty() {
        eprintln!("portcullis-agent: {error}");
    }
    pb::AgentReport { generation, resources: held, error }
}

/// The state as the table should hold it, and what of it cannot be held (a protocol or address
/// this agent does not know).
fn desired(resources: &BTreeMap<String, pb::HostResourceState>) -> (Desired, Vec<String>) {
    let mut refused = Vec::new();
    let mut desired = Desired::default();
    for resource in resources.values() {
        let protocol = match resource.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                refused.push(format!("resource {}: protocol {other:?} is not tcp or udp", resource.resource_id));
                continue;
            }
        };
        let mut grants = BTreeMap::new();
        for grant in &resource.grants {
            let (Ok(address), Some(expires_at)) = (grant.ip_address.parse::<IpAddr>(), grant.expires_at.as_ref())
            else {
                refused.push(format!("resource {}: grant {:?} is unreadable", resource.resource_id, grant.ip_address));
                continue;
            };
            let expires_at =
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_at.seconds).unwrap_or(0));
            grants.insert(address, Grant { expires_at, session_ids: grant.session_ids.clone() });
        }
        let ports =
            resource.ports.iter().filter_map(|port| u16::try_from(*port).ok()).filter(|port| *port > 0).collect();
        desired.resources.push(HostResource { resource_id: resource.resource_id.clone(), protocol, ports, grants });
    }
    (desired, refused)
}

/// What the table holds of `desired`, read back from the kernel: each address it holds, until
/// when, for the sessions that asked for it.
fn held(nft: &Nft, desired: &Desired) -> Result<Vec<pb::HostResourceState>, NftError> {
    let current = nft.read()?;
    let now = SystemTime::now();
    Ok(desired
        .resources
        .iter()
        .map(|resource| {
            let grants = resource
                .grants
                .iter()
                .filter_map(|(address, grant)| {
                    let element = current.element(&resource.resource_id, *address)?;
                    let expires_at = now + element.expires_in;
                    let seconds = expires_at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
                    Some(pb::HostGrant {
                        ip_address: address.to_string(),
                        expires_at: Some(prost_types::Timestamp { seconds: i64::try_from(seconds).ok()?, nanos: 0 }),
                        session_ids: grant.session_ids.clone(),
                    })
                })
                .collect();
            pb::HostResourceState {
                resource_id: resource.resource_id.clone(),
                protocol: resource.protocol.name().to_owned(),
                ports: resource.ports.iter().map(|port| u32::from(*port)).collect(),
                grants,
            }
        })
        .collect())
}
