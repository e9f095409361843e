//! The `portcullis` command: `serve`, `migrate`, `init` and the operator's key and credential
//! chores.

use clap::{Parser, Subcommand};
use portcullis::config::{Config, ConfigError, Flags, LogFormat, Secret};
use portcullis::provider::Providers;
use portcullis::provider::memory::MemoryFirewall;
use portcullis::server::{self, ServeOptions};
use portcullis::service::{
    Services, create_operator_key, initialize, retire_token_key, revoke_operator_key, rotate_token_key, set_password,
};
use portcullis::{store, telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Just-in-time IP allowlisting for cloud firewalls, over gRPC")]
struct Cli {
    /// Config file (default: ./portcullis.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Database URL, e.g. sqlite://portcullis.db?mode=rwc or postgres://user:pass@host/db.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Address to listen on, e.g. 127.0.0.1:50051.
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create the first organization and its admin; prints the admin's API key on stdout.
    Init {
        /// Email address of the first admin.
        #[arg(long)]
        admin_email: String,
        /// Name of the organization.
        #[arg(long, default_value = "Default")]
        organization: String,
    },
    /// Set a user's password, read from the first line of stdin (logins then need it before a
    /// code is mailed); `--clear` removes it.
    SetPassword {
        /// Email address of the user.
        #[arg(long)]
        email: String,
        /// The user's organization, when the address belongs to several.
        #[arg(long)]
        organization: Option<String>,
        /// Remove the password instead.
        #[arg(long)]
        clear: bool,
    },
    /// Add a new access-token signing key of `auth.jwt_algorithm` (used from the next start);
    /// prints its id.
    RotateTokenKey,
    /// Retire a signing key: its tokens are refused from the next start.
    RetireTokenKey {
        /// The key's id (the `kid` of its tokens).
        #[arg(long)]
        kid: String,
    },
    /// Create a platform operator key (ROLE_OPERATOR: creates, suspends and scopes organizations);
    /// prints the key as the only line on stdout.
    OperatorKey {
        /// What the key is for, as the audit trail shows it.
        #[arg(long, default_value = "operator")]
        name: String,
    },
    /// Revoke a platform operator key.
    RevokeOperatorKey {
        /// The key's id, as `operator-key` logged it.
        #[arg(long)]
        id: String,
    },
}

impl Cli {
    /// Every configuration layer, flags last, checked.
    fn config(&self) -> Result<Config, ConfigError> {
        let log_format = match self.log_format.as_deref() {
            Some("json") => Some(LogFormat::Json),
            Some("text") => Some(LogFormat::Text),
            _ => None,
        };
        let flags = Flags { listen: self.listen, database_url: self.database_url.clone().map(Secret), log_format };
        Config::load(self.config.as_deref(), &flags)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format);
    match run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "portcullis failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let db = store::connect(config.database_url.expose(), config.database_max_connections.as_u32()).await?;
    store::migrate(&db).await?;
    match command {
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Init { admin_email, organization } => {
            let created = initialize(&db, &admin_email, &organization).await?;
            tracing::info!(
                organization_id = %created.organization.id,
                admin_id = %created.admin.id,
                "organization initialized; the admin api key follows on stdout"
            );
            println!("{}", created.api_key);
            Ok(())
        }
        Command::SetPassword { email, organization, clear } => {
            let password = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            };
            let user = set_password(&db, &email, organization.as_deref(), password.as_deref()).await?;
            tracing::info!(user_id = %user.id, cleared = clear, "password updated");
            Ok(())
        }
        Command::RotateTokenKey => {
            let sealing = config.sealing_key()?;
            println!("{}", rotate_token_key(&db, config.auth.jwt_algorithm, sealing.as_deref()).await?);
            tracing::info!(
                "signing key added; servers sign with it at once on PostgreSQL, from their next start on SQLite"
            );
            Ok(())
        }
        Command::RetireTokenKey { kid } => {
            retire_token_key(&db, &kid).await?;
            tracing::info!(kid = %kid, "signing key retired; servers refuse its tokens at once on PostgreSQL, from their next start on SQLite");
            Ok(())
        }
        Command::OperatorKey { name } => {
            let (id, secret) = create_operator_key(&db, &name).await?;
            tracing::info!(operator_key_id = %id, "operator key created; it follows on stdout");
            println!("{secret}");
            Ok(())
        }
        Command::RevokeOperatorKey { id } => {
            revoke_operator_key(&db, &id).await?;
            tracing::info!(operator_key_id = %id, "operator key revoked");
            Ok(())
        }
        Command::Serve => {
            tracing::debug!(?config, "configuration");
            let memory = match &config.providers.memory_state_file {
                Some(path) => MemoryFirewall::with_state_file(path.clone())?,
                None => MemoryFirewall::in_process(),
            };
            let reader = store::connect_reader(config.database_url.expose(), &db).await?;
            let services = Services::with_reader(
                db,
                reader,
                &config,
                Providers::new(memory, &config.providers, config.engine.provider_timeout()),
            )
            .await?;
            for (resource, why) in services.resources.unusable_endpoints().await? {
                tracing::warn!(
                    resource_id = %resource.id,
                    organization_id = %resource.organization_id,
                    name = %resource.name,
                    why = %why,
                    "resource endpoint is not a plain origin; its rules fail until an admin corrects endpoint_url"
                );
            }
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "listening");
            server::serve(listener, services, ServeOptions::from_config(&config), shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupt received; shutting down"),
        _ = terminate => tracing::info!("terminate received; shutting down"),
    }
}
