//! The real `pcl` binary against a real server (the workspace's `portcullis` binary, SQLite,
//! the memory provider; login codes through a real SMTP server; one case on moto's EC2).

use pcl::pb::v1::resource_service_client::ResourceServiceClient;
use pcl::pb::v1::session_service_client::SessionServiceClient;
use pcl::pb::v1::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The server tests' SMTP server (aiosmtpd), shared rather than copied.
#[path = "../../tests/it/common/smtp.rs"]
mod smtp;

/// The server tests' Dex (a real OpenID Connect provider), likewise; pcl needs only its login.
#[path = "../../tests/it/common/dex.rs"]
#[allow(dead_code)]
mod dex;

const PCL: &str = env!("CARGO_BIN_EXE_pcl");

/// The server binary built beside this test (`cargo test --workspace` builds it).
fn server_binary() -> std::path::PathBuf {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let binary = dir.join("portcullis");
    assert!(binary.exists(), "{} is missing: run the workspace's tests (cargo test --workspace)", binary.display());
    binary
}

/// A server on a free port with a fresh database, an admin key, and one memory resource
/// assigned to the admin.
struct Server {
    child: Child,
    address: String,
    key: String,
    /// Where login codes are mailed, for servers that log in.
    mail: Option<smtp::MailServer>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// A server that mails login codes to a real SMTP server, or None (the test is skipped)
    /// without the tests' Python.
    async fn with_mail(settings: &[(&str, &str)]) -> Option<Server> {
        let mail = smtp::MailServer::start().await?;
        let port = mail.port.to_string();
        let mut settings = settings.to_vec();
        settings.extend([
            ("PORTCULLIS_MAIL__TRANSPORT", "smtp"),
            ("PORTCULLIS_MAIL__SMTP_HOST", "127.0.0.1"),
            ("PORTCULLIS_MAIL__SMTP_PORT", port.as_str()),
            ("PORTCULLIS_MAIL__SMTP_SECURITY", "none"),
        ]);
        let mut server = Server::start_with(&settings).await;
        server.mail = Some(mail);
        Some(server)
    }

    /// A server with extra configuration from the environment (`PORTCULLIS_…`).
    async fn start_with(settings: &[(&str, &str)]) -> Server {
        Server::start_on("127.0.0.1:0", settings).await
    }

    /// As [`Server::start_with`], listening on `listen`.
    async fn start_on(listen: &str, settings: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}?mode=rwc", dir.path().join("portcullis.db").display());
        let command = |args: &[&str]| {
            let mut command = Command::new(server_binary());
            command.args(args).current_dir(dir.path()).env("PORTCULLIS_DATABASE_URL", &database);
            command.envs(settings.iter().copied());
            command
        };
        let init = command(&["init", "--admin-email", "ci@example.com"]).output().unwrap();
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        let key = String::from_utf8(init.stdout).unwrap().trim().to_owned();
        let mut child =
            command(&["serve", "--listen", listen, "--log-format", "json"]).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("the server exited").unwrap();
            if line.contains("listening")
                && let Some(at) = line.find("127.0.0.1:")
            {
                break line[at..].split('"').next().unwrap().to_owned();
            }
        };
        // Drained, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let server = Server { child, address, key, mail: None, _dir: dir };
        server.assign_new("db", resource::Provider::Memory(MemoryProvider::default())).await;
        server
    }

    /// Creates a resource and assigns it to the admin.
    async fn assign_new(&self, name: &str, provider: resource::Provider) {
        let mut resources = ResourceServiceClient::new(self.channel().await);
        let resource = Resource { name: name.into(), provider: Some(provider), ..Default::default() };
        let created = resources
            .create_resource(self.authed(CreateResourceRequest { resource: Some(resource) }))
            .await
            .unwrap()
            .into_inner()
            .resource
            .unwrap();
        let me = pcl::pb::v1::user_service_client::UserServiceClient::new(self.channel().await)
            .get_current_user(self.authed(GetCurrentUserRequest {}))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let assign = AssignResourceRequest { resource_id: created.id, user_id: me.id };
        resources.assign_resource(self.authed(assign)).await.unwrap();
    }

    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.address)).unwrap().connect().await.unwrap()
    }

    fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("x-api-key", self.key.parse().unwrap());
        request
    }

    /// `pcl` with this server and key.
    fn pcl(&self, args: &[&str]) -> Command {
        let mut command = self.pcl_without_key(args);
        command.env("PORTCULLIS_API_KEY", &self.key);
        command
    }

    /// `pcl` with this server, and only what its profile holds as credential.
    fn pcl_without_key(&self, args: &[&str]) -> Command {
        let mut command = Command::new(PCL);
        command
            .args(["--server", &format!("http://{}", self.address)])
            .args(args)
            .env_remove("PORTCULLIS_API_KEY")
            .env("XDG_CONFIG_HOME", self._dir.path());
        command
    }

    /// Runs `pcl login` as the admin, typing the code from the server's log.
    async fn login(&self) -> Output {
        self.login_as("ci@example.com").await
    }

    /// Runs `pcl login` as `email`, typing the code mailed to it.
    async fn login_as(&self, email: &str) -> Output {
        use std::io::Write;
        let mut login = self
            .pcl_without_key(&["login", "--email", email])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mail = self.mail.as_ref().expect("a server with mail (Server::with_mail)");
        let code = mail.wait_for_code(email, &[]).await;
        writeln!(login.stdin.take().unwrap(), "{code}").unwrap();
        login.wait_with_output().unwrap()
    }

    fn profile_file(&self) -> std::path::PathBuf {
        self._dir.path().join("portcullis").join("config.toml")
    }

    async fn session(&self, id: &str) -> Session {
        let mut sessions = SessionServiceClient::new(self.channel().await);
        sessions
            .get_session(self.authed(GetSessionRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap()
    }

    /// The newest session.
    async fn latest(&self) -> Option<Session> {
        let mut sessions = SessionServiceClient::new(self.channel().await);
        let listed = sessions.list_sessions(self.authed(ListSessionsRequest::default())).await.unwrap();
        listed.into_inner().sessions.into_iter().next()
    }

    /// Waits (bounded) until the newest session has `status`.
    async fn latest_reaches(&self, status: SessionStatus, within: Duration) -> Session {
        let deadline = Instant::now() + within;
        loop {
            if let Some(session) = self.latest().await
                && session.status() == status
            {
                return session;
            }
            assert!(Instant::now() < deadline, "no session reached {status:?}: {:?}", self.latest().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Without a TTY `pcl session start` prints one line per change and exits 0 once ACTIVE.
#[tokio::test]
async fn session_start_shows_progress_and_exits_when_active() {
    let server = Server::start().await;
    let output = server.pcl(&["session", "start", "--ipv4", "203.0.113.20", "--minutes", "15"]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let id = lines[0];
    assert_eq!(
        lines[1..],
        [
            format!("session {id} PENDING").as_str(),
            "  db 203.0.113.20: pending",
            format!("session {id} ACTIVE").as_str(),
            "  db 203.0.113.20: applied ✓",
        ],
        "{stdout}"
    );
    let listed = server.pcl(&["session", "list"]).output().unwrap();
    assert!(text(&listed).0.contains(id), "{:?}", text(&listed));
    let stopped = server.pcl(&["session", "stop", id]).output().unwrap();
    assert!(text(&stopped).0.contains("EXPIRING") || text(&stopped).0.contains("CANCELLED"), "{:?}", text(&stopped));
}

/// `pcl session run -- CMD` returns CMD's exit code, with the session's id in its environment,
/// and leaves the session CANCELLED.
#[tokio::test]
async fn session_run_returns_the_commands_exit_code_and_stops_the_session() {
    let server = Server::start().await;
    let output = server
        .pcl(&[
            "session",
            "run",
            "--ipv4",
            "203.0.113.21",
            "--",
            "sh",
            "-c",
            "echo \"inside $PORTCULLIS_SESSION_ID\"; exit 7",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(7), "{stdout}{stderr}");
    let session = server.latest().await.unwrap();
    assert!(stdout.contains(&format!("inside {}", session.id)), "{stdout}");
    let ended = server.latest_reaches(SessionStatus::Cancelled, Duration::from_secs(10)).await;
    assert_eq!(ended.ended_reason(), EndedReason::Manual);
}

/// SIGTERM to `pcl session run` reaches the command and stops the session.
#[tokio::test]
async fn sigterm_during_session_run_stops_the_command_and_the_session() {
    let server = Server::start().await;
    let mut child = server
        .pcl(&["session", "run", "--ipv4", "203.0.113.22", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "the command ended by the forwarded SIGTERM");
    server.latest_reaches(SessionStatus::Cancelled, Duration::from_secs(10)).await;
}

/// A `pcl session run` killed with SIGKILL cannot stop its session: the heartbeat does.
#[tokio::test]
async fn a_killed_session_run_is_ended_by_its_heartbeat() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let mut child = server
        .pcl(&["session", "run", "--heartbeat", "5", "--ipv4", "203.0.113.23", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let active = server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let session = server.session(&active.id).await;
        if session.status() == SessionStatus::Cancelled {
            break session;
        }
        assert!(Instant::now() < deadline, "the heartbeat never ended {session:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended.ended_reason(), EndedReason::ClientGone);
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// Bad flags: a clear message and exit code 2; a server error: one readable line and 1.
#[tokio::test]
async fn bad_usage_and_refusals_read_clearly() {
    let server = Server::start().await;
    let output = server.pcl(&["session", "start", "--hours", "1", "--minutes", "5"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("cannot be used with"), "{:?}", text(&output));
    let output = server.pcl(&["session", "start", "--ipv4", "10.0.0.1"]).output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("pcl: invalid request:")
            && stderr.contains("[ERROR_REASON_INVALID_IP_ADDRESS]")
            && stderr.contains("ipv4_address:"),
        "{stderr}"
    );
    assert!(!stderr.contains("Status {"), "no debug dump: {stderr}");
}

/// The smaller commands: resources, extend, completions.
#[tokio::test]
async fn resources_extend_and_completions() {
    let server = Server::start().await;
    let listed = server.pcl(&["resources", "list"]).output().unwrap();
    let (stdout, stderr) = text(&listed);
    assert!(listed.status.success(), "{stderr}");
    assert!(stdout.lines().any(|line| line.contains(" db ") && line.contains(" memory ")), "{stdout}");
    assert!(stdout.starts_with("ID") && stdout.lines().next().unwrap().ends_with("LAST CHECK"), "{stdout}");

    let started = server.pcl(&["session", "start", "--ipv4", "203.0.113.24", "--minutes", "30"]).output().unwrap();
    let id = text(&started).0.lines().next().unwrap().to_owned();
    let before = server.session(&id).await.expires_at.unwrap().seconds;
    let extended = server.pcl(&["session", "extend", &id, "--minutes", "15"]).output().unwrap();
    assert!(extended.status.success(), "{:?}", text(&extended));
    assert_eq!(server.session(&id).await.expires_at.unwrap().seconds, before + 15 * 60);
    let refused = server.pcl(&["session", "extend", &id]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "hours or minutes is required");

    let completions = Command::new(PCL).args(["completions", "bash"]).output().unwrap();
    assert!(completions.status.success());
    assert!(text(&completions).0.contains("_pcl()"), "a bash completion function");
}

/// `pcl login` asks for the mailed code and keeps the token in the profile (mode 0600); later
/// commands use it, renew it before it runs out, and `pcl logout` ends the login.
#[tokio::test]
async fn login_keeps_a_token_that_later_commands_use_and_renew() {
    let Some(server) = Server::with_mail(&[]).await else { return };
    let output = server.login().await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("logged in as ci@example.com"), "{stdout}");
    assert!(stderr.contains("Code:"), "it asked for the code: {stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.profile_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the profile holds a credential");

    let whoami = server.pcl_without_key(&["whoami"]).output().unwrap();
    assert!(text(&whoami).0.starts_with("ci@example.com"), "{:?}", text(&whoami));
    let profile = std::fs::read_to_string(server.profile_file()).unwrap();
    assert!(profile.contains(&format!("server = \"http://{}\"", server.address)), "bound to its server: {profile}");

    // Pointed elsewhere (a flag, or PORTCULLIS_SERVER set by someone else), pcl sends the
    // profile's token nowhere: it does not even connect.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let other = format!("http://{}", elsewhere.local_addr().unwrap());
    let mut redirected = Command::new(PCL)
        .args(["whoami"])
        .env("PORTCULLIS_SERVER", &other)
        .env_remove("PORTCULLIS_API_KEY")
        .env("XDG_CONFIG_HOME", server._dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The other server never answers: a pcl that sent the token would wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redirected.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = redirected.kill();
    let redirected = redirected.wait_with_output().unwrap();
    assert_eq!(redirected.status.code(), Some(1), "{:?}", text(&redirected));
    assert!(text(&redirected).1.contains("belong to"), "{:?}", text(&redirected));
    assert!(elsewhere.accept().is_err(), "pcl connected to the other server");

    // About to run out: the next command renews it first.
    let profile = std::fs::read_to_string(server.profile_file()).unwrap();
    let token = |profile: &str| profile.lines().find(|l| l.starts_with("access_token")).unwrap().to_owned();
    let soon = format!(
        "token_expires_at = {}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60
    );
    let edited: String = profile
        .lines()
        .map(|line| if line.starts_with("token_expires_at") { soon.clone() } else { line.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(server.profile_file(), &edited).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let whoami = server.pcl_without_key(&["whoami"]).output().unwrap();
    assert!(whoami.status.success(), "{:?}", text(&whoami));
    let renewed = std::fs::read_to_string(server.profile_file()).unwrap();
    assert_ne!(token(&renewed), token(&profile), "a fresh token was kept");

    let logout = server.pcl_without_key(&["logout"]).output().unwrap();
    assert!(logout.status.success(), "{:?}", text(&logout));
    assert!(!std::fs::read_to_string(server.profile_file()).unwrap().contains("access_token"));
    let whoami = server.pcl_without_key(&["whoami"]).output().unwrap();
    assert_eq!(whoami.status.code(), Some(1));
    assert!(text(&whoami).1.contains("not logged in"), "{:?}", text(&whoami));
}

/// Admin helpers take names and emails instead of ids.
#[tokio::test]
async fn users_and_assignments_by_name_and_email() {
    let server = Server::start().await;
    let created =
        server.pcl(&["users", "create", "--email", "Ada@Example.com", "--name", "Ada Lovelace"]).output().unwrap();
    assert!(created.status.success(), "{:?}", text(&created));
    let ada = text(&created).0.trim().to_owned();
    let listed = server.pcl(&["users", "list"]).output().unwrap();
    assert!(
        text(&listed).0.lines().any(|line| line.starts_with(&ada) && line.contains("ada@example.com")),
        "{:?}",
        text(&listed)
    );

    let assigned_to = |user: String| {
        let server = &server;
        async move {
            let mut resources = ResourceServiceClient::new(server.channel().await);
            let request = ListResourcesRequest { user_id: user, ..Default::default() };
            let listed = resources.list_resources(server.authed(request)).await.unwrap().into_inner().resources;
            listed.into_iter().map(|resource| resource.name).collect::<Vec<_>>()
        }
    };
    let assign = server.pcl(&["resources", "assign", "db", "--user", "ada@example.com"]).output().unwrap();
    assert!(assign.status.success(), "{:?}", text(&assign));
    assert_eq!(assigned_to(ada.clone()).await, ["db"]);
    let unassign = server.pcl(&["resources", "unassign", "db", "--user", &ada]).output().unwrap();
    assert!(unassign.status.success(), "{:?}", text(&unassign));
    assert!(assigned_to(ada).await.is_empty());
    let unknown = server.pcl(&["resources", "assign", "nope", "--user", "ada@example.com"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).1.contains("no resource nope"), "{:?}", text(&unknown));
}

/// An agent's credential goes straight from `pcl agents create` into a file; list shows it never
/// connected; revoke by name.
#[tokio::test]
async fn agents_are_created_listed_and_revoked_by_name() {
    let server = Server::start().await;
    let created = server.pcl(&["agents", "create", "bastion-1"]).output().unwrap();
    assert!(created.status.success(), "{:?}", text(&created));
    let credential = text(&created).0;
    assert!(
        credential.starts_with("pca_") && credential.trim().lines().count() == 1,
        "only the credential: {credential}"
    );
    let listed = server.pcl(&["agents", "list"]).output().unwrap();
    let line = text(&listed).0.lines().find(|line| line.contains("bastion-1")).map(str::to_owned);
    assert!(line.as_deref().is_some_and(|line| line.contains("never connected")), "{:?}", text(&listed));
    let revoked = server.pcl(&["agents", "revoke", "bastion-1"]).output().unwrap();
    assert!(revoked.status.success(), "{:?}", text(&revoked));
    let listed = server.pcl(&["agents", "list"]).output().unwrap();
    assert!(
        text(&listed).0.lines().any(|line| line.contains("bastion-1") && line.contains("revoked")),
        "{:?}",
        text(&listed)
    );
    let unknown = server.pcl(&["agents", "revoke", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).1.contains("no agent nope"), "{:?}", text(&unknown));
}

/// `--output json` prints the API's own JSON: parsed, the same as grpcurl's for the same call;
/// `--quiet` prints only ids.
#[tokio::test]
async fn json_output_is_what_grpcurl_prints() {
    let server = Server::start().await;
    let started =
        server.pcl(&["session", "start", "--ipv4", "203.0.113.25", "--minutes", "15", "--quiet"]).output().unwrap();
    let (stdout, stderr) = text(&started);
    assert!(started.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the id: {stdout}");
    let id = lines[0];
    let grpcurl = |method: &str, body: &str| {
        let output = Command::new("grpcurl")
            .args(["-plaintext", "-H", &format!("x-api-key: {}", server.key), "-d", body, &server.address, method])
            .output()
            .expect("grpcurl on PATH (scripts/test.sh installs it)");
        assert!(output.status.success(), "{:?}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let ours = |args: &[&str]| {
        let output = server.pcl(args).output().unwrap();
        assert!(output.status.success(), "{:?}", text(&output));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    assert_eq!(
        ours(&["session", "get", id, "--output", "json"]),
        grpcurl("portcullis.v1.SessionService/GetSession", &format!("{{\"id\": \"{id}\"}}"))
    );
    assert_eq!(
        ours(&["session", "list", "--output", "json"]),
        grpcurl("portcullis.v1.SessionService/ListSessions", "{}")
    );
    assert_eq!(ours(&["whoami", "--output", "json"]), grpcurl("portcullis.v1.UserService/GetCurrentUser", "{}"));
    let listed = server.pcl(&["session", "list", "--quiet"]).output().unwrap();
    assert_eq!(text(&listed).0.trim(), id);
}

/// `session start --follow` moves the session when the address changes — never leaving it with
/// no address applied — and Ctrl-C (SIGINT) stops it.
#[tokio::test]
async fn follow_moves_the_session_to_a_new_address_and_stops_on_interrupt() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let address_file = dir.path().join("address");
    std::fs::write(&address_file, "203.0.113.30\n").unwrap();
    let file = address_file.display().to_string();
    let args = [
        "session",
        "start",
        "--ipv4",
        "203.0.113.30",
        "--minutes",
        "30",
        "--follow",
        "--poll-seconds",
        "1",
        "--address-file",
        &file,
    ];
    let child = server.pcl(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let active = server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;

    std::fs::write(&address_file, "203.0.113.31\n").unwrap();
    let (mut samples, mut gaps) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let session = server.session(&active.id).await;
        let applied: Vec<&str> = session
            .resource_ips
            .iter()
            .filter(|rule| rule.status() == ResourceIpStatus::Applied)
            .map(|rule| rule.ip_address.as_str())
            .collect();
        samples += 1;
        gaps += usize::from(applied.is_empty());
        if applied == ["203.0.113.31"] && session.ipv4_address == "203.0.113.31" {
            break;
        }
        assert!(Instant::now() < deadline, "never moved: {session:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gaps, 0, "{gaps} of {samples} samples had no address applied");

    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("address changed: 203.0.113.30 -> 203.0.113.31"), "{stdout}");
    let stopped = server.session(&active.id).await;
    assert!(matches!(stopped.status(), SessionStatus::Expiring | SessionStatus::Cancelled), "{stopped:?}");
}

/// A login's token outlives no long command: with one-minute tokens, `session run` keeps its
/// session past the first token's end (renewing the token, watching again) and still stops it
/// itself at the end. (Takes two minutes.)
#[tokio::test]
async fn a_long_session_run_on_a_login_renews_its_token() {
    let Some(server) = Server::with_mail(&[
        ("PORTCULLIS_AUTH__ACCESS_TOKEN_MINUTES", "1"),
        ("PORTCULLIS_AUTH__CALLER_CACHE_SECS", "1"),
    ])
    .await
    else {
        return;
    };
    let login = server.login().await;
    assert!(login.status.success(), "{:?}", text(&login));

    let mut run = server
        .pcl_without_key(&["session", "run", "--heartbeat", "5", "--ipv4", "203.0.113.40", "--", "sleep", "110"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let active = server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;
    // Past the first token's end and the server's 30 s leeway for it.
    tokio::time::sleep(Duration::from_secs(100)).await;
    let meanwhile = server.session(&active.id).await;
    assert_eq!(meanwhile.status(), SessionStatus::Active, "past the first token's end: {meanwhile:?}");
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let ended = server.latest_reaches(SessionStatus::Cancelled, Duration::from_secs(10)).await;
    assert_eq!(ended.ended_reason(), EndedReason::Manual, "pcl stopped it, with a fresh token: {stderr}");
}

/// On a terminal the progress is drawn live (lines redrawn in place) and ends showing every
/// rule's outcome.
#[tokio::test]
async fn on_a_terminal_progress_is_drawn_live() {
    let server = Server::start().await;
    let command = format!("{PCL} --server http://{} session start --ipv4 203.0.113.26 --minutes 15", server.address);
    // script(1) runs pcl on a pseudo-terminal and copies what it draws.
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("PORTCULLIS_API_KEY", &server.key)
        .env("XDG_CONFIG_HOME", server._dir.path())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script(1), from util-linux");
    let (drawn, stderr) = text(&output);
    assert!(output.status.success(), "{drawn}{stderr}");
    assert!(drawn.contains("\u{1b}["), "drawn with terminal control sequences: {drawn:?}");
    let session = server.latest().await.unwrap();
    assert_eq!(session.status(), SessionStatus::Active);
    let last_draw = drawn.rsplit("session ").next().unwrap();
    assert!(last_draw.starts_with(&format!("{} ACTIVE", session.id)), "{drawn:?}");
    assert!(last_draw.contains("db 203.0.113.26: applied ✓"), "{drawn:?}");
}

/// `--follow` extends the session before it ends — once it is live: a slow firewall keeps it
/// PENDING at first — and, where its own length would go past the maximum, exactly to the
/// maximum (here one hour from its start), and says so.
#[tokio::test]
async fn follow_extends_the_session_up_to_its_maximum() {
    let server = Server::start_with(&[("PORTCULLIS_SESSIONS__MAX_HOURS_ADMIN", "1")]).await;
    let slow = MemoryProvider { latency_ms: 1500, ..Default::default() };
    server.assign_new("slow", resource::Provider::Memory(slow)).await;
    let dir = tempfile::tempdir().unwrap();
    let address_file = dir.path().join("address");
    std::fs::write(&address_file, "203.0.113.32\n").unwrap();
    let file = address_file.display().to_string();
    let args = [
        "session",
        "start",
        "--ipv4",
        "203.0.113.32",
        "--minutes",
        "50",
        "--follow",
        "--poll-seconds",
        "1",
        "--extend-before-minutes",
        "55",
        "--address-file",
        &file,
    ];
    let child = server.pcl(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let active = server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;
    let started_at = active.started_at.unwrap().seconds;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let session = server.session(&active.id).await;
        if session.expires_at.unwrap().seconds == started_at + 3600 {
            break;
        }
        assert!(Instant::now() < deadline, "never extended to its maximum: {session:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Polls go on; the session stays at its maximum.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.session(&active.id).await.expires_at.unwrap().seconds, started_at + 3600);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.matches("extended to its maximum").count(), 1, "{stdout}");
}

/// One real cloud: `session run` on a resource in moto's EC2 runs its command once the rule is
/// in the security group, and the rule is gone once the session has ended.
#[tokio::test]
async fn session_run_opens_a_security_group_on_moto_for_the_command_only() {
    let Ok(moto) = std::env::var("PORTCULLIS_TEST_MOTO_URL") else {
        eprintln!("skipped: PORTCULLIS_TEST_MOTO_URL is not set (scripts/test.sh starts moto)");
        return;
    };
    let python = std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ec2_py = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/ec2.py");
    let ec2 = |args: &[&str]| {
        let output = Command::new(&python).arg(ec2_py).args([moto.as_str(), "us-east-1"]).args(args).output().unwrap();
        assert!(output.status.success(), "ec2.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let group =
        ec2(&["create-group", &format!("pcl-{}", std::process::id())])["group_ids"][0].as_str().unwrap().to_owned();
    let server = Server::start_with(&[("PORTCULLIS_PROVIDERS__ALLOWED_ENDPOINTS", "[\"http://127.0.0.1:*\"]")]).await;
    let security_group = AwsSecurityGroup {
        region: "us-east-1".into(),
        group_id: group.clone(),
        protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        endpoint_url: Some(moto.clone()),
        ..Default::default()
    };
    server.assign_new("bastion", resource::Provider::AwsSecurityGroup(security_group)).await;

    // The command itself looks at the group: the rule must be in before it runs.
    let look = format!("{python} {ec2_py} {moto} us-east-1 rules {group}");
    let output = server.pcl(&["session", "run", "--ipv4", "203.0.113.50", "--", "sh", "-c", &look]).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("bastion 203.0.113.50: applied ✓"), "{stdout}");
    let seen_inside: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let cidrs: Vec<&str> = seen_inside.as_array().unwrap().iter().filter_map(|rule| rule["cidr"].as_str()).collect();
    assert_eq!(cidrs, ["203.0.113.50/32"], "{stdout}");

    server.latest_reaches(SessionStatus::Cancelled, Duration::from_secs(20)).await;
    assert_eq!(ec2(&["rules", &group]), serde_json::json!([]), "the rule is removed once the session ended");
}

/// `pcl login --sso` prints the identity provider's URL, waits while a browser logs in there
/// (Dex's form, followed here by an HTTP client) and comes back to the server, then keeps the
/// token: later commands use it.
#[tokio::test]
async fn login_with_sso_waits_for_the_browser_and_keeps_the_token() {
    use std::io::Read;
    let Some(binary) = dex::binary() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let admin = dex::User::new("ci@example.com", &["ops"]);
    let dex =
        dex::Dex::start(&binary, dir.path(), std::slice::from_ref(&admin), &format!("{public_url}/sso/callback")).await;
    let private = format!("[\"{}\"]", dex.origin);
    let settings = [
        ("PORTCULLIS_SEALING_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("PORTCULLIS_SERVER__PUBLIC_URL", public_url.as_str()),
        ("PORTCULLIS_SSO__ALLOWED_PRIVATE_ISSUERS", private.as_str()),
    ];
    let server = Server::start_on(&format!("127.0.0.1:{port}"), &settings).await;
    let me = pcl::pb::v1::user_service_client::UserServiceClient::new(server.channel().await)
        .get_current_user(server.authed(GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let provider = IdentityProvider {
        display_name: "Dex".into(),
        issuer_url: dex.issuer.clone(),
        client_id: dex::CLIENT_ID.into(),
        client_secret: dex::CLIENT_SECRET.into(),
        scopes: ["openid", "email", "profile", "groups", "offline_access"].map(str::to_owned).to_vec(),
        group_mappings: vec![GroupMapping { group: "ops".into(), role: Role::Admin.into(), resource_ids: Vec::new() }],
        ..Default::default()
    };
    let mut providers =
        pcl::pb::v1::identity_provider_service_client::IdentityProviderServiceClient::new(server.channel().await);
    let request = CreateIdentityProviderRequest { identity_provider: Some(provider) };
    providers.create_identity_provider(server.authed(request)).await.unwrap();

    let mut login = server
        .pcl_without_key(&["login", "--sso", "--organization", &me.organization_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "pcl ended without printing a URL");
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    let back = dex.log_in_to_redirect(&url, &admin.email).await;
    let page = reqwest::get(&back).await.unwrap();
    assert!(page.status().is_success(), "{}", page.text().await.unwrap_or_default());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let output = login.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed} {rest}");
    assert!(printed.contains("logged in as ci@example.com (groups: ops)"), "{printed}");

    let whoami = server.pcl_without_key(&["whoami"]).output().unwrap();
    assert!(whoami.status.success(), "{:?}", text(&whoami));
    assert!(text(&whoami).0.contains("ci@example.com"), "{:?}", text(&whoami));
}

/// `pcl session start` waits on a resource that needs approval, showing it, and finishes once
/// an approver (logged in with pcl) runs `pcl approve`; `pcl deny` ends another request.
#[tokio::test]
async fn session_start_waits_for_an_approver_who_approves_or_denies_with_pcl() {
    let Some(server) = Server::with_mail(&[]).await else { return };
    let mut users = pcl::pb::v1::user_service_client::UserServiceClient::new(server.channel().await);
    for email in ["grace@example.com", "hank@example.com"] {
        let approver = User { email: email.into(), role: Role::Admin.into(), ..Default::default() };
        users.create_user(server.authed(CreateUserRequest { user: Some(approver) })).await.unwrap();
    }
    let mut resources = ResourceServiceClient::new(server.channel().await);
    let listed = resources.list_resources(server.authed(ListResourcesRequest::default())).await.unwrap();
    let db = listed.into_inner().resources.remove(0);
    let approval = ApprovalPolicy { required: true, ..Default::default() };
    let update = UpdateResourceRequest {
        resource: Some(Resource { id: db.id.clone(), approval: Some(approval), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["approval".into()] }),
    };
    resources.update_resource(server.authed(update)).await.unwrap();
    assert!(server.login_as("grace@example.com").await.status.success(), "the approver logs in");

    let start = server
        .pcl(&["session", "start", "--ipv4", "203.0.113.7", "--minutes", "30", "--justification", "deploy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = server.latest_reaches(SessionStatus::AwaitingApproval, Duration::from_secs(10)).await;
    let inbox = server.pcl_without_key(&["approvals", "list"]).output().unwrap();
    assert!(text(&inbox).0.contains(&waiting.id) && text(&inbox).0.contains("0/1"), "{:?}", text(&inbox));
    // The approver was mailed the commands to answer with.
    let mail = server.mail.as_ref().unwrap();
    let asked = format!("pcl approve {}", waiting.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mail.messages().iter().any(|message| message.contains("To: grace@example.com") && message.contains(&asked)) {
        assert!(Instant::now() < deadline, "no approval mail to grace: {:?}", mail.messages());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let approved = server.pcl_without_key(&["approve", &waiting.id, "--reason", "ok"]).output().unwrap();
    assert!(approved.status.success(), "{:?}", text(&approved));
    let started = start.wait_with_output().unwrap();
    let (stdout, stderr) = text(&started);
    assert!(started.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("waiting for approval (0/1)"), "the wait was shown: {stdout}");
    assert!(stdout.contains("ACTIVE"), "{stdout}");

    let deadline = Instant::now() + Duration::from_secs(10);
    for (to, told) in [
        ("ci@example.com", "grace@example.com approved your session"),
        ("hank@example.com", "grace@example.com approved the session of ci@example.com"),
    ] {
        let addressed = format!("To: {to}");
        while !mail.messages().iter().any(|message| message.contains(&addressed) && message.contains(told)) {
            assert!(Instant::now() < deadline, "{to} was not told: {:?}", mail.messages());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let other = server.pcl(&["session", "start", "--ipv4", "203.0.113.8", "--no-wait", "-q"]).output().unwrap();
    let id = text(&other).0.trim().to_owned();
    let denied = server.pcl_without_key(&["deny", &id, "--reason", "freeze"]).output().unwrap();
    assert!(denied.status.success(), "{:?}", text(&denied));
    assert!(text(&denied).0.contains("CANCELLED"), "{:?}", text(&denied));
    assert_eq!(server.session(&id).await.ended_reason(), EndedReason::Denied);

    // Following an approved session never extends it past what was approved, and says so.
    let dir = tempfile::tempdir().unwrap();
    let address_file = dir.path().join("address");
    std::fs::write(&address_file, "203.0.113.9\n").unwrap();
    let file = address_file.display().to_string();
    let args = [
        "session",
        "start",
        "--ipv4",
        "203.0.113.9",
        "--minutes",
        "1",
        "--follow",
        "--poll-seconds",
        "1",
        "--address-file",
        &file,
    ];
    let follow = server.pcl(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let waiting = server.latest_reaches(SessionStatus::AwaitingApproval, Duration::from_secs(10)).await;
    let approved = server.pcl_without_key(&["approve", &waiting.id]).output().unwrap();
    assert!(approved.status.success(), "{:?}", text(&approved));
    let approved = server.latest_reaches(SessionStatus::Active, Duration::from_secs(10)).await;
    // One minute left, under the ten before which --follow extends: it tries once, and stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(Command::new("kill").args(["-INT", &follow.id().to_string()]).status().unwrap().success());
    let output = follow.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("not extending"), "{stdout}");
    assert_eq!(server.session(&approved.id).await.expires_at, approved.expires_at, "never extended");
}
