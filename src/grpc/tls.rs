//! The listener: plaintext or TLS (rustls, with optional client certificates), accepted on our
//! own loop so the certificate can be reloaded — on SIGHUP or when its files change — without
//! dropping a connection: a handshake uses whatever configuration is current when it starts.

use crate::config::TlsConfig;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are looked at for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
}

fn invalid(path: &Path, problem: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {problem}", path.display()))
}

/// The files a TLS configuration is made of.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_crl: Option<PathBuf>,
}

impl Files {
    fn load(&self) -> io::Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| invalid(&self.cert, err))?;
        if certs.is_empty() {
            return Err(invalid(&self.cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|err| invalid(&self.key, err))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(&read(path)?) {
                    roots.add(ca.map_err(|err| invalid(path, err))?).map_err(|err| invalid(path, err))?;
                }
                let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                // Revoked client certificates are refused; the lists reload with the files.
                if let Some(crl_path) = &self.client_crl {
                    let crls = CertificateRevocationListDer::pem_slice_iter(&read(crl_path)?)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|err| invalid(crl_path, err))?;
                    if crls.is_empty() {
                        return Err(invalid(crl_path, "no certificate revocation list in the file"));
                    }
                    verifier = verifier.with_crls(crls);
                }
                let verifier = verifier.build().map_err(|err| invalid(path, err))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|err| invalid(&self.cert, err))?;
        // gRPC speaks HTTP/2 only; clients (grpc-go among them) insist on negotiating it.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// When each file last changed, to notice a renewal.
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref(), self.client_crl.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok())
            .collect()
    }
}

/// The TLS configuration in force, swapped whole on reload.
#[derive(Clone)]
struct Current {
    files: Files,
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Current {
    fn acceptor(&self) -> TlsAcceptor {
        let config = self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        TlsAcceptor::from(config)
    }

    /// Loads the files again; a broken renewal keeps the configuration that works.
    fn reload(&self, why: &str) {
        match self.files.load() {
            Ok(config) => {
                *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                tracing::info!(cert_file = %self.files.cert.display(), why, "tls certificate reloaded");
            }
            Err(err) => tracing::error!(error = %err, why, "tls certificate reload failed; keeping the current one"),
        }
    }

    /// Reloads on SIGHUP and when the files change, until `stop`.
    async fn watch(self, mut stop: watch::Receiver<bool>) {
        let mut stamps = self.files.stamps();
        let mut hangups = hangups();
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let now = self.files.stamps();
                    if now != stamps {
                        stamps = now;
                        self.reload("files changed");
                    }
                }
                Some(()) = next_hangup(&mut hangups) => {
                    stamps = self.files.stamps();
                    self.reload("SIGHUP");
                }
                _ = crate::shutdown::stopping(&mut stop) => return,
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; certificates reload on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

/// One accepted connection, plaintext or TLS.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Connection::Plain(tcp) => tcp.connect_info(),
            Connection::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Connection::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(tcp) => tcp.is_write_vectored(),
            Connection::Tls(tls) => tls.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` until `stop`, finishing TLS handshakes (when configured)
/// off the accept loop, so a slow client never holds up the others.
pub fn incoming(
    listener: TcpListener,
    tls: &TlsConfig,
    stop: watch::Receiver<bool>,
) -> io::Result<tokio_stream::wrappers::ReceiverStream<io::Result<Connection>>> {
    let current = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let files = Files {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: tls.client_ca_file.clone(),
                client_crl: tls.client_crl_file.clone(),
            };
            let config = files.load()?;
            let current = Current { files, config: Arc::new(RwLock::new(config)) };
            tokio::spawn(current.clone().watch(stop.clone()));
            Some(current)
        }
        _ => None,
    };
    let (accepted, connections) = mpsc::channel(64);
    tokio::spawn(accept(listener, current, accepted, stop));
    Ok(tokio_stream::wrappers::ReceiverStream::new(connections))
}

async fn accept(
    listener: TcpListener,
    tls: Option<Current>,
    accepted: mpsc::Sender<io::Result<Connection>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::shutdown::stopping(&mut stop) => return,
        };
        let tcp = match tcp {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small gRPC frames must not wait for Nagle's algorithm (tens of milliseconds each).
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                if accepted.send(Ok(Connection::Plain(tcp))).await.is_err() {
                    return;
                }
            }
            Some(current) => {
                let acceptor = current.acceptor();
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    let peer = tcp.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = accepted.send(Ok(Connection::Tls(Box::new(tls)))).await;
                        }
                        Ok(Err(err)) => tracing::debug!(?peer, error = %err, "tls handshake failed"),
                        Err(_) => tracing::debug!(?peer, "tls handshake timed out"),
                    }
                });
            }
        }
    }
}
