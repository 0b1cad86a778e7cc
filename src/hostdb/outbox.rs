//! SQL of the outbox relay: take unpublished rows, mark them published.

use tokio_postgres::Transaction;

use super::HostDbError;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub outbox_id: i64,
    pub subject: String,
    pub dedupe_id: String,
    pub payload: Vec<u8>,
}

/// The oldest unpublished rows, at most `limit`, locked (`SKIP LOCKED`: several relays share
/// the queue without waiting on each other).
pub async fn take_unpublished(
    transaction: &Transaction<'_>,
    limit: i64,
) -> Result<Vec<PendingRow>, HostDbError> {
    let rows = transaction
        .query(
            "SELECT outbox_id, subject, dedupe_id, payload FROM outbox
             WHERE published_at IS NULL ORDER BY outbox_id LIMIT $1
             FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await
        .map_err(db("take unpublished outbox rows"))?;
    Ok(rows
        .iter()
        .map(|row| PendingRow {
            outbox_id: row.get(0),
            subject: row.get(1),
            dedupe_id: row.get(2),
            payload: row.get(3),
        })
        .collect())
}

pub async fn mark_published(
    transaction: &Transaction<'_>,
    outbox_ids: &[i64],
) -> Result<(), HostDbError> {
    transaction
        .execute(
            "UPDATE outbox SET published_at = now() WHERE outbox_id = ANY($1)",
            &[&outbox_ids],
        )
        .await
        .map_err(db("mark outbox rows published"))?;
    Ok(())
}
