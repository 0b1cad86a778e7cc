//! SQL of the terminal: its maker–checker table (`terminal_pending_instructions`, V0009) and
//! the read-only enquiries behind its pages.
//!
//! Every enquiry takes the participant whose data it shows (`None` only for operations staff,
//! whom the terminal has authorised for any participant), so a page can never read another
//! participant's rows by forgetting a filter. Paging is `LIMIT`/`OFFSET` with the limit
//! capped by the caller (config `terminal.page_rows_max`).
//!
//! The settlement engine leaves a settled SI's `status` at `matched` and records settlement
//! as markers in `instruction_settlements` (the sweep after the run then moves a pair
//! settled in full to `settled`, V0016); [`EFFECTIVE_STATUS`] derives what the user sees
//! (`settled`, `partially_settled`) from the markers, whether swept or not.

use std::future::Future;

use time::{Date, OffsetDateTime};

use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// An SI waiting for its checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub pending_id: i64,
    pub participant_id: String,
    pub sender_reference: String,
    pub message_type: String,
    pub fin_text: String,
    pub summary: serde_json::Value,
    pub maker_uid: String,
    pub status: String,
    pub checker_uid: Option<String>,
    pub created_at: OffsetDateTime,
}

const PENDING_COLUMNS: &str = "pending_id, participant_id, sender_reference, message_type, \
     fin_text, summary, maker_uid, status, checker_uid, created_at";

fn pending_row(row: &tokio_postgres::Row) -> PendingRow {
    PendingRow {
        pending_id: row.get(0),
        participant_id: row.get(1),
        sender_reference: row.get(2),
        message_type: row.get(3),
        fin_text: row.get(4),
        summary: row.get(5),
        maker_uid: row.get(6),
        status: row.get(7),
        checker_uid: row.get(8),
        created_at: row.get(9),
    }
}

/// A new terminal input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPending<'a> {
    pub participant_id: &'a str,
    pub sender_reference: &'a str,
    pub message_type: &'a str,
    pub fin_text: &'a str,
    pub summary: serde_json::Value,
    pub maker_uid: &'a str,
}

/// The participant's FIN logical terminal (block 1 sender of its messages).
pub async fn logical_terminal(
    pool: &Pool,
    participant: &str,
) -> Result<Option<String>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            "SELECT logical_terminal FROM participants WHERE participant_id = $1",
            &[&participant],
        )
        .await
        .map_err(db("load logical terminal"))?;
    Ok(row.map(|row| row.get(0)))
}

/// Stores a pending input; `None` when the participant already used the reference (pending
/// here or as an instruction).
pub async fn insert_pending(pool: &Pool, new: &NewPending<'_>) -> Result<Option<i64>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            "INSERT INTO terminal_pending_instructions
                 (participant_id, sender_reference, message_type, fin_text, summary, maker_uid, status)
             SELECT $1, $2, $3, $4, $5, $6, 'pending'
             WHERE NOT EXISTS (SELECT 1 FROM instructions
                               WHERE participant_id = $1 AND sender_reference = $2)
             ON CONFLICT (participant_id, sender_reference) DO NOTHING
             RETURNING pending_id",
            &[
                &new.participant_id,
                &new.sender_reference,
                &new.message_type,
                &new.fin_text,
                &new.summary,
                &new.maker_uid,
            ],
        )
        .await
        .map_err(db("insert pending instruction"))?;
    Ok(row.map(|row| row.get(0)))
}

/// Whether the participant used `reference` already (instruction or terminal input).
pub async fn reference_used(
    pool: &Pool,
    participant: &str,
    reference: &str,
) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM instructions WHERE participant_id = $1 AND sender_reference = $2)
                 OR EXISTS (SELECT 1 FROM terminal_pending_instructions
                            WHERE participant_id = $1 AND sender_reference = $2)",
            &[&participant, &reference],
        )
        .await
        .map_err(db("look up a sender's reference"))?;
    Ok(row.get(0))
}

/// The participant's inputs still waiting for a checker, oldest first.
pub async fn open_pending(pool: &Pool, participant: &str) -> Result<Vec<PendingRow>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {PENDING_COLUMNS} FROM terminal_pending_instructions
                 WHERE participant_id = $1 AND status = 'pending' ORDER BY pending_id"
            ),
            &[&participant],
        )
        .await
        .map_err(db("list pending instructions"))?;
    Ok(rows.iter().map(pending_row).collect())
}

/// One pending input of the participant.
pub async fn pending(
    pool: &Pool,
    participant: &str,
    pending_id: i64,
) -> Result<Option<PendingRow>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {PENDING_COLUMNS} FROM terminal_pending_instructions
                 WHERE participant_id = $1 AND pending_id = $2"
            ),
            &[&participant, &pending_id],
        )
        .await
        .map_err(db("load pending instruction"))?;
    Ok(row.as_ref().map(pending_row))
}

/// How a decision on a pending input ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Decided<E> {
    /// Decided: the row as it was before (status `pending`).
    Done(Box<PendingRow>),
    /// No such input of the participant, or it was decided already.
    NotPending,
    /// `before_commit` failed: nothing changed.
    Refused(E),
}

/// Decides a pending input in one transaction: locks the row (only while `pending`), runs
/// `before_commit` on it (publish to INBOUND for an authorisation), and only if that succeeds
/// records `status` and the checker. A crash after `before_commit` leaves the row pending;
/// authorising it again publishes again under the same `Nats-Msg-Id`, which JetStream and
/// intake deduplicate.
pub async fn decide_pending<E, F, Fut>(
    pool: &Pool,
    participant: &str,
    pending_id: i64,
    checker_uid: &str,
    status: &str,
    before_commit: F,
) -> Result<Decided<E>, HostDbError>
where
    F: FnOnce(PendingRow) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin pending decision"))?;
    let row = transaction
        .query_opt(
            &format!(
                "SELECT {PENDING_COLUMNS} FROM terminal_pending_instructions
                 WHERE participant_id = $1 AND pending_id = $2 AND status = 'pending' FOR UPDATE"
            ),
            &[&participant, &pending_id],
        )
        .await
        .map_err(db("lock pending instruction"))?;
    let Some(row) = row.as_ref().map(pending_row) else {
        return Ok(Decided::NotPending);
    };
    if let Err(error) = before_commit(row.clone()).await {
        return Ok(Decided::Refused(error));
    }
    transaction
        .execute(
            "UPDATE terminal_pending_instructions
             SET status = $3, checker_uid = $4, decided_at = now()
             WHERE participant_id = $1 AND pending_id = $2",
            &[&participant, &pending_id, &status, &checker_uid],
        )
        .await
        .map_err(db("record pending decision"))?;
    transaction
        .commit()
        .await
        .map_err(db("commit pending decision"))?;
    Ok(Decided::Done(Box::new(row)))
}

/// What the user sees as an SI's status: settlement markers first, then the stored status.
/// A swept SI (status `settled`, V0016) needs no marker lookup.
pub const EFFECTIVE_STATUS: &str = "CASE
    WHEN i.status = 'settled' THEN 'settled'
    WHEN EXISTS (SELECT 1 FROM instruction_settlements s
                 WHERE s.complete AND (s.delivering_instruction_id = i.instruction_id
                                       OR s.receiving_instruction_id = i.instruction_id))
        THEN 'settled'
    WHEN EXISTS (SELECT 1 FROM instruction_settlements s
                 WHERE s.delivering_instruction_id = i.instruction_id
                    OR s.receiving_instruction_id = i.instruction_id)
        THEN 'partially_settled'
    ELSE i.status END";

/// An SI as the terminal lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstructionView {
    pub instruction_id: i64,
    pub participant_id: String,
    pub sender_reference: String,
    pub message_type: String,
    pub function: String,
    pub previous_reference: Option<String>,
    pub direction: String,
    pub payment: String,
    pub account_id: String,
    pub counterparty_participant_id: String,
    pub isin: String,
    pub quantity: i64,
    pub settlement_date: String,
    pub currency_code: Option<String>,
    pub amount_minor: Option<i64>,
    pub status: String,
    pub on_hold: bool,
    pub created_at: String,
}

fn instruction_view(row: &tokio_postgres::Row) -> InstructionView {
    let settlement_date: Date = row.get(12);
    let created_at: OffsetDateTime = row.get(17);
    InstructionView {
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
        isin: row.get(10),
        quantity: row.get(11),
        settlement_date: settlement_date.to_string(),
        currency_code: row.get(13),
        amount_minor: row.get(14),
        status: row.get(15),
        on_hold: row.get(16),
        created_at: timestamp(created_at),
    }
}

fn instruction_select() -> String {
    format!(
        "SELECT i.instruction_id, i.participant_id, i.sender_reference, i.message_type, i.function,
                i.previous_reference, i.direction, i.payment, i.account_id,
                i.counterparty_participant_id, i.isin, i.quantity, i.settlement_date,
                i.currency_code, i.amount_minor, {EFFECTIVE_STATUS} AS effective_status,
                COALESCE((SELECT m.on_hold FROM instruction_matches m
                          WHERE m.delivering_instruction_id = i.instruction_id
                             OR m.receiving_instruction_id = i.instruction_id), false),
                i.created_at
         FROM instructions i"
    )
}

/// Filters of the SI list; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstructionFilter {
    /// `None` only for operations staff.
    pub participant: Option<String>,
    pub status: Option<String>,
    pub reference_prefix: Option<String>,
    pub isin: Option<String>,
    pub settlement_date_from: Option<Date>,
    pub settlement_date_to: Option<Date>,
    pub limit: i64,
    pub offset: i64,
}

/// SIs matching `filter`, newest first.
pub async fn instructions(
    pool: &Pool,
    filter: &InstructionFilter,
) -> Result<Vec<InstructionView>, HostDbError> {
    let client = super::client(pool).await?;
    let prefix = filter
        .reference_prefix
        .as_ref()
        .map(|prefix| format!("{}%", like_escape(prefix)));
    let sql = format!(
        "SELECT * FROM ({select}) AS v(instruction_id, participant_id, sender_reference,
             message_type, function, previous_reference, direction, payment, account_id,
             counterparty_participant_id, isin, quantity, settlement_date, currency_code,
             amount_minor, status, on_hold, created_at)
         WHERE ($1::text IS NULL OR participant_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR sender_reference LIKE $3)
           AND ($4::text IS NULL OR isin = $4)
           AND ($5::date IS NULL OR settlement_date >= $5)
           AND ($6::date IS NULL OR settlement_date <= $6)
         ORDER BY instruction_id DESC LIMIT $7 OFFSET $8",
        select = instruction_select()
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.participant,
                &filter.status,
                &prefix,
                &filter.isin,
                &filter.settlement_date_from,
                &filter.settlement_date_to,
                &filter.limit,
                &filter.offset,
            ],
        )
        .await
        .map_err(db("list instructions"))?;
    Ok(rows.iter().map(instruction_view).collect())
}

/// One SI by id.
pub async fn instruction(
    pool: &Pool,
    instruction_id: i64,
) -> Result<Option<InstructionView>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            &format!("{} WHERE i.instruction_id = $1", instruction_select()),
            &[&instruction_id],
        )
        .await
        .map_err(db("load instruction"))?;
    Ok(row.as_ref().map(instruction_view))
}

/// One SI by its sender's reference.
pub async fn instruction_by_reference(
    pool: &Pool,
    participant: &str,
    reference: &str,
) -> Result<Option<InstructionView>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            &format!(
                "{} WHERE i.participant_id = $1 AND i.sender_reference = $2",
                instruction_select()
            ),
            &[&participant, &reference],
        )
        .await
        .map_err(db("load instruction"))?;
    Ok(row.as_ref().map(instruction_view))
}

/// One line of an SI's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRow {
    pub at: String,
    pub status: String,
    pub reason_code: Option<String>,
    pub detail: Option<String>,
}

/// Status history with reasons, then settlements by run, in time order.
pub async fn history(pool: &Pool, instruction_id: i64) -> Result<Vec<HistoryRow>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT at, status, reason_code, detail FROM (
                 SELECT at, status, reason_code, detail FROM instruction_status_history
                 WHERE instruction_id = $1
                 UNION ALL
                 SELECT recorded_at,
                        CASE WHEN complete THEN 'settled' ELSE 'partially_settled' END,
                        NULL,
                        'settlement run ' || settlement_run_id || ': quantity ' || quantity
                 FROM instruction_settlements
                 WHERE delivering_instruction_id = $1 OR receiving_instruction_id = $1
             ) AS h ORDER BY at",
            &[&instruction_id],
        )
        .await
        .map_err(db("load instruction history"))?;
    Ok(rows
        .iter()
        .map(|row| HistoryRow {
            at: timestamp(row.get(0)),
            status: row.get(1),
            reason_code: row.get(2),
            detail: row.get(3),
        })
        .collect())
}

/// A holding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldingView {
    pub account_id: String,
    pub isin: String,
    pub security_name: String,
    pub quantity: i64,
}

/// Holdings of the participant's accounts, optionally one account or one security.
pub async fn holdings(
    pool: &Pool,
    participant: Option<&str>,
    account: Option<&str>,
    isin: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<HoldingView>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT h.account_id, h.isin, s.name, h.quantity
             FROM holdings h JOIN stock_accounts a USING (account_id) JOIN securities s USING (isin)
             WHERE ($1::text IS NULL OR a.participant_id = $1)
               AND ($2::text IS NULL OR h.account_id = $2)
               AND ($3::text IS NULL OR h.isin = $3)
               AND h.quantity <> 0
             ORDER BY h.account_id, h.isin LIMIT $4 OFFSET $5",
            &[&participant, &account, &isin, &limit, &offset],
        )
        .await
        .map_err(db("list holdings"))?;
    Ok(rows
        .iter()
        .map(|row| HoldingView {
            account_id: row.get(0),
            isin: row.get(1),
            security_name: row.get(2),
            quantity: row.get(3),
        })
        .collect())
}

/// A stock movement touching the participant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MovementView {
    pub settlement_date: String,
    pub movement_kind: String,
    pub from_account_id: Option<String>,
    pub to_account_id: Option<String>,
    pub isin: String,
    pub quantity: i64,
    pub reference: String,
    pub settlement_run_id: Option<i64>,
}

/// Stock movements into or out of the participant's accounts between two dates.
pub async fn movements(
    pool: &Pool,
    participant: Option<&str>,
    from: Date,
    to: Date,
    limit: i64,
    offset: i64,
) -> Result<Vec<MovementView>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT settlement_date, movement_kind, from_account_id, to_account_id, isin, quantity,
                    reference, settlement_run_id
             FROM holding_movements
             WHERE settlement_date BETWEEN $2 AND $3
               AND ($1::text IS NULL OR left(from_account_id, 6) = $1 OR left(to_account_id, 6) = $1)
             ORDER BY settlement_date, movement_id LIMIT $4 OFFSET $5",
            &[&participant, &from, &to, &limit, &offset],
        )
        .await
        .map_err(db("list movements"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let date: Date = row.get(0);
            MovementView {
                settlement_date: date.to_string(),
                movement_kind: row.get(1),
                from_account_id: row.get(2),
                to_account_id: row.get(3),
                isin: row.get(4),
                quantity: row.get(5),
                reference: row.get(6),
                settlement_run_id: row.get(7),
            }
        })
        .collect())
}

/// A money balance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MoneyView {
    pub participant_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
}

/// Cash balances of the participant (every participant for `None`).
pub async fn money(pool: &Pool, participant: Option<&str>) -> Result<Vec<MoneyView>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT participant_id, currency_code, amount_minor FROM cash_balances
             WHERE ($1::text IS NULL OR participant_id = $1)
             ORDER BY participant_id, currency_code",
            &[&participant],
        )
        .await
        .map_err(db("list money balances"))?;
    Ok(rows
        .iter()
        .map(|row| MoneyView {
            participant_id: row.get(0),
            currency_code: row.get(1),
            amount_minor: row.get(2),
        })
        .collect())
}

/// A settlement run with the value still pending on its date.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunView {
    pub settlement_run_id: i64,
    pub settlement_date: String,
    pub run_number: i16,
    pub status: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub settled_count: i64,
    pub recycled_count: i64,
    /// Settled value in minor units, all currencies added.
    pub settled_value_minor: i64,
    /// Value of matched DvP pairs of the run's date not settled yet (now), minor units.
    pub pending_value_minor: i64,
}

/// The latest runs, newest first.
pub async fn runs(pool: &Pool, limit: i64) -> Result<Vec<RunView>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT r.settlement_run_id, r.settlement_date, r.run_number, r.status, r.started_at,
                    r.finished_at, r.instructions_settled_count, r.instructions_recycled_count,
                    COALESCE((SELECT sum(value::bigint) FROM jsonb_each_text(r.settled_value_minor)), 0)::bigint,
                    COALESCE((SELECT sum(d.amount_minor) FROM instruction_matches m
                              JOIN instructions d ON d.instruction_id = m.delivering_instruction_id
                              WHERE d.settlement_date = r.settlement_date AND d.amount_minor IS NOT NULL
                                AND NOT EXISTS (SELECT 1 FROM instruction_settlements s
                                                WHERE s.match_id = m.match_id AND s.complete)), 0)::bigint
             FROM settlement_runs r ORDER BY r.settlement_run_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(db("list settlement runs"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let date: Date = row.get(1);
            let started: Option<OffsetDateTime> = row.get(4);
            let finished: Option<OffsetDateTime> = row.get(5);
            RunView {
                settlement_run_id: row.get(0),
                settlement_date: date.to_string(),
                run_number: row.get(2),
                status: row.get(3),
                started_at: started.map(timestamp),
                finished_at: finished.map(timestamp),
                settled_count: row.get(6),
                recycled_count: row.get(7),
                settled_value_minor: row.get(8),
                pending_value_minor: row.get(9),
            }
        })
        .collect())
}

/// A refused inbound message: journalled, no instruction stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExceptionView {
    pub kind: String,
    pub participant_id: String,
    pub reference: String,
    pub at: String,
    pub detail: String,
}

/// Rejected messages (journalled inbound messages that became no instruction) and refused
/// exchange trades, newest first.
pub async fn exceptions(pool: &Pool, limit: i64) -> Result<Vec<ExceptionView>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT kind, participant_id, reference, at, detail FROM (
                 SELECT 'message' AS kind, j.participant_id, COALESCE(j.sender_reference, '') AS reference,
                        j.recorded_at AS at, 'MT' || j.message_type || ' rejected' AS detail
                 FROM message_journal j
                 WHERE j.direction = 'in' AND NOT EXISTS (
                     SELECT 1 FROM instructions i
                     WHERE i.participant_id = j.participant_id
                       AND i.sender_reference = j.sender_reference
                       AND i.received_message_id = j.message_id)
                 UNION ALL
                 SELECT 'trade', '', e.trade_id, e.recorded_at, e.reason_code || ': ' || e.detail
                 FROM cns_trade_exceptions e
             ) AS x ORDER BY at DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(db("list exceptions"))?;
    Ok(rows
        .iter()
        .map(|row| ExceptionView {
            kind: row.get(0),
            participant_id: row.get(1),
            reference: row.get(2),
            at: timestamp(row.get(3)),
            detail: row.get(4),
        })
        .collect())
}

fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// An audit trail row for the operations page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditView {
    pub audit_id: i64,
    pub at: String,
    pub actor: String,
    pub participant_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: String,
}

/// Filters of the audit trail page; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub participant: Option<String>,
    pub action_prefix: Option<String>,
    pub outcome: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Audit trail rows matching `filter`, newest first.
pub async fn audit(pool: &Pool, filter: &AuditFilter) -> Result<Vec<AuditView>, HostDbError> {
    let client = super::client(pool).await?;
    let prefix = filter
        .action_prefix
        .as_ref()
        .map(|prefix| format!("{}%", like_escape(prefix)));
    let rows = client
        .query(
            "SELECT audit_id, at, actor, participant_id, action, target, outcome, detail::text
             FROM audit_trail
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR participant_id = $2)
               AND ($3::text IS NULL OR action LIKE $3)
               AND ($4::text IS NULL OR outcome = $4)
             ORDER BY audit_id DESC LIMIT $5 OFFSET $6",
            &[
                &filter.actor,
                &filter.participant,
                &prefix,
                &filter.outcome,
                &filter.limit,
                &filter.offset,
            ],
        )
        .await
        .map_err(db("read audit trail"))?;
    Ok(rows
        .iter()
        .map(|row| AuditView {
            audit_id: row.get(0),
            at: timestamp(row.get(1)),
            actor: row.get(2),
            participant_id: row.get(3),
            action: row.get(4),
            target: row.get(5),
            outcome: row.get(6),
            detail: row.get(7),
        })
        .collect())
}

/// `2026-11-24 20:05:30 UTC`: how the terminal shows a moment.
pub fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        at.date(),
        at.hour(),
        at.minute(),
        at.second()
    )
}
