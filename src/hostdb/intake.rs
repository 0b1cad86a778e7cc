//! SQL of SI intake: reference data, the inbound message journal, instructions, their status
//! history, matches and the outbox rows that report them.
//!
//! Every write runs inside the caller's transaction: intake commits one fetched batch of
//! messages (journal, instructions, matches, history, outbox) at once.

use time::Date;
use tokio_postgres::Transaction;

use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// Advisory lock namespace of matching ("simt" in ASCII); the second key hashes the ISIN
/// and settlement date, so two workers never match the same pair key at once.
const MATCH_LOCK_NAMESPACE: i32 = 0x7369_6d74;

#[derive(Debug, Clone, Default)]
pub struct IntakeReferenceRows {
    /// (participant, status, logical terminal).
    pub participants: Vec<(String, String, String)>,
    /// (account, participant, status).
    pub stock_accounts: Vec<(String, String, String)>,
    /// (isin, currency, status).
    pub securities: Vec<(String, String, String)>,
}

pub async fn load_reference(pool: &Pool) -> Result<IntakeReferenceRows, HostDbError> {
    let client = super::client(pool).await?;
    let participants = client
        .query(
            "SELECT participant_id, status, logical_terminal FROM participants",
            &[],
        )
        .await
        .map_err(db("load participants"))?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let stock_accounts = client
        .query(
            "SELECT account_id, participant_id, status FROM stock_accounts",
            &[],
        )
        .await
        .map_err(db("load stock accounts"))?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let securities = client
        .query("SELECT isin, currency_code, status FROM securities", &[])
        .await
        .map_err(db("load securities"))?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    Ok(IntakeReferenceRows {
        participants,
        stock_accounts,
        securities,
    })
}

/// An inbound message as journalled.
#[derive(Debug, Clone)]
pub struct InboundMessageRow<'a> {
    pub participant_id: &'a str,
    pub message_type: &'a str,
    pub sender_reference: Option<&'a str>,
    pub fin_text: &'a str,
    pub text_sha256: &'a [u8],
    pub nats_stream: &'a str,
    pub nats_stream_sequence: i64,
}

/// Journals an inbound message; `None` when this stream sequence was journalled before (a
/// redelivery of a message whose transaction committed).
pub async fn journal_inbound(
    transaction: &Transaction<'_>,
    row: &InboundMessageRow<'_>,
) -> Result<Option<i64>, HostDbError> {
    // Stored as received but for NUL characters, which a text column refuses (text_sha256
    // is of the message as received).
    let fin_text = super::storable_text(row.fin_text);
    let sender_reference = row.sender_reference.map(super::storable_text);
    let inserted = transaction
        .query_opt(
            "INSERT INTO message_journal (direction, participant_id, message_type, sender_reference,
                 received_at, text_sha256, fin_text, nats_stream, nats_stream_sequence)
             VALUES ('in', $1, $2, $3, now(), $4, $5, $6, $7)
             ON CONFLICT (nats_stream, nats_stream_sequence) DO NOTHING
             RETURNING message_id",
            &[
                &row.participant_id,
                &row.message_type,
                &sender_reference.as_deref(),
                &row.text_sha256,
                &fin_text.as_ref(),
                &row.nats_stream,
                &row.nats_stream_sequence,
            ],
        )
        .await
        .map_err(db("journal inbound message"))?;
    Ok(inserted.map(|row| row.get(0)))
}

/// Journals an outbound message (written with the outbox row that publishes it).
pub async fn journal_outbound(
    transaction: &Transaction<'_>,
    participant_id: &str,
    message_type: &str,
    sender_reference: &str,
    text_sha256: &[u8],
    fin_text: &str,
) -> Result<(), HostDbError> {
    transaction
        .execute(
            "INSERT INTO message_journal (direction, participant_id, message_type, sender_reference,
                 sent_at, text_sha256, fin_text)
             VALUES ('out', $1, $2, $3, now(), $4, $5)",
            &[
                &participant_id,
                &message_type,
                &sender_reference,
                &text_sha256,
                &fin_text,
            ],
        )
        .await
        .map_err(db("journal outbound message"))?;
    Ok(())
}

/// An instruction as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionRow {
    pub instruction_id: i64,
    pub participant_id: String,
    pub sender_reference: String,
    pub message_type: String,
    pub function: String,
    pub previous_reference: Option<String>,
    /// `deliver` or `receive`.
    pub direction: String,
    /// `FOP` or `DVP`.
    pub payment: String,
    pub account_id: String,
    pub counterparty_participant_id: String,
    pub counterparty_account_id: Option<String>,
    pub isin: String,
    pub quantity: i64,
    pub trade_date: Option<Date>,
    pub settlement_date: Date,
    pub currency_code: Option<String>,
    pub amount_minor: Option<i64>,
    pub partial_settlement_allowed: bool,
    pub real_time: bool,
    pub status: String,
}

const INSTRUCTION_COLUMNS: &str = "instruction_id, participant_id, sender_reference, message_type,
    function, previous_reference, direction, payment, account_id, counterparty_participant_id,
    counterparty_account_id, isin, quantity, trade_date, settlement_date, currency_code,
    amount_minor, partial_settlement_allowed, real_time, status";

fn instruction_row(row: &tokio_postgres::Row) -> InstructionRow {
    InstructionRow {
        instruction_id: row.get(0),
        participant_id: row.get(1),
        sender_reference: row.get(2),
        message_type: row.get(3),
        function: row.get(4),
        previous_reference: row.get(5),
        direction: row.get(6),
        payment: row.get(7),
        account_id: row.get(8),
        counterparty_participant_id: row.get(9),
        counterparty_account_id: row.get(10),
        isin: row.get(11),
        quantity: row.get(12),
        trade_date: row.get(13),
        settlement_date: row.get(14),
        currency_code: row.get(15),
        amount_minor: row.get(16),
        partial_settlement_allowed: row.get(17),
        real_time: row.get(18),
        status: row.get(19),
    }
}

/// Inserts an instruction (its `instruction_id` and `status` are ignored: the status is
/// `status`); `None` when the participant already used this sender's reference.
pub async fn insert_instruction(
    transaction: &Transaction<'_>,
    row: &InstructionRow,
    received_message_id: i64,
) -> Result<Option<i64>, HostDbError> {
    let inserted = transaction
        .query_opt(
            "INSERT INTO instructions (participant_id, sender_reference, message_type, function,
                 previous_reference, direction, payment, account_id, counterparty_participant_id,
                 counterparty_account_id, isin, quantity, trade_date, settlement_date,
                 currency_code, amount_minor, partial_settlement_allowed, real_time, status,
                 received_message_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20)
             ON CONFLICT (participant_id, sender_reference) DO NOTHING
             RETURNING instruction_id",
            &[
                &row.participant_id,
                &row.sender_reference,
                &row.message_type,
                &row.function,
                &row.previous_reference,
                &row.direction,
                &row.payment,
                &row.account_id,
                &row.counterparty_participant_id,
                &row.counterparty_account_id,
                &row.isin,
                &row.quantity,
                &row.trade_date,
                &row.settlement_date,
                &row.currency_code,
                &row.amount_minor,
                &row.partial_settlement_allowed,
                &row.real_time,
                &row.status,
                &received_message_id,
            ],
        )
        .await
        .map_err(db("insert instruction"))?;
    Ok(inserted.map(|row| row.get(0)))
}

/// Serialises matching of one (ISIN, settlement date) key until the transaction ends. Call
/// with the batch's keys in ascending order so concurrent batches never deadlock.
pub async fn lock_match_key(transaction: &Transaction<'_>, key: i32) -> Result<(), HostDbError> {
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&MATCH_LOCK_NAMESPACE, &key],
        )
        .await
        .map_err(db("lock match key"))?;
    Ok(())
}

/// The counterparty's unmatched new instructions in the same ISIN and settlement date that
/// name `instruction`'s participant as their counterparty in the opposite direction, oldest
/// first, locked. Callers hold the (ISIN, settlement date) match lock, so only rows under
/// that lock are locked here.
pub async fn match_candidates(
    transaction: &Transaction<'_>,
    instruction: &InstructionRow,
) -> Result<Vec<InstructionRow>, HostDbError> {
    let rows = transaction
        .query(
            &format!(
                "SELECT {INSTRUCTION_COLUMNS} FROM instructions
                 WHERE participant_id = $1 AND counterparty_participant_id = $2
                   AND direction = $3 AND status = 'unmatched' AND function = 'NEWM'
                   AND isin = $4 AND settlement_date = $5
                 ORDER BY instruction_id FOR UPDATE"
            ),
            &[
                &instruction.counterparty_participant_id,
                &instruction.participant_id,
                &opposite(&instruction.direction),
                &instruction.isin,
                &instruction.settlement_date,
            ],
        )
        .await
        .map_err(db("load match candidates"))?;
    Ok(rows.iter().map(instruction_row).collect())
}

fn opposite(direction: &str) -> &'static str {
    if direction == "deliver" {
        "receive"
    } else {
        "deliver"
    }
}

/// The instruction a participant sent under `sender_reference`, locked.
pub async fn instruction_by_reference(
    transaction: &Transaction<'_>,
    participant_id: &str,
    sender_reference: &str,
) -> Result<Option<InstructionRow>, HostDbError> {
    let row = transaction
        .query_opt(
            &format!(
                "SELECT {INSTRUCTION_COLUMNS} FROM instructions
                 WHERE participant_id = $1 AND sender_reference = $2 FOR UPDATE"
            ),
            &[&participant_id, &sender_reference],
        )
        .await
        .map_err(db("load instruction"))?;
    Ok(row.as_ref().map(instruction_row))
}

pub async fn instruction_by_id(
    transaction: &Transaction<'_>,
    instruction_id: i64,
) -> Result<Option<InstructionRow>, HostDbError> {
    let row = transaction
        .query_opt(
            &format!(
                "SELECT {INSTRUCTION_COLUMNS} FROM instructions WHERE instruction_id = $1 FOR UPDATE"
            ),
            &[&instruction_id],
        )
        .await
        .map_err(db("load instruction"))?;
    Ok(row.as_ref().map(instruction_row))
}

/// The stored cancellation request (a CANC) of `participant_id` for `reference`, if any.
pub async fn cancellation_request(
    transaction: &Transaction<'_>,
    participant_id: &str,
    reference: &str,
) -> Result<Option<i64>, HostDbError> {
    let row = transaction
        .query_opt(
            "SELECT instruction_id FROM instructions
             WHERE participant_id = $1 AND function = 'CANC' AND previous_reference = $2
             ORDER BY instruction_id LIMIT 1",
            &[&participant_id, &reference],
        )
        .await
        .map_err(db("look up cancellation request"))?;
    Ok(row.map(|row| row.get(0)))
}

/// Moves an instruction to `status` and records it in the status history.
pub async fn set_status(
    transaction: &Transaction<'_>,
    instruction_id: i64,
    status: &str,
    reason_code: Option<&str>,
    detail: Option<&str>,
) -> Result<(), HostDbError> {
    transaction
        .execute(
            "UPDATE instructions SET status = $2, updated_at = now() WHERE instruction_id = $1",
            &[&instruction_id, &status],
        )
        .await
        .map_err(db("update instruction status"))?;
    insert_history(transaction, instruction_id, status, reason_code, detail).await
}

/// Records a status (or a reason reported for the current status) in the history.
pub async fn insert_history(
    transaction: &Transaction<'_>,
    instruction_id: i64,
    status: &str,
    reason_code: Option<&str>,
    detail: Option<&str>,
) -> Result<(), HostDbError> {
    transaction
        .execute(
            "INSERT INTO instruction_status_history (instruction_id, status, reason_code, detail)
             VALUES ($1, $2, $3, $4)",
            &[&instruction_id, &status, &reason_code, &detail],
        )
        .await
        .map_err(db("insert status history"))?;
    Ok(())
}

/// Records a matched pair (the interface with the Batch Settlement Run engine).
pub async fn insert_match(
    transaction: &Transaction<'_>,
    delivering_instruction_id: i64,
    receiving_instruction_id: i64,
) -> Result<i64, HostDbError> {
    let row = transaction
        .query_one(
            "INSERT INTO instruction_matches (delivering_instruction_id, receiving_instruction_id)
             VALUES ($1, $2) RETURNING match_id",
            &[&delivering_instruction_id, &receiving_instruction_id],
        )
        .await
        .map_err(db("insert instruction match"))?;
    Ok(row.get(0))
}

/// The match an instruction is in, and what runs have settled of it so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchState {
    pub match_id: i64,
    /// The other instruction of the pair.
    pub counterpart_instruction_id: i64,
    /// Settled by runs so far (0: nothing).
    pub settled_quantity: i64,
    /// Settled in full.
    pub complete: bool,
}

/// The match `instruction_id` is in, if any, with its settlement so far. Call it after
/// [`hold_off_settlement_runs`] when the answer decides a change to the pair.
pub async fn match_state(
    transaction: &Transaction<'_>,
    instruction_id: i64,
) -> Result<Option<MatchState>, HostDbError> {
    let row = transaction
        .query_opt(
            "SELECT m.match_id,
                    CASE WHEN m.delivering_instruction_id = $1 THEN m.receiving_instruction_id
                         ELSE m.delivering_instruction_id END,
                    coalesce(s.quantity, 0)::int8, coalesce(s.complete, false)
             FROM instruction_matches m
             LEFT JOIN LATERAL (
                 SELECT sum(quantity) AS quantity, bool_or(complete) AS complete
                 FROM instruction_settlements WHERE match_id = m.match_id) s ON true
             WHERE m.delivering_instruction_id = $1 OR m.receiving_instruction_id = $1",
            &[&instruction_id],
        )
        .await
        .map_err(db("look up match"))?;
    Ok(row.map(|row| MatchState {
        match_id: row.get(0),
        counterpart_instruction_id: row.get(1),
        settled_quantity: row.get(2),
        complete: row.get(3),
    }))
}

/// Advisory lock (two-key form) that orders changes to matched pairs against Batch
/// Settlement Runs: a run takes it exclusively for its whole transaction
/// ([`super::settlement::RunTransaction::begin`]), a change to a matched pair shares it.
pub(super) const SETTLEMENT_RUN_LOCK: (i32, i32) = (0x7365_7474, 1);

/// Waits until no Batch Settlement Run is in progress and keeps the next one from starting
/// until this transaction ends (shared: changes do not wait for each other). Take it before
/// deciding a change to a matched pair (cancel, hold, exclude) so that a run never settles a
/// pair that was cancelled, held or excluded under it, and a change never misses a
/// settlement that committed meanwhile.
pub async fn hold_off_settlement_runs(transaction: &Transaction<'_>) -> Result<(), HostDbError> {
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1, $2)",
            &[&SETTLEMENT_RUN_LOCK.0, &SETTLEMENT_RUN_LOCK.1],
        )
        .await
        .map_err(db("wait for the settlement run"))?;
    Ok(())
}

/// Removes the match of a bilaterally cancelled pair: a cancelled pair is no longer due.
pub async fn delete_match(
    transaction: &Transaction<'_>,
    instruction_id: i64,
) -> Result<(), HostDbError> {
    transaction
        .execute(
            "DELETE FROM instruction_matches
             WHERE delivering_instruction_id = $1 OR receiving_instruction_id = $1",
            &[&instruction_id],
        )
        .await
        .map_err(db("delete match"))?;
    Ok(())
}

/// Unmatched new instructions input before `before_seconds_ago` seconds that have not been
/// reported unmatched with a reason yet, oldest first, at most `limit`.
pub async fn unmatched_unreported(
    pool: &Pool,
    before_seconds_ago: f64,
    limit: i64,
) -> Result<Vec<InstructionRow>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {INSTRUCTION_COLUMNS} FROM instructions AS i
                 WHERE status = 'unmatched' AND function = 'NEWM'
                   AND created_at <= now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM instruction_status_history AS h
                       WHERE h.instruction_id = i.instruction_id AND h.status = 'unmatched'
                         AND h.reason_code IS NOT NULL)
                 ORDER BY instruction_id LIMIT $2"
            ),
            &[&before_seconds_ago, &limit],
        )
        .await
        .map_err(db("load unmatched instructions"))?;
    Ok(rows.iter().map(instruction_row).collect())
}

/// The counterparty's unmatched new instructions in the opposite direction naming the
/// participant, any ISIN and date, for the unmatched report (read only, not locked).
pub async fn unmatched_candidates(
    transaction: &Transaction<'_>,
    instruction: &InstructionRow,
) -> Result<Vec<InstructionRow>, HostDbError> {
    let rows = transaction
        .query(
            &format!(
                "SELECT {INSTRUCTION_COLUMNS} FROM instructions
                 WHERE participant_id = $1 AND counterparty_participant_id = $2
                   AND direction = $3 AND status = 'unmatched' AND function = 'NEWM'
                 ORDER BY instruction_id"
            ),
            &[
                &instruction.counterparty_participant_id,
                &instruction.participant_id,
                &opposite(&instruction.direction),
            ],
        )
        .await
        .map_err(db("load unmatched candidates"))?;
    Ok(rows.iter().map(instruction_row).collect())
}

/// One row to publish after commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub subject: String,
    pub dedupe_id: String,
    pub payload: Vec<u8>,
}

pub async fn insert_outbox(
    transaction: &Transaction<'_>,
    rows: &[OutboxRow],
) -> Result<(), HostDbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let subjects: Vec<&str> = rows.iter().map(|row| row.subject.as_str()).collect();
    let dedupe_ids: Vec<&str> = rows.iter().map(|row| row.dedupe_id.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|row| row.payload.as_slice()).collect();
    transaction
        .execute(
            "INSERT INTO outbox (subject, dedupe_id, payload)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
             ON CONFLICT (dedupe_id) DO NOTHING",
            &[&subjects, &dedupe_ids, &payloads],
        )
        .await
        .map_err(db("insert outbox rows"))?;
    Ok(())
}

/// Sets the hold or exclusion flag of the match `instruction_id` is in; returns the match's
/// two instructions (delivering, receiving) when there is one.
pub async fn set_match_flag(
    transaction: &Transaction<'_>,
    instruction_id: i64,
    flag: MatchFlag,
    value: bool,
) -> Result<Option<(i64, i64)>, HostDbError> {
    let sql = match flag {
        MatchFlag::OnHold => {
            "UPDATE instruction_matches SET on_hold = $2
             WHERE delivering_instruction_id = $1 OR receiving_instruction_id = $1
             RETURNING delivering_instruction_id, receiving_instruction_id"
        }
        MatchFlag::ExcludedFromRuns => {
            "UPDATE instruction_matches SET excluded_from_runs = $2
             WHERE delivering_instruction_id = $1 OR receiving_instruction_id = $1
             RETURNING delivering_instruction_id, receiving_instruction_id"
        }
    };
    let row = transaction
        .query_opt(sql, &[&instruction_id, &value])
        .await
        .map_err(db("set match flag"))?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The two flags of `instruction_matches` that participants and operators change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchFlag {
    OnHold,
    ExcludedFromRuns,
}

/// A fresh number for the MT548 references of a lifecycle change (the outbox identity).
pub async fn next_change_id(transaction: &Transaction<'_>) -> Result<i64, HostDbError> {
    let row = transaction
        .query_one("SELECT nextval('intake_change_id_seq')", &[])
        .await
        .map_err(db("next lifecycle change id"))?;
    Ok(row.get(0))
}
