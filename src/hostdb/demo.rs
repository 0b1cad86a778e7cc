//! The SQL of `ccass demo`: recreate its database, watch its stages, and count what the host
//! database holds so the demo can check its summary against it.
//!
//! Read-only but for [`recreate_database`]; each count is one query over the whole demo
//! database (the demo owns it, so every row is the demo's).

use std::collections::BTreeMap;

use time::Date;

use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// Drops (with its sessions) and creates database `name`, through `admin`, a pool on another
/// database of the same server.
pub async fn recreate_database(admin: &Pool, name: &str) -> Result<(), HostDbError> {
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let client = super::client(admin).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await
        .map_err(db("drop demo database"))?;
    client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
        .map_err(db("create demo database"))?;
    Ok(())
}

/// Inbound messages journalled by intake (accepted or refused).
pub async fn inbound_message_count(pool: &Pool) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM message_journal WHERE direction = 'in'",
            &[],
        )
        .await
        .map_err(db("count inbound messages"))?;
    Ok(row.get(0))
}

/// This run's exchange trades: batches captured, trades accepted and trades refused, of the
/// batches whose id starts with `batch_prefix` (letters, digits and `-`): trades of an
/// interrupted earlier run still in the stream are not this run's.
pub async fn run_trades(pool: &Pool, batch_prefix: &str) -> Result<(i64, i64, i64), HostDbError> {
    let client = super::client(pool).await?;
    let pattern = format!("{batch_prefix}%");
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(accepted_count), 0)::int8,
                    coalesce(sum(rejected_count), 0)::int8
             FROM cns_trade_batches WHERE batch_id LIKE $1",
            &[&pattern],
        )
        .await
        .map_err(db("count this run's trades"))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// What the host database holds at the end of the demo's day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoCounts {
    pub inbound_messages: i64,
    /// Inbound messages refused by intake (journalled, stored as no instruction).
    pub rejected_messages: i64,
    /// NEWM instructions by stored status.
    pub instructions_by_status: BTreeMap<String, i64>,
    /// Outbox rows (MT548, MT544–547, events) and how many the relay published.
    pub outbox_rows: i64,
    pub outbox_published: i64,
    /// Pairs with a complete settled marker.
    pub settled_pairs: i64,
    /// Matched pairs without one.
    pub unsettled_pairs: i64,
    pub runs: Vec<RunCounts>,
    /// CNS positions of the settlement date (any status: final, settled, carried forward).
    pub cns_stock_positions: i64,
    pub cns_money_positions: i64,
    /// Stock positions settled (in part or in whole) by the date's runs.
    pub cns_stock_positions_settled: i64,
    /// Stock positions day-end carried forward to the next business day.
    pub cns_stock_positions_carried: i64,
    /// Money positions day-end settled in full, and those it left unpaid.
    pub cns_money_positions_settled: i64,
    pub cns_money_positions_unpaid: i64,
    /// Money moved by day-end's money settlement, per currency (cash journal).
    pub money_settled_minor: BTreeMap<String, i64>,
    /// End-of-day statement pages of the date in the outbound message journal, by message
    /// type (`535`, `536`, `537`), and the participants that received all three.
    pub statement_pages_by_type: BTreeMap<String, i64>,
    pub statement_participants: i64,
    /// Messages to the PSS (not events) the outbox holds: plain rows on an outbound subject
    /// plus the confirmations the runs' compact rows stand for.
    pub outbound_messages: i64,
}

/// One Batch Settlement Run of the demo's settlement date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub settlement_run_id: i64,
    pub run_number: i16,
    pub status: String,
    /// Pairs this run completed (markers).
    pub settled_pairs: i64,
    /// Money this run moved by DvP, per currency (cash journal).
    pub settled_value_minor: BTreeMap<String, i64>,
    /// Pending advices this run wrote, per reason (`LACK`, `MONY`), one per instruction.
    pub pending_advices_by_reason: BTreeMap<String, i64>,
}

/// Counts the demo's day for `settlement_date`.
pub async fn counts(pool: &Pool, settlement_date: Date) -> Result<DemoCounts, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin demo counts"))?;
    let mut counts = DemoCounts::default();
    let row = transaction
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE NOT EXISTS (
                        SELECT 1 FROM instructions i WHERE i.received_message_id = m.message_id))
             FROM message_journal m WHERE direction = 'in'",
            &[],
        )
        .await
        .map_err(db("count inbound messages"))?;
    counts.inbound_messages = row.get(0);
    counts.rejected_messages = row.get(1);
    for row in transaction
        .query(
            "SELECT status, count(*) FROM instructions WHERE function = 'NEWM'
             GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .map_err(db("count instructions by status"))?
    {
        counts.instructions_by_status.insert(row.get(0), row.get(1));
    }
    let row = transaction
        .query_one("SELECT count(*), count(published_at) FROM outbox", &[])
        .await
        .map_err(db("count outbox rows"))?;
    counts.outbox_rows = row.get(0);
    counts.outbox_published = row.get(1);
    let row = transaction
        .query_one(
            "SELECT count(*) FILTER (WHERE done.match_id IS NOT NULL),
                    count(*) FILTER (WHERE done.match_id IS NULL)
             FROM instruction_matches m
             LEFT JOIN (SELECT DISTINCT match_id FROM instruction_settlements WHERE complete) done
                    ON done.match_id = m.match_id",
            &[],
        )
        .await
        .map_err(db("count settled pairs"))?;
    counts.settled_pairs = row.get(0);
    counts.unsettled_pairs = row.get(1);
    for row in transaction
        .query(
            "SELECT r.settlement_run_id, r.run_number, r.status,
                    (SELECT count(*) FROM instruction_settlements s
                     WHERE s.settlement_run_id = r.settlement_run_id AND s.complete)
             FROM settlement_runs r WHERE r.settlement_date = $1 ORDER BY r.run_number",
            &[&settlement_date],
        )
        .await
        .map_err(db("read settlement runs"))?
    {
        counts.runs.push(RunCounts {
            settlement_run_id: row.get(0),
            run_number: row.get(1),
            status: row.get(2),
            settled_pairs: row.get(3),
            ..RunCounts::default()
        });
    }
    for run in &mut counts.runs {
        for row in transaction
            .query(
                // SIs only: the run's CNS movements (isolated trades) are DvP cash too.
                "SELECT i.currency_code, sum(s.amount_minor)::int8
                 FROM instruction_settlements s
                 JOIN instructions i ON i.instruction_id = s.delivering_instruction_id
                 WHERE s.settlement_run_id = $1 AND s.amount_minor IS NOT NULL
                 GROUP BY i.currency_code ORDER BY i.currency_code",
                &[&run.settlement_run_id],
            )
            .await
            .map_err(db("sum settled value"))?
        {
            run.settled_value_minor.insert(row.get(0), row.get(1));
        }
        // The run's MT548 pending, from its compact outbox rows (V0010), by reason.
        // A row that does not decode is an audit violation, which fails the demo.
        for (_, batch) in
            super::outbox::confirmation_batches(&transaction, Some(run.settlement_run_id)).await?
        {
            let Ok(batch) = batch else { continue };
            for entry in &batch.entries {
                let reason = match entry.pending {
                    None => continue,
                    Some(super::outbox::PendingReason::Securities) => "LACK",
                    Some(super::outbox::PendingReason::Money) => "MONY",
                };
                *run.pending_advices_by_reason
                    .entry(reason.to_owned())
                    .or_default() += 1;
            }
        }
    }
    let row = transaction
        .query_one(
            "SELECT (SELECT count(*) FROM cns_stock_positions WHERE settlement_date = $1),
                    (SELECT count(*) FROM cns_money_positions WHERE settlement_date = $1),
                    (SELECT count(DISTINCT (participant_id, isin)) FROM cns_position_settlements
                     WHERE settlement_date = $1),
                    (SELECT count(*) FROM cns_stock_positions
                     WHERE settlement_date = $1 AND status = 'carried_forward'),
                    (SELECT count(*) FROM cns_money_positions
                     WHERE settlement_date = $1 AND status = 'settled'),
                    (SELECT count(*) FROM cns_money_positions
                     WHERE settlement_date = $1 AND status <> 'settled' AND net_amount_minor <> 0)",
            &[&settlement_date],
        )
        .await
        .map_err(db("count cns positions"))?;
    counts.cns_stock_positions = row.get(0);
    counts.cns_money_positions = row.get(1);
    counts.cns_stock_positions_settled = row.get(2);
    counts.cns_stock_positions_carried = row.get(3);
    counts.cns_money_positions_settled = row.get(4);
    counts.cns_money_positions_unpaid = row.get(5);
    for row in transaction
        .query(
            "SELECT currency_code, sum(amount_minor)::int8 FROM cash_movements
             WHERE settlement_date = $1 AND movement_kind = 'money_settlement'
             GROUP BY currency_code ORDER BY currency_code",
            &[&settlement_date],
        )
        .await
        .map_err(db("sum money settlement"))?
    {
        counts.money_settled_minor.insert(row.get(0), row.get(1));
    }
    let reference_date = statement_reference_date(settlement_date);
    for row in transaction
        .query(
            "SELECT message_type, count(*) FROM message_journal
             WHERE direction = 'out' AND message_type IN ('535', '536', '537')
               AND substring(sender_reference FROM 4 FOR 6) = $1
             GROUP BY message_type ORDER BY message_type",
            &[&reference_date],
        )
        .await
        .map_err(db("count statement pages"))?
    {
        counts
            .statement_pages_by_type
            .insert(row.get(0), row.get(1));
    }
    let row = transaction
        .query_one(
            "SELECT count(*) FROM (
                 SELECT participant_id FROM message_journal
                 WHERE direction = 'out' AND message_type IN ('535', '536', '537')
                   AND substring(sender_reference FROM 4 FOR 6) = $1
                 GROUP BY participant_id HAVING count(DISTINCT message_type) = 3) complete",
            &[&reference_date],
        )
        .await
        .map_err(db("count statement participants"))?;
    counts.statement_participants = row.get(0);
    let row = transaction
        .query_one(
            "SELECT count(*) FROM outbox WHERE subject LIKE $1 AND expansion IS NULL",
            &[&outbound_subject_pattern()],
        )
        .await
        .map_err(db("count outbound rows"))?;
    counts.outbound_messages = row.get(0);
    // Plus what the runs' compact rows stand for: a confirmation per side that settled
    // something and an MT548 per side left pending.
    for (_, batch) in super::outbox::confirmation_batches(&transaction, None).await? {
        let Ok(batch) = batch else { continue };
        for entry in &batch.entries {
            counts.outbound_messages += i64::from(entry.settled_quantity > 0);
            counts.outbound_messages += i64::from(entry.pending.is_some());
        }
    }
    transaction.commit().await.map_err(db("end demo counts"))?;
    Ok(counts)
}

/// `yyMMdd`: the date part of end-of-day statement references (`535yyMMdd...`).
fn statement_reference_date(date: Date) -> String {
    format!(
        "{:02}{:02}{:02}",
        date.year() % 100,
        u8::from(date.month()),
        date.day()
    )
}

/// `LIKE` pattern of the outbound subjects (from the catalogue's builder pattern).
fn outbound_subject_pattern() -> String {
    crate::bus::subjects::pattern_wildcard(crate::bus::subjects::OUTBOUND.pattern).replace('*', "%")
}

/// The outbox dedupe ids of plain (one message per row) messages to the PSS, with their FIN
/// message type where it is an end-of-day statement page of `settlement_date` (`535`, `536`,
/// `537`), else `None`. A run's compact confirmation rows are not here: the relay expands them
/// (`relay::messages_of_subject`).
pub async fn outbound_dedupe_ids(
    pool: &Pool,
    settlement_date: Date,
) -> Result<Vec<(String, Option<String>)>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT o.dedupe_id, j.message_type
             FROM outbox o
             LEFT JOIN message_journal j ON j.direction = 'out'
                  AND j.message_type IN ('535', '536', '537')
                  AND substring(j.sender_reference FROM 4 FOR 6) = $2
                  AND o.dedupe_id = 'stmt.' || j.participant_id || '.' || j.sender_reference
             WHERE o.subject LIKE $1 AND o.expansion IS NULL ORDER BY o.outbox_id",
            &[
                &outbound_subject_pattern(),
                &statement_reference_date(settlement_date),
            ],
        )
        .await
        .map_err(db("list outbound dedupe ids"))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Money the date's CNS money positions still owe, per currency (`|net| - settled`): what
/// day-end's money settlement moves when every position can pay.
pub async fn money_due(
    pool: &Pool,
    settlement_date: Date,
) -> Result<BTreeMap<String, i64>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT currency_code, sum(abs(net_amount_minor) - settled_amount_minor)::int8
             FROM cns_money_positions
             WHERE settlement_date = $1 AND abs(net_amount_minor) > settled_amount_minor
             GROUP BY currency_code ORDER BY currency_code",
            &[&settlement_date],
        )
        .await
        .map_err(db("sum money due"))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
