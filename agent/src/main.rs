//! `portcullis-agent`: keeps this host's nftables table as the Portcullis server wants it.
//!
//! ```sh
//! portcullis-agent --server https://portcullis.example.com:50051 \
//!     --credential-file /etc/portcullis-agent/credential
//! ```

use clap::Parser;
use portcullis_agent::client::{self, Connection, Keeping};
use portcullis_agent::nft::Nft;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(version, about = "Keeps this host's nftables table as the Portcullis server wants it")]
struct Args {
    /// The server: https://host:port (http:// only on loopback, for development).
    #[arg(long, env = "PORTCULLIS_AGENT_SERVER")]
    server: String,
    /// A file holding the agent's credential (`pca_…`, from CreateAgent).
    #[arg(long, env = "PORTCULLIS_AGENT_CREDENTIAL_FILE")]
    credential_file: PathBuf,
    /// A CA certificate (PEM) to trust besides the public roots.
    #[arg(long, env = "PORTCULLIS_AGENT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The nftables table the agent owns (family inet); it never touches another.
    #[arg(long, env = "PORTCULLIS_AGENT_TABLE", default_value = "portcullis")]
    table: String,
    /// The nft program the agent runs (a path, or a name looked up on PATH).
    #[arg(long, env = "PORTCULLIS_AGENT_NFT", default_value = "nft")]
    nft: String,
    /// Seconds between resyncs of the table with the last state, news or not.
    #[arg(long, env = "PORTCULLIS_AGENT_RESYNC_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    resync_secs: u64,
    /// How this host calls itself in the server's agent list (default: its hostname).
    #[arg(long, env = "PORTCULLIS_AGENT_HOSTNAME")]
    hostname: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("portcullis-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let credential = std::fs::read_to_string(&args.credential_file)
        .map_err(|err| format!("reading {}: {err}", args.credential_file.display()))?
        .trim()
        .to_owned();
    let ca_pem = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|err| format!("reading {}: {err}", path.display()))?),
        None => None,
    };
    let hostname = match args.hostname {
        Some(name) => name,
        None => {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
        }
    };
    let connection = Connection { server: args.server, credential, ca_pem, hostname };
    let keeping = Keeping { resync: Duration::from_secs(args.resync_secs), ..Keeping::default() };
    let stop = async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    // Stopping leaves the table as it is: each element still ends at its own expiry.
    client::run(connection, Nft::with_command(vec![args.nft], args.table), keeping, stop)
        .await
        .map_err(|err| err.to_string())
}
