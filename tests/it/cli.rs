//! The `ccass` binary as an operator uses it: help texts, the idempotent admin commands twice
//! in a row, and a clear failure when a dependency is unreachable.

use std::process::{Command, Output};

use crate::harness::nats::NatsServer;
use crate::harness::postgres::{self, TestDatabase};
use crate::harness::repo_root;

fn ccass(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ccass"));
    command
        .args(args)
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run ccass")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn database_env(database: &TestDatabase) -> Vec<(&'static str, String)> {
    vec![
        ("CCASS_HOSTDB__HOST", database.config.host.clone()),
        ("CCASS_HOSTDB__PORT", database.config.port.to_string()),
        ("CCASS_HOSTDB__DATABASE", database.config.database.clone()),
    ]
}

#[test]
fn every_command_describes_itself() {
    let top = ccass(&["--help"], &[]);
    assert!(top.status.success());
    let text = stdout(&top);
    let commands = [
        "up",
        "auth",
        "admin",
        "migrate",
        "seed",
        "audit",
        "bus",
        "fin",
        "trades",
        "cns",
        "bench",
        "settlement",
        "pki",
        "gateway",
        "pss",
        "config",
    ];
    for command in commands {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
    }
    for args in [
        &["up", "--help"][..],
        &["auth", "--help"],
        &["fin", "parse", "--help"],
        &["trades", "load", "--help"],
        &["trades", "generate", "--help"],
        &["cns", "positions", "--help"],
        &["cns", "cutoff", "--help"],
        &["bench", "cns", "--help"],
        &["settlement", "--help"],
        &["settlement", "run-now", "--help"],
        &["pki", "init", "--help"],
        &["pki", "issue", "--help"],
        &["pki", "revoke", "--help"],
        &["gateway", "--help"],
        &["pss", "send", "--help"],
        &["fin", "validate", "--help"],
        &["fin", "fmt", "--help"],
        &["admin", "--help"],
        &["migrate", "--help"],
        &["seed", "--help"],
        &["audit", "--help"],
        &["bus", "--help"],
        &["bus", "init", "--help"],
        &["bus", "subjects", "--help"],
        &["config", "check", "--help"],
    ] {
        let output = ccass(args, &[]);
        assert!(output.status.success(), "{args:?}");
        let help = stdout(&output);
        let description = help.lines().next().unwrap_or_default();
        assert!(
            description.len() > 10,
            "{args:?} has no description:\n{help}"
        );
    }
}

#[tokio::test]
async fn migrate_seed_and_bus_init_twice_give_the_same_result() {
    // Goal: the operator commands are idempotent. Method: run each twice against a fresh
    // database and a private nats-server; the second run applies / creates nothing.
    let Some(database) = postgres::empty_database("cli_idempotent").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut env = database_env(&database);
    env.push(("CCASS_BUS__URL", nats.url()));

    let first = ccass(&["migrate"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = ccass(&["migrate"], &env);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_ne!(stdout(&first), stdout(&second));
    assert!(
        stdout(&second).contains("up to date"),
        "{}",
        stdout(&second)
    );

    let seed_first = ccass(&["seed", "--file", "config/reference/demo.toml"], &env);
    assert!(seed_first.status.success(), "{}", stderr(&seed_first));
    let seed_second = ccass(&["seed", "--file", "config/reference/demo.toml"], &env);
    assert!(seed_second.status.success(), "{}", stderr(&seed_second));

    let audit = ccass(&["audit"], &env);
    assert!(
        audit.status.success(),
        "{}{}",
        stdout(&audit),
        stderr(&audit)
    );

    let init_first = ccass(&["bus", "init"], &env);
    assert!(init_first.status.success(), "{}", stderr(&init_first));
    assert!(stdout(&init_first).contains("stream INBOUND: created"));
    let init_second = ccass(&["bus", "init"], &env);
    assert!(init_second.status.success(), "{}", stderr(&init_second));
    let text = stdout(&init_second);
    assert!(
        text.lines().all(|line| line.ends_with(": unchanged")),
        "{text}"
    );
}

#[test]
fn up_fails_fast_naming_an_unreachable_dependency() {
    // Goal: `ccass up` exits non-zero with the dependency's address when it cannot reach it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = ccass(
        &["up"],
        &[
            ("CCASS_HOSTDB__PORT", closed.to_string()),
            ("CCASS_HOSTDB__CONNECT_TIMEOUT_MS", "500".to_owned()),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("postgres at 127.0.0.1:{closed}")),
        "{message}"
    );
}

#[test]
fn a_bad_config_key_stops_startup_with_its_name() {
    let output = ccass(
        &["config", "check"],
        &[("CCASS_BUS__REQUEST_TIMEOUT_MS", "0".to_owned())],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("bus.request_timeout_ms"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn up_serves_until_sigterm_then_exits_cleanly() {
    // Goal: `ccass up` runs until SIGTERM and then shuts down gracefully with status 0.
    // Method: start the binary against a fresh database and a private nats-server, wait for
    // /readyz to answer 200 on its ops port, send SIGTERM, and wait for a successful exit.
    let Some(database) = postgres::database("up_sigterm").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut env = database_env(&database);
    env.push(("CCASS_BUS__URL", nats.url()));
    let init = ccass(&["bus", "init"], &env);
    assert!(init.status.success(), "{}", stderr(&init));

    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.push((
        "CCASS_TELEMETRY__OPS_LISTEN_ADDR",
        format!("127.0.0.1:{ops_port}"),
    ));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccass"));
    command
        .arg("up")
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in &env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();

    let started = std::time::Instant::now();
    loop {
        let ready = tokio::net::TcpStream::connect(("127.0.0.1", ops_port))
            .await
            .is_ok()
            && crate::ops::get(format!("127.0.0.1:{ops_port}").parse().unwrap(), "/readyz")
                .await
                .0
                == 200;
        if ready {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "ccass up never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .expect("ccass up exits within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn fin_validate_needs_no_servers_and_reports_positions() {
    // Goal: `ccass fin validate` works with no configuration or servers, prints each problem as
    // LINE:COL CODE path: message, and exits non-zero for an invalid file.
    // Method: run it from an empty directory (no config/) on a valid and a malformed sample.
    let empty = tempfile::tempdir().unwrap();
    let samples = repo_root().join("tests/data/samples");
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_ccass"))
            .args(["fin", "validate"])
            .arg(samples.join(file))
            .current_dir(empty.path())
            .output()
            .unwrap()
    };
    let valid = run("mt540-pwintegr-1.fin");
    assert!(
        valid.status.success(),
        "{}{}",
        stdout(&valid),
        stderr(&valid)
    );
    assert!(stdout(&valid).contains("OK"), "{}", stdout(&valid));
    let malformed = run("mt541-prowide-1.fin");
    assert!(!malformed.status.success());
    assert!(
        stdout(&malformed).contains("14:1 E203 16S:TRADFOO"),
        "{}",
        stdout(&malformed)
    );
}
