//! The outbox relay: publishes committed `outbox` rows to JetStream at least once, with
//! `Nats-Msg-Id` = the database's instance id and the message's dedupe id
//! ([`stream_message_id`]) so OUTBOUND and EVENTS hold each once, then marks the rows published.
//!
//! One transaction per batch: take unpublished rows (`FOR UPDATE SKIP LOCKED`, so several
//! relays share the queue) worth at most `relay_batch_max` messages (at least one row), turn
//! them into messages, publish them pipelined in slices of at most `relay_batch_max` (await
//! every publish ack of a slice together), mark the rows published, commit. A plain row is one
//! message (its payload). A Batch Settlement Run's compact row (V0010) is expanded here into
//! its MT544–547 and MT548 messages ([`crate::settlement::run::confirmation_messages`], from
//! the row and the instructions' stored fields), each with its own dedupe id. A crash between
//! publish and commit republishes the batch; the stream's duplicate window drops the copies.

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
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
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

/// The `Nats-Msg-Id` a message is published with: the database's instance id (V0012) and the
/// row's dedupe id, so two databases' equal dedupe ids never collide in a stream's duplicate
/// window, while a republished row keeps its id.
pub fn stream_message_id(instance_id: &str, dedupe_id: &str) -> String {
    format!("{instance_id}:{dedupe_id}")
}

/// Publishes `messages` pipelined, at most `window` awaiting their acks at a time.
async fn publish(
    jetstream: &jetstream::Context,
    instance_id: &str,
    messages: &[Message],
    window: usize,
) -> Result<(), RelayError> {
    for slice in messages.chunks(window.max(1)) {
        let mut pending = Vec::with_capacity(slice.len());
        for message in slice {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                stream_message_id(instance_id, &message.dedupe_id).as_str(),
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
            result.map_err(|error| RelayError::Publish {
                subject: message.subject.clone(),
                message: error.to_string(),
            })?;
        }
    }
    Ok(())
}

/// The database's instance id (V0012), the prefix of every `Nats-Msg-Id` the relay sets. It
/// never changes, so a relay reads it once.
pub async fn instance_id(pool: &Pool) -> Result<String, RelayError> {
    let client = crate::hostdb::client(pool).await?;
    Ok(sql::instance_id(&**client).await?)
}

/// Publishes one batch with ids prefixed by `instance_id` ([`instance_id`]); returns how many
/// messages were published (0: the outbox is empty).
pub async fn relay_once(
    pool: &Pool,
    jetstream: &jetstream::Context,
    instance_id: &str,
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
    let messages = expand(&*transaction, &rows).await?;
    publish(
        jetstream,
        instance_id,
        &messages,
        usize::try_from(batch_max).unwrap_or(1),
    )
    .await?;
    let ids: Vec<i64> = rows.iter().map(|row| row.outbox_id).collect();
    sql::mark_published(&transaction, &ids).await?;
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
    let mut instance: Option<String> = None;
    while !*shutdown.borrow() {
        let relayed = match instance.as_deref() {
            Some(id) => relay_once(&pool, &jetstream, id, batch_max).await,
            None => match instance_id(&pool).await {
                Ok(id) => {
                    instance = Some(id);
                    continue;
                }
                Err(error) => Err(error),
            },
        };
        let delay = match relayed {
            Ok(0) => poll_interval,
            Ok(published) => {
                metrics::counter!(names::RELAY_PUBLISHED_TOTAL).increment(published as u64);
                continue;
            }
            Err(error) => {
                metrics::counter!(names::RELAY_FAILURES_TOTAL).increment(1);
                tracing::warn!(%error, "outbox relay: batch not published; retrying");
                retry_delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}
