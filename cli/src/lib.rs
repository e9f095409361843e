//! `pcl`: the Portcullis command-line client for people and CI jobs. The binary is a thin
//! `main`; the library holds the commands and the generated client (the tests use it too).

mod admin;
pub mod connect;
pub mod errors;
mod login;
pub mod output;
pub mod pb;
pub mod profile;
mod sessions;

use crate::errors::Failure;
use clap::{Args, Parser, Subcommand};
use connect::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `pcl` exits with besides 0 (done), 1 (an error) and 2 (bad usage).
pub mod exit {
    /// The session FAILED: no rule could be applied.
    pub const FAILED: u8 = 3;
    /// The session is PARTIAL: some rules failed (accepted with --allow-partial).
    pub const PARTIAL: u8 = 4;
}

#[derive(Parser)]
#[command(name = "pcl", version, about = "Portcullis from the command line: open your address, for a while")]
pub struct Cli {
    /// The server, HOST:PORT (TLS) or a URL (`http://…` for plaintext).
    #[arg(long, global = true, env = "PORTCULLIS_SERVER")]
    server: Option<String>,
    /// The profile of ~/.config/portcullis/config.toml to read settings from.
    #[arg(long, global = true, env = "PORTCULLIS_PROFILE", default_value = "default")]
    profile: String,
    /// API key (CI: from a secret).
    #[arg(long, global = true, env = "PORTCULLIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM CA certificates to trust for the server.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Plaintext: only for a server on this machine.
    #[arg(long, global = true)]
    insecure: bool,
    /// `table` for people, `json` for scripts: the API's own JSON, as grpcurl prints it.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: output::Format,
    /// Print only ids, and no progress.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in with the code mailed to EMAIL, or with --sso through your organization's
    /// identity provider; the token is kept in the profile and renewed while the login lasts.
    Login {
        #[arg(long, required_unless_present_any = ["sso"])]
        email: Option<String>,
        /// The organization, when the address belongs to users of several (with --sso: whose
        /// identity provider to log in through).
        #[arg(long)]
        organization: Option<String>,
        /// Read the password from the first line of stdin (users who have one), the code after it.
        #[arg(long, conflicts_with = "sso")]
        password_stdin: bool,
        /// Log in through the organization's identity provider (name it with --organization, or
        /// give --email whose domain it logs in): open the printed URL in any browser.
        #[arg(long, required_unless_present_any = ["email"])]
        sso: bool,
        /// With --sso, also open the URL in this machine's browser.
        #[arg(long, requires = "sso")]
        open: bool,
    },
    /// End the login and forget its token.
    Logout,
    /// Who the credential belongs to.
    Whoami,
    /// Sessions: open your address on your resources for a while.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Resources: the firewalls your sessions open.
    #[command(subcommand)]
    Resources(ResourcesCommand),
    /// Users of your organization (admins).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Host agents: the programs that keep Linux hosts' firewalls (admins).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Sessions waiting for your approval, and your decisions on them.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Approve a session waiting for approval; it opens once it has every approval it needs.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a session waiting for approval; the requester is told REASON.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Print a shell completion script (bash, zsh, fish, …).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum ResourcesCommand {
    /// The resources assigned to you (admins with resources:write: all of the organization's).
    List,
    /// Let a user open a resource (admins): RESOURCE by id or name, USER by id or email.
    Assign {
        resource: String,
        #[arg(long)]
        user: String,
    },
    /// Take a resource away from a user (their sessions lose its rules at once).
    Unassign {
        resource: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Register an agent; prints only its credential (shown this once), so it can go straight
    /// into the host's credential file.
    Create { name: String },
    /// The organization's agents: connected or when last seen, and from which host.
    List,
    /// Revoke an agent (by id or name): its stream ends and its credential never works again.
    Revoke { agent: String },
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// The sessions you may approve (`pcl approve`) or deny (`pcl deny`), oldest first.
    List,
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user to your organization (admins); prints its id.
    Create {
        #[arg(long)]
        email: String,
        /// Full name.
        #[arg(long)]
        name: Option<String>,
        /// With the ADMIN role (default: USER).
        #[arg(long)]
        admin: bool,
    },
    /// The organization's users (needs users:read).
    List,
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Start a session and follow it until its rules are in.
    Start {
        #[command(flatten)]
        spec: Spec,
        /// Return at once instead of following the session until it is ACTIVE.
        #[arg(long, conflicts_with = "follow")]
        no_wait: bool,
        #[command(flatten)]
        follow: Follow,
    },
    /// Start a session, run CMD once it is ACTIVE, and stop the session when CMD ends (or when
    /// pcl is interrupted; if pcl dies, the heartbeat closes the address).
    Run {
        #[command(flatten)]
        spec: Spec,
        /// Seconds the session outlives a pcl that stopped answering.
        #[arg(long, default_value_t = 30)]
        heartbeat: u32,
        /// Run CMD even when some rules failed (PARTIAL).
        #[arg(long)]
        allow_partial: bool,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Your sessions, newest first.
    List,
    /// One session and its rules.
    Get { id: String },
    /// Stop a session: its rules are removed.
    Stop { id: String },
    /// Make a live session last longer (within your maximum, counted from its start).
    Extend {
        id: String,
        /// Hours to add.
        #[arg(long, conflicts_with = "minutes", required_unless_present = "minutes")]
        hours: Option<u32>,
        /// Minutes to add.
        #[arg(long)]
        minutes: Option<u32>,
    },
    /// Follow a session's changes until it ends.
    Watch { id: String },
}

/// `session start --follow` and its settings.
#[derive(Args, Clone)]
pub struct Follow {
    /// Stay in the foreground: follow address changes (no gap), extend the session before it
    /// ends, as far as your maximum allows; Ctrl-C stops it.
    #[arg(id = "follow", long = "follow")]
    pub on: bool,
    /// With --follow: how often to look at your address.
    #[arg(long, default_value_t = 30)]
    pub poll_seconds: u64,
    /// With --follow: extend the session (by its own length) once this little of it is left.
    #[arg(long, default_value_t = 10)]
    pub extend_before_minutes: u32,
    /// With --follow: read the address from this file instead of asking the server (tests).
    #[arg(long, hide = true)]
    pub address_file: Option<PathBuf>,
}

/// What a new session opens, and for how long.
#[derive(Args, Clone)]
pub struct Spec {
    /// Duration in hours.
    #[arg(long, conflicts_with = "minutes")]
    pub hours: Option<u32>,
    /// Duration in minutes.
    #[arg(long)]
    pub minutes: Option<u32>,
    /// IPv4 address to open (default: as the server sees you).
    #[arg(long)]
    pub ipv4: Option<String>,
    /// IPv6 address to open.
    #[arg(long)]
    pub ipv6: Option<String>,
    /// Open only this resource (by id; repeat for several); default: every one assigned to you.
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// Why you need the access: shown to approvers, and required by some approval policies.
    #[arg(long)]
    pub justification: Option<String>,
    /// A change or incident reference for the record.
    #[arg(long)]
    pub ticket: Option<String>,
}

/// The time in Unix seconds, as the API's timestamps count it.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Parses the command line and runs it; what the process exits with.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("pcl: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "pcl", &mut std::io::stdout());
        return Ok(0);
    }
    let profile = profile::load(&cli.profile)?;
    let settings = Settings::resolve(cli.server, cli.api_key, cli.ca_file, cli.insecure, profile.clone())?;
    for warning in &settings.warnings {
        eprintln!("pcl: warning: {warning}");
    }
    if let Command::Login { email, organization, password_stdin, sso, open } = &cli.command {
        // The token is kept for, and will only be sent to, this server.
        if let Some(own) = profile.server.as_deref().filter(|_| settings.withheld.is_some()) {
            return Err(format!(
                "profile {} belongs to {own}: log in to {} with a profile of its own (--profile NAME)",
                cli.profile, settings.server
            )
            .into());
        }
        let channel = settings.connect().await?;
        if *sso {
            let whose = login::SsoTarget { email: email.clone(), organization_id: organization.clone() };
            return login::sso_login(channel, &cli.profile, &settings.server, whose, *open).await;
        }
        let email = email.as_deref().unwrap_or_default();
        return login::login(channel, &cli.profile, &settings.server, email, organization.clone(), *password_stdin)
            .await;
    }
    // No connection at all when there is nothing this server may be sent.
    settings.credential()?;
    let channel = settings.connect().await?;
    let settings = login::renewed(&channel, settings, &cli.profile, &profile).await?;
    let credential = settings.credential()?;
    // A login's token is short-lived: long commands (run, watch, --follow) keep it fresh.
    if settings.api_key.is_none() {
        let expires_at = profile::load(&cli.profile)?.token_expires_at.unwrap_or_default();
        tokio::spawn(login::keep_renewing(channel.clone(), credential.clone(), cli.profile.clone(), expires_at));
    }
    let out = output::Output { format: cli.output, quiet: cli.quiet };
    match cli.command {
        Command::Login { .. } | Command::Completions { .. } => Ok(0),
        Command::Logout => login::logout(channel, credential, &cli.profile, &profile).await,
        Command::Whoami => {
            let mut users = pb::v1::user_service_client::UserServiceClient::with_interceptor(channel, credential);
            let answer = users.get_current_user(pb::v1::GetCurrentUserRequest {}).await?.into_inner();
            if out.json() {
                out.print_json(&answer, "portcullis.v1.GetCurrentUserResponse")?;
                return Ok(0);
            }
            let user = answer.user.unwrap_or_default();
            if out.quiet {
                println!("{}", user.id);
                return Ok(0);
            }
            println!("{} ({:?}) in organization {}", user.email, user.role(), user.organization_id);
            println!("permissions: {}", answer.permissions.join(", "));
            Ok(0)
        }
        Command::Session(command) => sessions::run(channel, credential, command, out).await,
        Command::Resources(command) => admin::resources(channel, credential, command, out).await,
        Command::Users(command) => admin::users(channel, credential, command, out).await,
        Command::Agents(command) => admin::agents(channel, credential, command, out).await,
        Command::Approvals(ApprovalsCommand::List) => sessions::approval_inbox(channel, credential, out).await,
        Command::Approve { id, reason } => sessions::decide(channel, credential, id, reason, true, out).await,
        Command::Deny { id, reason } => sessions::decide(channel, credential, id, reason, false, out).await,
    }
}
