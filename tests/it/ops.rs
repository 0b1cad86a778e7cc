//! `ccass up` in-process against real servers: the ops port serves valid Prometheus text, and
//! `/readyz` turns unready when Postgres or NATS goes away and ready again when it returns.
//! The service commands as child processes: `ccass auth` serves the ops port probing exactly
//! its dependencies; two `ccass settlement bsr` share the scheduled runs, one leading each, and
//! the survivor runs the next one when the leader is killed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres;
use crate::harness::proxy::Proxy;

const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET path` over HTTP/1.0; returns (status, body).
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `/readyz` until its status is `want`; returns the body.
async fn wait_for_readyz(address: SocketAddr, want: u16) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = get(address, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < STATE_CHANGE_TIMEOUT,
            "/readyz stayed {status} (wanted {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_follows_postgres_and_nats_and_metrics_are_valid_prometheus_text() {
    // Goal: readiness reflects each dependency now, and /metrics parses as Prometheus text.
    // Method: run `ccass up` in-process with Postgres behind a cuttable proxy and a private
    // nats-server; cut/restore the proxy, kill/restart the server, polling /readyz each time.
    let Some(database) = postgres::database("readyz").await else {
        return;
    };
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let upstream: SocketAddr = format!("{}:{}", database.config.host, database.config.port)
        .parse()
        .unwrap();
    let proxy = Proxy::start(upstream).await;

    let mut config = crate::harness::test_config();
    config.hostdb = database.config.clone();
    config.hostdb.host = proxy.address().ip().to_string();
    config.hostdb.port = proxy.address().port();
    config.bus = nats.bus_config();
    config.telemetry.readiness_check_timeout_ms = 1000;
    let (_client, _jetstream) = initialised_bus(&config.bus, "test").await;

    let listeners = ccass::up::Listeners::bind(&config).await.unwrap();
    let ops = listeners.ops.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(ccass::up::run(config, listeners, async {
        let _ = stopped.await;
    }));

    let body = wait_for_readyz(ops, 200).await;
    assert!(
        body.contains("postgres ok") && body.contains("nats ok"),
        "{body}"
    );
    assert_eq!(get(ops, "/healthz").await.0, 200);

    proxy.cut();
    let body = wait_for_readyz(ops, 503).await;
    assert!(body.contains("postgres down"), "{body}");
    assert!(body.contains("nats ok"), "{body}");
    proxy.restore();
    wait_for_readyz(ops, 200).await;

    nats.kill();
    let body = wait_for_readyz(ops, 503).await;
    assert!(body.contains("nats down"), "{body}");
    assert_eq!(
        get(ops, "/healthz").await.0,
        200,
        "alive while a dependency is down"
    );
    nats.resume().await;
    wait_for_readyz(ops, 200).await;

    let (status, text) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|error| panic!("invalid prometheus text: {error}\n{text}"));
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    assert!(names.contains(&"ccass_build_info"), "{names:?}");
    assert!(
        names.contains(&"ccass_ops_readiness_checks_total"),
        "{names:?}"
    );
    let failed_postgres = scrape.samples.iter().any(|s| {
        s.metric == "ccass_ops_readiness_checks_total"
            && s.labels.get("dependency") == Some("postgres")
            && s.labels.get("outcome") != Some("ok")
    });
    assert!(failed_postgres, "the outage is counted");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("ccass_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `ccass <args>` against the test's servers, its ops port on `ops`.
fn service_command(
    args: &[&str],
    ops: SocketAddr,
    database: &postgres::TestDatabase,
    nats: &NatsServer,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"));
    command
        .args(args)
        .arg("--ops-listen-addr")
        .arg(ops.to_string())
        .current_dir(crate::harness::repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_HOSTDB__HOST", &database.config.host)
        .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
        .env("CCASS_HOSTDB__DATABASE", &database.config.database)
        .env("CCASS_BUS__URL", nats.url())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Polls `path` until it answers `want`; panics (with the child's state) after the timeout.
async fn wait_for_status(
    child: &mut tokio::process::Child,
    address: SocketAddr,
    path: &str,
    want: u16,
) -> String {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the service exited {status} before {path} answered {want}");
        }
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            let (status, body) = get(address, path).await;
            if status == want {
                return body;
            }
        }
        assert!(
            started.elapsed() < STATE_CHANGE_TIMEOUT,
            "{path} on {address} did not answer {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn auth_command_serves_the_ops_port_probing_postgres_nats_and_ldap() {
    // Goal: `ccass auth` alone (as Kubernetes runs it) serves /healthz and /readyz, and its
    // readiness covers exactly its dependencies, LDAP included.
    // Method: the real binary as a child with --ops-listen-addr on a free port against a test
    // database, a private nats-server and a private slapd; then kill slapd.
    let Some(database) = postgres::database("ops_auth_command").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(mut slapd) = crate::harness::ldap::Slapd::start().await else {
        return;
    };
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = service_command(&["auth"], ops, &database, &nats)
        .env("CCASS_DIRECTORY__URL", slapd.url())
        .env("CCASS_TELEMETRY__READINESS_CHECK_TIMEOUT_MS", "1000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ccass auth");

    assert_eq!(
        wait_for_status(&mut child, ops, "/healthz", 200).await,
        "ok\n"
    );
    let body = wait_for_status(&mut child, ops, "/readyz", 200).await;
    assert_eq!(body, "ready\npostgres ok\nnats ok\nldap ok\n");
    let (status, metrics) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("ccass_build_info"), "{metrics}");

    slapd.kill();
    let body = wait_for_status(&mut child, ops, "/readyz", 503).await;
    assert!(body.contains("ldap down"), "{body}");
    assert!(
        body.contains("postgres ok") && body.contains("nats ok"),
        "{body}"
    );
    assert_eq!(
        get(ops, "/healthz").await.0,
        200,
        "alive while LDAP is down"
    );
    child.kill().await.unwrap();
}

/// Process ids recorded as `leader` (`bsr:<pid>`) of the completed settlement runs, in order.
async fn run_leaders(pool: &ccass::hostdb::Pool) -> Vec<u32> {
    let client = ccass::hostdb::client(pool).await.unwrap();
    client
        .query(
            "SELECT leader FROM settlement_runs WHERE status = 'completed' ORDER BY settlement_run_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let leader: String = row.get(0);
            leader
                .strip_prefix("bsr:")
                .and_then(|pid| pid.parse().ok())
                .unwrap_or_else(|| panic!("leader {leader:?} is not bsr:<pid>"))
        })
        .collect()
}

async fn wait_for_runs(pool: &ccass::hostdb::Pool, count: usize) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let leaders = run_leaders(pool).await;
        if leaders.len() >= count {
            return leaders;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "{} run(s) after {:?}, wanted {count}",
            leaders.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn two_bsr_commands_run_each_scheduled_run_once_and_the_standby_takes_over() {
    // Goal: `ccass settlement bsr` twice (the chart's two replicas): each scheduled run happens
    // once, led by one of them; when the leader is killed, the other runs the next one.
    // Method: settlement.run_times is HH:MM, so the test shifts settlement.utc_offset_minutes to
    // make the local time 12:00 and schedules runs at 12:01 and 12:02 (up to ~2 minutes).
    let Some(database) = postgres::database("ops_bsr_failover").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_client, _jetstream) = initialised_bus(&nats.bus_config(), "test").await;

    // Both processes must start within the minute before 12:01 local: not in its last seconds.
    let seconds_in_minute = |now: time::OffsetDateTime| now.second();
    if seconds_in_minute(time::OffsetDateTime::now_utc()) > 40 {
        let wait = 61 - u64::from(seconds_in_minute(time::OffsetDateTime::now_utc()));
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    let now = time::OffsetDateTime::now_utc();
    let minute_of_day = i32::from(now.hour()) * 60 + i32::from(now.minute());
    let utc_offset_minutes = (12 * 60 - minute_of_day).to_string();
    let spawn = |ops: SocketAddr| {
        service_command(&["settlement", "bsr"], ops, &database, &nats)
            .env("CCASS_SETTLEMENT__UTC_OFFSET_MINUTES", &utc_offset_minutes)
            .env("CCASS_SETTLEMENT__RUN_TIMES", r#"["12:01", "12:02"]"#)
            .env("CCASS_SETTLEMENT__SCHEDULER_POLL_MS", "100")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ccass settlement bsr")
    };
    let ops_a: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ops_b: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut a = spawn(ops_a);
    let mut b = spawn(ops_b);
    for (child, ops) in [(&mut a, ops_a), (&mut b, ops_b)] {
        let body = wait_for_status(child, ops, "/readyz", 200).await;
        assert_eq!(body, "ready\npostgres ok\nnats ok\n");
    }
    let (pid_a, pid_b) = (a.id().unwrap(), b.id().unwrap());

    let leaders = wait_for_runs(&database.pool, 1).await;
    let first = leaders[0];
    assert!(first == pid_a || first == pid_b, "{leaders:?}");
    // The other saw the lock taken or the run done: still one run for the slot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(run_leaders(&database.pool).await, vec![first]);

    let (mut leader, mut standby, standby_pid, standby_ops) = if first == pid_a {
        (a, b, pid_b, ops_b)
    } else {
        (b, a, pid_a, ops_a)
    };
    leader.kill().await.unwrap();
    let leaders = wait_for_runs(&database.pool, 2).await;
    assert_eq!(
        leaders,
        vec![first, standby_pid],
        "the standby ran the next one"
    );
    assert_eq!(
        wait_for_status(&mut standby, standby_ops, "/readyz", 200).await,
        "ready\npostgres ok\nnats ok\n"
    );
    standby.kill().await.unwrap();
}

#[tokio::test]
async fn a_service_command_whose_ops_port_is_taken_fails_naming_the_address() {
    // Goal: a busy ops port is a clear start-up error, not a pod that runs unprobed.
    // Method: hold a port, start `ccass settlement bsr --ops-listen-addr` on it (it binds
    // before connecting to anything, so no servers are needed).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = held.local_addr().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"))
        .args(["settlement", "bsr", "--ops-listen-addr"])
        .arg(address.to_string())
        .current_dir(crate::harness::repo_root())
        .env("CCASS_ENV", "test")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run ccass settlement bsr");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("bind ops port {address}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn bsr_command_refuses_an_unmigrated_database_naming_the_fix() {
    // Goal: a BSR pod against a database whose schema is behind stops at start with the
    // command that fixes it, instead of failing its first run.
    let Some(database) = postgres::empty_database("ops_bsr_unmigrated").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let output = service_command(&["settlement", "bsr"], ops, &database, &nats)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run ccass settlement bsr");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("migration(s) pending") && stderr.contains("ccass migrate"),
        "{stderr}"
    );
}
