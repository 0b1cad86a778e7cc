//! SQL of end-of-day and on-demand statements (MT535/536/537): a participant's accounts,
//! holdings, the day's journal rows and its open instructions; writing statement pages to
//! the outbox and the outbound message journal.
//!
//! Reads run inside the caller's transaction so a statement set is one consistent snapshot
//! (the CLI opens a read-only one; the MT549 answer uses intake's batch transaction).

use time::Date;
use tokio_postgres::Transaction;

use super::HostDbError;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// A participant's logical terminal and its stock accounts (ascending), or `None` when the
/// participant does not exist.
pub async fn participant_accounts(
    transaction: &Transaction<'_>,
    participant_id: &str,
) -> Result<Option<(String, Vec<String>)>, HostDbError> {
    let Some(row) = transaction
        .query_opt(
            "SELECT logical_terminal FROM participants WHERE participant_id = $1",
            &[&participant_id],
        )
        .await
        .map_err(db("load participant terminal"))?
    else {
        return Ok(None);
    };
    let accounts = transaction
        .query(
            "SELECT account_id FROM stock_accounts WHERE participant_id = $1 ORDER BY account_id",
            &[&participant_id],
        )
        .await
        .map_err(db("load participant accounts"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Some((row.get(0), accounts)))
}

/// Participants that have at least one stock account, ascending.
pub async fn participants_with_accounts(
    transaction: &Transaction<'_>,
) -> Result<Vec<String>, HostDbError> {
    Ok(transaction
        .query(
            "SELECT DISTINCT participant_id FROM stock_accounts ORDER BY participant_id",
            &[],
        )
        .await
        .map_err(db("load participants with accounts"))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// One stored balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingRow {
    pub account_id: String,
    pub isin: String,
    pub security_name: String,
    pub quantity: i64,
}

/// The participant's non-zero stored balances (`holdings`), by account and ISIN.
pub async fn holdings(
    transaction: &Transaction<'_>,
    participant_id: &str,
) -> Result<Vec<HoldingRow>, HostDbError> {
    Ok(transaction
        .query(
            "SELECT h.account_id, h.isin, s.name, h.quantity
             FROM holdings h
             JOIN stock_accounts a ON a.account_id = h.account_id
             JOIN securities s ON s.isin = h.isin
             WHERE a.participant_id = $1 AND h.quantity <> 0
             ORDER BY h.account_id, h.isin",
            &[&participant_id],
        )
        .await
        .map_err(db("load holdings for a statement"))?
        .iter()
        .map(|row| HoldingRow {
            account_id: row.get(0),
            isin: row.get(1),
            security_name: row.get(2),
            quantity: row.get(3),
        })
        .collect())
}

/// One leg of a journal row on one of the participant's accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    pub movement_id: i64,
    pub account_id: String,
    /// The participant's account received (`true`) or delivered.
    pub received: bool,
    pub isin: String,
    pub quantity: i64,
    pub movement_kind: String,
    pub settlement_date: Date,
    /// The journal row's `reference` (`match:17`, `seed:opening`...).
    pub journal_reference: String,
    /// The participant's own instruction behind a settlement, when there is one.
    pub sender_reference: Option<String>,
    /// `FOP` or `DVP` of that instruction.
    pub payment: Option<String>,
}

/// Every leg of the day's `holding_movements` rows on the participant's accounts (a transfer
/// between two of its own accounts gives two legs), by movement id.
pub async fn movements(
    transaction: &Transaction<'_>,
    participant_id: &str,
    settlement_date: Date,
) -> Result<Vec<MovementRow>, HostDbError> {
    Ok(transaction
        .query(
            "WITH legs AS (
                 SELECT m.movement_id, m.to_account_id AS account_id, true AS received, m.isin,
                        m.quantity, m.movement_kind, m.settlement_date, m.reference
                 FROM holding_movements m
                 WHERE m.settlement_date = $2 AND m.to_account_id IS NOT NULL
                 UNION ALL
                 SELECT m.movement_id, m.from_account_id, false, m.isin,
                        m.quantity, m.movement_kind, m.settlement_date, m.reference
                 FROM holding_movements m
                 WHERE m.settlement_date = $2 AND m.from_account_id IS NOT NULL
             )
             SELECT l.movement_id, l.account_id, l.received, l.isin, l.quantity,
                    l.movement_kind, l.settlement_date, l.reference, i.sender_reference, i.payment
             FROM legs l
             JOIN stock_accounts a ON a.account_id = l.account_id AND a.participant_id = $1
             LEFT JOIN instruction_matches im
                 ON l.movement_kind = 'settlement' AND l.reference = 'match:' || im.match_id
             LEFT JOIN instructions i ON i.instruction_id = CASE WHEN l.received
                 THEN im.receiving_instruction_id ELSE im.delivering_instruction_id END
             ORDER BY l.movement_id, l.received",
            &[&participant_id, &settlement_date],
        )
        .await
        .map_err(db("load the day's movements for a statement"))?
        .iter()
        .map(|row| MovementRow {
            movement_id: row.get(0),
            account_id: row.get(1),
            received: row.get(2),
            isin: row.get(3),
            quantity: row.get(4),
            movement_kind: row.get(5),
            settlement_date: row.get(6),
            journal_reference: row.get(7),
            sender_reference: row.get(8),
            payment: row.get(9),
        })
        .collect())
}

/// An instruction not (fully) settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub instruction_id: i64,
    pub account_id: String,
    pub sender_reference: String,
    pub isin: String,
    /// Still to settle: the instruction's quantity less what runs settled.
    pub quantity: i64,
    /// `deliver` or `receive`.
    pub direction: String,
    /// `FOP` or `DVP`.
    pub payment: String,
    pub settlement_date: Date,
    pub status: String,
}

/// The participant's open instructions: new instructions unmatched, matched, pending or
/// partially settled whose match has no `complete` settlement marker (a settled SI keeps
/// status `matched` until the sweep after the run moves it to `settled`, V0016; its
/// settlement is in `instruction_settlements`).
pub async fn pending(
    transaction: &Transaction<'_>,
    participant_id: &str,
) -> Result<Vec<PendingRow>, HostDbError> {
    Ok(transaction
        .query(
            "SELECT i.instruction_id, i.account_id, i.sender_reference, i.isin,
                    i.quantity - coalesce(st.settled, 0), i.direction, i.payment,
                    i.settlement_date, i.status
             FROM instructions i
             LEFT JOIN instruction_matches im
                 ON im.delivering_instruction_id = i.instruction_id
                 OR im.receiving_instruction_id = i.instruction_id
             LEFT JOIN LATERAL (
                 SELECT sum(s.quantity)::bigint AS settled, bool_or(s.complete) AS complete
                 FROM instruction_settlements s WHERE s.match_id = im.match_id
             ) st ON true
             WHERE i.participant_id = $1 AND i.function = 'NEWM'
               AND i.status IN ('unmatched', 'matched', 'pending', 'partially_settled')
               AND NOT coalesce(st.complete, false)
             ORDER BY i.account_id, i.settlement_date, i.instruction_id",
            &[&participant_id],
        )
        .await
        .map_err(db("load pending instructions for a statement"))?
        .iter()
        .map(|row| PendingRow {
            instruction_id: row.get(0),
            account_id: row.get(1),
            sender_reference: row.get(2),
            isin: row.get(3),
            quantity: row.get(4),
            direction: row.get(5),
            payment: row.get(6),
            settlement_date: row.get(7),
            status: row.get(8),
        })
        .collect())
}

/// One statement page to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPageRow<'a> {
    pub participant_id: &'a str,
    pub subject: &'a str,
    pub dedupe_id: &'a str,
    pub message_type: &'a str,
    pub sender_reference: &'a str,
    pub text_sha256: &'a [u8],
    pub fin_text: &'a str,
}

/// Puts pages in the outbox and the outbound message journal; a page whose dedupe id is
/// already in the outbox (sent before) is skipped, journal row included. Returns how many
/// pages were new.
pub async fn enqueue_pages(
    transaction: &Transaction<'_>,
    pages: &[StatementPageRow<'_>],
) -> Result<u64, HostDbError> {
    let insert_outbox = transaction
        .prepare(
            "INSERT INTO outbox (subject, dedupe_id, payload) VALUES ($1, $2, $3)
             ON CONFLICT (dedupe_id) DO NOTHING",
        )
        .await
        .map_err(db("prepare statement outbox insert"))?;
    let insert_journal = transaction
        .prepare(
            "INSERT INTO message_journal (direction, participant_id, message_type,
                 sender_reference, sent_at, text_sha256, fin_text)
             VALUES ('out', $1, $2, $3, now(), $4, $5)",
        )
        .await
        .map_err(db("prepare statement journal insert"))?;
    let mut added = 0;
    for page in pages {
        let inserted = transaction
            .execute(
                &insert_outbox,
                &[&page.subject, &page.dedupe_id, &page.fin_text.as_bytes()],
            )
            .await
            .map_err(db("insert statement page into the outbox"))?;
        if inserted == 0 {
            continue;
        }
        transaction
            .execute(
                &insert_journal,
                &[
                    &page.participant_id,
                    &page.message_type,
                    &page.sender_reference,
                    &page.text_sha256,
                    &page.fin_text,
                ],
            )
            .await
            .map_err(db("journal outbound statement page"))?;
        added += 1;
    }
    Ok(added)
}

/// Whether a Batch Settlement Run holds the leader lock now (end-of-day statements wait for
/// it to finish). Takes the lock for an instant when it is free.
pub async fn settlement_run_in_progress(
    pool: &super::Pool,
    leader_lock_key: i64,
) -> Result<bool, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin leader lock probe"))?;
    let free: bool = transaction
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&leader_lock_key])
        .await
        .map_err(db("probe settlement leader lock"))?
        .get(0);
    transaction
        .rollback()
        .await
        .map_err(db("end leader lock probe"))?;
    Ok(!free)
}
