//! `ccass demo` as the README runs it, small: the binary with a private nats-server, its own
//! database on the project's PostgreSQL (recreated by the demo) and the shared directory.

use std::process::{Command, Output};

use ccass::demo::plan::CategoryCounts;

use crate::harness::nats::NatsServer;
use crate::harness::postgres;
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

/// The numbers of the summary row labelled `what` (`-` is `None`): demo, database, expected.
fn row(stdout: &str, what: &str) -> Vec<Option<i64>> {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(what))
        .unwrap_or_else(|| panic!("no row {what:?} in\n{stdout}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells.len(), 4, "row {what:?}: {line}");
    assert_eq!(cells[3], "ok", "row {what:?}: {line}");
    cells[..3]
        .iter()
        .map(|cell| (*cell != "-").then(|| cell.parse().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_short_demo_day_agrees_with_the_host_database_and_the_audit() {
    // Goal: the done-when: a small `ccass demo --exit-after-summary` runs the day
    // through the gateway, intake and the configured settlement runs on the compressed
    // clock, money settlement and statements, and every summary number agrees
    // with the SQL counts and the plan; the audit passes; bad SIs are refused while the rest
    // settles. Method: the binary against a private nats-server and a database the demo
    // recreates; the summary rows are parsed and compared with the category split.
    let Some(database) = postgres::empty_database("demo_day").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let pki_dir = tempfile::tempdir().unwrap();
    let pairs = 60;
    let started = std::time::Instant::now();
    let output = ccass(
        &[
            "demo",
            "--trades",
            "2000",
            "--pairs",
            &pairs.to_string(),
            "--seed",
            "3",
            "--exit-after-summary",
        ],
        &[
            ("CCASS_BUS__URL", nats.url()),
            ("CCASS_DEMO__DATABASE", database.name.clone()),
            ("CCASS_DEMO__PKI_DIR", pki_dir.path().display().to_string()),
            ("CCASS_GATEWAY__LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture.
    println!("{stdout}");
    assert!(
        output.status.success(),
        "ccass demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("\naudit: ok\n"), "{stdout}");
    assert!(
        stdout.contains("demo: every number agrees with the host database; audit ok"),
        "{stdout}"
    );

    let counts = CategoryCounts::split(pairs);
    let pair_count = |n: usize| Some(n as i64);
    assert_eq!(
        row(&stdout, "exchange trades published / captured + refused"),
        [Some(2000), Some(2000), None]
    );
    let sent = 2
        * (counts.normal
            + counts.short_of_stock
            + 2 * counts.stock_arrives
            + counts.mismatched
            + counts.short_of_cash)
        + 2 * counts.cancelled
        + counts.rejected;
    assert_eq!(
        row(&stdout, "SIs sent by the PSS, ACKed / journalled"),
        [pair_count(sent); 3]
    );
    assert_eq!(
        row(&stdout, "SIs rejected by intake (REJT)"),
        [
            None,
            pair_count(counts.rejected),
            pair_count(counts.rejected)
        ]
    );
    let matched = 2 * (counts.normal + counts.short_of_stock + counts.short_of_cash)
        + 4 * counts.stock_arrives;
    assert_eq!(
        row(&stdout, "SIs matched"),
        [None, pair_count(matched), pair_count(matched)]
    );
    assert_eq!(
        row(&stdout, "SIs unmatched (NMAT)")[1],
        pair_count(2 * counts.mismatched)
    );
    assert_eq!(
        row(&stdout, "SIs cancelled")[1],
        pair_count(counts.cancelled)
    );
    assert_eq!(
        row(&stdout, "run 1: pairs settled"),
        [pair_count(counts.normal); 3]
    );
    // The stock arrives between the runs: run 2 settles each chain's two pairs.
    assert_eq!(
        row(&stdout, "run 2: pairs settled"),
        [pair_count(2 * counts.stock_arrives); 3]
    );
    // The configured runs (settlement.run_times: four) after the stock arrived settle none.
    assert_eq!(row(&stdout, "run 3: pairs settled"), [Some(0); 3]);
    assert_eq!(row(&stdout, "run 4: pairs settled"), [Some(0); 3]);
    // The day is played by the schedule's times, in order, on the compressed clock.
    let headlines: Vec<&str> = [
        "08:00 input opens",
        "10:30 Batch Settlement Run 1",
        "11:15 SIs of wave two",
        "12:00 Batch Settlement Run 2",
        "14:00 Batch Settlement Run 3",
        "15:45 input cut-off",
        "15:50 Batch Settlement Run 4",
        "16:30 end-of-day statements",
        "17:00 day end",
    ]
    .into_iter()
    .filter(|headline| !stdout.contains(&format!("\n{headline}")))
    .collect();
    assert!(headlines.is_empty(), "missing {headlines:?} in\n{stdout}");
    let positions: Vec<usize> = [
        "08:00 ", "10:30 ", "11:15 ", "12:00 ", "15:45 ", "16:30 ", "17:00 ",
    ]
    .iter()
    .filter_map(|time| stdout.find(&format!("\n{time}")))
    .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{stdout}"
    );
    assert!(row(&stdout, "run 1: value settled, HKD cents")[1].unwrap() > 0);
    assert_eq!(
        row(&stdout, "pairs failed at day end: LACK (no stock)")[1],
        pair_count(counts.short_of_stock)
    );
    assert_eq!(
        row(&stdout, "pairs failed at day end: MONY (no cash)")[1],
        pair_count(counts.short_of_cash)
    );
    let out = row(&stdout, "messages out (outbox) / published by the relay");
    assert!(out[0].unwrap() > 0 && out[0] == out[1], "{out:?}");
    // Money settlement and statements are checked rows too (row() asserts each is "ok").
    let final_positions = row(&stdout, "CNS cut-off: stock positions final");
    assert!(final_positions[0].unwrap() > 0, "{final_positions:?}");
    assert_eq!(
        row(&stdout, "CNS stock positions settled by the runs"),
        [None, Some(0), Some(0)]
    );
    let carried = row(&stdout, "day end: stock positions carried forward");
    assert!(carried[0].unwrap() > 0, "{carried:?}");
    let money = row(&stdout, "CNS cut-off: money positions final")[0].unwrap();
    let settled = row(&stdout, "day end: money positions settled")[0].unwrap();
    let unpaid = row(&stdout, "day end: money positions unpaid")[0].unwrap();
    assert!(
        money > 0 && settled + unpaid <= money,
        "{money} {settled} {unpaid}"
    );
    let value = row(&stdout, "day end: money settled, HKD minor units");
    assert!(value[0].unwrap() > 0, "{value:?}");
    row(&stdout, "day end: money unpaid, HKD minor units");
    let participants = row(&stdout, "statements: participants with all three");
    assert!(participants[2].unwrap() > 0, "{participants:?}");
    for message_type in ["535", "536", "537"] {
        let pages = row(
            &stdout,
            &format!("statements: MT{message_type} pages on OUTBOUND / journalled"),
        );
        assert!(
            pages[0].unwrap() >= participants[2].unwrap(),
            "MT{message_type}: {pages:?}"
        );
    }
    let delivered = row(&stdout, "messages out to the PSS: on OUTBOUND / outbox");
    assert!(delivered[0].unwrap() > 0, "{delivered:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(90),
        "the short demo took {:?}",
        started.elapsed()
    );

    // Each PSS user has its browser bundle (opened in src/pki's unit test), private to its owner.
    for user in ["B01234-ops1", "B05678-ops1", "C00123-ops1", "I00456-inv1"] {
        use std::os::unix::fs::PermissionsExt as _;
        let bundle = pki_dir.path().join(format!("{user}.p12"));
        let metadata = std::fs::metadata(&bundle).unwrap_or_else(|e| panic!("{bundle:?}: {e}"));
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{bundle:?}");
    }

    // The day is in the database the demo owns, and `ccass audit` agrees.
    let audit = ccass(
        &["audit"],
        &[("CCASS_HOSTDB__DATABASE", database.name.clone())],
    );
    assert!(audit.status.success(), "{audit:?}");
    assert_eq!(String::from_utf8_lossy(&audit.stdout).trim(), "audit: ok");
}

#[test]
fn a_day_too_small_to_plan_is_refused_before_any_server_is_touched() {
    // Goal: bad input gets a clear, specific error and nothing is dropped or created.
    // Method: an unreachable database and NATS; the refusal must come first.
    let output = ccass(
        &["demo", "--pairs", "3", "--exit-after-summary"],
        &[
            ("CCASS_HOSTDB__PORT", "1".to_owned()),
            ("CCASS_BUS__URL", "nats://127.0.0.1:1".to_owned()),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the demo needs at least 10 pairs, not 3"),
        "{stderr}"
    );
}
