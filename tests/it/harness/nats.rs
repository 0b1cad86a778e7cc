//! A private nats-server with JetStream for one test: free loopback port, temporary store dir,
//! stop and start again on the same port and store (what a restart of the real server does).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// async-nats speaks the 2.10+ server API (an older server answers JetStream requests in a
/// shape it cannot parse: "data did not match any variant of untagged enum Response").
const MINIMUM_VERSION: (u32, u32) = (2, 10);

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// A client named `name` on `bus` and its JetStream context, with the catalogue's streams and
/// consumers created (`ccass bus init`), as the services find them.
pub async fn initialised_bus(
    bus: &ccass::bus::BusConfig,
    name: &str,
) -> (async_nats::Client, async_nats::jetstream::Context) {
    let client = ccass::bus::connect(bus, name).await.unwrap();
    let jetstream = ccass::bus::jetstream(bus, client.clone());
    let catalogue = ccass::bus::catalogue::Catalogue::embedded().unwrap();
    ccass::bus::init::run(bus, &jetstream, &catalogue)
        .await
        .unwrap();
    (client, jetstream)
}

/// The nats-server binary: `CCASS_NATS_SERVER_BIN`, else the one `scripts/services up` linked
/// into `.ccass/bin`, else `nats-server` on PATH.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CCASS_NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let linked = super::var_dir().join("bin/nats-server");
    if linked.exists() {
        return Some(linked);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    })
}

/// Fails the test at once, naming the binary and the fix, when it is older than
/// `MINIMUM_VERSION` (Debian's packaged 2.9 on PATH, say), instead of letting every JetStream
/// call fail later with a parse error.
fn check_version(binary: &std::path::Path) {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|error| panic!("run {} --version: {error}", binary.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
        .and_then(|version| {
            let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or_else(|| {
            panic!(
                "{} --version printed {text:?}: no version",
                binary.display()
            )
        });
    assert!(
        version >= MINIMUM_VERSION,
        "{} is nats-server {}.{}; the tests need {}.{} or newer: run scripts/services up (it \
         links one into .ccass/bin) or set CCASS_NATS_SERVER_BIN",
        binary.display(),
        version.0,
        version.1,
        MINIMUM_VERSION.0,
        MINIMUM_VERSION.1
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl NatsServer {
    /// Starts a server, or returns `None` (skip) when no nats-server binary exists and services
    /// are not required.
    pub async fn start() -> Option<NatsServer> {
        let Some(binary) = binary() else {
            super::skip(
                "nats-server binary",
                "not found in CCASS_NATS_SERVER_BIN, .ccass/bin or PATH",
            );
            return None;
        };
        check_version(&binary);
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store: tempfile::tempdir().expect("temporary jetstream store"),
            child: None,
        };
        server.resume().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A bus config for this server, from the test config.
    pub fn bus_config(&self) -> ccass::bus::BusConfig {
        let mut config = super::test_config().bus;
        config.url = self.url();
        config
    }

    /// Kills the server (SIGKILL: no goodbye to clients), keeping its port and store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its clients stay connected, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("nats-server running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} nats-server");
    }

    /// Starts the server again on the same port and store; waits until it accepts clients.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.binary.display()));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            // JetStream answers once the server has recovered its store.
            let last_error = match async_nats::connect(self.url()).await {
                Ok(client) => match async_nats::jetstream::new(client).query_account().await {
                    Ok(_) => return,
                    Err(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
            };
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "nats-server on port {} not ready within {READY_TIMEOUT:?}: {last_error}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `consumer` has delivered every message and had each acknowledged (or
/// terminated); panics after `within` with what is left, naming `what` stalled.
pub async fn wait_until_all_acknowledged(
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
    within: Duration,
    what: &str,
) {
    let started = Instant::now();
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{what} is stuck: {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
