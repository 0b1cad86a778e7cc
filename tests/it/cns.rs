//! CNS clearing against real servers: capture, netting, redelivery, rejections, cut-off, CLI.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use ccass::bus::subjects::{self, EventKind};
use ccass::bus::trades::{TradeBatch, TradeRecord, TradeRejectedEvent};
use ccass::cns::capture::{self, CaptureReport, Reference, ReportedRejection};
use ccass::cns::feed;
use ccass::cns::positions::{self, CutoffError};
use ccass::hostdb::cns::{self as sql, PositionRow};
use ccass::hostdb::{self, Pool};
use ccass::ids::ParticipantId;
use futures::StreamExt as _;
use rust_decimal::prelude::*;
use time::Date;
use time::macros::date;

use crate::harness::nats::{NatsServer, initialised_bus, wait_until_all_acknowledged};
use crate::harness::postgres::{TestDatabase, assert_audit_clean, empty_database, seeded_database};
use crate::harness::{repo_root, test_config};

const MARKET: &str = "xhkg";
const SETTLEMENT_DATE: Date = date!(2026 - 11 - 26);

async fn reference(pool: &Pool) -> Reference {
    Reference::load(pool, &test_config().cns.ccp_participant)
        .await
        .unwrap()
}

/// A generated day of `count` trades over the demo reference data.
async fn generated_day(pool: &Pool, count: usize, seed: u64) -> Vec<TradeRecord> {
    let rows = sql::load_reference(pool).await.unwrap();
    let universe = feed::Universe::from_reference(&rows, "HKSCC0").unwrap();
    feed::generate(&universe, count, seed)
        .iter()
        .map(|trade| feed::to_record(&universe, trade, "2026-11-24"))
        .collect()
}

fn batches(trades: &[TradeRecord], per_batch: usize, prefix: &str) -> Vec<TradeBatch> {
    trades
        .chunks(per_batch)
        .enumerate()
        .map(|(number, chunk)| TradeBatch {
            market: MARKET.to_owned(),
            batch_id: format!("{prefix}-{number}"),
            trades: chunk.to_vec(),
        })
        .collect()
}

async fn capture(pool: &Pool, reference: &Reference, batches: &[TradeBatch]) -> CaptureReport {
    let config = test_config().cns;
    let mut book = reference.netting_book();
    capture::capture_batches(
        pool,
        reference,
        &config.calendar(),
        MARKET,
        batches,
        &mut book,
    )
    .await
    .unwrap()
}

/// Stock positions as (participant, isin) -> (net, obligations); money as (participant,
/// currency) -> (net, obligations).
type Positions = (
    BTreeMap<(String, String), (i64, i32)>,
    BTreeMap<(String, String), (i64, i32)>,
);

fn split(rows: &[PositionRow]) -> Positions {
    let mut stock = BTreeMap::new();
    let mut money = BTreeMap::new();
    for row in rows {
        assert_eq!(row.settlement_date, SETTLEMENT_DATE);
        match (&row.isin, &row.currency_code) {
            (Some(isin), None) => {
                stock.insert(
                    (row.participant_id.clone(), isin.clone()),
                    (row.net, row.obligation_count),
                );
            }
            (None, Some(currency)) => {
                money.insert(
                    (row.participant_id.clone(), currency.clone()),
                    (row.net, row.obligation_count),
                );
            }
            other => panic!("position with {other:?}"),
        }
    }
    (stock, money)
}

/// The straightforward computation: every CNS trade, as decimal arithmetic on its text
/// fields, summed per key. Securities given by stock code are mapped with `isin_of`.
fn independent_netting(trades: &[TradeRecord], isin_of: &HashMap<String, String>) -> Positions {
    let mut stock: BTreeMap<(String, String), (i64, i32)> = BTreeMap::new();
    let mut money: BTreeMap<(String, String), (i64, i32)> = BTreeMap::new();
    for trade in trades.iter().filter(|t| t.settlement_type == "cns") {
        let isin = isin_of
            .get(&trade.security)
            .cloned()
            .unwrap_or(trade.security.clone());
        let value = Decimal::from_str(&trade.price).unwrap() * Decimal::from(trade.quantity);
        let cents = (value * Decimal::from(100))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .unwrap();
        for (participant, sign) in [(&trade.buyer, 1), (&trade.seller, -1)] {
            let entry = stock
                .entry((participant.clone(), isin.clone()))
                .or_default();
            entry.0 += sign * trade.quantity;
            entry.1 += 1;
            let entry = money
                .entry((participant.clone(), trade.currency.clone()))
                .or_default();
            entry.0 -= sign * cents;
            entry.1 += 1;
        }
    }
    (stock, money)
}

async fn isin_by_stock_code(pool: &Pool) -> HashMap<String, String> {
    sql::load_reference(pool)
        .await
        .unwrap()
        .securities
        .into_iter()
        .map(|s| (s.stock_code, s.isin))
        .collect()
}

#[tokio::test]
async fn a_day_of_trades_nets_to_independently_computed_positions() {
    // Goal: incremental capture of a generated day gives exactly the positions a plain
    // decimal computation over the same trades gives, every security sums to zero against
    // the CCP, isolated trades stay out of netting, the cut-off agrees and the audit passes
    // (and finds an isolated obligation naming an unknown security).
    // Method: 5,000 generated trades captured in 7 transactions of batches of 300, folded
    // after every other one; compare the stored positions with `independent_netting`; then
    // cut off and audit.
    let Some(database) = seeded_database("cns_day_nets").await else {
        return;
    };
    let pool = &database.pool;
    let reference = reference(pool).await;
    let trades = generated_day(pool, 5_000, 42).await;
    let all = batches(&trades, 300, "day");
    let mut accepted = 0;
    for (index, group) in all.chunks(3).enumerate() {
        let report = capture(pool, &reference, group).await;
        assert!(report.rejections.is_empty(), "{:?}", report.rejections);
        accepted += report.trades_accepted;
        if index % 2 == 0 {
            // A positions read folds what is netted so far: later folds add to those rows.
            sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap();
        }
    }
    assert_eq!(accepted, trades.len());

    let stored = split(&sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap());
    let expected = independent_netting(&trades, &isin_by_stock_code(pool).await);
    assert_eq!(stored.0, expected.0, "stock positions");
    assert_eq!(stored.1, expected.1, "money positions");
    let mut per_security: BTreeMap<&str, i64> = BTreeMap::new();
    for ((_, isin), (net, _)) in &stored.0 {
        *per_security.entry(isin).or_default() += net;
    }
    assert!(per_security.len() > 5);
    assert!(
        per_security.values().all(|sum| *sum == 0),
        "{per_security:?}"
    );
    let money_sum: i64 = stored.1.values().map(|(net, _)| net).sum();
    assert_eq!(money_sum, 0);

    let isolated_count = trades
        .iter()
        .filter(|t| t.settlement_type == "isolated")
        .count();
    assert!(
        isolated_count > 0,
        "the generator makes some isolated trades"
    );
    let mut obligations = 0;
    for participant in ["B01234", "B05678", "C00123", "I00456"] {
        obligations += sql::isolated_obligations(pool, participant, SETTLEMENT_DATE)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(obligations, 2 * isolated_count);

    let report = positions::cutoff(pool, "HKSCC0", SETTLEMENT_DATE)
        .await
        .unwrap();
    assert_eq!(report.trade_count, trades.len() - isolated_count);
    assert_eq!(report.stock_positions as usize, expected.0.len());
    let rows = sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap();
    assert!(rows.iter().all(|row| row.status == "final"));
    assert_audit_clean(pool).await;

    // Isolated obligations have no foreign keys since V0017: the audit finds a row naming an
    // unknown security.
    let client = hostdb::client(pool).await.unwrap();
    let changed = client
        .execute(
            "UPDATE cns_isolated_obligations SET isin = 'XX0000000000'
             WHERE ctid = (SELECT min(ctid) FROM cns_isolated_obligations)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    drop(client);
    assert_eq!(
        hostdb::audit::run(pool).await.unwrap(),
        vec![
            hostdb::audit::Violation::UnknownReferenceInIsolatedObligations {
                column: "isin".to_owned(),
                value: "XX0000000000".to_owned(),
                row_count: 1,
            }
        ]
    );
}

#[tokio::test]
async fn redelivery_is_idempotent_and_duplicate_trades_are_refused() {
    // Goal: a batch captured twice nets once; a different batch repeating a captured trade
    // id has that trade refused (duplicate_trade) and the rest captured. Method: capture,
    // capture the same batches again, then a new batch mixing a repeat and a fresh trade.
    let Some(database) = seeded_database("cns_redelivery").await else {
        return;
    };
    let pool = &database.pool;
    let reference = reference(pool).await;
    let trades = generated_day(pool, 600, 7).await;
    let day = batches(&trades, 200, "redeliver");
    let first = capture(pool, &reference, &day).await;
    assert_eq!(first.batches_captured, 3);
    let before = sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap();

    let again = capture(pool, &reference, &day).await;
    assert_eq!(again.batches_captured, 0);
    assert_eq!(again.batches_already_captured, 3);
    assert_eq!(again.trades_accepted, 0);
    assert_eq!(
        sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap(),
        before
    );
    assert_eq!(sql::trade_count(pool, MARKET).await.unwrap(), 600);

    let mut fresh = trades[0].clone();
    fresh.trade_id = "FRESH1".to_owned();
    let mixed = TradeBatch {
        market: MARKET.to_owned(),
        batch_id: "mixed".to_owned(),
        trades: vec![trades[5].clone(), fresh.clone()],
    };
    let report = capture(pool, &reference, &[mixed]).await;
    assert_eq!(report.trades_accepted, 1);
    assert_eq!(report.rejections.len(), 1);
    assert_eq!(report.rejections[0].event.trade_id, trades[5].trade_id);
    assert_eq!(report.rejections[0].event.reason_code, "duplicate_trade");
    assert_eq!(sql::trade_count(pool, MARKET).await.unwrap(), 601);
    let mut all = trades.clone();
    all.push(fresh);
    let stored = split(&sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap());
    assert_eq!(
        stored,
        independent_netting(&all, &isin_by_stock_code(pool).await)
    );
}

#[tokio::test]
async fn a_trade_id_is_accepted_once_across_batches_and_concurrent_workers() {
    // Goal: the trade id claims (V0014) refuse every repeat of a captured trade id exactly:
    // across batches, across two workers capturing at the same time, for numbered ids
    // (bitmap blocks) and for any other id (cns_trade_ids), and `T1` and `T01` are two ids.
    // Method: two concurrent captures whose batches share 200 of 400 trades; then a batch of
    // ids of every shape captured twice; positions against the independent netting of the
    // trades accepted once; the stored bits read back with PostgreSQL's own get_bit.
    let Some(database) = seeded_database("cns_trade_id_claims").await else {
        return;
    };
    let pool = &database.pool;
    let reference = reference(pool).await;
    let trades = generated_day(pool, 400, 11).await;
    let first = batches(&trades[..300], 50, "worker-a");
    let second = batches(&trades[100..], 50, "worker-b");
    let (a, b) = tokio::join!(
        capture(pool, &reference, &first),
        capture(pool, &reference, &second)
    );
    assert_eq!(a.trades_accepted + b.trades_accepted, 400);
    let refused: Vec<&ReportedRejection> = a.rejections.iter().chain(&b.rejections).collect();
    assert_eq!(refused.len(), 200);
    assert!(
        refused
            .iter()
            .all(|r| r.event.reason_code == "duplicate_trade")
    );
    assert_eq!(sql::trade_count(pool, MARKET).await.unwrap(), 400);

    let mut odd = Vec::new();
    for id in ["ALPHA", "A1B2", "X1234567890123456789", "T1", "T01", "0"] {
        let mut trade = trades[0].clone();
        trade.trade_id = id.to_owned();
        odd.push(trade);
    }
    let once = TradeBatch {
        market: MARKET.to_owned(),
        batch_id: "odd-once".to_owned(),
        trades: odd.clone(),
    };
    let report = capture(pool, &reference, &[once]).await;
    assert_eq!(report.trades_accepted, 6, "{:?}", report.rejections);
    let mut fresh = trades[1].clone();
    fresh.trade_id = "T001".to_owned();
    let mut repeated = odd.clone();
    repeated.push(fresh.clone());
    let again = TradeBatch {
        market: MARKET.to_owned(),
        batch_id: "odd-again".to_owned(),
        trades: repeated,
    };
    let report = capture(pool, &reference, &[again]).await;
    assert_eq!(report.trades_accepted, 1);
    let refused: Vec<&str> = report
        .rejections
        .iter()
        .filter(|r| r.event.reason_code == "duplicate_trade")
        .map(|r| r.event.trade_id.as_str())
        .collect();
    assert_eq!(
        refused,
        ["ALPHA", "A1B2", "X1234567890123456789", "T1", "T01", "0"]
    );

    let mut all = trades.clone();
    all.extend(odd);
    all.push(fresh);
    let stored = split(&sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap());
    assert_eq!(
        stored,
        independent_netting(&all, &isin_by_stock_code(pool).await)
    );
    let client = hostdb::client(pool).await.unwrap();
    // `0` is bit 0 of block 0 of ('', 1 digit); `T1`, `T01`, `T001` bit 1 of their series.
    let bits: Vec<(String, i16, i32, i32)> = client
        .query(
            "SELECT id_prefix, id_digits, get_bit(seen, 0), get_bit(seen, 1)
             FROM cns_trade_id_blocks
             WHERE id_prefix IN ('T', '') AND block_number = 0
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert_eq!(
        bits,
        [
            (String::new(), 1, 1, 0),
            ("T".to_owned(), 1, 0, 1),
            ("T".to_owned(), 2, 0, 1),
            ("T".to_owned(), 3, 0, 1),
        ]
    );
    let others: i64 = client
        .query_one("SELECT count(*) FROM cns_trade_ids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(others, 3);
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn trades_stored_before_v0014_keep_their_ids_claimed() {
    // Goal: V0014's backfill claims every trade stored under the old primary key, so a
    // repeat of one is still refused, and prices become exact micros; V0017 moves the trades
    // and the netted deltas into sets without losing any. Method: schema up to V0013, two
    // trades and their deltas stored as the old capture stored them (a numbered id and
    // another), migrate, read them back, then capture both again beside a fresh one.
    let Some(database) = empty_database("cns_v0014_backfill").await else {
        return;
    };
    let pool = &database.pool;
    let before: Vec<_> = hostdb::migrate::embedded()
        .into_iter()
        .filter(|migration| migration.version < 14)
        .collect();
    hostdb::migrate::run_migrations(pool, &before)
        .await
        .unwrap();
    hostdb::seed::apply_file(pool, &repo_root().join("config/reference/demo.toml"))
        .await
        .unwrap();
    let trades = generated_day(pool, 3, 5).await;
    let mut old = trades[..2].to_vec();
    old[1].trade_id = "OLD-A".to_owned();
    let isin_of = isin_by_stock_code(pool).await;
    let client = hostdb::client(pool).await.unwrap();
    for trade in &old {
        let isin = isin_of.get(&trade.security).unwrap_or(&trade.security);
        client
            .execute(
                "INSERT INTO exchange_trades (market, trade_date, trade_id, trade_time, isin,
                     buyer_participant_id, seller_participant_id, quantity, price, currency_code,
                     settlement_type, settlement_date)
                 VALUES ($1, $2::text::date, $3, $4::text::time, $5, $6, $7, $8, $9::text::numeric,
                         $10, $11, $12)",
                &[
                    &MARKET,
                    &trade.trade_date,
                    &trade.trade_id,
                    &trade.trade_time,
                    isin,
                    &trade.buyer,
                    &trade.seller,
                    &trade.quantity,
                    &trade.price,
                    &trade.currency,
                    &trade.settlement_type,
                    &SETTLEMENT_DATE,
                ],
            )
            .await
            .unwrap();
    }
    // Netted deltas of the old trades, as V0011's capture appended them (V0017 moves them
    // into delta sets; the fold below must still find them).
    let (buyer, seller) = (old[0].buyer.as_str(), old[0].seller.as_str());
    let isin = isin_of.get(&old[0].security).unwrap_or(&old[0].security);
    for (participant, sign) in [(buyer, 1i64), (seller, -1)] {
        client
            .execute(
                "INSERT INTO cns_stock_position_deltas
                     (settlement_date, participant_id, isin, net_quantity, obligation_count)
                 VALUES ($1, $2, $3, $4, 1)",
                &[
                    &SETTLEMENT_DATE,
                    &participant,
                    isin,
                    &(sign * old[0].quantity),
                ],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO cns_money_position_deltas
                     (settlement_date, participant_id, currency_code, net_amount_minor,
                      obligation_count)
                 VALUES ($1, $2, $3, $4, 1)",
                &[
                    &SETTLEMENT_DATE,
                    &participant,
                    &old[0].currency,
                    &(-sign * 12_345),
                ],
            )
            .await
            .unwrap();
    }
    drop(client);
    hostdb::migrate::run(pool).await.unwrap();
    let moved = sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap();
    let net_of = |participant: &str, stock: bool| {
        moved
            .iter()
            .find(|p| p.participant_id == participant && p.isin.is_some() == stock)
            .map(|p| (p.net, p.obligation_count))
    };
    assert_eq!(net_of(buyer, true), Some((old[0].quantity, 1)));
    assert_eq!(net_of(seller, true), Some((-old[0].quantity, 1)));
    assert_eq!(net_of(buyer, false), Some((-12_345, 1)));
    assert_eq!(net_of(seller, false), Some((12_345, 1)));
    // The trades moved into sets read back whole through the exchange_trades view.
    let client = hostdb::client(pool).await.unwrap();
    let stored: Vec<(String, String, String, i64)> = client
        .query(
            "SELECT trade_id, to_char(trade_time, 'HH24:MI:SS'), seller_participant_id, quantity
             FROM exchange_trades WHERE market = $1 ORDER BY trade_id",
            &[&MARKET],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let mut expected_rows: Vec<(String, String, String, i64)> = old
        .iter()
        .map(|t| {
            (
                t.trade_id.clone(),
                t.trade_time.clone(),
                t.seller.clone(),
                t.quantity,
            )
        })
        .collect();
    expected_rows.sort();
    assert_eq!(stored, expected_rows);
    let micros: i64 = client
        .query_one(
            "SELECT price_micros FROM exchange_trades WHERE trade_id = $1",
            &[&old[0].trade_id],
        )
        .await
        .unwrap()
        .get(0);
    let expected = Decimal::from_str(&old[0].price).unwrap() * Decimal::from(1_000_000);
    assert_eq!(Decimal::from(micros), expected);
    drop(client);

    let reference = reference(pool).await;
    let mut again = old.clone();
    again.push(trades[2].clone());
    let report = capture(pool, &reference, &batches(&again, 3, "after-v0014")).await;
    assert_eq!(report.trades_accepted, 1);
    let refused: Vec<(&str, &str)> = report
        .rejections
        .iter()
        .map(|r| (r.event.trade_id.as_str(), r.event.reason_code.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (old[0].trade_id.as_str(), "duplicate_trade"),
            ("OLD-A", "duplicate_trade")
        ]
    );
}

#[tokio::test]
async fn after_the_cutoff_a_settlement_date_takes_no_more_trades() {
    // Goal: the cut-off closes a date once: later trades for it are refused with
    // settlement_date_closed and positions stay as they were. Method: capture, cut off,
    // capture another trade of the same day, cut off again.
    let Some(database) = seeded_database("cns_cutoff_closes").await else {
        return;
    };
    let pool = &database.pool;
    let reference = reference(pool).await;
    let trades = generated_day(pool, 50, 3).await;
    capture(pool, &reference, &batches(&trades[..49], 49, "before")).await;
    positions::cutoff(pool, "HKSCC0", SETTLEMENT_DATE)
        .await
        .unwrap();
    let before = sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap();
    let late = capture(pool, &reference, &batches(&trades[49..], 1, "late")).await;
    assert_eq!(late.trades_accepted, 0);
    assert_eq!(
        late.rejections[0].event.reason_code,
        "settlement_date_closed"
    );
    assert_eq!(
        sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap(),
        before
    );
    assert!(matches!(
        positions::cutoff(pool, "HKSCC0", SETTLEMENT_DATE).await,
        Err(CutoffError::AlreadyClosed(_))
    ));
}

fn ccass(args: &[&str], database: &TestDatabase, nats_url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ccass"))
        .args(args)
        .current_dir(repo_root())
        .env("CCASS_ENV", "test")
        .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
        .env("CCASS_HOSTDB__HOST", &database.config.host)
        .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
        .env("CCASS_HOSTDB__DATABASE", &database.config.database)
        .env("CCASS_BUS__URL", nats_url)
        .output()
        .expect("run ccass")
}

#[tokio::test]
async fn a_trade_file_flows_from_the_feed_to_positions_and_rejects_are_reported() {
    // Goal: end to end through the real bus: `ccass trades load` publishes a file, a capture
    // worker captures it, each refused trade is stored with its reason and reported on the
    // events subject, only accepted trades are netted, `ccass cns positions` shows them.
    // Method: private nats-server, a worker task, the test file with one line per reject
    // reason; expectations written out by hand from the file. Also `ccass trades generate
    // --out` writes a day that validates against the same reference data.
    let Some(database) = seeded_database("cns_file_flow").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let bus_config = nats.bus_config();
    let (client, jetstream) = initialised_bus(&bus_config, "cns-test").await;
    // The CCP's event subject receives every rejection (the parties get those they are in).
    let ccp_events = subjects::events(&ParticipantId::parse("HKSCC0").unwrap(), EventKind::Trade);
    let mut events = client.subscribe(ccp_events).await.unwrap();
    let buyer_events = subjects::events(&ParticipantId::parse("B01234").unwrap(), EventKind::Trade);
    let mut buyer = client.subscribe(buyer_events).await.unwrap();
    client.flush().await.unwrap();

    let consumer = capture::capture_consumer(&jetstream).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(capture::run_worker(
        test_config().cns,
        database.pool.clone(),
        consumer,
        stopped.clone(),
    ));
    // Rejection events go through the outbox: the relay publishes them.
    let intake = test_config().intake;
    let relay = tokio::spawn(ccass::relay::run(
        database.pool.clone(),
        jetstream.clone(),
        intake.relay_batch_max,
        Duration::from_millis(intake.relay_poll_interval_ms),
        Duration::from_millis(intake.retry_delay_ms),
        stopped,
    ));

    let output = ccass(
        &["trades", "load", "tests/data/trades/day-2026-11-24.csv"],
        &database,
        &nats.url(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started = Instant::now();
    while sql::captured_batch_count(&database.pool, MARKET)
        .await
        .unwrap()
        < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "capture did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let reasons: Vec<(String, String)> = sql::exceptions(&database.pool, MARKET)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.trade_id, e.reason_code))
        .collect();
    let expected_reasons = [
        ("T0006", "unknown_participant"),
        ("T0007", "not_board_lot"),
        ("T0008", "unknown_security"),
        ("T0009", "ccp_as_party"),
        ("T0010", "bad_price"),
        ("T0001", "duplicate_trade"),
        ("T0011", "currency_mismatch"),
        ("T0012", "not_business_day"),
        ("T0014", "beyond_calendar"),
    ];
    let expected_reasons: Vec<(String, String)> = expected_reasons
        .iter()
        .map(|(id, reason)| (id.to_string(), reason.to_string()))
        .collect();
    assert_eq!(reasons, expected_reasons);

    let mut reported: Vec<String> = Vec::new();
    while reported.len() < expected_reasons.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("rejection events")
            .unwrap();
        let event: TradeRejectedEvent = serde_json::from_slice(&message.payload).unwrap();
        assert!(!event.detail.is_empty());
        reported.push(format!("{}:{}", event.trade_id, event.reason_code));
    }
    assert!(
        reported.contains(&"T0007:not_board_lot".to_owned()),
        "{reported:?}"
    );
    assert!(
        reported.contains(&"T0009:ccp_as_party".to_owned()),
        "{reported:?}"
    );
    // B01234 is a party to every refused trade except T0009 (HKSCC0 buys from B05678).
    let message = tokio::time::timeout(Duration::from_secs(10), buyer.next())
        .await
        .expect("rejection event for the buyer")
        .unwrap();
    let event: TradeRejectedEvent = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event.trade_id, "T0006");
    assert_eq!(event.reason_code, "unknown_participant");

    // Hand-netted from the file's accepted CNS lines T0001-T0004 and T0013.
    // 00005 (GB0005405286): B01234 +4000 -1200 = +2800; B05678 -2800.
    // 00700 (KYG875721634): B01234 -300 +100 = -200; C00123 +300; I00456 -100.
    // 00941 (HK0941009539): B05678 +1500; C00123 -1500.
    // Money, cents: B01234 pays 4000 x 62.35 = 249,400.00, receives 1200 x 62.40 = 74,880.00
    // and 300 x 388.2 = 116,460.00, pays 100 x 388.4 = 38,840.00: -9,690,000.
    let stored = split(
        &sql::positions(&database.pool, None, SETTLEMENT_DATE)
            .await
            .unwrap(),
    );
    let stock = |participant: &str, isin: &str| {
        stored
            .0
            .get(&(participant.to_owned(), isin.to_owned()))
            .map(|(net, _)| *net)
    };
    assert_eq!(stock("B01234", "GB0005405286"), Some(2_800));
    assert_eq!(stock("B05678", "GB0005405286"), Some(-2_800));
    assert_eq!(stock("B01234", "KYG875721634"), Some(-200));
    assert_eq!(stock("C00123", "KYG875721634"), Some(300));
    assert_eq!(stock("I00456", "KYG875721634"), Some(-100));
    assert_eq!(stock("B05678", "HK0941009539"), Some(1_500));
    assert_eq!(stock("C00123", "HK0941009539"), Some(-1_500));
    assert_eq!(
        stored.0.len(),
        7,
        "isolated T0005 is not netted: {:?}",
        stored.0
    );
    assert_eq!(
        stored.1.get(&("B01234".to_owned(), "HKD".to_owned())),
        Some(&(-9_690_000, 4))
    );
    let isolated = sql::isolated_obligations(&database.pool, "I00456", SETTLEMENT_DATE)
        .await
        .unwrap();
    assert_eq!(isolated.len(), 1);
    assert_eq!(isolated[0].side, "buy");
    // 200 x 301.005 = 60,201.00
    assert_eq!(isolated[0].amount_minor, 6_020_100);

    let output = ccass(
        &[
            "cns",
            "positions",
            "--participant",
            "B01234",
            "--date",
            "2026-11-26",
        ],
        &database,
        &nats.url(),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("GB0005405286 long"), "{text}");
    assert!(text.contains("KYG875721634 short"), "{text}");
    assert!(text.contains("-9690000"), "{text}");
    assert!(text.contains("cns positions: 3 for 2026-11-26"), "{text}");

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("generated.csv");
    let output = ccass(
        &[
            "trades",
            "generate",
            "--count",
            "250",
            "--seed",
            "5",
            "--date",
            "2026-11-24",
            "--out",
            file.to_str().unwrap(),
        ],
        &database,
        &nats.url(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = feed::parse_csv(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(generated.len(), 250);
    let reference = reference(&database.pool).await;
    let calendar = test_config().cns.calendar();
    for (market, trade) in &generated {
        assert_eq!(market, MARKET);
        capture::validate(&reference, &calendar, market, &trade.view()).unwrap();
    }

    let _ = stop.send(true);
    worker.await.unwrap();
    relay.await.unwrap();
}

#[tokio::test]
async fn a_batch_capture_can_never_take_is_quarantined_and_the_feed_goes_on() {
    // Goal: one bad batch never stops capture, and nothing the feed delivered is lost: the
    // batches fetched with it are captured, a batch the host database refuses and a message
    // that is no trade batch are stored in the quarantine and terminated (not redelivered
    // for ever), a trade with a NUL character is refused as malformed_field like any other
    // bad field (stored with U+FFFD), and `ccass cns quarantine` releases a batch once its
    // cause is mended and dismisses one that cannot be released.
    // Method: a constraint added to this test's database refuses the batch id
    // quarantine-poison-0 (as a schema the code disagrees with would); five messages
    // published before one capture worker starts, so that they arrive in one fetch; then
    // the constraint dropped and the CLI run.
    let Some(database) = seeded_database("cns_quarantine").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let pool = &database.pool;
    let (_client, jetstream) = initialised_bus(&nats.bus_config(), "cns-quarantine").await;
    let db = hostdb::client(pool).await.unwrap();
    db.batch_execute(
        "ALTER TABLE cns_trade_batches ADD CONSTRAINT test_refuses_poison
             CHECK (batch_id <> 'quarantine-poison-0')",
    )
    .await
    .unwrap();

    let day = generated_day(pool, 40, 11).await;
    let mut with_nul = day[30].clone();
    with_nul.trade_id = "NUL\u{0}1".to_owned();
    let mut published = batches(&day[..10], 10, "quarantine-good-a");
    published.extend(batches(&day[10..20], 10, "quarantine-poison"));
    published.push(TradeBatch {
        market: MARKET.to_owned(),
        batch_id: "quarantine-nul".to_owned(),
        trades: vec![with_nul],
    });
    published.extend(batches(&day[20..30], 10, "quarantine-good-b"));
    feed::publish_batches(&jetstream, published, 8)
        .await
        .unwrap();
    let subject = subjects::trades(&subjects::Market::parse(MARKET).unwrap());
    jetstream
        .publish(subject.as_str().to_owned(), "not a trade batch".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(capture::run_worker(
        test_config().cns,
        pool.clone(),
        capture::capture_consumer(&jetstream).await.unwrap(),
        stopped,
    ));
    // Well inside the consumer's 60 s ack wait: no redelivery can help a blocked worker.
    let mut consumer = capture::capture_consumer(&jetstream).await.unwrap();
    wait_until_all_acknowledged(&mut consumer, Duration::from_secs(15), "capture").await;
    stop.send(true).unwrap();
    worker.await.unwrap();

    // good-a, nul and good-b captured; the NUL trade refused and stored readable.
    assert_eq!(sql::captured_batch_count(pool, MARKET).await.unwrap(), 3);
    let exceptions = sql::exceptions(pool, MARKET).await.unwrap();
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0].trade_id, "NUL\u{FFFD}1");
    assert_eq!(exceptions[0].reason_code, "malformed_field");

    assert_eq!(sql::held_quarantined_count(pool).await.unwrap(), 2);
    let held = sql::quarantined_batches(pool, false, 10).await.unwrap();
    let reasons: Vec<&str> = held.iter().map(|batch| batch.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{held:?}");
    assert!(reasons.contains(&"refused") && reasons.contains(&"malformed"));
    let refused = held.iter().find(|batch| batch.reason == "refused").unwrap();
    let malformed = held
        .iter()
        .find(|batch| batch.reason == "malformed")
        .unwrap();
    assert!(
        refused.error.contains("test_refuses_poison"),
        "{}",
        refused.error
    );
    assert_eq!(malformed.payload, b"not a trade batch");
    assert!(!malformed.error.is_empty());

    // Still refused: release fails and the batch stays held.
    let refused_id = refused.quarantine_id.to_string();
    let output = ccass(
        &["cns", "quarantine", "release", "--id", &refused_id],
        &database,
        &nats.url(),
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("still refused"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Mended: released, captured once.
    db.batch_execute("ALTER TABLE cns_trade_batches DROP CONSTRAINT test_refuses_poison")
        .await
        .unwrap();
    let output = ccass(
        &["cns", "quarantine", "release", "--id", &refused_id],
        &database,
        &nats.url(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("10 trades accepted"));
    assert_eq!(sql::captured_batch_count(pool, MARKET).await.unwrap(), 4);
    let again = ccass(
        &["cns", "quarantine", "release", "--id", &refused_id],
        &database,
        &nats.url(),
    );
    assert!(!again.status.success(), "a released batch is not held");

    // Malformed: cannot be released, only dismissed with a note.
    let malformed_id = malformed.quarantine_id.to_string();
    let output = ccass(
        &["cns", "quarantine", "release", "--id", &malformed_id],
        &database,
        &nats.url(),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a trade batch"));
    let output = ccass(
        &[
            "cns",
            "quarantine",
            "dismiss",
            "--id",
            &malformed_id,
            "--note",
            "not from the exchange",
        ],
        &database,
        &nats.url(),
    );
    assert!(output.status.success());
    assert_eq!(sql::held_quarantined_count(pool).await.unwrap(), 0);
    let listed = ccass(
        &["cns", "quarantine", "list", "--all"],
        &database,
        &nats.url(),
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("released") && listed.contains("dismissed"),
        "{listed}"
    );
    assert!(listed.contains("2 batch(es)"), "{listed}");

    // Every accepted trade netted once, the released batch's included.
    let stored = split(&sql::positions(pool, None, SETTLEMENT_DATE).await.unwrap());
    let expected = independent_netting(&day[..30], &isin_by_stock_code(pool).await);
    assert_eq!(stored.0, expected.0, "stock positions");
    assert_eq!(stored.1, expected.1, "money positions");
    assert_audit_clean(pool).await;
}
