//! Statements (MT535/536/537) against a real Postgres and nats-server: end of day, paging,
//! the MT549 request through intake, `ccass statements`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use ccass::bus::subjects::{self, MessageTypeNumber};
use ccass::hostdb::settlement::{self as sql, NewMatchedPair};
use ccass::hostdb::{self, Pool};
use ccass::ids::ParticipantId;
use ccass::iso15022::build::{self, Envelope, StatementRequestSpec};
use ccass::iso15022::fields::Continuation;
use ccass::iso15022::views::{Statement, StatusAdvice};
use ccass::iso15022::{self, MessageType, ParseOptions};
use ccass::settlement::intake;
use ccass::settlement::run::{self, RunOptions};
use ccass::statements::{self, Kind, RenderOptions, StatementError};
use futures::StreamExt as _;
use rust_decimal::prelude::ToPrimitive as _;

use crate::harness::balances;
use crate::harness::dates::settlement_date;
use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres::seeded_database;
use crate::harness::{repo_root, test_config};

const TENCENT: &str = "KYG875721634";
const HKEX: &str = "HK0388045442";

fn pair(reference: &str, from: &str, to: &str, isin: &str, quantity: i64) -> NewMatchedPair {
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

/// Two settled pairs touching B01234 and one that cannot settle (the deliverer lacks the
/// stock), then one run.
async fn settle_a_day(pool: &Pool) {
    sql::insert_matched_pairs(
        pool,
        &[
            pair("S1", "B01234-02", "C00123-01", TENCENT, 1_000),
            pair("S2", "C00123-01", "B01234-01", TENCENT, 300),
            pair("LATE", "I00456-01", "B01234-01", HKEX, 5_000_000_000),
        ],
    )
    .await
    .unwrap();
    run::run_now(
        pool,
        &test_config().settlement,
        settlement_date(),
        &RunOptions::leader("test".to_owned()),
    )
    .await
    .unwrap();
}

/// Statement pages in `participant`'s outbox, parsed: (kind, FIN text).
async fn outbox_statements(pool: &Pool, participant: &str) -> Vec<(u16, String)> {
    let client = hostdb::client(pool).await.unwrap();
    client
        .query(
            "SELECT payload FROM outbox WHERE subject = $1 AND dedupe_id LIKE 'stmt.%'
             ORDER BY outbox_id",
            &[&format!("ccass.v1.outbound.{participant}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let text = String::from_utf8(row.get::<_, Vec<u8>>(0)).unwrap();
            let message = iso15022::check(&text, ParseOptions::fin())
                .into_result()
                .unwrap_or_else(|rejection| panic!("{rejection}: {text}"));
            (message.message_type.unwrap().0, text)
        })
        .collect()
}

/// (account, isin) → quantity of every holding line of MT535 pages, checking 28E runs.
fn holdings_of(pages: &[&str]) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for text in pages {
        let message = iso15022::parse(text, ParseOptions::fin()).unwrap();
        let statement = Statement::from_message(&message).unwrap();
        for holding in &statement.holdings {
            let quantity = holding.aggregate.unwrap().value;
            out.insert(
                (
                    statement.account.to_owned(),
                    holding.instrument.isin.unwrap().to_string(),
                ),
                quantity.to_i64().unwrap(),
            );
        }
    }
    out
}

fn as_str(pages: &[String]) -> Vec<&str> {
    pages.iter().map(String::as_str).collect()
}

/// (account, isin, quantity, RECE|DELI) of every MT536 line, sorted.
fn movements_of(pages: &[&str]) -> Vec<(String, String, i64, String)> {
    let mut out = Vec::new();
    for text in pages {
        let message = iso15022::parse(text, ParseOptions::fin()).unwrap();
        let statement = Statement::from_message(&message).unwrap();
        let directions: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix(":22H::REDE//"))
            .collect();
        assert_eq!(directions.len(), statement.transactions.len());
        for (line, direction) in statement.transactions.iter().zip(directions) {
            out.push((
                statement.account.to_owned(),
                line.instrument.unwrap().isin.unwrap().to_string(),
                line.quantity.unwrap().value.to_i64().unwrap(),
                direction.trim().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn end_of_day_statements_equal_balances_journal_and_open_instructions() {
    // Goal: the MT535 lists exactly the derived balances of the participant's accounts, the
    // MT536 exactly the legs of the day's journal rows on them, the MT537 the instruction
    // that did not settle and none that did; every page validates; a second pass queues
    // nothing. Method: seed, settle a day with one run, send end-of-day statements, read
    // the outbox and compare with SQL over the journal (not the code under test).
    let Some(database) = seeded_database("statements_end_of_day").await else {
        return;
    };
    let pool = &database.pool;
    settle_a_day(pool).await;
    let config = test_config();
    let report = statements::send_end_of_day(pool, &config.statements, "HKSCC0", settlement_date())
        .await
        .unwrap();
    assert!(report.participants >= 4, "{report:?}");
    assert!(report.pages_queued > 0);

    let pages = outbox_statements(pool, "B01234").await;
    let of = |number: u16| -> Vec<&str> {
        pages
            .iter()
            .filter(|(kind, _)| *kind == number)
            .map(|(_, text)| text.as_str())
            .collect()
    };
    let client = hostdb::client(pool).await.unwrap();
    let derived: BTreeMap<(String, String), i64> = client
        .query(
            "SELECT d.account_id, d.isin, d.quantity FROM holding_balances_derived d
             JOIN stock_accounts a USING (account_id)
             WHERE a.participant_id = 'B01234' AND d.quantity <> 0",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    assert!(!derived.is_empty());
    assert_eq!(holdings_of(&of(535)), derived);

    let mut journal: Vec<(String, String, i64, String)> = client
        .query(
            "SELECT to_account_id, isin, quantity, 'RECE' FROM holding_movements
             WHERE settlement_date = $1 AND left(to_account_id, 6) = 'B01234'
             UNION ALL
             SELECT from_account_id, isin, quantity, 'DELI' FROM holding_movements
             WHERE settlement_date = $1 AND left(from_account_id, 6) = 'B01234'",
            &[&settlement_date()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    journal.sort();
    assert_eq!(journal.len(), 2, "two settled legs on B01234's accounts");
    assert_eq!(movements_of(&of(536)), journal);
    assert!(
        of(536).iter().any(|text| text.contains(":20C::RELA//DS1")),
        "a movement names the participant's own instruction"
    );

    let pending = of(537).join("");
    assert!(pending.contains(":20C::RELA//RLATE"), "{pending}");
    assert!(
        !pending.contains("RELA//RS2"),
        "a settled SI is not pending"
    );
    assert!(!pending.contains("RELA//DS1"));

    let again = statements::send_end_of_day(pool, &config.statements, "HKSCC0", settlement_date())
        .await
        .unwrap();
    assert_eq!(again.pages_queued, 0, "a repeat queues nothing");
    assert_eq!(outbox_statements(pool, "B01234").await.len(), pages.len());
    let journalled: i64 = client
        .query_one(
            "SELECT count(*) FROM message_journal
             WHERE direction = 'out' AND participant_id = 'B01234'
               AND message_type IN ('535', '536', '537')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(journalled as usize, pages.len());
}

#[tokio::test]
async fn small_pages_split_and_rejoin_to_the_same_holdings() {
    // Goal: with one holding per page, a holdings statement spans several pages numbered
    // 1..n, MORE until LAST, and their lines rejoin to the one-page statement's. Method:
    // render from the database at two page sizes and compare.
    let Some(database) = seeded_database("statements_paging").await else {
        return;
    };
    let mut client = hostdb::client(&database.pool).await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let (terminal, data) = statements::load(&transaction, "C00123", settlement_date())
        .await
        .unwrap();
    let mut limits = test_config().statements.limits();
    let render = |limits| {
        statements::render(
            Kind::Holdings,
            settlement_date(),
            &data,
            Some("C00123-01"),
            &RenderOptions {
                sender: "HKSCHKHHAXXX",
                receiver: &terminal,
                reference_prefix: "T",
                frequency: "ADHO",
                limits,
            },
        )
        .unwrap()
    };
    let whole = render(limits);
    assert_eq!(whole.len(), 1);
    limits.entries_max = 1;
    let split = render(limits);
    assert!(split.len() > 1, "C00123-01 holds several securities");
    for (index, text) in split.iter().enumerate() {
        let message = iso15022::check(text, ParseOptions::fin())
            .into_result()
            .unwrap();
        let statement = Statement::from_message(&message).unwrap();
        assert_eq!(statement.page.number as usize, index + 1);
        let expected = if index + 1 == split.len() {
            Continuation::Last
        } else {
            Continuation::More
        };
        assert_eq!(statement.page.continuation, expected);
        assert_eq!(statement.holdings.len(), 1);
    }
    assert_eq!(holdings_of(&as_str(&split)), holdings_of(&as_str(&whole)));

    // Bad input: an unknown participant is named.
    let error = statements::load(&transaction, "Z99999", settlement_date())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StatementError::UnknownParticipant(id) if id == "Z99999"),
        "{error}"
    );
}

fn request(reference: &str, requested: u16, account: &str) -> String {
    build::statement_request(
        Some(&Envelope {
            sender: "HBSLHKHHAXXX",
            receiver: "HKSCHKHHAXXX",
            session: 1,
            sequence: 1,
        }),
        &StatementRequestSpec {
            reference,
            requested: MessageType(requested),
            statement_date: settlement_date(),
            account,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn mt549_request_is_answered_on_the_outbound_stream() {
    // Goal: an MT549 published on INBOUND (as the gateway does) is answered with the
    // statement on the participant's OUTBOUND subject; a request for another participant's
    // account is refused with MT548 REJT/SAFE and the worker keeps serving; a redelivered
    // request is not answered twice. Method: real nats-server and Postgres, one intake
    // worker and the relay in-process; read OUTBOUND.
    let Some(database) = seeded_database("statements_mt549").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    settle_a_day(&database.pool).await;
    let bus_config = nats.bus_config();
    let (_, jetstream) = initialised_bus(&bus_config, "statements-test").await;
    let config = test_config();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = vec![
        tokio::spawn(intake::run_worker(
            config.intake.clone(),
            config.statements.clone(),
            config.cns.calendar(),
            config.cns.ccp_participant.clone(),
            database.pool.clone(),
            intake::intake_consumer(&jetstream).await.unwrap(),
            stopped.clone(),
        )),
        tokio::spawn(ccass::relay::run(
            database.pool.clone(),
            jetstream.clone(),
            config.intake.relay_batch_max,
            Duration::from_millis(config.intake.relay_poll_interval_ms),
            Duration::from_millis(config.intake.retry_delay_ms),
            stopped.clone(),
        )),
    ];
    let publish = async |dedupe: &str, text: String| {
        let subject = subjects::inbound(
            &ParticipantId::parse("B01234").unwrap(),
            MessageTypeNumber::new(549).unwrap(),
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", dedupe);
        jetstream
            .publish_with_headers(subject.as_str().to_owned(), headers, text.into())
            .await
            .unwrap()
            .await
            .unwrap();
    };
    publish("B01234:FOREIGN", request("FOREIGN", 535, "C00123-01")).await;
    publish("B01234:REQ535", request("REQ535", 535, "B01234-01")).await;
    publish("B01234:REQ536", request("REQ536", 536, "B01234-01")).await;

    let consumer = jetstream
        .get_stream("OUTBOUND")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "ccass.v1.outbound.B01234".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut outbound = consumer.messages().await.unwrap();
    let mut statements_read: Vec<String> = Vec::new();
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(refused && statements_read.len() >= 2) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "missing answers; refused {refused}, statements {statements_read:?}"
        );
        let Ok(Some(message)) = tokio::time::timeout(remaining, outbound.next()).await else {
            continue;
        };
        let message = message.unwrap();
        let text = std::str::from_utf8(&message.payload).unwrap().to_owned();
        message.ack().await.unwrap();
        // The run's confirmations (block 4 only) are on the same subject: not ours.
        let Ok(parsed) = iso15022::check(&text, ParseOptions::fin()).into_result() else {
            continue;
        };
        match parsed.message_type.unwrap().0 {
            548 => {
                let advice = StatusAdvice::from_message(&parsed).unwrap();
                if advice.related_reference() == Some("FOREIGN") {
                    let status = &advice.statuses[0];
                    assert_eq!(status.code, "REJT");
                    assert_eq!(status.reasons[0].code_text, "SAFE");
                    refused = true;
                }
            }
            535 | 536 => statements_read.push(text),
            _ => {}
        }
    }
    let holdings = statements_read
        .iter()
        .find(|text| text.contains("{2:I535"))
        .expect("an MT535 answer");
    assert!(holdings.contains(":22F::SFRE//ADHO"));
    assert!(holdings.contains(":97A::SAFE//B01234-01"));
    let client_db = hostdb::client(&database.pool).await.unwrap();
    let expected: i64 = client_db
        .query_one(
            "SELECT count(*) FROM holdings WHERE account_id = 'B01234-01' AND quantity <> 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holdings_of(&[holdings.as_str()]).len() as i64, expected);
    let movements = statements_read
        .iter()
        .find(|text| text.contains("{2:I536"))
        .expect("an MT536 answer");
    assert!(movements.contains(":20C::RELA//RS2"), "{movements}");

    // Each request is journalled once, refused or answered.
    let answered: i64 = client_db
        .query_one(
            "SELECT count(*) FROM message_journal WHERE direction = 'in' AND message_type = '549'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(answered, 3);
    let _ = stop.send(true);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
    drop(nats);
}

#[tokio::test]
async fn ccass_statements_prints_valid_fin_and_names_an_unknown_participant() {
    // Goal: the operator command prints each page as FIN that validates, and fails with a
    // message naming a participant that does not exist. Method: run the binary against the
    // test's database.
    let Some(database) = seeded_database("statements_cli").await else {
        return;
    };
    let date = settlement_date().to_string();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ccass"))
            .args(args)
            .current_dir(repo_root())
            .env("CCASS_ENV", "test")
            .env("CCASS_TELEMETRY__LOG_FILTER", "warn")
            .env("CCASS_HOSTDB__HOST", &database.config.host)
            .env("CCASS_HOSTDB__PORT", database.config.port.to_string())
            .env("CCASS_HOSTDB__DATABASE", &database.config.database)
            .output()
            .unwrap()
    };
    let output = run(&[
        "statements",
        "--participant",
        "B01234",
        "--date",
        &date,
        "--kind",
        "holdings",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let pages: Vec<&str> = stdout
        .split_inclusive("-}")
        .map(str::trim)
        .filter(|page| !page.is_empty())
        .collect();
    assert!(!pages.is_empty());
    for page in &pages {
        let message = iso15022::check(page, ParseOptions::fin())
            .into_result()
            .unwrap();
        assert_eq!(message.message_type, Some(MessageType(535)));
    }
    let total: i64 = holdings_of(&pages).values().sum();
    let expected: i64 = hostdb::client(&database.pool)
        .await
        .unwrap()
        .query_one(
            "SELECT coalesce(sum(h.quantity), 0)::bigint FROM holdings h
             JOIN stock_accounts a USING (account_id) WHERE a.participant_id = 'B01234'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, expected);

    let unknown = run(&["statements", "--participant", "Z99999", "--date", &date]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("unknown participant Z99999"), "{stderr}");
}

#[tokio::test]
async fn end_of_day_waits_while_a_run_holds_the_leader_lock() {
    // Goal: the end-of-day scheduler sees a run in progress (it holds the leader lock) and
    // sees it gone after commit. Method: hold the advisory lock in a transaction as run_now
    // does, probe, commit, probe again.
    let Some(database) = seeded_database("statements_run_lock").await else {
        return;
    };
    let key = test_config().settlement.leader_lock_key;
    let probe = || ccass::hostdb::statements::settlement_run_in_progress(&database.pool, key);
    assert!(!probe().await.unwrap());
    let mut client = hostdb::client(&database.pool).await.unwrap();
    let run = client.transaction().await.unwrap();
    run.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .unwrap();
    assert!(probe().await.unwrap());
    run.commit().await.unwrap();
    assert!(!probe().await.unwrap());
}
