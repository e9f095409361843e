//! A real SMTP server for the login tests: aiosmtpd (PyPI, installed by scripts/moto.sh),
//! storing every message in a maildir that the test reads the codes from.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct MailServer {
    pub port: u16,
    maildir: tempfile::TempDir,
    child: Child,
}

impl MailServer {
    /// Starts aiosmtpd on a free loopback port, or None (the test is skipped) without the
    /// tests' Python (`PORTCULLIS_TEST_PYTHON`, set by scripts/test.sh).
    pub async fn start() -> Option<MailServer> {
        let Ok(python) = std::env::var("PORTCULLIS_TEST_PYTHON") else {
            eprintln!("skipped: PORTCULLIS_TEST_PYTHON is not set (scripts/test.sh installs aiosmtpd)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        // Owned from here on: dropping the server stops the process, even if it never listens.
        let server = MailServer { port, maildir, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start");
    }

    /// Every message received so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        for folder in ["new", "cur"] {
            let dir: PathBuf = self.maildir.path().join("mail").join(folder);
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            messages.extend(entries.flatten().filter_map(|entry| std::fs::read_to_string(entry.path()).ok()));
        }
        messages
    }

    /// The codes mailed to `email` so far.
    pub fn codes_for(&self, email: &str) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|message| message.lines().any(|line| line.starts_with("To:") && line.contains(email)))
            .filter_map(|message| {
                let subject = message.lines().find(|line| line.starts_with("Subject:"))?;
                let code = subject.rsplit(' ').next()?.trim();
                (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.to_owned())
            })
            .collect()
    }

    /// Waits (bounded) for a code mailed to `email` that is not among `seen` (earlier ones).
    pub async fn wait_for_code(&self, email: &str, seen: &[String]) -> String {
        for _ in 0..200 {
            if let Some(code) = self.codes_for(email).into_iter().find(|code| !seen.contains(code)) {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no new login code for {email}; mailbox: {:#?}", self.messages());
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
