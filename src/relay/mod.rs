//! The outbox relay: publishes committed `outbox` rows to JetStream at least once, with
//! `Nats-Msg-Id` = the row's dedupe id so OUTBOUND and EVENTS hold each once, then marks them
//! published.
//!
//! One transaction per batch: take up to `relay_batch_max` unpublished rows (`FOR UPDATE
//! SKIP LOCKED`, so several relays share the queue), publish them all pipelined, await every
//! publish ack together, mark them published, commit. A crash between publish and commit
//! republishes the batch; the stream's duplicate window drops the copies.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use std::future::IntoFuture as _;

use crate::hostdb::outbox as sql;
use crate::hostdb::{HostDbError, Pool};
use crate::settlement::metrics as names;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    #[error("publish of outbox row to {subject} failed: {message}")]
    Publish { subject: String, message: String },
}

/// Publishes one batch; returns how many rows were published (0: the outbox is empty).
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
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.dedupe_id.as_str());
        let ack = jetstream
            .publish_with_headers(row.subject.clone(), headers, row.payload.clone().into())
            .await
            .map_err(|error| RelayError::Publish {
                subject: row.subject.clone(),
                message: error.to_string(),
            })?;
        pending.push(ack);
    }
    for (result, row) in futures::future::join_all(pending.into_iter().map(|ack| ack.into_future()))
        .await
        .into_iter()
        .zip(&rows)
    {
        result.map_err(|error| RelayError::Publish {
            subject: row.subject.clone(),
            message: error.to_string(),
        })?;
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.outbox_id).collect();
    sql::mark_published(&transaction, &ids).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit outbox relay", error))?;
    Ok(rows.len())
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
        let delay = match relay_once(&pool, &jetstream, batch_max).await {
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
