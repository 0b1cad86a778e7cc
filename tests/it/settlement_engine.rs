//! Batch Settlement Runs against a real Postgres: DvP and FOP, recycling, partial settlement,
//! chain resolution, a leader aborted before commit, the leader lock, and `ccass audit`.

use ccass::hostdb::settlement::{self as sql, NewMatchedPair};
use ccass::hostdb::{self, Pool};
use ccass::iso15022::{self, ParseOptions};
use ccass::settlement::run::{self, RunError, RunOptions, RunReport};

use crate::harness::balances::{self, cash, holding};
use crate::harness::dates::settlement_date;
use crate::harness::postgres::{assert_audit_clean, count, seeded_database};
use crate::harness::test_config;

const TENCENT: &str = "KYG875721634";
const HKEX: &str = "HK0388045442";
const HANG_SENG: &str = "HK0011000095";

/// A matched pair: `from` account delivers `quantity` of `isin` to `to` account.
fn pair(
    reference: &str,
    from: &str,
    to: &str,
    isin: &str,
    quantity: i64,
    payment: Option<i64>,
    partial: bool,
) -> NewMatchedPair {
    balances::matched_pair(
        reference,
        from,
        to,
        isin,
        quantity,
        settlement_date(),
        payment,
        partial,
    )
}

async fn settle(pool: &Pool) -> RunReport {
    run::run_now(
        pool,
        &test_config().settlement,
        settlement_date(),
        &options(false),
    )
    .await
    .unwrap()
}

fn options(abort_before_commit: bool) -> RunOptions {
    RunOptions {
        abort_before_commit,
        ..RunOptions::leader("test")
    }
}

/// Outbox messages to `participant` as the relay publishes them (compact run rows expanded):
/// (dedupe id, FIN text), oldest first.
async fn outbox(pool: &Pool, participant: &str) -> Vec<(String, String)> {
    ccass::relay::messages_of_subject(pool, &format!("ccass.v1.outbound.{participant}"))
        .await
        .unwrap()
        .into_iter()
        .map(|message| {
            (
                message.dedupe_id,
                String::from_utf8(message.payload).unwrap(),
            )
        })
        .collect()
}

fn message_type(text: &str, number: u16) {
    iso15022::check(
        text,
        ParseOptions::text_only(Some(iso15022::MessageType(number))),
    )
    .into_result()
    .unwrap();
}

#[tokio::test]
async fn matched_dvp_pair_settles_and_both_sides_are_confirmed() {
    // Goal: a DvP pair moves both holdings and both cash balances once, each side gets its
    // confirmation (MT547 to the deliverer, MT545 to the receiver), and a second run finds
    // nothing due. Method: insert a matched pair, run twice, read balances and the outbox.
    let Some(database) = seeded_database("bsr_dvp").await else {
        return;
    };
    let pool = &database.pool;
    let (seller_before, buyer_before) = (cash(pool, "B01234").await, cash(pool, "C00123").await);
    sql::insert_matched_pairs(
        pool,
        &[pair(
            "DVP1",
            "B01234-02",
            "C00123-01",
            TENCENT,
            1000,
            Some(41_250_000),
            false,
        )],
    )
    .await
    .unwrap();
    let report = settle(pool).await;
    assert_eq!((report.pairs_due, report.settled_count), (1, 1));
    assert_eq!(report.recycled_count, 0);
    assert_eq!(holding(pool, "B01234-02", TENCENT).await, 249_000);
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_001_000);
    assert_eq!(cash(pool, "B01234").await, seller_before + 41_250_000);
    assert_eq!(cash(pool, "C00123").await, buyer_before - 41_250_000);
    let seller = outbox(pool, "B01234").await;
    assert_eq!(seller.len(), 1);
    assert!(seller[0].0.ends_with(":547"), "{seller:?}");
    message_type(&seller[0].1, 547);
    assert!(seller[0].1.contains(":20C::RELA//DDVP1"));
    assert!(seller[0].1.contains(":19A::ESTT//HKD412500,"));
    // Blocks 1 and 2: from the system's (the CCP's) terminal to the participant's.
    assert!(
        seller[0].1.starts_with("{1:F01HKSCHKHHAXXX") && seller[0].1.contains("HBSLHKHHAXXXN}"),
        "{}",
        seller[0].1
    );
    let buyer = outbox(pool, "C00123").await;
    assert_eq!(buyer.len(), 1);
    message_type(&buyer[0].1, 545);
    assert!(buyer[0].1.contains(":20C::RELA//RDVP1"));
    assert_audit_clean(pool).await;

    let again = settle(pool).await;
    assert_eq!((again.pairs_due, again.settled_count), (0, 0));
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_001_000);
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn lack_of_stock_is_recycled_then_settles_in_the_next_run() {
    // Goal: a deliverer without the stock stays pending with MT548 LACK to both sides and
    // settles in a later run once the stock arrives. Method: an FOP pair from an account
    // without the security; run; add a pair delivering the stock to that account; run again.
    let Some(database) = seeded_database("bsr_recycle").await else {
        return;
    };
    let pool = &database.pool;
    sql::insert_matched_pairs(
        pool,
        &[pair(
            "LATE",
            "I00456-01",
            "B05678-01",
            HKEX,
            1000,
            None,
            false,
        )],
    )
    .await
    .unwrap();
    let first = settle(pool).await;
    assert_eq!((first.settled_count, first.recycled_count), (0, 1));
    for participant in ["I00456", "B05678"] {
        let messages = outbox(pool, participant).await;
        assert_eq!(messages.len(), 1, "{participant}");
        message_type(&messages[0].1, 548);
        assert!(
            messages[0].1.contains(":24B::PEND//LACK"),
            "{}",
            messages[0].1
        );
    }
    assert_audit_clean(pool).await;

    sql::insert_matched_pairs(
        pool,
        &[pair(
            "FEED",
            "B01234-02",
            "I00456-01",
            HKEX,
            1000,
            None,
            false,
        )],
    )
    .await
    .unwrap();
    let second = settle(pool).await;
    assert_eq!((second.settled_count, second.recycled_count), (2, 0));
    assert_eq!(holding(pool, "B05678-01", HKEX).await, 1000);
    assert_eq!(holding(pool, "I00456-01", HKEX).await, 0);
    let receiver = outbox(pool, "B05678").await;
    assert!(receiver.last().unwrap().0.ends_with(":544"), "{receiver:?}");
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn chain_resolution_settles_what_a_single_pass_cannot() {
    // Goal: deliverers waiting for stock delivered later in the same run settle. Method: a
    // three-link chain inserted in the worst order (each link needs the next one's stock).
    let Some(database) = seeded_database("bsr_chain").await else {
        return;
    };
    let pool = &database.pool;
    sql::insert_matched_pairs(
        pool,
        &[
            pair("C1", "B05678-01", "C00123-01", HKEX, 500, None, false),
            pair(
                "C2",
                "I00456-01",
                "B05678-01",
                HKEX,
                500,
                Some(100_000),
                false,
            ),
            pair("C3", "B01234-02", "I00456-01", HKEX, 500, None, false),
        ],
    )
    .await
    .unwrap();
    let report = settle(pool).await;
    assert_eq!(report.first_pass_settled_count, 1);
    assert_eq!(report.settled_count, 3);
    assert_eq!(holding(pool, "C00123-01", HKEX).await, 500);
    assert_eq!(holding(pool, "B05678-01", HKEX).await, 0);
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn partial_settlement_settles_whole_board_lots_and_recycles_the_rest() {
    // Goal: where both sides allow it, what the stock covers settles in board lots and the
    // rest stays pending; where they do not, nothing settles. Method: two pairs larger than
    // the deliverer's holding (3000, board lot 100), one allowing partial settlement.
    let Some(database) = seeded_database("bsr_partial").await else {
        return;
    };
    let pool = &database.pool;
    sql::insert_matched_pairs(
        pool,
        &[
            pair(
                "WHOLE",
                "I00456-01",
                "B05678-01",
                HANG_SENG,
                5050,
                None,
                false,
            ),
            pair(
                "PART",
                "I00456-01",
                "B05678-01",
                HANG_SENG,
                5050,
                Some(5_050_000),
                true,
            ),
        ],
    )
    .await
    .unwrap();
    let report = settle(pool).await;
    assert_eq!(report.settled_count, 0);
    assert_eq!(report.partially_settled_count, 1);
    assert_eq!(report.recycled_count, 2);
    assert_eq!(holding(pool, "B05678-01", HANG_SENG).await, 3000);
    assert_eq!(holding(pool, "I00456-01", HANG_SENG).await, 0);
    assert_eq!(
        count(
            pool,
            "SELECT sum(amount_minor)::int8 FROM instruction_settlements"
        )
        .await,
        3_000_000
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM instruction_settlements WHERE NOT complete"
        )
        .await,
        1
    );
    assert_audit_clean(pool).await;
    // The remainder is due again in the next run, and is still short.
    let next = settle(pool).await;
    assert_eq!((next.pairs_due, next.recycled_count), (2, 2));
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn leader_aborted_before_commit_settles_nothing_and_the_rerun_settles_once() {
    // Goal: exactly once across a leader dying between settle and commit, and one leader at
    // a time. Method: the test hook writes everything then drops the transaction; check
    // nothing stayed; rerun twice; then hold the leader lock elsewhere and run.
    let Some(database) = seeded_database("bsr_abort").await else {
        return;
    };
    let pool = &database.pool;
    sql::insert_matched_pairs(
        pool,
        &[pair(
            "ONCE",
            "B01234-02",
            "C00123-01",
            TENCENT,
            2000,
            Some(82_500_000),
            false,
        )],
    )
    .await
    .unwrap();
    let config = test_config().settlement;
    let aborted = run::run_now(pool, &config, settlement_date(), &options(true)).await;
    assert!(
        matches!(aborted, Err(RunError::AbortedBeforeCommit)),
        "{aborted:?}"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        0
    );
    assert_eq!(count(pool, "SELECT count(*) FROM settlement_runs").await, 0);
    assert_eq!(count(pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_000_000);
    // Its journal rows went to its own tables (V0021), which it never attached: none is in
    // the journals.
    let unattached_run_tables = "SELECT count(*) FROM pg_class
        WHERE relkind = 'r' AND NOT relispartition
          AND relname ~ '^(holding|cash)_movements_run_[0-9]+$'";
    assert_eq!(count(pool, unattached_run_tables).await, 2);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM holding_movements WHERE settlement_run_id IS NOT NULL"
        )
        .await,
        0
    );

    assert_eq!(settle(pool).await.settled_count, 1);
    // The next leader dropped the dead run's tables; its own rows are a partition of the
    // journal named after it.
    assert_eq!(count(pool, unattached_run_tables).await, 0);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM holding_movements m JOIN settlement_runs r
               ON m.tableoid = format('holding_movements_run_%s', r.settlement_run_id)::regclass
             WHERE r.status = 'completed'"
        )
        .await,
        1
    );
    assert_eq!(settle(pool).await.pairs_due, 0);
    assert_eq!(
        count(pool, "SELECT count(*) FROM instruction_settlements").await,
        1
    );
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_002_000);
    assert_audit_clean(pool).await;

    let holder = hostdb::client(pool).await.unwrap();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&config.leader_lock_key])
        .await
        .unwrap();
    let busy = run::run_now(pool, &config, settlement_date(), &options(false)).await;
    assert!(matches!(busy, Err(RunError::LeaderBusy)), "{busy:?}");
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&config.leader_lock_key])
        .await
        .unwrap();
}

#[tokio::test]
async fn audit_fails_when_a_confirmation_is_missing() {
    // Goal: `ccass audit`'s settlement check catches a settled pair without confirmation.
    // Method: settle a pair, delete the deliverer's compact confirmation row (its MT547) from
    // the outbox, audit; then a compact row that does not decode.
    let Some(database) = seeded_database("bsr_audit").await else {
        return;
    };
    let pool = &database.pool;
    sql::insert_matched_pairs(
        pool,
        &[pair(
            "GONE",
            "B01234-02",
            "C00123-01",
            TENCENT,
            100,
            Some(4_125_000),
            false,
        )],
    )
    .await
    .unwrap();
    settle(pool).await;
    assert_audit_clean(pool).await;
    let client = hostdb::client(pool).await.unwrap();
    client
        .execute(
            "DELETE FROM outbox WHERE expansion = 'bsr_confirmations'
               AND subject = 'ccass.v1.outbound.B01234'",
            &[],
        )
        .await
        .unwrap();
    let violations = hostdb::audit::run(pool).await.unwrap();
    assert!(
        matches!(
            violations.as_slice(),
            [hostdb::audit::Violation::SettledWithoutConfirmation { .. }]
        ),
        "{violations:?}"
    );
    client
        .execute(
            "INSERT INTO outbox (subject, dedupe_id, payload, expansion)
             VALUES ('ccass.v1.outbound.B01234', 'bsr-confirmations:0:B01234:0', '\\x02',
                     'bsr_confirmations')",
            &[],
        )
        .await
        .unwrap();
    let violations = hostdb::audit::run(pool).await.unwrap();
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, hostdb::audit::Violation::UndecodableOutboxRow { .. })),
        "{violations:?}"
    );
}

#[tokio::test]
async fn instructions_input_after_the_cutoff_wait_for_the_next_settlement_day() {
    // Goal: the input cut-off (settlement.input_cutoff_time) holds back late instructions
    // from the day's runs, including the final one, and the next day's run settles them.
    // Method: two pairs due today; date one pair's instructions 10 minutes after today's
    // cut-off; run today (only the early pair settles), then run the next business day.
    let Some(database) = seeded_database("bsr_cutoff").await else {
        return;
    };
    let pool = &database.pool;
    let ids = sql::insert_matched_pairs(
        pool,
        &[
            pair("EARLY", "B01234-02", "C00123-01", TENCENT, 100, None, false),
            pair("LATE", "B01234-02", "C00123-01", TENCENT, 200, None, false),
        ],
    )
    .await
    .unwrap();
    let config = test_config().settlement;
    let cutoff = config.input_cutoff_at(settlement_date()).unwrap();
    let late_input = cutoff + time::Duration::minutes(10);
    let client = hostdb::client(pool).await.unwrap();
    let changed = client
        .execute(
            "UPDATE instructions SET created_at = $2
             WHERE instruction_id IN (SELECT delivering_instruction_id FROM instruction_matches
                                      WHERE match_id = $1
                                      UNION ALL
                                      SELECT receiving_instruction_id FROM instruction_matches
                                      WHERE match_id = $1)",
            &[&ids[1], &late_input],
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);

    let today = settle(pool).await;
    assert_eq!((today.pairs_due, today.settled_count), (1, 1));
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_000_100);
    let settled_late = format!(
        "SELECT count(*) FROM instruction_settlements WHERE match_id = {}",
        ids[1]
    );
    assert_eq!(count(pool, &settled_late).await, 0);

    let next_day = settlement_date().next_day().unwrap();
    let tomorrow = run::run_now(pool, &config, next_day, &options(false))
        .await
        .unwrap();
    assert_eq!((tomorrow.pairs_due, tomorrow.settled_count), (1, 1));
    assert_eq!(count(pool, &settled_late).await, 1);
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_000_300);
    assert_audit_clean(pool).await;
}

#[tokio::test]
async fn compact_confirmations_reach_outbound_each_once_also_when_the_relay_publishes_twice() {
    // Goal: a run's compact outbox rows (V0010) are expanded by the relay into one message
    // per confirmation or pending advice, each with its own dedupe id, and OUTBOUND holds
    // each once even when a relay dies after publishing and before marking the rows; and a
    // second database whose ids start from 1 again (the demo's, recreated at each start)
    // is not taken for copies of the first's messages (V0012 instance id).
    // Method: 600 pairs between the same two participants (more than one compact row per
    // participant), run, relay everything to a private nats-server, count OUTBOUND; mark the
    // rows unpublished (the crash), relay again, count again; then the same day in a second
    // database (same run and instruction ids, so the same dedupe ids), relayed to the same
    // server: OUTBOUND holds both days.
    let Some(database) = seeded_database("bsr_relay_compact").await else {
        return;
    };
    let Some(nats) = crate::harness::nats::NatsServer::start().await else {
        return;
    };
    let pool = &database.pool;
    let pairs = relay_test_pairs();
    sql::insert_matched_pairs(pool, &pairs).await.unwrap();
    let report = settle(pool).await;
    assert_eq!(report.pairs_due, 600);
    // 600 sides per participant: two compact rows each.
    assert_eq!(report.outbox_count, 4, "{report}");
    let mut expected = outbox(pool, "B01234").await;
    expected.extend(outbox(pool, "C00123").await);
    assert_eq!(expected.len(), report.confirmations_count);
    let mut ids: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected.len(), "dedupe ids are unique");
    for (id, text) in &expected {
        let number = id.rsplit(':').next().unwrap().parse().unwrap();
        message_type(text, number);
    }

    let bus_config = nats.bus_config();
    let (_, jetstream) = crate::harness::nats::initialised_bus(&bus_config, "relay-test").await;
    let stored = || async {
        let mut stream = jetstream.get_stream("OUTBOUND").await.unwrap();
        stream.info().await.unwrap().state.messages
    };
    assert_eq!(relay_all(pool, &jetstream).await, expected.len());
    assert_eq!(stored().await, expected.len() as u64);
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    let client = hostdb::client(pool).await.unwrap();
    client
        .execute("UPDATE outbox SET published_at = NULL", &[])
        .await
        .unwrap();
    assert_eq!(relay_all(pool, &jetstream).await, expected.len());
    assert_eq!(
        stored().await,
        expected.len() as u64,
        "republished, stored once"
    );
    assert_audit_clean(pool).await;

    let Some(second) = seeded_database("bsr_relay_compact_second").await else {
        return;
    };
    sql::insert_matched_pairs(&second.pool, &relay_test_pairs())
        .await
        .unwrap();
    assert_eq!(settle(&second.pool).await.pairs_due, 600);
    let mut second_ids: Vec<String> = outbox(&second.pool, "B01234")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    second_ids.sort_unstable();
    let mut first_ids: Vec<String> = outbox(pool, "B01234")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    first_ids.sort_unstable();
    assert_eq!(
        second_ids, first_ids,
        "the second day repeats the dedupe ids"
    );
    assert_eq!(relay_all(&second.pool, &jetstream).await, expected.len());
    assert_eq!(
        stored().await,
        2 * expected.len() as u64,
        "the second database's messages are not taken for copies"
    );
}

/// 600 DvP pairs between B01234 and C00123: more than one compact row per participant.
fn relay_test_pairs() -> Vec<NewMatchedPair> {
    (0..600)
        .map(|n| {
            pair(
                &format!("RELAY{n}"),
                "B01234-02",
                "C00123-01",
                TENCENT,
                100,
                Some(4_125_000),
                false,
            )
        })
        .collect()
}

/// Relays until the outbox is empty; returns how many messages were published.
async fn relay_all(pool: &Pool, jetstream: &async_nats::jetstream::Context) -> usize {
    let mut published = 0;
    loop {
        match ccass::relay::relay_once(pool, jetstream, 1024)
            .await
            .unwrap()
        {
            0 => return published,
            count => published += count,
        }
    }
}

#[tokio::test]
async fn runs_after_settled_days_read_only_open_pairs_and_states_stay_right() {
    // Goal: a run reads the open pairs only, however many days were settled before it, and
    // every reader of the instruction state stays right (audit, the terminal's effective
    // status); a pair settled in full but not swept (the sweep failed) is still skipped.
    // Method: three settlement days, each with two FOP pairs that settle; a pair lacking
    // stock input on the first day stays open throughout. Assert on the run report's
    // loaded row counts (the same each day; before the sweep they grew by four instructions
    // a day), the stored statuses and the audit after each run; then undo a sweep by hand
    // and run again; last, a `settled` status without a complete marker fails the audit.
    let Some(database) = seeded_database("bsr_open_pairs").await else {
        return;
    };
    let pool = &database.pool;
    let config = test_config();
    sql::insert_matched_pairs(
        pool,
        &[pair(
            "OPEN",
            "I00456-01",
            "B05678-01",
            HKEX,
            500,
            None,
            false,
        )],
    )
    .await
    .unwrap();
    let mut settlement_date = settlement_date();
    let mut first_settled_id = None;
    for day in 0..3i64 {
        let pairs: Vec<NewMatchedPair> = (0..2)
            .map(|n| {
                balances::matched_pair(
                    &format!("S{day}{n}"),
                    "B01234-02",
                    "C00123-01",
                    TENCENT,
                    1000,
                    settlement_date,
                    None,
                    false,
                )
            })
            .collect();
        let match_ids = sql::insert_matched_pairs(pool, &pairs).await.unwrap();
        let report = run::run_now(pool, &config.settlement, settlement_date, &options(false))
            .await
            .unwrap();
        assert_eq!(
            (
                report.pairs_due,
                report.settled_count,
                report.recycled_count
            ),
            (3, 2, 1),
            "day {day}: {report}"
        );
        // Today's two pairs and the open one: nothing of the earlier days.
        assert_eq!(report.loaded.instructions, 6, "day {day}: {report}");
        assert_eq!(report.loaded.matches, 3, "day {day}: {report}");
        assert_eq!(report.loaded.settled_pairs, 0, "day {day}: {report}");
        assert_eq!(report.swept_instruction_count, 4, "day {day}: {report}");
        assert_eq!(
            count(
                pool,
                "SELECT count(*) FROM instructions WHERE status = 'settled'"
            )
            .await,
            4 * (day + 1)
        );
        assert_eq!(
            count(
                pool,
                "SELECT count(*) FROM instructions WHERE status = 'matched'"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                pool,
                "SELECT count(*) FROM settlement_runs WHERE swept_at IS NULL"
            )
            .await,
            0
        );
        assert_audit_clean(pool).await;
        if day == 0 {
            let client = hostdb::client(pool).await.unwrap();
            let id: i64 = client
                .query_one(
                    "SELECT delivering_instruction_id FROM instruction_matches WHERE match_id = $1",
                    &[&match_ids[0]],
                )
                .await
                .unwrap()
                .get(0);
            first_settled_id = Some(id);
        }
        settlement_date = settlement_date.next_day().unwrap();
    }
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_006_000);
    // The terminal shows a swept SI as settled, the open one as matched.
    let settled = hostdb::terminal::instruction(pool, first_settled_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.status, "settled");

    // A sweep that did not happen: the day's pairs back to `matched`, their run unswept.
    // The next run reads them again, skips them by their complete markers, and sweeps them.
    let client = hostdb::client(pool).await.unwrap();
    let undone = client
        .execute(
            "UPDATE instructions SET status = 'matched'
             WHERE status = 'settled' AND settlement_date = $1",
            &[&settlement_date.previous_day().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(undone, 4);
    client
        .execute(
            "UPDATE settlement_runs SET swept_at = NULL
             WHERE settlement_run_id = (SELECT max(settlement_run_id) FROM settlement_runs)",
            &[],
        )
        .await
        .unwrap();
    assert_audit_clean(pool).await;
    let report = run::run_now(pool, &config.settlement, settlement_date, &options(false))
        .await
        .unwrap();
    assert_eq!(
        (
            report.pairs_due,
            report.settled_count,
            report.recycled_count
        ),
        (1, 0, 1),
        "{report}"
    );
    assert_eq!(report.loaded.instructions, 6, "{report}");
    assert_eq!(report.loaded.settled_pairs, 2, "{report}");
    assert_eq!(report.swept_instruction_count, 4, "{report}");
    assert_eq!(holding(pool, "C00123-01", TENCENT).await, 1_006_000);
    assert_audit_clean(pool).await;

    // The audit refuses a `settled` status that no complete marker backs.
    client
        .execute(
            "UPDATE instructions SET status = 'settled' WHERE sender_reference = 'DOPEN'",
            &[],
        )
        .await
        .unwrap();
    let violations = hostdb::audit::run(pool).await.unwrap();
    assert!(
        violations.iter().any(|violation| matches!(
            violation,
            hostdb::audit::Violation::SettledInstructionState { detail, .. }
                if detail.contains("without a complete settled marker")
        )),
        "{violations:?}"
    );
}
