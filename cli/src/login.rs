//! `pcl login` / `pcl logout`: the emailed code, the access token kept in the profile, and its
//! renewal through ExtendLoginSession while the login lives.

use crate::connect::{Credential, Settings};
use crate::errors::Failure;
use crate::errors::describe;
use crate::pb::v1::auth_service_client::AuthServiceClient;
use crate::pb::v1::*;
use crate::profile::{self, Profile};
use tonic::transport::Channel;

/// Tokens this close to their end are renewed before the call.
const RENEW_WITHIN_SECS: i64 = 5 * 60;

/// Reads one line of stdin (a TTY or a pipe), without its line end.
async fn read_line() -> Result<String, Failure> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line.trim_end_matches(['\r', '\n']).to_owned())
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| format!("reading stdin: {err}").into())
}

/// Mails a code, asks for it, and keeps the login's token in the profile.
pub async fn login(
    channel: Channel,
    profile_name: &str,
    server: &str,
    email: &str,
    organization_id: Option<String>,
    password_stdin: bool,
) -> Result<u8, Failure> {
    let mut auth = AuthServiceClient::new(channel);
    let password = if password_stdin { Some(read_line().await?) } else { None };
    let request =
        StartLoginRequest { email: email.to_owned(), password, organization_id: organization_id.unwrap_or_default() };
    let started = auth.start_login(request).await?.into_inner();
    eprint!("A login code was mailed to {email}. Code: ");
    let code = read_line().await?;
    let request =
        VerifyLoginRequest { verification_code_id: started.verification_code_id, code: code.trim().to_owned() };
    let verified = auth.verify_login(request).await?.into_inner();
    let login = verified.login_session.unwrap_or_default();
    keep(profile_name, &verified.access_token, verified.expires_at, Some(&login.id))?;
    // The profile's credentials are bound to the server that issued them.
    profile::store(profile_name, &[("server", Some(toml::Value::String(server.to_owned())))])?;
    let until = login.expires_at.map(|at| at.to_string()).unwrap_or_default();
    println!("logged in as {email} until {until}");
    Ok(0)
}

/// Whose identity provider `pcl login --sso` logs in through.
pub struct SsoTarget {
    pub email: Option<String>,
    pub organization_id: Option<String>,
}

/// Starts a login at the organization's identity provider, prints the URL to open (in a
/// browser on any machine: the provider sends it back to the server, not here), waits for it,
/// and keeps the token in the profile as a code login does.
pub async fn sso_login(
    channel: Channel,
    profile_name: &str,
    server: &str,
    whose: SsoTarget,
    open: bool,
) -> Result<u8, Failure> {
    let mut auth = AuthServiceClient::new(channel.clone());
    let request = StartSsoLoginRequest {
        organization_id: whose.organization_id.unwrap_or_default(),
        email: whose.email.unwrap_or_default(),
        identity_provider_id: String::new(),
    };
    let started = auth.start_sso_login(request).await?.into_inner();
    eprintln!("To log in, open this URL in a browser:\n\n  {}\n", started.authorization_url);
    if open {
        open_browser(&started.authorization_url);
    }
    eprintln!("Waiting for the browser to come back...");
    let wait = WaitSsoLoginRequest { sso_login_id: started.sso_login_id, poll_secret: started.poll_secret };
    let mut stream = auth.wait_sso_login(wait).await?.into_inner();
    let verified = loop {
        let Some(step) = stream.message().await? else {
            return Err("the server stopped waiting for the login; run `pcl login --sso` again".into());
        };
        let done = step.state() == SsoLoginState::Done;
        if let Some(verified) = step.login.filter(|_| done) {
            break verified;
        }
    };
    let login = verified.login_session.unwrap_or_default();
    keep(profile_name, &verified.access_token, verified.expires_at, Some(&login.id))?;
    profile::store(profile_name, &[("server", Some(toml::Value::String(server.to_owned())))])?;
    let credential = Credential::bearer(&verified.access_token)?;
    let current = AuthServiceClient::with_interceptor(channel, credential)
        .get_current_login(GetCurrentLoginRequest {})
        .await?
        .into_inner();
    let until = login.expires_at.map(|at| at.to_string()).unwrap_or_default();
    let groups =
        if current.groups.is_empty() { String::new() } else { format!(" (groups: {})", current.groups.join(", ")) };
    println!("logged in as {}{groups} until {until}", current.alias);
    Ok(0)
}

/// Opens `url` in this machine's browser, when it has one; the URL is printed either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        eprintln!("pcl: no browser to open here ({opener}); open the URL above yourself");
    }
}

/// Closes the login session and forgets its token.
pub async fn logout(
    channel: Channel,
    credential: Credential,
    profile_name: &str,
    profile: &Profile,
) -> Result<u8, Failure> {
    let id = profile.login_session_id.clone().ok_or("not logged in")?;
    let mut auth = AuthServiceClient::with_interceptor(channel, credential);
    if let Err(status) = auth.close_login_session(CloseLoginSessionRequest { id }).await {
        // Already over on the server, say: forgetting the token is all that is left.
        eprintln!("pcl: closing the login session: {}", describe(&status));
    }
    profile::store(profile_name, &[("access_token", None), ("token_expires_at", None), ("login_session_id", None)])?;
    println!("logged out");
    Ok(0)
}

/// Renews the profile's token through ExtendLoginSession when it is about to run out (and no
/// API key is in use); answers the settings to call with.
pub async fn renewed(
    channel: &Channel,
    mut settings: Settings,
    profile_name: &str,
    profile: &Profile,
) -> Result<Settings, Failure> {
    let due = profile.token_expires_at.is_some_and(|at| at - crate::unix_now() < RENEW_WITHIN_SECS);
    if settings.api_key.is_some() || settings.access_token.is_none() || !due {
        return Ok(settings);
    }
    let mut auth = AuthServiceClient::with_interceptor(channel.clone(), settings.credential()?);
    match auth.extend_login_session(ExtendLoginSessionRequest {}).await {
        Ok(answer) => {
            let extended = answer.into_inner();
            keep(profile_name, &extended.access_token, extended.expires_at, None)?;
            settings.access_token = Some(extended.access_token);
            Ok(settings)
        }
        Err(status)
            if status.code() == tonic::Code::Unauthenticated || status.code() == tonic::Code::FailedPrecondition =>
        {
            Err("the login has ended: run `pcl login` again".into())
        }
        Err(status) => Err(status.into()),
    }
}

/// Keeps a login's token fresh while a long command runs: renews it through
/// ExtendLoginSession halfway to its end (at most 5 minutes before it), into `credential` and the
/// profile. Runs until the process ends; gives up, saying so, once the login has.
pub async fn keep_renewing(channel: Channel, credential: Credential, profile_name: String, mut expires_at: i64) {
    loop {
        let left = expires_at - crate::unix_now();
        let wait = (left - RENEW_WITHIN_SECS.min(left / 2)).max(1);
        tokio::time::sleep(std::time::Duration::from_secs(u64::try_from(wait).unwrap_or(1))).await;
        let mut auth = AuthServiceClient::with_interceptor(channel.clone(), credential.clone());
        match auth.extend_login_session(ExtendLoginSessionRequest {}).await {
            Ok(answer) => {
                let extended = answer.into_inner();
                expires_at = extended.expires_at.map_or(crate::unix_now() + 60, |at| at.seconds);
                let kept = credential
                    .renew(&extended.access_token)
                    .and_then(|()| keep(&profile_name, &extended.access_token, extended.expires_at, None));
                if let Err(message) = kept {
                    eprintln!("pcl: keeping the renewed token: {message}");
                }
            }
            Err(status) => {
                eprintln!("pcl: renewing the login failed ({}); run `pcl login` again", describe(&status));
                return;
            }
        }
    }
}

fn keep(
    profile_name: &str,
    token: &str,
    expires_at: Option<prost_types::Timestamp>,
    login_session_id: Option<&str>,
) -> Result<(), Failure> {
    let mut values = vec![
        ("access_token", Some(toml::Value::String(token.to_owned()))),
        ("token_expires_at", expires_at.map(|at| toml::Value::Integer(at.seconds))),
    ];
    if let Some(id) = login_session_id {
        values.push(("login_session_id", Some(toml::Value::String(id.to_owned()))));
    }
    profile::store(profile_name, &values)
}
