//! A user + network namespace for nftables tests (`unshare -Urn`, no root needed), entered with
//! nsenter: what runs `nft` in it never touches the host's firewall. Shared by the agent's tests
//! and the server's (`#[path]`).

use portcullis_agent::nft::Nft;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A user + network namespace held open by a sleeping process.
pub struct Namespace {
    holder: Child,
}

impl Namespace {
    pub fn new() -> Namespace {
        let holder = Command::new("unshare")
            .args(["-Urn", "sleep", "3600"])
            .stdout(Stdio::null())
            .spawn()
            .expect("unshare (util-linux) runs");
        // unshare makes the namespaces, then writes the user map, then runs sleep: entering
        // before the map is written would find no root in it. So wait for sleep.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{}/comm", holder.id())).map_or(true, |comm| comm.trim() != "sleep")
        {
            assert!(Instant::now() < deadline, "unshare -Urn did not start its namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        Namespace { holder }
    }

    pub fn enter(&self) -> Vec<String> {
        let pid = self.holder.id().to_string();
        ["nsenter", "--target", &pid, "--user", "--net", "--preserve-credentials"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The agent's nft, in this namespace.
    pub fn nft(&self, table: &str) -> Nft {
        let mut command = self.enter();
        command.push("nft".into());
        Nft::with_command(command, table)
    }

    /// Runs an nft command line in the namespace (as someone else would): its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let command = self.enter();
        let output = Command::new(&command[0]).args(&command[1..]).arg("nft").args(args).output().expect("nft runs");
        assert!(output.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
