//! A private OpenLDAP slapd for one test, loaded from `tests/data/ldap/directory.ldif`, on a
//! free loopback port (through `scripts/slapd-instance`), so a test may write to it, stop it
//! and start it again on the same port and data (what an outage of the real directory does).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    pid: Option<u32>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn script() -> PathBuf {
    super::repo_root().join("scripts/slapd-instance")
}

fn fixture() -> PathBuf {
    super::repo_root().join("tests/data/ldap/directory.ldif")
}

fn alive(pid: u32) -> bool {
    // A zombie (no parent left to reap it) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Slapd {
    /// Starts a slapd, or returns `None` (skip) when it cannot start and services are not
    /// required.
    pub async fn start() -> Option<Slapd> {
        let mut slapd = Slapd {
            dir: tempfile::tempdir().expect("temporary slapd dir"),
            port: free_port(),
            pid: None,
        };
        match slapd.try_resume().await {
            Ok(()) => Some(slapd),
            Err(error) => {
                super::skip("slapd (scripts/slapd-instance)", error);
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `[directory]` of the test config, pointing at this server.
    pub fn directory_config(&self) -> ccass::auth::DirectoryConfig {
        let mut config = super::test_config().directory;
        config.url = self.url();
        config
    }

    async fn try_resume(&mut self) -> Result<(), String> {
        assert!(self.pid.is_none(), "slapd already running");
        let script = script();
        let data = self.dir.path().join("slapd");
        let port = self.port.to_string();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(script)
                .arg(&data)
                .arg(port)
                .arg(fixture())
                .stdin(Stdio::null())
                .output()
        })
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("run scripts/slapd-instance: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "scripts/slapd-instance exited {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u32>()
            .map_err(|error| format!("slapd pid from scripts/slapd-instance: {error}"))?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Starts the server again on the same port and data; panics when it cannot.
    pub async fn resume(&mut self) {
        if let Err(error) = self.try_resume().await {
            panic!("restart slapd on port {}: {error}", self.port);
        }
    }

    /// Freezes the server (SIGSTOP): it still accepts TCP connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid.expect("slapd running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Stops the server (SIGKILL) and waits until it is gone; port and data are kept.
    pub fn kill(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while alive(pid) {
            assert!(
                started.elapsed() < STOP_TIMEOUT,
                "slapd {pid} still running {STOP_TIMEOUT:?} after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}
