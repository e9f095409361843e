//! `pcl session …`: start and follow, run a command inside a session, list, get, stop.

use crate::connect::Credential;
use crate::errors::Failure;
use crate::errors::describe;
use crate::output::Output;
use crate::pb::v1::session_service_client::SessionServiceClient;
use crate::pb::v1::*;
use crate::{Follow, SessionCommand, Spec, exit};
use std::collections::HashMap;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

type Client = SessionServiceClient<InterceptedService<Channel, Credential>>;

/// Prints one session as the API's `response` message, its id, or a line per rule.
fn print_session(out: &Output, session: Session, response: &str) -> Result<(), Failure> {
    if out.json() {
        return out.print_json(&GetSessionResponse { session: Some(session) }, response);
    }
    if out.quiet {
        println!("{}", session.id);
        return Ok(());
    }
    let until = session.expires_at.map(|at| at.to_string()).unwrap_or_default();
    println!("{} {} until {until}", session.id, status_name(session.status()));
    for rule in &session.resource_ips {
        println!("  {}", rule_line(rule));
    }
    Ok(())
}

pub async fn run(
    channel: Channel,
    credential: Credential,
    command: SessionCommand,
    out: Output,
) -> Result<u8, Failure> {
    let mut client = SessionServiceClient::with_interceptor(channel, credential);
    match command {
        SessionCommand::Start { spec, follow, .. } if follow.on => follow_along(&mut client, &spec, &follow, out).await,
        SessionCommand::Start { spec, no_wait, .. } => {
            let session = start(&mut client, &spec, None).await?;
            if !out.json() {
                println!("{}", session.id);
            }
            if no_wait {
                if out.json() {
                    out.print_json(
                        &StartSessionResponse { session: Some(session) },
                        "portcullis.v1.StartSessionResponse",
                    )?;
                }
                return Ok(0);
            }
            let mut progress = Progress::new(out);
            let mut stream = watch(&mut client, &session.id).await?;
            let settled = tokio::select! {
                settled = follow(&mut stream, &mut progress) => settled?,
                _ = tokio::signal::ctrl_c() => {
                    // Interrupted while waiting: nothing should stay open for a session nobody wanted.
                    stop(&mut client, &session.id).await?;
                    return Err("interrupted: the session was stopped".into());
                }
            };
            let code = outcome(&settled);
            if out.json() {
                out.print_json(&StartSessionResponse { session: Some(settled) }, "portcullis.v1.StartSessionResponse")?;
            }
            Ok(code)
        }
        SessionCommand::Run { spec, heartbeat, allow_partial, command } => {
            run_command(&mut client, &spec, heartbeat, allow_partial, &command, out).await
        }
        SessionCommand::List => {
            let request = ListSessionsRequest::default();
            let listed = client.list_sessions(request).await?.into_inner();
            if out.json() {
                out.print_json(&listed, "portcullis.v1.ListSessionsResponse")?;
                return Ok(0);
            }
            if out.quiet {
                listed.sessions.iter().for_each(|session| println!("{}", session.id));
                return Ok(0);
            }
            let sessions = listed.sessions;
            println!("{:<38} {:<10} {:<16} {:<40} EXPIRES", "ID", "STATUS", "IPV4", "IPV6");
            for session in sessions {
                println!(
                    "{:<38} {:<10} {:<16} {:<40} {}",
                    session.id,
                    status_name(session.status()),
                    session.ipv4_address,
                    session.ipv6_address,
                    session.expires_at.map(|at| at.to_string()).unwrap_or_default()
                );
            }
            Ok(0)
        }
        SessionCommand::Get { id } => {
            let answer = client.get_session(GetSessionRequest { id }).await?.into_inner();
            print_session(&out, answer.session.unwrap_or_default(), "portcullis.v1.GetSessionResponse")?;
            Ok(0)
        }
        SessionCommand::Stop { id } => {
            print_session(&out, stop(&mut client, &id).await?, "portcullis.v1.StopSessionResponse")?;
            Ok(0)
        }
        SessionCommand::Extend { id, hours, minutes } => {
            let request = ExtendSessionRequest {
                id,
                additional_hours: hours.unwrap_or_default(),
                additional_minutes: minutes.unwrap_or_default(),
            };
            let session = client.extend_session(request).await?.into_inner().session.unwrap_or_default();
            let until = session.expires_at.map(|at| at.to_string()).unwrap_or_default();
            println!("{} {} until {until}", session.id, status_name(session.status()));
            Ok(0)
        }
        SessionCommand::Watch { id } => {
            let mut stream = watch(&mut client, &id).await?;
            let mut progress = Progress::new(out);
            // The server ends the stream once the session has ended.
            while let Some(message) = stream.message().await? {
                if out.json() {
                    // One message per line, for a script to read as they come.
                    let line = crate::output::to_json(&message, "portcullis.v1.WatchSessionResponse")?;
                    println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                progress.show(&message.session.unwrap_or_default());
            }
            Ok(0)
        }
    }
}

async fn start(client: &mut Client, spec: &Spec, heartbeat_seconds: Option<u32>) -> Result<Session, Failure> {
    let request = StartSessionRequest {
        duration_hours: spec.hours,
        duration_minutes: spec.minutes,
        ipv4_address: spec.ipv4.clone(),
        ipv6_address: spec.ipv6.clone(),
        heartbeat_seconds,
        resource_ids: spec.resources.clone(),
        justification: spec.justification.clone().unwrap_or_default(),
        ticket: spec.ticket.clone().unwrap_or_default(),
    };
    let answer = client.start_session(request).await?;
    answer.into_inner().session.ok_or_else(|| "the server answered no session".into())
}

async fn stop(client: &mut Client, id: &str) -> Result<Session, Failure> {
    let answer = client.stop_session(StopSessionRequest { id: id.to_owned() }).await?;
    answer.into_inner().session.ok_or_else(|| "the server answered no session".into())
}

/// Follows the session, printing each change, until it is ACTIVE, PARTIAL or over.
async fn follow(
    stream: &mut tonic::Streaming<WatchSessionResponse>,
    progress: &mut Progress,
) -> Result<Session, Failure> {
    loop {
        match stream.message().await? {
            Some(message) => {
                let session = message.session.unwrap_or_default();
                progress.show(&session);
                if settled(&session) {
                    return Ok(session);
                }
            }
            None => return Err("the server ended the watch before the session settled".into()),
        }
    }
}

async fn watch(client: &mut Client, id: &str) -> Result<tonic::Streaming<WatchSessionResponse>, Failure> {
    let request = WatchSessionRequest { id: id.to_owned() };
    Ok(client.watch_session(request).await?.into_inner())
}

/// Whether a session with this status is over for good.
fn ended(status: SessionStatus) -> bool {
    matches!(status, SessionStatus::Failed | SessionStatus::Expired | SessionStatus::Cancelled)
}

/// Whether the session is done getting its rules: not waiting for approval, nor applying.
fn settled(session: &Session) -> bool {
    !matches!(session.status(), SessionStatus::AwaitingApproval | SessionStatus::Pending | SessionStatus::Unspecified)
}

/// The exit code for a session that settled.
fn outcome(session: &Session) -> u8 {
    match session.status() {
        SessionStatus::Active => 0,
        SessionStatus::Partial => exit::PARTIAL,
        _ => exit::FAILED,
    }
}

/// Starts a session bound to this process by its heartbeat, runs `command` once the session is
/// ACTIVE, and stops the session when the command ends; answers the command's exit code.
async fn run_command(
    client: &mut Client,
    spec: &Spec,
    heartbeat: u32,
    allow_partial: bool,
    command: &[String],
    out: Output,
) -> Result<u8, Failure> {
    let session = start(client, spec, Some(heartbeat)).await?;
    let id = session.id.clone();
    let mut progress = Progress::new(out);
    // The watch that keeps the session alive: held open for as long as the command runs.
    let mut stream = watch(client, &id).await?;
    let settled_session = tokio::select! {
        settled = follow(&mut stream, &mut progress) => settled?,
        _ = tokio::signal::ctrl_c() => {
            stop(client, &id).await?;
            return Err("interrupted before the session was ACTIVE: it was stopped".into());
        }
    };
    match settled_session.status() {
        SessionStatus::Active => {}
        SessionStatus::Partial if allow_partial => {}
        other => {
            stop(client, &id).await?;
            let code = if other == SessionStatus::Partial { exit::PARTIAL } else { exit::FAILED };
            eprintln!("pcl: the session is {}; not running the command", status_name(other));
            return Ok(code);
        }
    }
    // The server ends a watch whose credential it no longer accepts (a login's token that was
    // renewed since): while the session lives, watch again with the current one.
    let mut watcher = client.clone();
    let watched = id.clone();
    let keep_alive = tokio::spawn(async move {
        loop {
            while let Ok(Some(message)) = stream.message().await {
                if message.session.is_some_and(|session| ended(session.status())) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match watch(&mut watcher, &watched).await {
                Ok(again) => stream = again,
                Err(message) => eprintln!("pcl: watching the session again failed: {message}"),
            }
        }
    });
    let code = supervise(command, &id).await;
    keep_alive.abort();
    let stopped = stop(client, &id).await;
    if let Err(message) = &stopped {
        eprintln!("pcl: stopping session {id} failed ({message}); its heartbeat closes it");
    }
    code
}

/// `session start --follow`: a session for a person on the move. Bound by a heartbeat to this
/// process, it follows the address the server sees (ChangeSessionAddress, no gap), is extended
/// before it ends as far as the maximum allows, and is stopped on Ctrl-C.
async fn follow_along(client: &mut Client, spec: &Spec, settings: &Follow, out: Output) -> Result<u8, Failure> {
    const HEARTBEAT_SECONDS: u32 = 60;
    let session = start(client, spec, Some(HEARTBEAT_SECONDS)).await?;
    let id = session.id.clone();
    if !out.json() {
        println!("{id}");
    }
    let length_minutes = spec.minutes.or(spec.hours.map(|hours| hours.saturating_mul(60))).unwrap_or(60);
    let extend_before_secs = i64::from(settings.extend_before_minutes) * 60;
    let mut addresses = (session.ipv4_address.clone(), session.ipv6_address.clone());
    let mut expires_at = session.expires_at.map_or(i64::MAX, |at| at.seconds);
    let mut at_maximum = false;
    // Only a live session (ACTIVE or PARTIAL) can be extended, and not past what approvers granted.
    let mut extendable = false;
    let mut approved = false;
    let mut stream = watch(client, &id).await?;
    let mut progress = Progress::new(out);
    let mut polls = tokio::time::interval(std::time::Duration::from_secs(settings.poll_seconds.max(1)));
    // One listener for the whole loop: a Ctrl-C arriving while a branch below runs (a poll's
    // calls) waits for the next select; a listener made anew each round would miss it.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(message) = message? else { return Ok(0) };
                let current = message.session.unwrap_or_default();
                progress.show(&current);
                expires_at = current.expires_at.map_or(expires_at, |at| at.seconds);
                extendable = matches!(current.status(), SessionStatus::Active | SessionStatus::Partial);
                approved = current.approval.is_some();
                if current.status() == SessionStatus::Expired || current.status() == SessionStatus::Cancelled {
                    return Ok(0);
                }
            }
            _ = polls.tick() => {
                let seen = match &settings.address_file {
                    Some(path) => std::fs::read_to_string(path).map(|text| text.trim().to_owned()).map_err(|e| e.to_string())?,
                    None => client.get_client_address(GetClientAddressRequest {}).await?.into_inner().ip_address,
                };
                let is_v6 = seen.contains(':');
                let current = if is_v6 { &mut addresses.1 } else { &mut addresses.0 };
                if !seen.is_empty() && *current != seen {
                    let (ipv4_address, ipv6_address) = if is_v6 { (None, Some(seen.clone())) } else { (Some(seen.clone()), None) };
                    let request = ChangeSessionAddressRequest { id: id.clone(), ipv4_address, ipv6_address };
                    client.change_session_address(request).await?;
                    progress.note(&format!("address changed: {} -> {seen}", if current.is_empty() { "none" } else { current.as_str() }));
                    *current = seen;
                }
                if extendable && !at_maximum && expires_at - crate::unix_now() < extend_before_secs {
                    let extended;
                    (extended, at_maximum) = match extend_within_maximum(client, &id, expires_at, length_minutes).await {
                        Ok(answer) => answer,
                        Err(refused) if approved => {
                            // The approvers granted this long: follow on to the end, unextended.
                            progress.note(&format!("not extending: {refused}"));
                            at_maximum = true;
                            continue;
                        }
                        Err(failure) => return Err(failure),
                    };
                    expires_at = extended.expires_at.map_or(expires_at, |at| at.seconds);
                    let until = extended.expires_at.map(|at| at.to_string()).unwrap_or_default();
                    match at_maximum {
                        true => progress.note(&format!("extended to its maximum: the session ends at {until}")),
                        false => progress.note(&format!("extended until {until}")),
                    }
                }
            }
            _ = &mut interrupted => {
                stop(client, &id).await?;
                progress.note("stopped");
                return Ok(0);
            }
        }
    }
}

/// Extends a session that ends at `expires_at` by `minutes`, or, where that is past its maximum,
/// to the latest end the server names in its refusal. Answers the session and whether it is now
/// as long as it may be.
async fn extend_within_maximum(
    client: &mut Client,
    id: &str,
    expires_at: i64,
    minutes: u32,
) -> Result<(Session, bool), Failure> {
    let mut request = ExtendSessionRequest { id: id.to_owned(), additional_hours: 0, additional_minutes: minutes };
    let refusal = match client.extend_session(request.clone()).await {
        Ok(answer) => return Ok((answer.into_inner().session.unwrap_or_default(), false)),
        Err(status) => status,
    };
    if reason_of(&refusal) == Some(ErrorReason::ApprovalRequired) {
        // Its approvers granted this long: following goes on to the end, without extending.
        return Err(Failure::from(refusal.message().to_owned()));
    }
    let latest = latest_expiry(&refusal).ok_or_else(|| describe(&refusal))?;
    // Whole minutes are what ExtendSession takes; less than one left is as far as it goes.
    request.additional_minutes = u32::try_from((latest - expires_at) / 60).unwrap_or(0);
    if request.additional_minutes == 0 {
        let session = client.get_session(GetSessionRequest { id: id.to_owned() }).await?;
        return Ok((session.into_inner().session.unwrap_or_default(), true));
    }
    let answer = client.extend_session(request).await?;
    Ok((answer.into_inner().session.unwrap_or_default(), true))
}

/// The `ErrorInfo` reason of a refusal, when it carries one this client knows.
fn reason_of(refusal: &tonic::Status) -> Option<ErrorReason> {
    use tonic_types::StatusExt;
    ErrorReason::from_str_name(&refusal.get_error_details().error_info()?.reason)
}

/// The latest end a session may have, from ExtendSession's refusal to go past its maximum.
fn latest_expiry(refusal: &tonic::Status) -> Option<i64> {
    use tonic_types::StatusExt;
    let details = refusal.get_error_details();
    let info = details.error_info()?;
    if reason_of(refusal) != Some(ErrorReason::DurationExceedsMaximum) {
        return None;
    }
    let latest: prost_types::Timestamp = info.metadata.get("latest_expires_at")?.parse().ok()?;
    Some(latest.seconds)
}

/// Runs the command with the session's id in its environment, passing SIGINT and SIGTERM on;
/// answers its exit code (128 + the signal that ended it).
async fn supervise(command: &[String], session_id: &str) -> Result<u8, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let (program, args) = command.split_first().ok_or("no command given")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("PORTCULLIS_SESSION_ID", session_id)
        .spawn()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    let mut interrupts = signal(SignalKind::interrupt()).map_err(|err| err.to_string())?;
    let mut terminations = signal(SignalKind::terminate()).map_err(|err| err.to_string())?;
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status.map_err(|err| err.to_string())?,
            _ = interrupts.recv() => libc::SIGINT,
            _ = terminations.recv() => libc::SIGTERM,
        };
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) with the pid of our own, still-unreaped child and a valid signal.
            unsafe { libc::kill(pid, forward) };
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    })
}

/// Shows what changed since the last message: the session's status and each rule's. On a
/// terminal, one live line per rule (a spinner until it is in or failed); otherwise one printed
/// line per change, for logs. Nothing when the output is JSON or quiet.
struct Progress {
    view: View,
    status: Option<SessionStatus>,
    /// Approvals seen so far, while the session has an approval.
    approvals: Option<usize>,
    rules: HashMap<String, (ResourceIpStatus, String)>,
}

enum View {
    Silent,
    Lines,
    Live {
        bars: indicatif::MultiProgress,
        session: indicatif::ProgressBar,
        rules: HashMap<String, indicatif::ProgressBar>,
    },
}

impl Progress {
    fn new(out: Output) -> Progress {
        use std::io::IsTerminal;
        let view = if !out.chatty() {
            View::Silent
        } else if std::io::stdout().is_terminal() {
            let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stdout());
            let plain = indicatif::ProgressStyle::with_template("{msg}").unwrap_or_else(|_| live_style(false));
            let session = bars.add(indicatif::ProgressBar::new_spinner().with_style(plain));
            View::Live { bars, session, rules: HashMap::new() }
        } else {
            View::Lines
        };
        Progress { view, status: None, approvals: None, rules: HashMap::new() }
    }

    fn show(&mut self, session: &Session) {
        let approvals =
            session.approval.as_ref().map(|approval| approval.decisions.iter().filter(|d| d.approve).count());
        if self.status != Some(session.status()) || self.approvals != approvals {
            self.status = Some(session.status());
            self.approvals = approvals;
            let line = match (&session.approval, session.status()) {
                (Some(approval), SessionStatus::AwaitingApproval) => format!(
                    "session {} waiting for approval ({}/{}) until {}",
                    session.id,
                    approvals.unwrap_or_default(),
                    approval.required,
                    approval.deadline.map(|at| at.to_string()).unwrap_or_default()
                ),
                _ => format!("session {} {}", session.id, status_name(session.status())),
            };
            match &self.view {
                View::Silent => {}
                View::Lines => println!("{line}"),
                View::Live { session: bar, .. } => {
                    bar.set_message(line);
                    bar.tick();
                }
            }
        }
        for rule in &session.resource_ips {
            let seen = (rule.status(), rule.error_message.clone());
            if self.rules.get(&rule.id) == Some(&seen) {
                continue;
            }
            self.rules.insert(rule.id.clone(), seen);
            match &mut self.view {
                View::Silent => {}
                View::Lines => println!("  {}", rule_line(rule)),
                View::Live { bars, rules, .. } => {
                    let bar =
                        rules.entry(rule.id.clone()).or_insert_with(|| bars.add(indicatif::ProgressBar::new_spinner()));
                    let busy = !matches!(
                        rule.status(),
                        ResourceIpStatus::Applied | ResourceIpStatus::Failed | ResourceIpStatus::Removed
                    );
                    // A spinner while the provider works; done, the line stays as it is.
                    bar.set_style(live_style(busy));
                    bar.set_message(rule_line(rule));
                    if busy {
                        bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    } else {
                        bar.disable_steady_tick();
                        bar.tick();
                    }
                }
            }
        }
    }

    /// A line that is not about one rule (an address change, an extension).
    fn note(&self, line: &str) {
        match &self.view {
            View::Silent => {}
            View::Lines => println!("{line}"),
            View::Live { bars, .. } => {
                let _ = bars.println(line);
            }
        }
    }
}

impl Drop for Progress {
    /// Leaves the last state of every line on the terminal.
    fn drop(&mut self) {
        if let View::Live { session, rules, .. } = &self.view {
            rules.values().chain([session]).for_each(|bar| bar.abandon());
        }
    }
}

/// A live line: a spinner before it while `busy`, indented as the printed lines are.
fn live_style(busy: bool) -> indicatif::ProgressStyle {
    let template = if busy { "{spinner} {msg}" } else { "  {msg}" };
    indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn rule_line(rule: &ResourceIp) -> String {
    let state = match rule.status() {
        ResourceIpStatus::Applied => "applied ✓".to_owned(),
        ResourceIpStatus::Failed => format!("failed ✗ {}", rule.error_message),
        ResourceIpStatus::Pending if !rule.error_message.is_empty() => format!("pending ({})", rule.error_message),
        other => other.as_str_name().trim_start_matches("RESOURCE_IP_STATUS_").to_lowercase(),
    };
    format!("{} {}: {state}", rule.resource_name, rule.ip_address)
}

fn status_name(status: SessionStatus) -> &'static str {
    status.as_str_name().trim_start_matches("SESSION_STATUS_")
}

/// `pcl approvals list`: the sessions the caller may decide.
pub async fn approval_inbox(channel: Channel, credential: Credential, out: Output) -> Result<u8, Failure> {
    use crate::pb::v1::approval_service_client::ApprovalServiceClient;
    let mut approvals = ApprovalServiceClient::with_interceptor(channel, credential);
    let inbox = approvals.list_approval_requests(ListApprovalRequestsRequest::default()).await?.into_inner();
    if out.json() {
        out.print_json(&inbox, "portcullis.v1.ListApprovalRequestsResponse")?;
        return Ok(0);
    }
    if out.quiet {
        inbox.sessions.iter().for_each(|session| println!("{}", session.id));
        return Ok(0);
    }
    println!("{:<38} {:<28} {:<10} {:<20} JUSTIFICATION", "ID", "REQUESTER", "APPROVALS", "RESOURCES");
    for session in inbox.sessions {
        let approval = session.approval.clone().unwrap_or_default();
        let given = approval.decisions.iter().filter(|decision| decision.approve).count();
        let mut names: Vec<&str> = session.resource_ips.iter().map(|rule| rule.resource_name.as_str()).collect();
        names.dedup();
        let counted = format!("{given}/{}", approval.required);
        let resources = names.join(",");
        println!(
            "{:<38} {:<28} {counted:<10} {resources:<20} {}",
            session.id, session.user_email, session.justification
        );
    }
    Ok(0)
}

/// `pcl approve` / `pcl deny`: the caller's decision on a waiting session.
pub async fn decide(
    channel: Channel,
    credential: Credential,
    id: String,
    reason: String,
    approve: bool,
    out: Output,
) -> Result<u8, Failure> {
    use crate::pb::v1::approval_service_client::ApprovalServiceClient;
    let mut approvals = ApprovalServiceClient::with_interceptor(channel, credential);
    let (session, kind) = if approve {
        let answer = approvals.approve_session(ApproveSessionRequest { id, reason }).await?.into_inner();
        (answer.session, "portcullis.v1.ApproveSessionResponse")
    } else {
        let answer = approvals.deny_session(DenySessionRequest { id, reason }).await?.into_inner();
        (answer.session, "portcullis.v1.DenySessionResponse")
    };
    print_session(&out, session.unwrap_or_default(), kind)?;
    Ok(0)
}
