//! Settlement of CNS positions by the Batch Settlement Run against a real Postgres: shorts
//! before SIs before longs, the allocation rule when a short fails, carry forward, isolated
//! trades, money settlement once per day, a run killed before commit, and `ccass audit`.

use ccass::bus::trades::{PositionEvent, TradeBatch, TradeRecord};
use ccass::cns::capture::{self, Reference};
use ccass::cns::{day_end, positions};
use ccass::hostdb::settlement::{self as si_sql, NewMatchedPair};
use ccass::hostdb::{self, Pool};
use ccass::settlement::run::{self, RunError, RunOptions};
use time::Date;

use crate::harness::balances::{self, cash, holding};
use crate::harness::dates::{cns_trade_date, next_settlement_date, settlement_date};
use crate::harness::postgres::{TestDatabase, assert_audit_clean, count, seeded_database};
use crate::harness::{repo_root, test_config};

const MARKET: &str = "xhkg";
/// AIA, board lot 200; B05678-01 opens with 600,000.
const AIA: &str = "HK0000069689";
/// Tencent, board lot 100; C00123-01 opens with 1,000,000.
const TENCENT: &str = "KYG875721634";
const CCP_ACCOUNT: &str = "HKSCC0-01";

fn trade(
    id: &str,
    security: &str,
    buyer: &str,
    seller: &str,
    quantity: i64,
    kind: &str,
) -> TradeRecord {
    TradeRecord {
        trade_id: id.to_owned(),
        trade_date: ccass::cns::format_date(cns_trade_date()),
        trade_time: "10:00:00".to_owned(),
        security: security.to_owned(),
        buyer: buyer.to_owned(),
        seller: seller.to_owned(),
        quantity,
        price: "1.00".to_owned(),
        currency: "HKD".to_owned(),
        settlement_type: kind.to_owned(),
    }
}

/// B05678 sells 1,000,000 AIA (it holds 600,000): 333,400 to B01234, 666,600 to I00456.
/// C00123 sells 1,000 Tencent to B01234 as an isolated trade.
async fn capture_and_cut_off(pool: &Pool) {
    let reference = Reference::load(pool, "HKSCC0").await.unwrap();
    let batch = TradeBatch {
        market: MARKET.to_owned(),
        batch_id: "day-1".to_owned(),
        trades: vec![
            trade("T1", AIA, "B01234", "B05678", 333_400, "cns"),
            trade("T2", AIA, "I00456", "B05678", 666_600, "cns"),
            trade("T3", TENCENT, "B01234", "C00123", 1_000, "isolated"),
        ],
    };
    let mut book = reference.netting_book();
    let report = capture::capture_batches(
        pool,
        &reference,
        &test_config().cns.calendar(),
        MARKET,
        &[batch],
        &mut book,
    )
    .await
    .unwrap();
    assert_eq!(report.trades_accepted, 3, "{report:?}");
    positions::cutoff(pool, "HKSCC0", settlement_date())
        .await
        .unwrap();
}

fn fop(reference: &str, from: &str, to: &str, isin: &str, quantity: i64) -> NewMatchedPair {
    balances::matched_pair(
        reference,
        from,
        to,
        isin,
        quantity,
        settlement_date(),
        None,
        false,
    )
}

fn options(abort_before_commit: bool) -> RunOptions {
    RunOptions {
        abort_before_commit,
        ..RunOptions::leader("test")
    }
}

async fn run_once(pool: &Pool) {
    run::run_now(
        pool,
        &test_config().settlement,
        settlement_date(),
        &options(false),
    )
    .await
    .unwrap();
}

async fn end_day(pool: &Pool) -> Option<day_end::DayEndReport> {
    let config = test_config();
    day_end::day_end(
        pool,
        &config.cns.calendar(),
        &config.cns.ccp_participant,
        config.settlement.leader_lock_key,
        settlement_date(),
    )
    .await
    .unwrap()
}

/// (net, settled, status, carried in) of a stock position.
async fn position(
    pool: &Pool,
    date: Date,
    participant: &str,
    isin: &str,
) -> (i64, i64, String, i64) {
    let client = hostdb::client(pool).await.unwrap();
    let row = client
        .query_one(
            "SELECT net_quantity, settled_quantity, status, carried_in_quantity
             FROM cns_stock_positions
             WHERE settlement_date = $1 AND participant_id = $2 AND isin = $3",
            &[&date, &participant, &isin],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Settlement events in the outbox for `participant`, decoded.
async fn settlement_events(pool: &Pool, participant: &str) -> Vec<PositionEvent> {
    let client = hostdb::client(pool).await.unwrap();
    client
        .query(
            "SELECT payload FROM outbox WHERE subject = $1 ORDER BY outbox_id",
            &[&format!("ccass.v1.events.{participant}.settlement")],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| serde_json::from_slice(&row.get::<_, Vec<u8>>(0)).unwrap())
        .collect()
}

#[tokio::test]
async fn a_failing_short_feeds_longs_by_the_rule_and_the_rest_is_carried_forward() {
    // Goal: shorts settle before SIs and longs after them; when a short fails in part, the
    // CCP's receipts go to longs pro rata in board lots with the leftover lot to the largest
    // long; what is left carries to the next business day. Method: B05678 owes 1,000,000 AIA
    // but holds 600,000; an SI of B05678 competing for the same stock, and an SI of I00456
    // delivering stock it only gets as a long; two runs, day-end, audit after each step.
    let Some(database) = seeded_database("cns_settle_rule").await else {
        return;
    };
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    si_sql::insert_matched_pairs(
        pool,
        &[
            fop("COMPETES", "B05678-01", "B01234-02", AIA, 200_000),
            fop("NEEDSLONG", "I00456-01", "B01234-02", AIA, 1_000),
        ],
    )
    .await
    .unwrap();

    run_once(pool).await;
    // Short first: all 600,000 went to the CCP, so the competing SI found nothing.
    assert_eq!(holding(pool, "B05678-01", AIA).await, 0);
    assert_eq!(
        position(pool, settlement_date(), "B05678", AIA).await,
        (-1_000_000, 600_000, "partially_settled".to_owned(), 0)
    );
    // 600,000 of 1,000,000 outstanding: 200,040 -> 200,000 and 399,960 -> 399,800 in lots
    // of 200, the leftover lot to the largest long (I00456).
    assert_eq!(
        position(pool, settlement_date(), "B01234", AIA).await,
        (333_400, 200_000, "partially_settled".to_owned(), 0)
    );
    assert_eq!(
        position(pool, settlement_date(), "I00456", AIA).await,
        (666_600, 400_000, "partially_settled".to_owned(), 0)
    );
    assert_eq!(holding(pool, "B01234-01", AIA).await, 200_000);
    assert_eq!(holding(pool, "I00456-01", AIA).await, 400_000);
    assert_eq!(holding(pool, CCP_ACCOUNT, AIA).await, 0);
    // Longs after SIs: I00456's SI could not use what it received in the same run.
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        0
    );
    // The isolated trade settled trade for trade, DvP against the CCP.
    assert_eq!(holding(pool, "B01234-01", TENCENT).await, 1_000);
    assert_eq!(holding(pool, CCP_ACCOUNT, TENCENT).await, 0);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM cns_isolated_obligations WHERE status = 'settled'"
        )
        .await,
        2
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM cns_position_settlements").await,
        3
    );
    assert_audit_clean(pool).await;

    run_once(pool).await;
    // The next run settles the SI with what I00456 received; the short has nothing more.
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        1
    );
    assert_eq!(holding(pool, "I00456-01", AIA).await, 399_000);
    assert_eq!(
        count(pool, "SELECT count(*) FROM cns_position_settlements").await,
        3
    );
    assert_audit_clean(pool).await;

    let report = end_day(pool).await.unwrap();
    assert_eq!(report.carried_to, next_settlement_date());
    assert_eq!(report.carried_stock_position_count, 3);
    assert_eq!(
        position(pool, settlement_date(), "B05678", AIA).await.2,
        "carried_forward"
    );
    assert_eq!(
        position(pool, next_settlement_date(), "B05678", AIA).await,
        (-400_000, 0, "provisional".to_owned(), -400_000)
    );
    assert_eq!(
        position(pool, next_settlement_date(), "B01234", AIA).await,
        (133_400, 0, "provisional".to_owned(), 133_400)
    );
    assert_eq!(
        position(pool, next_settlement_date(), "I00456", AIA).await,
        (266_600, 0, "provisional".to_owned(), 266_600)
    );
    // The next date's cut-off still agrees: carried remainders are not netted trades.
    positions::cutoff(pool, "HKSCC0", next_settlement_date())
        .await
        .unwrap();
    assert_eq!(
        position(pool, next_settlement_date(), "B05678", AIA)
            .await
            .2,
        "final"
    );
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn money_settles_once_per_day_against_the_ccp_and_is_reported() {
    // Goal: day-end moves each money position once between the participant and the CCP's
    // settlement account, reports it through the outbox, and a second day-end changes
    // nothing. Method: capture, cut off, run, day-end twice; compare cash balances.
    let Some(database) = seeded_database("cns_money_settlement").await else {
        return;
    };
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    run_once(pool).await;
    let b01234 = cash(pool, "B01234").await;
    let b05678 = cash(pool, "B05678").await;
    let i00456 = cash(pool, "I00456").await;
    let ccp = cash(pool, "HKSCC0").await;

    let report = end_day(pool).await.unwrap();
    assert_eq!(report.money_positions_settled_count, 3);
    assert_eq!(report.money_positions_unpaid_count, 0);
    // At HKD 1.00 a share: B01234 pays 333,400.00, I00456 pays 666,600.00, B05678 is paid
    // 1,000,000.00 (the isolated trade settled DvP in the run, not here).
    assert_eq!(cash(pool, "B01234").await, b01234 - 33_340_000);
    assert_eq!(cash(pool, "I00456").await, i00456 - 66_660_000);
    assert_eq!(cash(pool, "B05678").await, b05678 + 100_000_000);
    assert_eq!(cash(pool, "HKSCC0").await, ccp);
    let events = settlement_events(pool, "B05678").await;
    let money = events
        .iter()
        .find(|event| event.kind == "money" && event.status == "settled")
        .expect("money settlement event");
    assert_eq!((money.net, money.settled), (100_000_000, 100_000_000));
    assert_eq!(money.status, "settled");

    assert!(end_day(pool).await.is_none());
    assert_eq!(cash(pool, "B05678").await, b05678 + 100_000_000);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM cash_movements WHERE movement_kind = 'money_settlement'"
        )
        .await,
        3
    );
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn a_run_killed_before_commit_settles_no_position_and_the_rerun_settles_once() {
    // Goal: a position's settlement is in the run's one transaction. Method: a run aborted
    // after writing everything, then a real run; each position settled exactly once.
    let Some(database) = seeded_database("cns_settle_abort").await else {
        return;
    };
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    let aborted = run::run_now(
        pool,
        &test_config().settlement,
        settlement_date(),
        &options(true),
    )
    .await;
    assert!(matches!(aborted, Err(RunError::AbortedBeforeCommit)));
    assert_eq!(
        count(pool, "SELECT count(*) FROM cns_position_settlements").await,
        0
    );
    assert_eq!(holding(pool, "B05678-01", AIA).await, 600_000);
    assert_eq!(position(pool, settlement_date(), "B05678", AIA).await.1, 0);
    run_once(pool).await;
    run_once(pool).await;
    assert_eq!(
        count(pool, "SELECT count(*) FROM cns_position_settlements").await,
        3
    );
    assert_eq!(
        position(pool, settlement_date(), "B05678", AIA).await.1,
        600_000
    );
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn audit_finds_a_position_whose_settled_quantity_disagrees_with_its_settlements() {
    // Goal: the audit's CNS checks can fail. Method: settle, then bump a position's settled
    // quantity behind the engine's back.
    let Some(database) = seeded_database("cns_settle_audit").await else {
        return;
    };
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    run_once(pool).await;
    assert_audit_clean(pool).await;
    let client = hostdb::client(pool).await.unwrap();
    client
        .execute(
            "UPDATE cns_stock_positions SET settled_quantity = settled_quantity + 200
             WHERE participant_id = 'B05678' AND isin = $1",
            &[&AIA],
        )
        .await
        .unwrap();
    let violations = hostdb::audit::run(pool).await.unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v.to_string().contains("B05678") && v.to_string().contains("settled")),
        "{violations:?}"
    );
}

#[tokio::test]
async fn the_scheduler_cuts_off_and_ends_the_day_at_the_configured_times() {
    // Goal: `ccass up`'s CNS schedule closes the settlement date of today's trades and ends
    // today once their times passed, and doing so again changes nothing. Method: the
    // schedule with both times at 00:00 against a database holding today's trades.
    let Some(database) = seeded_database("cns_schedule").await else {
        return;
    };
    let pool = &database.pool;
    let mut config = test_config();
    config.cns.cutoff_time = "00:00".to_owned();
    config.cns.day_end_time = "00:00".to_owned();
    config.cns.scheduler_poll_ms = 20;
    let offset =
        time::UtcOffset::from_whole_seconds(i32::from(config.settlement.utc_offset_minutes) * 60)
            .unwrap();
    let today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    let calendar = config.cns.calendar();
    if !calendar.is_business_day(today) {
        eprintln!("skipped: today ({today}) is not a business day");
        return;
    }
    let settlement_date = calendar.settlement_date(today);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stopped_future = stopped.clone();
    let task = tokio::spawn(ccass::cns::schedule::schedule(
        pool.clone(),
        config.cns.clone(),
        config.settlement.utc_offset_minutes,
        config.settlement.leader_lock_key,
        async move {
            let _ = stopped_future.changed().await;
        },
    ));
    let started = std::time::Instant::now();
    loop {
        let done = count(
            pool,
            &format!(
                "SELECT (SELECT count(*) FROM cns_cutoffs WHERE settlement_date = '{settlement_date}')
                      + (SELECT count(*) FROM cns_day_ends WHERE settlement_date = '{today}')"
            ),
        )
        .await;
        if done == 2 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "schedule did not cut off {settlement_date} and end {today}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = stop.send(true);
    task.await.unwrap();
    drop(stopped);
    assert_eq!(count(pool, "SELECT count(*) FROM cns_cutoffs").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM cns_day_ends").await, 1);
}

#[tokio::test]
async fn clearing_statements_validate_and_state_the_positions_once() {
    // Goal: each participant's final clearing statement is an MT537 the codec accepts, its
    // quantities are the stored net positions, and queuing it again adds nothing. Method:
    // capture, cut off, queue twice, read B01234's outbound rows.
    let Some(database) = seeded_database("cns_statements").await else {
        return;
    };
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    let added = ccass::cns::statement::queue(pool, settlement_date(), true, 40)
        .await
        .unwrap();
    // B01234, B05678, I00456 have CNS positions.
    assert_eq!(added, 3);
    assert_eq!(
        ccass::cns::statement::queue(pool, settlement_date(), true, 40)
            .await
            .unwrap(),
        0
    );
    let client = hostdb::client(pool).await.unwrap();
    let rows = client
        .query(
            "SELECT payload FROM outbox WHERE subject = 'ccass.v1.outbound.B01234'
             AND dedupe_id LIKE 'cns-statement:F:%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let text = String::from_utf8(rows[0].get::<_, Vec<u8>>(0)).unwrap();
    let options = ccass::iso15022::ParseOptions::text_only(Some(ccass::iso15022::MessageType(537)));
    ccass::iso15022::check(&text, options)
        .into_result()
        .unwrap();
    let message = ccass::iso15022::parse(&text, options).unwrap();
    let statement = ccass::iso15022::views::Statement::from_message(&message).unwrap();
    assert_eq!(statement.account, "B01234-01");
    let stated: Vec<(String, i64)> = statement
        .transactions
        .iter()
        .map(|t| {
            (
                t.instrument.unwrap().isin.unwrap().to_string(),
                i64::try_from(t.quantity.unwrap().value.mantissa()).unwrap(),
            )
        })
        .collect();
    let (net, _, _, _) = position(pool, settlement_date(), "B01234", AIA).await;
    assert_eq!(stated, vec![(AIA.to_owned(), net)]);
    assert!(text.contains("MONEY HKD PAY 333400,00"), "{text}");
}

fn ccass(args: &[&str], database: &TestDatabase) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ccass"))
        .args(args)
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_HOSTDB__HOST", &database.config.host)
        .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
        .env("CCASS_HOSTDB__DATABASE", &database.config.database)
        .output()
        .expect("run ccass")
}

#[tokio::test]
async fn the_cli_prints_a_statement_and_ends_a_day_once() {
    // Goal: `ccass cns statement` prints a codec-valid MT537 for one participant, and
    // `ccass cns day-end` ends a date once (the second call says so); a bad participant id is
    // a clear error. Method: capture, cut off, run the binary.
    let Some(database) = seeded_database("cns_settle_cli").await else {
        return;
    };
    let date = settlement_date().to_string();
    let pool = &database.pool;
    capture_and_cut_off(pool).await;
    let output = ccass(
        &[
            "cns",
            "statement",
            "--participant",
            "I00456",
            "--date",
            &date,
            "--final",
        ],
        &database,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let text = text.trim_end();
    let options = ccass::iso15022::ParseOptions::text_only(Some(ccass::iso15022::MessageType(537)));
    ccass::iso15022::check(text, options).into_result().unwrap();
    assert!(text.contains(":36B::SETT//UNIT/666600"), "{text}");
    assert!(text.contains(":22H::REDE//RECE"), "{text}");

    let bad = ccass(
        &[
            "cns",
            "statement",
            "--participant",
            "nobody",
            "--date",
            &date,
        ],
        &database,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a participant id"));

    let first = ccass(&["cns", "day-end", "--date", &date], &database);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("3 money positions settled"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = ccass(&["cns", "day-end", "--date", &date], &database);
    assert!(String::from_utf8_lossy(&second.stdout).contains("already done"));
    assert_audit_clean(pool).await;
}
