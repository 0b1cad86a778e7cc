//! The outbox relay: publishes committed `outbox` rows to JetStream at least once, with
//! `Nats-Msg-Id` = the database's instance id and the message's dedupe id
//! ([`stream_message_id`]) so OUTBOUND and EVENTS hold each once, then marks the rows published.
//!
//! One transaction per batch: take the relay lock (one relay publishes at a time, so a
//! participant's messages reach the stream in the order they were stored; the others poll)
//! and the oldest unpublished rows worth at most `relay_batch_max` messages (at least one
//! row), turn
//! them into messages, publish them pipelined in slices of at most `relay_batch_max` (await
//! every publish ack of a slice together), mark the rows published, commit. A plain row is one
//! message (its payload). A Batch Settlement Run's compact row (V0010) is expanded here into
//! its MT544–547 and MT548 messages ([`crate::settlement::run::confirmation_messages`], from
//! the row and the instructions' stored fields), each with its own dedupe id. A crash between
//! publish and commit republishes the batch; the stream's duplicate window drops the copies.
//!
//! A message the stream reports as a duplicate is checked against the copy it holds: the
//! same id with another subject or payload (a database restored to a point before messages
//! it had published, reissuing their ids) is [`RelayError::IdCollision`], so the batch stays
//! unpublished and the relay stops loudly instead of losing the message; `ccass outbox
//! new-incarnation` ([`MessageIds`], V0019) gives the rows stored after a restore ids of
//! their own.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use std::future::IntoFuture as _;
use tokio_postgres::GenericClient;

use crate::hostdb::outbox::{self as sql, ConfirmationBatch, PendingRow};
use crate::hostdb::{HostDbError, Pool};
use crate::settlement::metrics as names;
use crate::settlement::run::{ConfirmationError, confirmation_messages};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    #[error("publish of outbox row to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    /// A compact row that cannot be expanded (stays unpublished; retried).
    #[error("expand outbox row {dedupe_id}: {message}")]
    Expand { dedupe_id: String, message: String },
    /// The stream already holds a different message under this id: the database reissued an
    /// id it had published before (a point-in-time restore). The batch stays unpublished.
    #[error(
        "message id {message_id} of outbox row {outbox_id} is already taken in {stream} (sequence {sequence}) by a different message: the database reissued an id it had published (restored to an earlier point?); run `ccass outbox new-incarnation --from-outbox-id {outbox_id}` (docs/operations.md, restore)"
    )]
    IdCollision {
        outbox_id: i64,
        message_id: String,
        stream: String,
        sequence: u64,
    },
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The outbox row it comes from (a compact row is many messages).
    pub outbox_id: i64,
    pub subject: String,
    pub dedupe_id: String,
    pub payload: Vec<u8>,
}

/// The messages `rows` stand for, in row order: a plain row's payload, a compact row's
/// confirmations (reading the instructions they confirm through `client`).
pub async fn expand(
    client: &impl GenericClient,
    rows: &[PendingRow],
) -> Result<Vec<Message>, RelayError> {
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        if row.expansion.is_none() {
            messages.push(Message {
                outbox_id: row.outbox_id,
                subject: row.subject.clone(),
                dedupe_id: row.dedupe_id.clone(),
                payload: row.payload.clone(),
            });
            continue;
        }
        let expand_error = |message: String| RelayError::Expand {
            dedupe_id: row.dedupe_id.clone(),
            message,
        };
        if row.expansion.as_deref() != Some(sql::BSR_CONFIRMATIONS) {
            return Err(expand_error(format!(
                "unknown expansion {:?}",
                row.expansion
            )));
        }
        let batch = ConfirmationBatch::decode(&row.payload)
            .map_err(|error| expand_error(error.to_string()))?;
        let ids: Vec<i64> = batch.entries.iter().map(|e| e.instruction_id).collect();
        let facts: HashMap<i64, sql::InstructionFacts> = sql::instruction_facts(client, &ids)
            .await?
            .into_iter()
            .map(|facts| (facts.instruction_id, facts))
            .collect();
        for entry in &batch.entries {
            let facts = facts.get(&entry.instruction_id).ok_or_else(|| {
                expand_error(
                    ConfirmationError::MissingInstruction {
                        instruction_id: entry.instruction_id,
                    }
                    .to_string(),
                )
            })?;
            let built = confirmation_messages(&batch, entry, facts)
                .map_err(|error| expand_error(error.to_string()))?;
            messages.extend(built.into_iter().map(|(dedupe_id, text)| Message {
                outbox_id: row.outbox_id,
                subject: row.subject.clone(),
                dedupe_id,
                payload: text.into_bytes(),
            }));
        }
    }
    Ok(messages)
}

/// Every message on `subject` in the outbox (published or not), expanded as the relay
/// publishes them, oldest first (tests, operators).
pub async fn messages_of_subject(pool: &Pool, subject: &str) -> Result<Vec<Message>, RelayError> {
    let client = crate::hostdb::client(pool).await?;
    let rows = sql::rows_of_subject(&**client, subject).await?;
    expand(&**client, &rows).await
}

/// How the relay names messages (`Nats-Msg-Id`): the database's instance id (V0012), so two
/// databases' equal dedupe ids never collide in a stream's duplicate window, the outbox
/// incarnation of the row (V0019; none before the first restore), so a restored database's
/// new rows never take an id of the timeline it lost, and the row's dedupe id, so a
/// republished row keeps its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageIds {
    instance_id: String,
    /// (first outbox id, incarnation), ascending.
    incarnations: Vec<(i64, i32)>,
}

impl MessageIds {
    pub fn new(instance_id: String, incarnations: Vec<(i64, i32)>) -> MessageIds {
        MessageIds {
            instance_id,
            incarnations,
        }
    }

    /// Reads the instance id and the incarnations (one round trip).
    pub async fn load(client: &impl GenericClient) -> Result<MessageIds, HostDbError> {
        let (instance_id, incarnations) = sql::message_id_parts(client).await?;
        Ok(MessageIds::new(instance_id, incarnations))
    }

    /// The incarnation of outbox row `outbox_id` (0: before the first).
    pub fn incarnation_of(&self, outbox_id: i64) -> i32 {
        let later = self
            .incarnations
            .partition_point(|(first_outbox_id, _)| *first_outbox_id <= outbox_id);
        later
            .checked_sub(1)
            .map_or(0, |index| self.incarnations[index].1)
    }

    /// The `Nats-Msg-Id` of the message `dedupe_id` of outbox row `outbox_id`:
    /// `{instance_id}:{dedupe_id}` in incarnation 0, `{instance_id}.{n}:{dedupe_id}` after.
    pub fn of(&self, outbox_id: i64, dedupe_id: &str) -> String {
        match self.incarnation_of(outbox_id) {
            0 => format!("{}:{dedupe_id}", self.instance_id),
            incarnation => format!("{}.{incarnation}:{dedupe_id}", self.instance_id),
        }
    }

    /// The dedupe id in `message_id` if this database (any incarnation) named it.
    pub fn dedupe_id_in<'m>(&self, message_id: &'m str) -> Option<&'m str> {
        let (prefix, dedupe_id) = message_id.split_once(':')?;
        let incarnation = prefix.strip_prefix(self.instance_id.as_str())?;
        (incarnation.is_empty()
            || incarnation
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .then_some(dedupe_id)
    }
}

/// Publishes `messages` pipelined, at most `window` awaiting their acks at a time; a message
/// the stream calls a duplicate must equal the copy it holds ([`check_duplicate`]).
async fn publish(
    jetstream: &jetstream::Context,
    ids: &MessageIds,
    messages: &[Message],
    window: usize,
) -> Result<(), RelayError> {
    for slice in messages.chunks(window.max(1)) {
        let mut pending = Vec::with_capacity(slice.len());
        for message in slice {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                ids.of(message.outbox_id, &message.dedupe_id).as_str(),
            );
            let ack = jetstream
                .publish_with_headers(
                    message.subject.clone(),
                    headers,
                    message.payload.clone().into(),
                )
                .await
                .map_err(|error| RelayError::Publish {
                    subject: message.subject.clone(),
                    message: error.to_string(),
                })?;
            pending.push(ack);
        }
        for (result, message) in
            futures::future::join_all(pending.into_iter().map(|ack| ack.into_future()))
                .await
                .into_iter()
                .zip(slice)
        {
            let ack = result.map_err(|error| RelayError::Publish {
                subject: message.subject.clone(),
                message: error.to_string(),
            })?;
            if ack.duplicate {
                check_duplicate(jetstream, &ack, message, ids).await?;
            }
        }
    }
    Ok(())
}

/// A duplicate ack names the stored copy's sequence: the copy must be this message (a row
/// republished after a crash). Another subject or payload is an id collision. A copy the
/// stream no longer holds (limits, purge) cannot be compared: warned and counted, not fatal.
async fn check_duplicate(
    jetstream: &jetstream::Context,
    ack: &jetstream::publish::PublishAck,
    message: &Message,
    ids: &MessageIds,
) -> Result<(), RelayError> {
    let message_id = ids.of(message.outbox_id, &message.dedupe_id);
    // One request: the stream handle without its info.
    let stored = match jetstream.get_stream_no_info(&ack.stream).await {
        Ok(stream) => stream
            .get_raw_message(ack.sequence)
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match stored {
        Ok(stored)
            if stored.subject.as_str() == message.subject
                && stored.payload.as_ref() == message.payload.as_slice() =>
        {
            Ok(())
        }
        Ok(_) => {
            metrics::counter!(names::RELAY_ID_COLLISIONS_TOTAL).increment(1);
            Err(RelayError::IdCollision {
                outbox_id: message.outbox_id,
                message_id,
                stream: ack.stream.clone(),
                sequence: ack.sequence,
            })
        }
        Err(error) => {
            metrics::counter!(names::RELAY_DUPLICATES_UNCHECKED_TOTAL).increment(1);
            tracing::warn!(
                %error,
                message_id,
                stream = ack.stream,
                sequence = ack.sequence,
                "outbox relay: duplicate ack, but the stored copy cannot be read to compare"
            );
            Ok(())
        }
    }
}

/// Publishes one batch; returns how many messages were published (0: the outbox is empty, or
/// another relay holds the relay lock).
/// Reads the message id parts ([`MessageIds`]) in the batch's transaction, so an incarnation
/// begun meanwhile applies from the next batch on.
pub async fn relay_once(
    pool: &Pool,
    jetstream: &jetstream::Context,
    batch_max: i64,
) -> Result<usize, RelayError> {
    let mut client = crate::hostdb::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| HostDbError::from_postgres("begin outbox relay", error))?;
    let rows = sql::take_unpublished(&transaction, batch_max).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids = MessageIds::load(&*transaction).await?;
    let messages = expand(&*transaction, &rows).await?;
    publish(
        jetstream,
        &ids,
        &messages,
        usize::try_from(batch_max).unwrap_or(1),
    )
    .await?;
    let outbox_ids: Vec<i64> = rows.iter().map(|row| row.outbox_id).collect();
    sql::mark_published(&transaction, &outbox_ids).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit outbox relay", error))?;
    Ok(messages.len())
}

/// Relays until `shutdown` turns true.
pub async fn run(
    pool: Pool,
    jetstream: jetstream::Context,
    batch_max: i64,
    poll_interval: Duration,
    retry_delay: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let relayed = relay_once(&pool, &jetstream, batch_max).await;
        let delay = match relayed {
            Ok(0) => poll_interval,
            Ok(published) => {
                metrics::counter!(names::RELAY_PUBLISHED_TOTAL).increment(published as u64);
                continue;
            }
            Err(error) => {
                metrics::counter!(names::RELAY_FAILURES_TOTAL).increment(1);
                // A collision needs an operator (it never clears by itself); the rest retry.
                if matches!(error, RelayError::IdCollision { .. }) {
                    tracing::error!(%error, "outbox relay: batch not published; retrying");
                } else {
                    tracing::warn!(%error, "outbox relay: batch not published; retrying");
                }
                retry_delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_each_row_by_its_incarnation() {
        // Goal: rows before the first incarnation keep the V0012 id; a row belongs to the
        // last incarnation that began at or before its outbox id; an id parses back to its
        // dedupe id only when this instance named it. Method: boundaries at 10 and 20.
        let ids = MessageIds::new("abc".to_owned(), vec![(10, 1), (20, 2)]);
        let cases = [(1, 0), (9, 0), (10, 1), (19, 1), (20, 2), (i64::MAX, 2)];
        for (outbox_id, incarnation) in cases {
            assert_eq!(ids.incarnation_of(outbox_id), incarnation, "{outbox_id}");
        }
        assert_eq!(ids.of(9, "bsr:1:2:545"), "abc:bsr:1:2:545");
        assert_eq!(ids.of(10, "bsr:1:2:545"), "abc.1:bsr:1:2:545");
        assert_eq!(ids.of(25, "x"), "abc.2:x");
        assert_eq!(ids.dedupe_id_in("abc:bsr:1:2:545"), Some("bsr:1:2:545"));
        assert_eq!(ids.dedupe_id_in("abc.2:x"), Some("x"));
        for foreign in ["abd:x", "abcd:x", "abc.:x", "abc.1a:x", "x", "ab:c"] {
            assert_eq!(ids.dedupe_id_in(foreign), None, "{foreign}");
        }
        let none = MessageIds::new("abc".to_owned(), Vec::new());
        assert_eq!(none.of(1, "x"), "abc:x");
    }
}
