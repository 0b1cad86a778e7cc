//! SI intake, matching, lifecycle and the outbox relay against real Postgres and nats-server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use ccass::bus::instructions::InstructionEvent;
use ccass::bus::subjects::{self, EventKind, MessageTypeNumber};
use ccass::hostdb;
use ccass::ids::ParticipantId;
use ccass::iso15022::build::{self, Envelope, SettlementInstructionSpec};
use ccass::iso15022::fields::{
    Amount, Function, FunctionCode, Isin, PartyId, Quantity, QuantityKind,
};
use ccass::iso15022::views::{Linkage, Party, StatusAdvice};
use ccass::iso15022::{self, MessageType, ParseOptions};
use ccass::settlement::intake::{self, Inbound};
use ccass::settlement::lifecycle;
use futures::StreamExt as _;
use rust_decimal::Decimal;

use crate::harness::dates::settlement_date;
use crate::harness::nats::{NatsServer, initialised_bus, wait_until_all_acknowledged};
use crate::harness::postgres::seeded_database;
use crate::harness::test_config;

const ISIN: &str = "GB0005405286";

fn terminal(participant: &str) -> &'static str {
    match participant {
        "B01234" => "HBSLHKHHAXXX",
        "B05678" => "KWBLHKHHAXXX",
        other => panic!("no terminal for {other}"),
    }
}

/// An MT541 (receive) or MT543 (deliver) against payment from `participant` to its
/// counterparty, or a cancellation of `previous`.
fn instruction(
    participant: &str,
    counterparty: &str,
    deliver: bool,
    reference: &str,
    amount_cents: i64,
    previous: Option<&str>,
) -> String {
    let role = if deliver { "REAG" } else { "DEAG" };
    let parties = [
        Party {
            role,
            id: PartyId::Proprietary {
                scheme: "CCASS",
                id: counterparty,
            },
            safekeeping_account: None,
        },
        Party {
            role: "PSET",
            id: PartyId::Bic("CCASHKHH"),
            safekeeping_account: None,
        },
    ];
    let links = previous.map(|reference| {
        [Linkage {
            qualifier: "PREV",
            reference,
        }]
    });
    let account = format!("{participant}-01");
    let spec = SettlementInstructionSpec {
        message_type: MessageType(if deliver { 543 } else { 541 }),
        function: Function {
            code: if previous.is_some() {
                FunctionCode::Canc
            } else {
                FunctionCode::Newm
            },
            subfunction: None,
        },
        reference,
        links: links.as_ref().map_or(&[], |links| links.as_slice()),
        prepared: None,
        trade_date: None,
        settlement_date: settlement_date(),
        isin: Isin::parse(ISIN).unwrap(),
        description: None,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::new(4_000, 0),
        },
        account: &account,
        transaction_type: "TRAD",
        parties: &parties,
        settlement_amount: Some(Amount {
            currency: *b"HKD",
            value: Decimal::new(amount_cents, 2),
        }),
    };
    let envelope = Envelope {
        sender: terminal(participant),
        receiver: "HKSCHKHHAXXX",
        session: 1,
        sequence: 1,
    };
    build::settlement_instruction(Some(&envelope), &spec).unwrap()
}

/// `workers` intake workers on the shared consumer and the outbox relay, until `stopped`.
async fn start_intake(
    config: &ccass::config::Config,
    pool: &hostdb::Pool,
    jetstream: &async_nats::jetstream::Context,
    workers: usize,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(intake::run_worker(
            config.intake.clone(),
            config.statements.clone(),
            config.cns.calendar(),
            config.cns.ccp_participant.clone(),
            pool.clone(),
            intake::intake_consumer(jetstream).await.unwrap(),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(ccass::relay::run(
        pool.clone(),
        jetstream.clone(),
        config.intake.relay_batch_max,
        Duration::from_millis(config.intake.relay_poll_interval_ms),
        Duration::from_millis(config.intake.retry_delay_ms),
        stopped.clone(),
    )));
    tasks
}

/// Publishes `text` on the participant's inbound subject as the gateway would (stored, with
/// `Nats-Msg-Id` = `dedupe`).
async fn publish_inbound(
    jetstream: &async_nats::jetstream::Context,
    participant: &str,
    number: u16,
    dedupe: &str,
    text: String,
) {
    let subject = subjects::inbound(
        &ParticipantId::parse(participant).unwrap(),
        MessageTypeNumber::new(number).unwrap(),
    );
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", dedupe);
    jetstream
        .publish_with_headers(subject.as_str().to_owned(), headers, text.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// (participant, related reference) → statuses `QUAL//CODE` or `QUAL//CODE/REASON`.
type Advices = HashMap<(String, String), Vec<String>>;

fn record_advice(advices: &mut Advices, subject: &str, payload: &[u8]) {
    let participant = subject.rsplit('.').next().unwrap().to_owned();
    let text = std::str::from_utf8(payload).unwrap();
    let message = iso15022::check(text, ParseOptions::fin())
        .into_result()
        .unwrap();
    let advice = StatusAdvice::from_message(&message).unwrap();
    let related = advice.related_reference().unwrap_or_default().to_owned();
    for status in &advice.statuses {
        let mut entry = format!("{}//{}", status.qualifier_code, status.code);
        if let Some(reason) = status.reasons.first() {
            entry.push('/');
            entry.push_str(reason.code_text);
        }
        advices
            .entry((participant.clone(), related.clone()))
            .or_default()
            .push(entry);
    }
}

/// OUTBOUND's messages from the start, through a new consumer of the test's own.
async fn outbound_messages(
    jetstream: &async_nats::jetstream::Context,
) -> async_nats::jetstream::consumer::pull::Stream {
    jetstream
        .get_stream("OUTBOUND")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap()
}

/// Reads MT548s from `outbound` into `advices` (acking each) until `done`; fails, saying
/// `what` was missing, at `deadline`.
async fn read_advices_until(
    outbound: &mut async_nats::jetstream::consumer::pull::Stream,
    advices: &mut Advices,
    deadline: Instant,
    what: &str,
    done: impl Fn(&Advices) -> bool,
) {
    while !done(advices) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(!remaining.is_zero(), "{what}; have {advices:?}");
        if let Ok(Some(message)) = tokio::time::timeout(remaining, outbound.next()).await {
            let message = message.unwrap();
            record_advice(advices, &message.subject, &message.payload);
            message.ack().await.unwrap();
        }
    }
}

fn has(advices: &Advices, participant: &str, reference: &str, status: &str) -> bool {
    advices
        .get(&(participant.to_owned(), reference.to_owned()))
        .is_some_and(|statuses| statuses.iter().any(|entry| entry == status))
}

#[tokio::test]
async fn intake_matches_reports_cancels_and_refuses_through_the_bus() {
    // Goal: the intake cases end to end: a DVP pair within the amount tolerance is
    // matched and both sides read MT548 MACH from OUTBOUND; a pair beyond the tolerance is
    // not matched and is reported NMAT/DMON; a duplicate reference is refused with DUPL; a
    // malformed message is refused while the worker keeps serving; an unmatched SI is
    // cancelled by its sender; `ccass audit` passes. Method: real nats-server and Postgres,
    // two intake workers and the relay in-process, FIN messages published on INBOUND as a
    // gateway would, MT548s read back from the OUTBOUND stream.
    let Some(database) = seeded_database("settlement_intake_end_to_end").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let bus_config = nats.bus_config();
    let (client, jetstream) = initialised_bus(&bus_config, "intake-test").await;

    let mut events = client
        .subscribe(subjects::events(
            &ParticipantId::parse("B01234").unwrap(),
            EventKind::Instruction,
        ))
        .await
        .unwrap();
    client.flush().await.unwrap();

    let mut config = test_config();
    config.intake.unmatched_report_delay_ms = 0;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = start_intake(&config, &database.pool, &jetstream, 2, &stopped).await;

    let publish = async |participant: &str, number: u16, dedupe: &str, text: String| {
        publish_inbound(&jetstream, participant, number, dedupe, text).await
    };
    // A malformed message first: the worker must refuse it and go on.
    publish(
        "B01234",
        541,
        "B01234.garbage",
        "not a fin message".to_owned(),
    )
    .await;
    // Matched pair: amounts 1,000.00 and 1,010.00 within the 25.00 tolerance.
    publish(
        "B01234",
        541,
        "B01234.RCV1",
        instruction("B01234", "B05678", false, "RCV1", 100_000, None),
    )
    .await;
    publish(
        "B05678",
        543,
        "B05678.DLV1",
        instruction("B05678", "B01234", true, "DLV1", 101_000, None),
    )
    .await;
    // Beyond the tolerance: 1,000.00 against 2,000.00.
    publish(
        "B01234",
        541,
        "B01234.RCV2",
        instruction("B01234", "B05678", false, "RCV2", 100_000, None),
    )
    .await;
    publish(
        "B05678",
        543,
        "B05678.DLV2",
        instruction("B05678", "B01234", true, "DLV2", 200_000, None),
    )
    .await;
    // The same sender's reference again (another message id, so INBOUND keeps it).
    publish(
        "B01234",
        541,
        "B01234.RCV1.again",
        instruction("B01234", "B05678", false, "RCV1", 100_000, None),
    )
    .await;
    // A well-formed instruction naming no participant: refused with the field's reason.
    publish(
        "B01234",
        541,
        "B01234.BAD1",
        instruction("B01234", "ZZ9999", false, "BAD1", 100_000, None),
    )
    .await;
    // A receipt without counterparty, then its cancellation.
    publish(
        "B01234",
        541,
        "B01234.RCV3",
        instruction("B01234", "B05678", false, "RCV3", 300_000, None),
    )
    .await;

    let mut outbound = outbound_messages(&jetstream).await;
    let mut advices = Advices::new();
    let mut read_until = async |advices: &mut Advices, done: &dyn Fn(&Advices) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        read_advices_until(&mut outbound, advices, deadline, "missing advices", done).await
    };
    read_until(&mut advices, &|advices| {
        has(advices, "B01234", "RCV1", "MTCH//MACH")
            && has(advices, "B05678", "DLV1", "MTCH//MACH")
            && has(advices, "B01234", "RCV2", "IPRC//PACK")
            && has(advices, "B05678", "DLV2", "IPRC//PACK")
            && has(advices, "B01234", "RCV1", "IPRC//REJT/DUPL")
            && has(advices, "B01234", "NONREF", "IPRC//REJT/NARR")
            && has(advices, "B01234", "RCV3", "IPRC//PACK")
            && has(advices, "B01234", "BAD1", "IPRC//REJT/DDEA")
    })
    .await;
    assert!(!has(&advices, "B01234", "RCV2", "MTCH//MACH"));
    // The same status changes are published as instruction events.
    let matched_event = InstructionEvent {
        participant: "B01234".to_owned(),
        sender_reference: "RCV1".to_owned(),
        status: "matched".to_owned(),
        reason_code: None,
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = events.next().await {
            let event: InstructionEvent = serde_json::from_slice(&message.payload).unwrap();
            if event == matched_event {
                break;
            }
        }
    })
    .await
    .expect("the matched event of RCV1 arrives");

    publish(
        "B01234",
        541,
        "B01234.CAN3",
        instruction("B01234", "B05678", false, "CAN3", 300_000, Some("RCV3")),
    )
    .await;
    read_until(&mut advices, &|advices| {
        has(advices, "B01234", "RCV3", "CPRC//CAND")
    })
    .await;

    // Unmatched report (delay 0 in this test): RCV2/DLV2 differ in amount.
    let reference = intake::Reference::load(&database.pool, "HKSCC0")
        .await
        .unwrap();
    let reported = intake::report_unmatched(&database.pool, &reference, &config.intake)
        .await
        .unwrap();
    assert_eq!(reported, 2, "RCV2 and DLV2 are the unmatched ones");
    read_until(&mut advices, &|advices| {
        has(advices, "B01234", "RCV2", "MTCH//NMAT/DMON")
            && has(advices, "B05678", "DLV2", "MTCH//NMAT/DMON")
    })
    .await;

    let client = hostdb::client(&database.pool).await.unwrap();
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM instruction_matches),
                    (SELECT count(*) FROM instructions WHERE sender_reference = 'RCV1'),
                    (SELECT status FROM instructions WHERE sender_reference = 'RCV3')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 1);
    assert_eq!(counts.get::<_, i64>(1), 1);
    assert_eq!(counts.get::<_, String>(2), "cancelled");
    let violations = hostdb::audit::run(&database.pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");

    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A stored SI as the INBOUND stream delivers it.
fn inbound(sequence: u64, participant: &str, number: &str, text: String) -> Inbound {
    Inbound {
        participant: participant.to_owned(),
        message_type: number.to_owned(),
        stream_sequence: sequence,
        text,
    }
}

/// Intake batches processed directly (no bus) against a seeded database.
struct DirectIntake {
    pool: hostdb::Pool,
    reference: intake::Reference,
    config: ccass::config::Config,
}

impl DirectIntake {
    async fn load(pool: &hostdb::Pool) -> DirectIntake {
        DirectIntake {
            pool: pool.clone(),
            reference: intake::Reference::load(pool, "HKSCC0").await.unwrap(),
            config: test_config(),
        }
    }

    async fn process(&self, batch: Vec<Inbound>) -> intake::BatchReport {
        intake::process_batch(
            &self.pool,
            &self.reference,
            &self.config.cns.calendar(),
            &self.config.intake,
            &self.config.statements,
            "INBOUND",
            &batch,
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing_and_a_matched_pair_cancels_bilaterally() {
    // Goal: redelivery is idempotent, hold and exclusion change the match row, and a matched
    // pair is cancelled only when both sides cancel. Method: process_batch directly (no bus)
    // with stream sequences; the same batch twice, hold/exclude/release/include, then one
    // side's CANC (pending: CANP), then the other's (both CAND).
    let Some(database) = seeded_database("settlement_intake_redelivery").await else {
        return;
    };
    let direct = DirectIntake::load(&database.pool).await;
    let reference = &direct.reference;
    let batch = vec![
        inbound(
            1,
            "B01234",
            "541",
            instruction("B01234", "B05678", false, "R1", 100_000, None),
        ),
        inbound(
            2,
            "B05678",
            "543",
            instruction("B05678", "B01234", true, "D1", 100_000, None),
        ),
    ];
    let first = direct.process(batch.clone()).await;
    assert_eq!((first.accepted, first.matched_pairs), (2, 1));
    let again = direct.process(batch).await;
    assert_eq!((again.accepted, again.redelivered), (0, 2));

    // Hold and exclusion change the pair's match row, reported to both sides.
    for (change, on_hold, excluded) in [
        (lifecycle::Change::Hold, true, false),
        (lifecycle::Change::Exclude, true, true),
        (lifecycle::Change::Release, false, true),
        (lifecycle::Change::Include, false, false),
    ] {
        lifecycle::apply(&database.pool, reference, "B05678", "D1", change)
            .await
            .unwrap();
        let flags = hostdb::client(&database.pool)
            .await
            .unwrap()
            .query_one(
                "SELECT on_hold, excluded_from_runs FROM instruction_matches",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (flags.get::<_, bool>(0), flags.get::<_, bool>(1)),
            (on_hold, excluded)
        );
    }
    assert!(matches!(
        lifecycle::apply(
            &database.pool,
            reference,
            "B05678",
            "NOPE",
            lifecycle::Change::Hold
        )
        .await,
        Err(lifecycle::LifecycleError::UnknownInstruction { .. })
    ));

    let one_side = direct
        .process(vec![inbound(
            3,
            "B01234",
            "541",
            instruction("B01234", "B05678", false, "C1", 100_000, Some("R1")),
        )])
        .await;
    assert_eq!((one_side.accepted, one_side.cancelled), (1, 0));
    let other_side = direct
        .process(vec![inbound(
            4,
            "B05678",
            "543",
            instruction("B05678", "B01234", true, "C2", 100_000, Some("D1")),
        )])
        .await;
    assert_eq!(other_side.cancelled, 2);

    let client = hostdb::client(&database.pool).await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM instruction_matches),
                    (SELECT count(*) FROM instructions WHERE function = 'NEWM' AND status = 'cancelled'),
                    (SELECT count(*) FROM outbox WHERE convert_from(payload, 'UTF8') LIKE '%CPRC//CANP%'),
                    (SELECT count(*) FROM instruction_status_history),
                    (SELECT count(*) FROM instructions WHERE status <> 'cancelled')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 2);
    assert_eq!(row.get::<_, i64>(2), 1);
    // R1, D1: unmatched, matched, 4 lifecycle changes, cancelled; C1 received, then
    // cancelled with C2; C2 cancelled.
    assert_eq!(row.get::<_, i64>(3), 17);
    assert_eq!(row.get::<_, i64>(4), 0);
    let violations = hostdb::audit::run(&database.pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");
}

#[tokio::test]
async fn a_settled_pair_can_no_longer_be_cancelled_or_held() {
    // Goal: once a run moved stock and money for a pair, neither a bilateral cancellation
    // nor a hold changes it (the cancellation is denied with DEND/DSET). Method: match a DvP
    // pair through process_batch, settle it with run_now, then both sides send a CANC and
    // one side asks for a hold; the pair keeps its match and marker, and the audit is clean.
    let Some(database) = seeded_database("settlement_intake_settled_cancel").await else {
        return;
    };
    let direct = DirectIntake::load(&database.pool).await;
    let reference = &direct.reference;
    // B01234-01 holds GB0005405286 and B05678 has HKD (config/reference/demo.toml).
    let matched = direct
        .process(vec![
            inbound(
                1,
                "B01234",
                "543",
                instruction("B01234", "B05678", true, "D1", 100_000, None),
            ),
            inbound(
                2,
                "B05678",
                "541",
                instruction("B05678", "B01234", false, "R1", 100_000, None),
            ),
        ])
        .await;
    assert_eq!(matched.matched_pairs, 1);
    let run = ccass::settlement::run::run_now(
        &database.pool,
        &direct.config.settlement,
        settlement_date(),
        &ccass::settlement::run::RunOptions::leader("test"),
    )
    .await
    .unwrap();
    assert_eq!(run.settled_count, 1);

    let cancels = direct
        .process(vec![
            inbound(
                3,
                "B01234",
                "543",
                instruction("B01234", "B05678", true, "C1", 100_000, Some("D1")),
            ),
            inbound(
                4,
                "B05678",
                "541",
                instruction("B05678", "B01234", false, "C2", 100_000, Some("R1")),
            ),
        ])
        .await;
    assert_eq!((cancels.cancelled, cancels.rejected), (0, 2));
    assert!(matches!(
        lifecycle::apply(
            &database.pool,
            reference,
            "B05678",
            "R1",
            lifecycle::Change::Hold
        )
        .await,
        Err(lifecycle::LifecycleError::AlreadySettled { .. })
    ));

    let client = hostdb::client(&database.pool).await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM instruction_matches WHERE NOT on_hold),
                    (SELECT count(*) FROM instructions WHERE status = 'cancelled'),
                    (SELECT count(*) FROM outbox
                     WHERE position(convert_to(':24B::DEND//DSET', 'UTF8') IN payload) > 0),
                    (SELECT count(*) FROM instruction_settlements WHERE complete)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "the match stays, not on hold");
    assert_eq!(row.get::<_, i64>(1), 0, "nothing cancelled");
    assert_eq!(
        row.get::<_, i64>(2),
        2,
        "both cancellations denied as settled"
    );
    assert_eq!(row.get::<_, i64>(3), 1);
    let violations = hostdb::audit::run(&database.pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");
}

#[tokio::test]
async fn a_message_the_database_refuses_is_rejected_and_the_rest_of_its_batch_goes_on() {
    // Goal: one inbound message the host database cannot store never blocks intake: the
    // others of its batch are processed, it is rejected with MT548 REJT NARR and acked, and
    // nothing is redelivered for ever. A NUL byte in a message (a text column refuses it) is
    // journalled with U+FFFD and refused like any other bad message.
    // Method: a constraint added to this test's database refuses the sender reference
    // POISON (as a schema the code disagrees with would); four messages published before
    // one intake worker starts, so that they arrive in one batch; MT548s read back from
    // OUTBOUND; the consumer must end with nothing pending.
    let Some(database) = seeded_database("settlement_intake_poison").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_client, jetstream) = initialised_bus(&nats.bus_config(), "intake-poison").await;
    let db = hostdb::client(&database.pool).await.unwrap();
    db.batch_execute(
        "ALTER TABLE instructions ADD CONSTRAINT test_refuses_poison
             CHECK (sender_reference <> 'POISON')",
    )
    .await
    .unwrap();

    let publish = async |participant: &str, number: u16, dedupe: &str, text: String| {
        publish_inbound(&jetstream, participant, number, dedupe, text).await
    };
    publish(
        "B01234",
        541,
        "B01234.RCVP1",
        instruction("B01234", "B05678", false, "RCVP1", 100_000, None),
    )
    .await;
    publish(
        "B01234",
        541,
        "B01234.POISON",
        instruction("B01234", "B05678", false, "POISON", 100_000, None),
    )
    .await;
    let with_nul = instruction("B01234", "B05678", false, "NUL1", 100_000, None)
        .replace(":20C::SEME//NUL1", ":20C::SEME//NUL\u{0}1");
    publish("B01234", 541, "B01234.NUL1", with_nul).await;
    publish(
        "B05678",
        543,
        "B05678.DLVP1",
        instruction("B05678", "B01234", true, "DLVP1", 100_000, None),
    )
    .await;

    let config = test_config();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = start_intake(&config, &database.pool, &jetstream, 1, &stopped).await;

    let mut outbound = outbound_messages(&jetstream).await;
    let mut advices = Advices::new();
    // Well inside the consumer's 30 s ack wait: no redelivery can help a blocked worker.
    let deadline = Instant::now() + Duration::from_secs(15);
    let done = |advices: &Advices| {
        has(advices, "B01234", "RCVP1", "MTCH//MACH")
            && has(advices, "B05678", "DLVP1", "MTCH//MACH")
            && has(advices, "B01234", "POISON", "IPRC//REJT/NARR")
            && advices.iter().any(|((participant, related), statuses)| {
                participant == "B01234"
                    && related != "POISON"
                    && statuses.iter().any(|s| s.starts_with("IPRC//REJT"))
            })
    };
    read_advices_until(
        &mut outbound,
        &mut advices,
        deadline,
        "missing advices",
        done,
    )
    .await;
    let counts = db
        .query_one(
            "SELECT (SELECT count(*) FROM instructions WHERE sender_reference = 'POISON'),
                    (SELECT count(*) FROM message_journal WHERE sender_reference = 'POISON'),
                    (SELECT count(*) FROM message_journal
                     WHERE direction = 'in' AND fin_text LIKE '%NUL' || chr(65533) || '1%'),
                    (SELECT count(*) FROM instruction_matches)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 0, "the refused message is no SI");
    assert_eq!(
        counts.get::<_, i64>(1),
        1,
        "the refused message is journalled"
    );
    assert_eq!(counts.get::<_, i64>(2), 1, "the NUL is stored as U+FFFD");
    assert_eq!(counts.get::<_, i64>(3), 1, "RCVP1 and DLVP1 matched");

    // Everything acknowledged: nothing left to come back.
    let mut consumer = intake::intake_consumer(&jetstream).await.unwrap();
    wait_until_all_acknowledged(&mut consumer, Duration::from_secs(10), "intake").await;
    db.batch_execute("ALTER TABLE instructions DROP CONSTRAINT test_refuses_poison")
        .await
        .unwrap();
    let violations = hostdb::audit::run(&database.pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_failed_for_a_moment_comes_back_after_the_retry_delay() {
    // Goal: a batch whose transaction fails for a passing reason (here a statement timeout
    // while another session locks the journal) is processed soon after the cause is gone,
    // not after the consumer's 30 s ack wait.
    // Method: intake's pool has a 300 ms statement timeout; a session holds `message_journal`
    // locked for 2 s while a matching pair is published, so each batch fails; the pair must
    // be matched (MT548 MACH to both) within 10 s of the lock's release, well inside the ack
    // wait, and nothing may be left unacknowledged.
    let Some(database) = seeded_database("settlement_intake_transient").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_client, jetstream) = initialised_bus(&nats.bus_config(), "intake-transient").await;
    let mut impatient = database.config.clone();
    impatient.statement_timeout_ms = 300;
    let intake_pool = hostdb::connect(&impatient).unwrap();

    let mut locker = hostdb::client(&database.pool).await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE message_journal IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let config = test_config();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = start_intake(&config, &intake_pool, &jetstream, 1, &stopped).await;
    publish_inbound(
        &jetstream,
        "B01234",
        541,
        "B01234.RCVT1",
        instruction("B01234", "B05678", false, "RCVT1", 100_000, None),
    )
    .await;
    publish_inbound(
        &jetstream,
        "B05678",
        543,
        "B05678.DLVT1",
        instruction("B05678", "B01234", true, "DLVT1", 100_000, None),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: i64 = database
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM instructions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, 0,
        "nothing can be stored while the journal is locked"
    );
    lock.rollback().await.unwrap();
    let released = Instant::now();

    let mut outbound = outbound_messages(&jetstream).await;
    let mut advices = Advices::new();
    read_advices_until(
        &mut outbound,
        &mut advices,
        released + Duration::from_secs(10),
        "not matched within 10 s of the lock's release",
        |advices| {
            has(advices, "B01234", "RCVT1", "MTCH//MACH")
                && has(advices, "B05678", "DLVT1", "MTCH//MACH")
        },
    )
    .await;
    let mut consumer = intake::intake_consumer(&jetstream).await.unwrap();
    wait_until_all_acknowledged(&mut consumer, Duration::from_secs(10), "intake").await;
    let violations = hostdb::audit::run(&database.pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
}
