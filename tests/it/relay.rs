//! The outbox relay against a real PostgreSQL and nats-server: a republished row is dropped as
//! a copy, and a database restored to an earlier point never loses a message to an id it
//! reissued (V0019).

use ccass::hostdb::Pool;
use ccass::relay::{self, MessageIds, RelayError};

use crate::harness::nats::{NatsServer, initialised_bus};
use crate::harness::postgres::database;

const SUBJECT: &str = "ccass.v1.outbound.B01234";

async fn store(pool: &Pool, dedupe_id: &str, payload: &str) {
    let client = ccass::hostdb::client(pool).await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (subject, dedupe_id, payload) VALUES ($1, $2, $3)",
            &[&SUBJECT, &dedupe_id, &payload.as_bytes()],
        )
        .await
        .unwrap();
}

async fn unpublished(pool: &Pool) -> i64 {
    let client = ccass::hostdb::client(pool).await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every message on OUTBOUND as (Nats-Msg-Id, payload), in stream order.
async fn on_stream(jetstream: &async_nats::jetstream::Context) -> Vec<(String, String)> {
    let mut stream = jetstream.get_stream("OUTBOUND").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        messages.push((id, String::from_utf8_lossy(&message.payload).into_owned()));
    }
    messages
}

#[tokio::test]
async fn a_restored_database_never_loses_a_message_to_a_reissued_id() {
    // Goal: after a point-in-time restore, a new message whose id the lost timeline already
    // published is neither dropped silently nor marked published: the relay refuses it as an
    // id collision until `ccass outbox new-incarnation`, then publishes it under a new id;
    // a row republished after a crash (same id, same message) is still dropped as a copy.
    // Method: database A; a backup copy of it taken before A publishes (same instance id and
    // sequences); A publishes "lost"; the copy stores a different message with the same
    // dedupe id; relay the copy before and after a new incarnation; then republish a row of
    // A by clearing its published mark.
    let Some(original) = database("relay_restore").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let bus_config = nats.bus_config();
    let (_, jetstream) = initialised_bus(&bus_config, "relay-test").await;

    let restored = original.backup_copy("relay_restore_copy").await;
    store(&original.pool, "statement:2026-12-07:B01234", "lost").await;
    assert_eq!(
        relay::relay_once(&original.pool, &jetstream, 64)
            .await
            .unwrap(),
        1
    );

    // The restored database reissues the id for another message.
    store(&restored.pool, "statement:2026-12-07:B01234", "new").await;
    let error = relay::relay_once(&restored.pool, &jetstream, 64)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RelayError::IdCollision { stream, sequence: 1, .. } if stream == "OUTBOUND"),
        "{error}"
    );
    assert!(error.to_string().contains("ccass outbox new-incarnation"));
    assert_eq!(
        unpublished(&restored.pool).await,
        1,
        "the row must stay unpublished"
    );

    // The error names the row to begin the incarnation at; a boundary at or below where
    // the last one began, or past the next id, is refused.
    let RelayError::IdCollision { outbox_id, .. } = error else {
        unreachable!()
    };
    assert!(matches!(
        ccass::hostdb::outbox::begin_incarnation(&restored.pool, "too far", Some(outbox_id + 2))
            .await,
        Err(ccass::hostdb::outbox::IncarnationError::FirstIdOutOfRange { .. })
    ));
    let started = ccass::hostdb::outbox::begin_incarnation(
        &restored.pool,
        "restored in test",
        Some(outbox_id),
    )
    .await
    .unwrap();
    assert_eq!(
        (started.incarnation, started.first_outbox_id),
        (1, outbox_id)
    );
    assert_eq!(
        relay::relay_once(&restored.pool, &jetstream, 64)
            .await
            .unwrap(),
        1
    );
    assert_eq!(unpublished(&restored.pool).await, 0);
    // A row stored after the incarnation is published under the new prefix too.
    store(&restored.pool, "statement:2026-12-08:B01234", "later").await;
    assert_eq!(
        relay::relay_once(&restored.pool, &jetstream, 64)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        ccass::hostdb::outbox::begin_incarnation(&restored.pool, "again", Some(outbox_id)).await,
        Err(ccass::hostdb::outbox::IncarnationError::FirstIdOutOfRange { .. })
    ));

    let ids = {
        let client = ccass::hostdb::client(&restored.pool).await.unwrap();
        MessageIds::load(&**client).await.unwrap()
    };
    let messages = on_stream(&jetstream).await;
    let payloads: Vec<&str> = messages
        .iter()
        .map(|(_, payload)| payload.as_str())
        .collect();
    assert_eq!(payloads, ["lost", "new", "later"]);
    assert_ne!(messages[0].0, messages[1].0);
    for (id, _) in &messages[1..] {
        assert!(id.contains(".1:statement:"), "{id}");
    }
    let dedupe_ids: Vec<Option<&str>> = messages
        .iter()
        .map(|(id, _)| ids.dedupe_id_in(id))
        .collect();
    assert_eq!(
        dedupe_ids,
        [
            Some("statement:2026-12-07:B01234"),
            Some("statement:2026-12-07:B01234"),
            Some("statement:2026-12-08:B01234")
        ]
    );
    assert_eq!(ids.dedupe_id_in("0123:statement:x"), None);

    // A crash between publish and commit: the row is published again, the copy dropped.
    {
        let client = ccass::hostdb::client(&original.pool).await.unwrap();
        client
            .execute("UPDATE outbox SET published_at = NULL", &[])
            .await
            .unwrap();
    }
    assert_eq!(
        relay::relay_once(&original.pool, &jetstream, 64)
            .await
            .unwrap(),
        1
    );
    assert_eq!(on_stream(&jetstream).await.len(), 3);
}

#[tokio::test]
async fn several_relays_publish_a_participants_messages_in_the_order_they_were_stored() {
    // Goal: with several relays running (`ccass settlement` runs one per replica, two in the
    // chart), a participant's messages still reach OUTBOUND in the order they were stored,
    // so a PSS never reads an SI's "matched" before its "accepted", nor a confirmation
    // before the status it follows. Method: 3,000 rows for one participant, three relays
    // started together with small batches, then the stream's order against the rows'.
    let Some(database) = database("relay_order").await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_client, jetstream) = initialised_bus(&nats.bus_config(), "relay-order").await;
    let pool = &database.pool;
    let client = ccass::hostdb::client(pool).await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (subject, dedupe_id, payload)
             SELECT $1, 'order:' || n, convert_to(lpad(n::text, 5, '0'), 'UTF8')
             FROM generate_series(1, 3000) AS n",
            &[&SUBJECT],
        )
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relays: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(relay::run(
                pool.clone(),
                jetstream.clone(),
                50,
                std::time::Duration::from_millis(5),
                std::time::Duration::from_millis(50),
                stopped.clone(),
            ))
        })
        .collect();
    let started = std::time::Instant::now();
    while unpublished(pool).await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "relays did not publish everything"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    for relay in relays {
        relay.await.unwrap();
    }
    let payloads: Vec<String> = on_stream(&jetstream)
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    let expected: Vec<String> = (1..=3000).map(|n| format!("{n:05}")).collect();
    assert_eq!(payloads.len(), expected.len());
    let first_out_of_order = payloads
        .iter()
        .zip(&expected)
        .position(|(have, want)| have != want);
    assert_eq!(
        first_out_of_order, None,
        "OUTBOUND order differs from the outbox order"
    );
}
