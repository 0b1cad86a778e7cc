//! The Batch Settlement Run leader as a real process: `ccass settlement run-now` killed with
//! SIGKILL while its run's transaction is open, a standby refused while the leader runs, and
//! the rerun that settles every pair exactly once.

use std::process::Stdio;
use std::time::Duration;

use ccass::hostdb;
use ccass::hostdb::settlement::{self as sql, NewInstruction, NewMatchedPair};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::dates::settlement_date;
use crate::harness::postgres::{self, TestDatabase, count};
use crate::harness::repo_root;

const TENCENT: &str = "KYG875721634";
const PAIRS: i64 = 40;

fn run_now(database: &TestDatabase, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ccass"));
    command
        .args(["settlement", "run-now", "--date"])
        .arg(settlement_date().to_string())
        .args(extra)
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_HOSTDB__HOST", &database.config.host)
        .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
        .env("CCASS_HOSTDB__DATABASE", &database.config.database)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads the child's stderr until a line contains `marker`; panics on EOF or after 60 s.
async fn wait_for_line(child: &mut Child, marker: &str) {
    let stderr = child.stderr.as_mut().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(marker) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with {marker:?} from the leader");
}

#[tokio::test]
async fn leader_killed_before_commit_leaves_nothing_and_the_rerun_settles_each_pair_once() {
    // Goal: exactly once across a leader process killed with its run written but not
    // committed; a standby started meanwhile refuses clearly. Method: 40 DvP pairs; start
    // `run-now` with the test hook that pauses before commit; when it logs the pause, start a
    // second `run-now` (must fail naming the lock), kill -9 the first, check nothing stayed;
    // rerun twice as processes; every pair has exactly one marker, balances moved once,
    // `ccass audit` passes.
    let Some(database) = postgres::database("bsr_kill").await else {
        return;
    };
    let pool = &database.pool;
    hostdb::seed::apply_file(pool, &repo_root().join("config/reference/demo.toml"))
        .await
        .unwrap();
    let side = |own: &str, other: &str, reference: String| NewInstruction {
        participant_id: own[..6].to_owned(),
        sender_reference: reference,
        account_id: own.to_owned(),
        counterparty_participant_id: other[..6].to_owned(),
        counterparty_account_id: other.to_owned(),
        isin: TENCENT.to_owned(),
        quantity: 100,
        settlement_date: settlement_date(),
        payment: Some(("HKD".to_owned(), 4_125_000)),
        partial_settlement_allowed: false,
    };
    let pairs: Vec<NewMatchedPair> = (0..PAIRS)
        .map(|n| NewMatchedPair {
            deliver: side("B01234-02", "C00123-01", format!("KILLD{n}")),
            receive: side("C00123-01", "B01234-02", format!("KILLR{n}")),
        })
        .collect();
    sql::insert_matched_pairs(pool, &pairs).await.unwrap();
    let holding =
        "SELECT quantity FROM holdings WHERE account_id = 'C00123-01' AND isin = 'KYG875721634'";
    let before = count(pool, holding).await;

    let mut leader = run_now(&database, &["--pause-before-commit-ms", "120000"])
        .spawn()
        .unwrap();
    wait_for_line(&mut leader, "paused before commit").await;

    let standby = run_now(&database, &[]).output().await.unwrap();
    assert!(
        !standby.status.success(),
        "standby ran while the leader held the lock"
    );
    let standby_stderr = String::from_utf8_lossy(&standby.stderr);
    assert!(
        standby_stderr.contains("another settlement run leader holds the lock"),
        "{standby_stderr}"
    );

    leader.start_kill().unwrap();
    let status = leader.wait().await.unwrap();
    assert!(!status.success(), "{status:?}");
    // Postgres rolls back the dead session's transaction and frees its lock; wait for it.
    let mut waited = 0;
    let advisory_locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    while count(pool, advisory_locks).await > 0 {
        waited += 1;
        assert!(waited < 200, "the killed leader's lock stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        0
    );
    assert_eq!(count(pool, "SELECT count(*) FROM settlement_runs").await, 0);
    assert_eq!(count(pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(count(pool, holding).await, before);

    let rerun = run_now(&database, &[]).output().await.unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let printed = String::from_utf8_lossy(&rerun.stdout);
    assert!(printed.contains(&format!("{PAIRS} settled")), "{printed}");
    let again = run_now(&database, &[]).output().await.unwrap();
    assert!(again.status.success());
    let printed = String::from_utf8_lossy(&again.stdout);
    assert!(printed.contains("0 pair(s) due"), "{printed}");

    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM (SELECT match_id FROM instruction_settlements
                                   GROUP BY match_id HAVING count(*) = 1 AND bool_and(complete)) s"
        )
        .await,
        PAIRS
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        PAIRS
    );
    assert_eq!(count(pool, holding).await, before + 100 * PAIRS);
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_ccass"))
        .arg("audit")
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_HOSTDB__HOST", &database.config.host)
        .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
        .env("CCASS_HOSTDB__DATABASE", &database.config.database)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}
