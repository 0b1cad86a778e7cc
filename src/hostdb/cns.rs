//! SQL of CNS clearing: captured trades, batches, exceptions, positions, cut-offs.
//!
//! Guarantees: every write runs inside the caller's transaction (capture writes a batch's
//! trades, trade id claims, exceptions, batch marker and position deltas in one); trades and
//! position deltas are appended with COPY BINARY encoded in bulk (`super::copy`); a trade id
//! is claimed once per (market, trade date) ([`claim_trade_ids`], V0014), with locks taken in
//! key order, so concurrent capture transactions never deadlock on each other.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use time::{Date, Time};

use super::copy::{CopyRows, Field, copy_rows};
use super::{HostDbError, Pool};

/// Advisory lock namespace of settlement-date cut-offs ("cnscut" in ASCII); the date's
/// Julian day is the second key. Capture holds it shared, the cut-off exclusive.
const CUTOFF_LOCK_NAMESPACE: i32 = 0x636e_7363;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

// ---------------------------------------------------------------------------------------
// Reference data

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRow {
    pub participant_id: String,
    pub participant_type: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityRow {
    pub isin: String,
    pub stock_code: String,
    pub currency_code: String,
    pub board_lot: i32,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyRow {
    pub currency_code: String,
    pub minor_units: i16,
}

/// The reference data capture validates against, in a stable order (by key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceRows {
    pub participants: Vec<ParticipantRow>,
    pub securities: Vec<SecurityRow>,
    pub currencies: Vec<CurrencyRow>,
}

pub async fn load_reference(pool: &Pool) -> Result<ReferenceRows, HostDbError> {
    let client = super::client(pool).await?;
    let participants = client
        .query(
            "SELECT participant_id, participant_type, status FROM participants ORDER BY 1",
            &[],
        )
        .await
        .map_err(db("read participants"))?
        .iter()
        .map(|row| ParticipantRow {
            participant_id: row.get(0),
            participant_type: row.get(1),
            status: row.get(2),
        })
        .collect();
    let securities = client
        .query(
            "SELECT isin, stock_code, currency_code, board_lot, status FROM securities ORDER BY 1",
            &[],
        )
        .await
        .map_err(db("read securities"))?
        .iter()
        .map(|row| SecurityRow {
            isin: row.get(0),
            stock_code: row.get(1),
            currency_code: row.get(2),
            board_lot: row.get(3),
            status: row.get(4),
        })
        .collect();
    let currencies = client
        .query(
            "SELECT currency_code, minor_units FROM currencies ORDER BY 1",
            &[],
        )
        .await
        .map_err(db("read currencies"))?
        .iter()
        .map(|row| CurrencyRow {
            currency_code: row.get(0),
            minor_units: row.get(1),
        })
        .collect();
    Ok(ReferenceRows {
        participants,
        securities,
        currencies,
    })
}

/// Inserts generated reference data (benchmarks): currencies, participants, securities.
/// Existing keys are left alone.
pub async fn insert_reference(pool: &Pool, rows: &ReferenceRows) -> Result<(), HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client.transaction().await.map_err(db("begin"))?;
    for currency in &rows.currencies {
        transaction
            .execute(
                "INSERT INTO currencies (currency_code, name, minor_units) VALUES ($1, $1, $2)
                 ON CONFLICT DO NOTHING",
                &[&currency.currency_code, &currency.minor_units],
            )
            .await
            .map_err(db("insert currency"))?;
    }
    let ids: Vec<&str> = rows
        .participants
        .iter()
        .map(|p| p.participant_id.as_str())
        .collect();
    let types: Vec<&str> = rows
        .participants
        .iter()
        .map(|p| p.participant_type.as_str())
        .collect();
    let statuses: Vec<&str> = rows
        .participants
        .iter()
        .map(|p| p.status.as_str())
        .collect();
    transaction
        .execute(
            "INSERT INTO participants (participant_id, name, participant_type, status, logical_terminal)
             SELECT id, 'participant ' || id, kind, status, 'TEST' || translate(id, '0123456789', 'ABCDEFGHIJ') || 'XX'
             FROM unnest($1::text[], $2::text[], $3::text[]) AS t (id, kind, status)
             ON CONFLICT DO NOTHING",
            &[&ids, &types, &statuses],
        )
        .await
        .map_err(db("insert participants"))?;
    let isins: Vec<&str> = rows.securities.iter().map(|s| s.isin.as_str()).collect();
    let codes: Vec<&str> = rows
        .securities
        .iter()
        .map(|s| s.stock_code.as_str())
        .collect();
    let currencies: Vec<&str> = rows
        .securities
        .iter()
        .map(|s| s.currency_code.as_str())
        .collect();
    let lots: Vec<i32> = rows.securities.iter().map(|s| s.board_lot).collect();
    let statuses: Vec<&str> = rows.securities.iter().map(|s| s.status.as_str()).collect();
    transaction
        .execute(
            "INSERT INTO securities (isin, stock_code, name, currency_code, board_lot, status)
             SELECT isin, code, 'security ' || code, currency, lot, status
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[])
                 AS t (isin, code, currency, lot, status)
             ON CONFLICT DO NOTHING",
            &[&isins, &codes, &currencies, &lots, &statuses],
        )
        .await
        .map_err(db("insert securities"))?;
    transaction.commit().await.map_err(db("commit reference"))
}

// ---------------------------------------------------------------------------------------
// Capture

/// A validated trade, as `exchange_trades` stores it (strings borrowed from the feed record
/// and the reference data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRow<'a> {
    pub market: &'a str,
    pub trade_date: Date,
    pub trade_id: &'a str,
    pub trade_time: Time,
    pub isin: &'a str,
    pub buyer_participant_id: &'a str,
    pub seller_participant_id: &'a str,
    pub quantity: i64,
    /// Millionths of a major unit (`price_micros`, V0014).
    pub price_micros: i64,
    pub currency_code: &'a str,
    /// `cns` or `isolated`.
    pub settlement_type: &'static str,
    pub settlement_date: Date,
}

/// A refused trade.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionRow {
    pub market: String,
    pub batch_id: String,
    pub trade_id: String,
    pub trade_date: Option<Date>,
    pub reason_code: &'static str,
    pub detail: String,
    pub trade: serde_json::Value,
}

/// A captured feed batch (its marker makes redelivery idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    pub market: String,
    pub batch_id: String,
    pub trade_count: i32,
    pub accepted_count: i32,
}

/// Why capture set a batch aside (`cns_quarantined_batches.reason`, V0020).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// Not a trade batch, or its market or batch id cannot be stored.
    Malformed,
    /// The host database refused the batch when it was captured on its own.
    Refused,
}

impl QuarantineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => "malformed",
            QuarantineReason::Refused => "refused",
        }
    }
}

/// A feed message capture sets aside, as delivered.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineRow<'a> {
    pub nats_stream: &'a str,
    pub nats_stream_sequence: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    pub reason: QuarantineReason,
    pub error: &'a str,
}

/// Stores a batch capture cannot take (V0020). Returns its quarantine id; a message already
/// quarantined (redelivered before its termination reached the stream) keeps its first row.
pub async fn quarantine_batch(pool: &Pool, row: &QuarantineRow<'_>) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let error = super::storable_text(row.error);
    let found = client
        .query_one(
            "WITH inserted AS (
                 INSERT INTO cns_quarantined_batches
                     (nats_stream, nats_stream_sequence, subject, payload, reason, error)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (nats_stream, nats_stream_sequence) DO NOTHING
                 RETURNING quarantine_id)
             SELECT quarantine_id FROM inserted
             UNION ALL
             SELECT quarantine_id FROM cns_quarantined_batches
             WHERE nats_stream = $1 AND nats_stream_sequence = $2
             LIMIT 1",
            &[
                &row.nats_stream,
                &(row.nats_stream_sequence as i64),
                &row.subject,
                &row.payload,
                &row.reason.as_str(),
                &error.as_ref(),
            ],
        )
        .await
        .map_err(db("quarantine trade batch"))?;
    Ok(found.get(0))
}

/// A quarantined batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedBatch {
    pub quarantine_id: i64,
    pub nats_stream: String,
    pub nats_stream_sequence: i64,
    pub subject: String,
    pub payload: Vec<u8>,
    pub reason: String,
    pub error: String,
    pub quarantined_at: time::OffsetDateTime,
    pub status: String,
    pub note: Option<String>,
}

const QUARANTINED_SELECT: &str = "SELECT quarantine_id, nats_stream, nats_stream_sequence, \
    subject, payload, reason, error, quarantined_at, status, note FROM cns_quarantined_batches";

fn quarantined_from_row(row: &tokio_postgres::Row) -> QuarantinedBatch {
    QuarantinedBatch {
        quarantine_id: row.get(0),
        nats_stream: row.get(1),
        nats_stream_sequence: row.get(2),
        subject: row.get(3),
        payload: row.get(4),
        reason: row.get(5),
        error: row.get(6),
        quarantined_at: row.get(7),
        status: row.get(8),
        note: row.get(9),
    }
}

/// The quarantined batches, oldest first: the held ones only unless `all`; at most `limit`.
pub async fn quarantined_batches(
    pool: &Pool,
    all: bool,
    limit: i64,
) -> Result<Vec<QuarantinedBatch>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            &format!(
                "{QUARANTINED_SELECT} WHERE $1 OR status = 'held' ORDER BY quarantine_id LIMIT $2"
            ),
            &[&all, &limit],
        )
        .await
        .map_err(db("read quarantined batches"))?;
    Ok(rows.iter().map(quarantined_from_row).collect())
}

/// How many quarantined batches are held (awaiting release or dismissal).
pub async fn held_quarantined_count(pool: &Pool) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM cns_quarantined_batches WHERE status = 'held'",
            &[],
        )
        .await
        .map_err(db("count held quarantined batches"))?;
    Ok(row.get(0))
}

/// One quarantined batch, held or not.
pub async fn quarantined_batch(
    pool: &Pool,
    quarantine_id: i64,
) -> Result<Option<QuarantinedBatch>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            &format!("{QUARANTINED_SELECT} WHERE quarantine_id = $1"),
            &[&quarantine_id],
        )
        .await
        .map_err(db("read quarantined batch"))?;
    Ok(row.as_ref().map(quarantined_from_row))
}

/// Closes a held quarantined batch as `released` (captured again) or `dismissed`, with a
/// note. Returns false when it was not held (closed before, or no such id).
pub async fn close_quarantined_batch(
    pool: &Pool,
    quarantine_id: i64,
    released: bool,
    note: &str,
) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let status = if released { "released" } else { "dismissed" };
    let note = super::storable_text(note);
    let closed = client
        .execute(
            "UPDATE cns_quarantined_batches
             SET status = $2, closed_at = now(), note = $3
             WHERE quarantine_id = $1 AND status = 'held'",
            &[&quarantine_id, &status, &note.as_ref()],
        )
        .await
        .map_err(db("close quarantined batch"))?;
    Ok(closed == 1)
}

/// Which of `batch_ids` of `market` are already captured.
pub async fn captured_batches(
    transaction: &tokio_postgres::Transaction<'_>,
    market: &str,
    batch_ids: &[&str],
) -> Result<HashSet<String>, HostDbError> {
    let rows = transaction
        .query(
            "SELECT batch_id FROM cns_trade_batches WHERE market = $1 AND batch_id = ANY($2)",
            &[&market, &batch_ids],
        )
        .await
        .map_err(db("read captured batches"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Takes the cut-off lock of each date shared (until the transaction ends) and returns
/// those already closed. Dates must be sorted (lock order).
pub async fn lock_open_settlement_dates(
    transaction: &tokio_postgres::Transaction<'_>,
    sorted_dates: &[Date],
) -> Result<HashSet<Date>, HostDbError> {
    for date in sorted_dates {
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock_shared($1, $2)",
                &[&CUTOFF_LOCK_NAMESPACE, &date.to_julian_day()],
            )
            .await
            .map_err(db("lock settlement date shared"))?;
    }
    let rows = transaction
        .query(
            "SELECT settlement_date FROM cns_cutoffs WHERE settlement_date = ANY($1)",
            &[&sorted_dates],
        )
        .await
        .map_err(db("read cut-offs"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

const TRADE_SET_COPY: &str = "COPY exchange_trade_sets (market, trade_date, settlement_date, \
    trade_count, trades) FROM STDIN BINARY";

/// Whether a trade id can be stored in a trade set's line (V0017): 1 to 64 printable ASCII
/// characters, none a comma.
pub fn trade_id_storable(trade_id: &str) -> bool {
    !trade_id.is_empty()
        && trade_id.len() <= TRADE_ID_LENGTH_MAX
        && trade_id.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Whether a batch's market and id can be stored as its capture marker: 1 to
/// [`BATCH_KEY_LENGTH_MAX`] bytes each, no control characters (a text column refuses NUL,
/// and the key is indexed).
pub fn batch_key_storable(market: &str, batch_id: &str) -> bool {
    [market, batch_id].iter().all(|key| {
        !key.is_empty() && key.len() <= BATCH_KEY_LENGTH_MAX && !key.chars().any(char::is_control)
    })
}

/// Longest market or batch id stored.
pub const BATCH_KEY_LENGTH_MAX: usize = 200;

/// Longest trade id stored.
pub const TRADE_ID_LENGTH_MAX: usize = 64;

/// Appends `trade` as one line of a trade set (format in V0017: nine comma-separated
/// fields, no line break after it). The caller checked the trade id ([`trade_id_storable`]);
/// every other text field is a key of reference data.
fn push_trade_line(line: &mut String, trade: &TradeRow<'_>) {
    let mut number = itoa::Buffer::new();
    line.push_str(trade.trade_id);
    line.push(',');
    let (hour, minute, second) = trade.trade_time.as_hms();
    for (index, part) in [hour, minute, second].into_iter().enumerate() {
        if index > 0 {
            line.push(':');
        }
        line.push(char::from(b'0' + part / 10));
        line.push(char::from(b'0' + part % 10));
    }
    for field in [
        trade.isin,
        trade.buyer_participant_id,
        trade.seller_participant_id,
    ] {
        line.push(',');
        line.push_str(field);
    }
    line.push(',');
    line.push_str(number.format(trade.quantity));
    line.push(',');
    line.push_str(number.format(trade.price_micros));
    line.push(',');
    line.push_str(trade.currency_code);
    line.push(',');
    line.push_str(trade.settlement_type);
}

/// Appends trades as trade sets with one COPY BINARY (V0017): one row per (market, trade
/// date, settlement date), its trades as lines in the order given. `exchange_trade_sets`
/// has no key: the caller claims the trade ids ([`claim_trade_ids`]). Returns the number of
/// sets written.
pub async fn copy_trade_sets(
    transaction: &tokio_postgres::Transaction<'_>,
    trades: &[&TradeRow<'_>],
) -> Result<u64, HostDbError> {
    // A capture holds one trade date, rarely two: a short list beats a map.
    let mut sets: Vec<((&str, Date, Date), i32, String)> = Vec::new();
    for trade in trades {
        let key = (trade.market, trade.trade_date, trade.settlement_date);
        let index = match sets.iter().position(|(set_key, _, _)| *set_key == key) {
            Some(index) => index,
            None => {
                sets.push((key, 0, String::with_capacity(trades.len() * 72)));
                sets.len() - 1
            }
        };
        let (_, count, lines) = &mut sets[index];
        if *count > 0 {
            lines.push('\n');
        }
        *count += 1;
        push_trade_line(lines, trade);
    }
    let mut rows = CopyRows::<5>::new();
    for ((market, trade_date, settlement_date), count, lines) in &sets {
        rows.push([
            Field::Text(market),
            Field::Date(*trade_date),
            Field::Date(*settlement_date),
            Field::Int4(*count),
            Field::Text(lines),
        ]);
    }
    copy_rows(
        transaction,
        "copy exchange trade sets",
        TRADE_SET_COPY,
        rows,
    )
    .await
}

pub async fn insert_batches(
    transaction: &tokio_postgres::Transaction<'_>,
    batches: &[BatchRow],
) -> Result<(), HostDbError> {
    let markets: Vec<&str> = batches.iter().map(|b| b.market.as_str()).collect();
    let ids: Vec<&str> = batches.iter().map(|b| b.batch_id.as_str()).collect();
    let counts: Vec<i32> = batches.iter().map(|b| b.trade_count).collect();
    let accepted: Vec<i32> = batches.iter().map(|b| b.accepted_count).collect();
    transaction
        .execute(
            "INSERT INTO cns_trade_batches (market, batch_id, trade_count, accepted_count, rejected_count)
             SELECT market, batch_id, trade_count, accepted, trade_count - accepted
             FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[])
                 AS t (market, batch_id, trade_count, accepted)",
            &[&markets, &ids, &counts, &accepted],
        )
        .await
        .map_err(db("insert captured batches"))?;
    Ok(())
}

pub async fn insert_exceptions(
    transaction: &tokio_postgres::Transaction<'_>,
    exceptions: &[ExceptionRow],
) -> Result<(), HostDbError> {
    if exceptions.is_empty() {
        return Ok(());
    }
    // A refused trade is stored as it came, but for NUL characters (a text column refuses
    // them, and with them the whole capture transaction).
    let markets: Vec<&str> = exceptions.iter().map(|e| e.market.as_str()).collect();
    let batch_ids: Vec<&str> = exceptions.iter().map(|e| e.batch_id.as_str()).collect();
    let trade_ids: Vec<Cow<'_, str>> = exceptions
        .iter()
        .map(|e| super::storable_text(&e.trade_id))
        .collect();
    let dates: Vec<Option<Date>> = exceptions.iter().map(|e| e.trade_date).collect();
    let reasons: Vec<&str> = exceptions.iter().map(|e| e.reason_code).collect();
    let details: Vec<Cow<'_, str>> = exceptions
        .iter()
        .map(|e| super::storable_text(&e.detail))
        .collect();
    let trades: Vec<Cow<'_, serde_json::Value>> = exceptions
        .iter()
        .map(|e| super::storable_json(&e.trade))
        .collect();
    let trade_ids: Vec<&str> = trade_ids.iter().map(|id| id.as_ref()).collect();
    let details: Vec<&str> = details.iter().map(|detail| detail.as_ref()).collect();
    let trades: Vec<&serde_json::Value> = trades.iter().map(|trade| trade.as_ref()).collect();
    transaction
        .execute(
            "INSERT INTO cns_trade_exceptions
                 (market, batch_id, trade_id, trade_date, reason_code, detail, trade)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[],
                                  $6::text[], $7::jsonb[])",
            &[
                &markets, &batch_ids, &trade_ids, &dates, &reasons, &details, &trades,
            ],
        )
        .await
        .map_err(db("insert trade exceptions"))?;
    Ok(())
}

/// A change to one stock position (sorted by participant, isin before applying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockDelta {
    pub participant_id: String,
    pub isin: String,
    pub net_quantity: i64,
    pub obligation_count: i32,
}

/// A change to one money position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyDelta {
    pub participant_id: String,
    pub currency_code: String,
    pub net_amount_minor: i64,
    pub obligation_count: i32,
}

const DELTA_SET_COPY: &str = "COPY cns_position_delta_sets (settlement_date, kind, \
    delta_count, deltas) FROM STDIN BINARY";
/// One netted delta, borrowed: (participant, isin or currency code, net, obligation count).
pub type DeltaRow<'a> = (&'a str, &'a str, i64, i32);

/// Appends netted deltas of `settlement_date` as delta sets with one COPY BINARY (V0017: a
/// row per kind, its deltas as lines), in any order: no row of `cns_stock_positions` is
/// touched, so capture transactions never wait on each other. The deltas count as part of
/// the positions until [`fold_position_deltas`] moves them.
pub async fn append_position_deltas(
    transaction: &tokio_postgres::Transaction<'_>,
    settlement_date: Date,
    stock: impl IntoIterator<Item = DeltaRow<'_>>,
    money: impl IntoIterator<Item = DeltaRow<'_>>,
) -> Result<(), HostDbError> {
    let stock = delta_lines(stock);
    let money = delta_lines(money);
    let mut rows = CopyRows::<4>::new();
    for (kind, (count, lines)) in [("stock", &stock), ("money", &money)] {
        if *count > 0 {
            rows.push([
                Field::Date(settlement_date),
                Field::Text(kind),
                Field::Int4(*count),
                Field::Text(lines),
            ]);
        }
    }
    copy_rows(
        transaction,
        "copy position delta sets",
        DELTA_SET_COPY,
        rows,
    )
    .await?;
    Ok(())
}

/// The lines of a delta set (V0017) and how many.
fn delta_lines<'a>(rows: impl IntoIterator<Item = DeltaRow<'a>>) -> (i32, String) {
    let mut number = itoa::Buffer::new();
    let mut count: i32 = 0;
    let mut lines = String::new();
    for (participant_id, key, net, obligation_count) in rows {
        if count > 0 {
            lines.push('\n');
        }
        count += 1;
        lines.push_str(participant_id);
        lines.push(',');
        lines.push_str(key);
        lines.push(',');
        lines.push_str(number.format(net));
        lines.push(',');
        lines.push_str(number.format(obligation_count));
    }
    (count, lines)
}

/// Moves every appended delta of `settlement_date` into the provisional position rows
/// (creating them), in the caller's transaction: the delta sets are deleted (`RETURNING`
/// their lines), summed here per position, and the sums upserted into the position rows in
/// key order. A concurrent fold waits on the deleted rows and then finds none, so a delta is
/// folded exactly once. Returns the number of stock and money delta lines folded. Sets
/// `work_mem` to 256 MB for the rest of the caller's transaction (the key-order sort of up
/// to a day's positions stays in memory).
///
/// Summing here rather than in SQL: for 2 M delta lines the single-statement fold (parse the
/// lines with string_to_table, GROUP BY, upsert) took 6.1 s, 2.2 s of it parsing and 1.2 s a
/// hash aggregate and sort spilled to disk.
pub async fn fold_position_deltas(
    transaction: &tokio_postgres::Transaction<'_>,
    settlement_date: Date,
) -> Result<(u64, u64), HostDbError> {
    let sets = transaction
        .query(
            "DELETE FROM cns_position_delta_sets WHERE settlement_date = $1
             RETURNING kind, deltas",
            &[&settlement_date],
        )
        .await
        .map_err(db("take position delta sets"))?;
    if sets.is_empty() {
        return Ok((0, 0));
    }
    type Sums<'a> = foldhash::HashMap<(&'a str, &'a str), (i64, i64)>;
    let (mut stock, mut money): (Sums<'_>, Sums<'_>) = Default::default();
    let (mut stock_lines, mut money_lines) = (0u64, 0u64);
    for set in &sets {
        let (sums, lines) = match set.get::<_, &str>(0) {
            "stock" => (&mut stock, &mut stock_lines),
            _ => (&mut money, &mut money_lines),
        };
        for line in set.get::<_, &str>(1).split('\n') {
            let (participant_id, key, net, count) = parse_delta_line(line)?;
            let sum = sums.entry((participant_id, key)).or_default();
            sum.0 += net;
            sum.1 += count;
            *lines += 1;
        }
    }
    transaction
        .batch_execute(
            "SET LOCAL work_mem = '256MB';
             CREATE TEMP TABLE folded_deltas (
                 kind text NOT NULL, participant_id text NOT NULL, key text NOT NULL,
                 net int8 NOT NULL, obligation_count int8 NOT NULL
             ) ON COMMIT DROP",
        )
        .await
        .map_err(db("create folded deltas"))?;
    let mut rows = CopyRows::<5>::new();
    for (kind, sums) in [("stock", &stock), ("money", &money)] {
        for ((participant_id, key), (net, count)) in sums {
            rows.push([
                Field::Text(kind),
                Field::Text(participant_id),
                Field::Text(key),
                Field::Int8(*net),
                Field::Int8(*count),
            ]);
        }
    }
    copy_rows(
        transaction,
        "copy folded deltas",
        "COPY folded_deltas (kind, participant_id, key, net, obligation_count) FROM STDIN BINARY",
        rows,
    )
    .await?;
    transaction
        .execute(
            "INSERT INTO cns_stock_positions
                 (settlement_date, participant_id, isin, net_quantity, obligation_count, status)
             SELECT $1, participant_id, key, net, obligation_count, 'provisional'
             FROM folded_deltas WHERE kind = 'stock'
             ORDER BY participant_id, key
             ON CONFLICT (settlement_date, participant_id, isin) DO UPDATE SET
                 net_quantity = cns_stock_positions.net_quantity + EXCLUDED.net_quantity,
                 obligation_count = cns_stock_positions.obligation_count
                     + EXCLUDED.obligation_count,
                 updated_at = now()",
            &[&settlement_date],
        )
        .await
        .map_err(db("fold stock position deltas"))?;
    transaction
        .execute(
            "INSERT INTO cns_money_positions
                 (settlement_date, participant_id, currency_code, net_amount_minor,
                  obligation_count, status)
             SELECT $1, participant_id, key, net, obligation_count, 'provisional'
             FROM folded_deltas WHERE kind = 'money'
             ORDER BY participant_id, key
             ON CONFLICT (settlement_date, participant_id, currency_code) DO UPDATE SET
                 net_amount_minor = cns_money_positions.net_amount_minor
                     + EXCLUDED.net_amount_minor,
                 obligation_count = cns_money_positions.obligation_count
                     + EXCLUDED.obligation_count,
                 updated_at = now()",
            &[&settlement_date],
        )
        .await
        .map_err(db("fold money position deltas"))?;
    // Dropped now, not only at commit: a transaction may fold more than once.
    transaction
        .batch_execute("DROP TABLE folded_deltas")
        .await
        .map_err(db("drop folded deltas"))?;
    Ok((stock_lines, money_lines))
}

/// [`fold_position_deltas`] in a transaction of its own, committed.
pub async fn fold_position_deltas_now(
    client: &mut deadpool_postgres::Client,
    settlement_date: Date,
) -> Result<(u64, u64), HostDbError> {
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin position fold"))?;
    let folded = fold_position_deltas(&transaction, settlement_date).await?;
    transaction
        .commit()
        .await
        .map_err(db("commit position fold"))?;
    Ok(folded)
}

/// One delta line (V0017): (participant, ISIN or currency code, net, obligation count).
fn parse_delta_line(line: &str) -> Result<(&str, &str, i64, i64), HostDbError> {
    let malformed = || HostDbError::MalformedData {
        context: "fold position deltas".to_owned(),
        message: format!("delta line `{line}` is not participant,key,net,count"),
    };
    let mut fields = line.split(',');
    let (Some(participant_id), Some(key), Some(net), Some(count), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed());
    };
    let net = net.parse().map_err(|_| malformed())?;
    let count = count.parse().map_err(|_| malformed())?;
    Ok((participant_id, key, net, count))
}

/// One side of an isolated trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolatedObligationRow {
    pub market: String,
    pub trade_date: Date,
    pub trade_id: String,
    /// `buy` or `sell`.
    pub side: &'static str,
    pub participant_id: String,
    pub settlement_date: Date,
    pub isin: String,
    pub quantity: i64,
    pub currency_code: String,
    pub amount_minor: i64,
    pub status: &'static str,
}

pub async fn insert_isolated_obligations(
    transaction: &tokio_postgres::Transaction<'_>,
    rows: &[IsolatedObligationRow],
) -> Result<(), HostDbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let markets: Vec<&str> = rows.iter().map(|r| r.market.as_str()).collect();
    let trade_dates: Vec<Date> = rows.iter().map(|r| r.trade_date).collect();
    let trade_ids: Vec<&str> = rows.iter().map(|r| r.trade_id.as_str()).collect();
    let sides: Vec<&str> = rows.iter().map(|r| r.side).collect();
    let participants: Vec<&str> = rows.iter().map(|r| r.participant_id.as_str()).collect();
    let settlement_dates: Vec<Date> = rows.iter().map(|r| r.settlement_date).collect();
    let isins: Vec<&str> = rows.iter().map(|r| r.isin.as_str()).collect();
    let quantities: Vec<i64> = rows.iter().map(|r| r.quantity).collect();
    let currencies: Vec<&str> = rows.iter().map(|r| r.currency_code.as_str()).collect();
    let amounts: Vec<i64> = rows.iter().map(|r| r.amount_minor).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    transaction
        .execute(
            "INSERT INTO cns_isolated_obligations (market, trade_date, trade_id, side,
                 participant_id, settlement_date, isin, quantity, currency_code, amount_minor, status)
             SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],
                 $6::date[], $7::text[], $8::int8[], $9::text[], $10::int8[], $11::text[])",
            &[
                &markets, &trade_dates, &trade_ids, &sides, &participants, &settlement_dates,
                &isins, &quantities, &currencies, &amounts, &statuses,
            ],
        )
        .await
        .map_err(db("insert isolated obligations"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Trade id claims (V0014)

/// Numbers per block of `cns_trade_id_blocks` (bits of its `seen`).
pub const TRADE_ID_BLOCK_BITS: i64 = 8192;
/// Digits of the longest numbered trade id (10^18 - 1 < 2^63).
const TRADE_ID_DIGITS_MAX: usize = 18;

/// A trade id as the claim tables key it (V0014): `<prefix><digits>` is one bit of a block,
/// anything else a row of `cns_trade_ids`. One to one: two ids have the same key only when
/// they are the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TradeIdKey<'a> {
    Numbered {
        /// The characters before the first ASCII digit (may be empty).
        prefix: &'a str,
        /// How many digits follow (1 to 18).
        digits: u8,
        number: i64,
    },
    Other(&'a str),
}

impl<'a> TradeIdKey<'a> {
    pub fn of(trade_id: &'a str) -> TradeIdKey<'a> {
        let split = trade_id
            .bytes()
            .position(|byte| byte.is_ascii_digit())
            .unwrap_or(trade_id.len());
        // An ASCII digit is never inside a multi-byte character: `split` is a boundary.
        let (prefix, digits) = trade_id.split_at(split);
        let numbered = !digits.is_empty()
            && digits.len() <= TRADE_ID_DIGITS_MAX
            && digits.bytes().all(|byte| byte.is_ascii_digit());
        if !numbered {
            return TradeIdKey::Other(trade_id);
        }
        let number = digits
            .bytes()
            .fold(0i64, |number, digit| number * 10 + i64::from(digit - b'0'));
        TradeIdKey::Numbered {
            prefix,
            digits: digits.len() as u8,
            number,
        }
    }
}

/// (trade date, prefix, digits, block number) of one `cns_trade_id_blocks` row of a market.
type BlockKey<'a> = (Date, &'a str, i16, i64);

/// `ids` (trade date, trade id) split by claim table: numbered ids by block, each with
/// (entry in `ids`, bit), and the entries of the other ids.
#[allow(clippy::type_complexity)]
fn split_trade_ids<'a>(
    ids: &[(Date, &'a str)],
) -> (BTreeMap<BlockKey<'a>, Vec<(usize, usize)>>, Vec<usize>) {
    let mut blocks: BTreeMap<BlockKey<'a>, Vec<(usize, usize)>> = BTreeMap::new();
    let mut others: Vec<usize> = Vec::new();
    // Exchanges number trades in sequence, so ids come in long runs of one block: collect a
    // run, then add it to the map in one lookup (not one tree search per id).
    let mut run: Option<(BlockKey<'a>, Vec<(usize, usize)>)> = None;
    for (entry, &(trade_date, trade_id)) in ids.iter().enumerate() {
        let Some((key, bit)) = block_bit(trade_date, trade_id) else {
            others.push(entry);
            continue;
        };
        match &mut run {
            Some((run_key, bits)) if *run_key == key => bits.push((entry, bit)),
            _ => {
                if let Some((run_key, bits)) = run.replace((key, vec![(entry, bit)])) {
                    blocks.entry(run_key).or_default().extend(bits);
                }
            }
        }
    }
    if let Some((run_key, bits)) = run {
        blocks.entry(run_key).or_default().extend(bits);
    }
    (blocks, others)
}

/// The block of a numbered trade id and its bit there; `None` for an id claimed in
/// `cns_trade_ids` instead (V0014).
fn block_bit(trade_date: Date, trade_id: &str) -> Option<(BlockKey<'_>, usize)> {
    match TradeIdKey::of(trade_id) {
        TradeIdKey::Numbered {
            prefix,
            digits,
            number,
        } => Some((
            (
                trade_date,
                prefix,
                i16::from(digits),
                number / TRADE_ID_BLOCK_BITS,
            ),
            (number % TRADE_ID_BLOCK_BITS) as usize,
        )),
        TradeIdKey::Other(_) => None,
    }
}

fn bit_is_set(seen: &[u8], bit: usize) -> bool {
    seen.get(bit / 8)
        .is_some_and(|byte| byte & (1u8 << (bit % 8)) != 0)
}

/// Block keys as the four arrays the SQL below unnests.
fn block_key_arrays<'a>(
    keys: impl Iterator<Item = &'a BlockKey<'a>>,
) -> (Vec<Date>, Vec<&'a str>, Vec<i16>, Vec<i64>) {
    let mut arrays = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for key in keys {
        arrays.0.push(key.0);
        arrays.1.push(key.1);
        arrays.2.push(key.2);
        arrays.3.push(key.3);
    }
    arrays
}

/// Of `ids` (trade date, trade id) of `market`, which are claimed (by committed
/// transactions, or earlier in this one); takes no lock. Capture decides with it which
/// trades are duplicates, then claims the others with [`claim_trade_ids`] just before it
/// commits, where a claim made meanwhile by another transaction shows.
pub async fn claimed_trade_ids(
    transaction: &tokio_postgres::Transaction<'_>,
    market: &str,
    ids: &[(Date, &str)],
) -> Result<Vec<bool>, HostDbError> {
    let mut claimed = vec![false; ids.len()];
    let (blocks, others) = split_trade_ids(ids);
    if !blocks.is_empty() {
        let (dates, prefixes, digits, numbers) = block_key_arrays(blocks.keys());
        let stored: HashMap<(Date, String, i16, i64), Vec<u8>> = transaction
            .query(
                "SELECT b.trade_date, b.id_prefix, b.id_digits, b.block_number, b.seen
                 FROM unnest($2::date[], $3::text[], $4::int2[], $5::int8[]) AS k (d, p, n, b)
                 JOIN cns_trade_id_blocks b
                   ON b.market = $1 AND b.trade_date = k.d AND b.id_prefix = k.p
                  AND b.id_digits = k.n AND b.block_number = k.b",
                &[&market, &dates, &prefixes, &digits, &numbers],
            )
            .await
            .map_err(db("read trade id blocks"))?
            .into_iter()
            .map(|row| ((row.get(0), row.get(1), row.get(2), row.get(3)), row.get(4)))
            .collect();
        for (key, entries) in &blocks {
            if let Some(seen) = stored.get(&(key.0, key.1.to_owned(), key.2, key.3)) {
                for &(entry, bit) in entries {
                    claimed[entry] = bit_is_set(seen, bit);
                }
            }
        }
    }
    if !others.is_empty() {
        let dates: Vec<Date> = others.iter().map(|&e| ids[e].0).collect();
        let trade_ids: Vec<&str> = others.iter().map(|&e| ids[e].1).collect();
        let stored: HashSet<(Date, String)> = transaction
            .query(
                "SELECT c.trade_date, c.trade_id
                 FROM unnest($2::date[], $3::text[]) AS k (d, t)
                 JOIN cns_trade_ids c
                   ON c.market = $1 AND c.trade_date = k.d AND c.trade_id = k.t",
                &[&market, &dates, &trade_ids],
            )
            .await
            .map_err(db("read trade ids"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for &entry in &others {
            claimed[entry] = stored.contains(&(ids[entry].0, ids[entry].1.to_owned()));
        }
    }
    Ok(claimed)
}

/// Claims `ids` (distinct (trade date, trade id)) of `market` in the caller's transaction
/// (the claims commit or roll back with the trades). Returns, per entry, whether the id
/// was claimed already (then it is not claimed again: the caller's trade is a duplicate).
/// Blocks are locked in key order (an upsert that creates missing ones) until the
/// transaction ends, so concurrent capture transactions wait for each other only where
/// their ids share a block, never deadlock on blocks, and the waiter reads the bits the
/// other committed.
pub async fn claim_trade_ids(
    transaction: &tokio_postgres::Transaction<'_>,
    market: &str,
    ids: &[(Date, &str)],
) -> Result<Vec<bool>, HostDbError> {
    let mut claimed_before = vec![false; ids.len()];
    let (blocks, others) = split_trade_ids(ids);
    if !blocks.is_empty() {
        let (dates, prefixes, digits, numbers) = block_key_arrays(blocks.keys());
        // A conflicting row is locked and returned unchanged, a new one returned empty.
        let rows = transaction
            .query(
                "INSERT INTO cns_trade_id_blocks
                     (market, trade_date, id_prefix, id_digits, block_number, seen)
                 SELECT $1, d, p, n, b, '\\x'::bytea
                 FROM unnest($2::date[], $3::text[], $4::int2[], $5::int8[])
                     WITH ORDINALITY AS k (d, p, n, b, o)
                 ORDER BY o
                 ON CONFLICT (market, trade_date, id_prefix, id_digits, block_number)
                 DO UPDATE SET seen = cns_trade_id_blocks.seen
                 RETURNING trade_date, id_prefix, id_digits, block_number, seen",
                &[&market, &dates, &prefixes, &digits, &numbers],
            )
            .await
            .map_err(db("lock trade id blocks"))?;
        let mut stored: HashMap<(Date, String, i16, i64), Vec<u8>> = rows
            .into_iter()
            .map(|row| ((row.get(0), row.get(1), row.get(2), row.get(3)), row.get(4)))
            .collect();
        let mut changed_keys: Vec<&BlockKey<'_>> = Vec::new();
        let mut changed_bits: Vec<Vec<u8>> = Vec::new();
        for (key, entries) in &blocks {
            // The upsert returns every key it was given (no WHERE on its DO UPDATE).
            let mut seen = stored
                .remove(&(key.0, key.1.to_owned(), key.2, key.3))
                .ok_or_else(|| HostDbError::Unavailable {
                    context: "lock trade id blocks".to_owned(),
                    detail: format!("the upsert did not return block {key:?}"),
                })?;
            let mut changed = false;
            for &(entry, bit) in entries {
                if bit_is_set(&seen, bit) {
                    claimed_before[entry] = true;
                    continue;
                }
                if seen.len() <= bit / 8 {
                    seen.resize(bit / 8 + 1, 0);
                }
                seen[bit / 8] |= 1u8 << (bit % 8);
                changed = true;
            }
            if changed {
                changed_keys.push(key);
                changed_bits.push(seen);
            }
        }
        if !changed_bits.is_empty() {
            let (dates, prefixes, digits, numbers) = block_key_arrays(changed_keys.iter().copied());
            transaction
                .execute(
                    "UPDATE cns_trade_id_blocks b SET seen = u.seen
                     FROM unnest($2::date[], $3::text[], $4::int2[], $5::int8[], $6::bytea[])
                         AS u (d, p, n, k, seen)
                     WHERE b.market = $1 AND b.trade_date = u.d AND b.id_prefix = u.p
                       AND b.id_digits = u.n AND b.block_number = u.k",
                    &[&market, &dates, &prefixes, &digits, &numbers, &changed_bits],
                )
                .await
                .map_err(db("claim trade ids in blocks"))?;
        }
    }
    if !others.is_empty() {
        let dates: Vec<Date> = others.iter().map(|&e| ids[e].0).collect();
        let trade_ids: Vec<&str> = others.iter().map(|&e| ids[e].1).collect();
        // Waits for a concurrent claim of the same id, then skips it; returns the new ones.
        let fresh: HashSet<(Date, String)> = transaction
            .query(
                "INSERT INTO cns_trade_ids (market, trade_date, trade_id)
                 SELECT $1, d, t FROM unnest($2::date[], $3::text[]) AS k (d, t)
                 ON CONFLICT DO NOTHING
                 RETURNING trade_date, trade_id",
                &[&market, &dates, &trade_ids],
            )
            .await
            .map_err(db("claim trade ids"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for &entry in &others {
            claimed_before[entry] = !fresh.contains(&(ids[entry].0, ids[entry].1.to_owned()));
        }
    }
    Ok(claimed_before)
}

// ---------------------------------------------------------------------------------------
// Views

/// A stored position of one participant, stock (`isin` set) or money (`currency_code` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRow {
    pub settlement_date: Date,
    pub participant_id: String,
    pub isin: Option<String>,
    pub currency_code: Option<String>,
    pub net: i64,
    pub settled: i64,
    pub obligation_count: i32,
    pub status: String,
}

/// Isolated obligations are listed with `isin` set and the trade id in `isolated_trade_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolatedRow {
    pub trade_id: String,
    pub side: String,
    pub isin: String,
    pub quantity: i64,
    pub currency_code: String,
    pub amount_minor: i64,
    pub settled_quantity: i64,
    pub status: String,
}

/// Every CNS position (stock then money, by key) of `settlement_date`; of one participant
/// when `participant_id` is given.
pub async fn positions(
    pool: &Pool,
    participant_id: Option<&str>,
    settlement_date: Date,
) -> Result<Vec<PositionRow>, HostDbError> {
    let mut client = super::client(pool).await?;
    fold_position_deltas_now(&mut client, settlement_date).await?;
    let rows = client
        .query(
            "SELECT settlement_date, participant_id, isin, NULL::text, net_quantity,
                    settled_quantity, obligation_count, status
             FROM cns_stock_positions
             WHERE settlement_date = $1 AND ($2::text IS NULL OR participant_id = $2)
             UNION ALL
             SELECT settlement_date, participant_id, NULL, currency_code, net_amount_minor,
                    settled_amount_minor, obligation_count, status
             FROM cns_money_positions
             WHERE settlement_date = $1 AND ($2::text IS NULL OR participant_id = $2)
             ORDER BY 2, 3 NULLS LAST, 4",
            &[&settlement_date, &participant_id],
        )
        .await
        .map_err(db("read cns positions"))?;
    Ok(rows
        .iter()
        .map(|row| PositionRow {
            settlement_date: row.get(0),
            participant_id: row.get(1),
            isin: row.get(2),
            currency_code: row.get(3),
            net: row.get(4),
            settled: row.get(5),
            obligation_count: row.get(6),
            status: row.get(7),
        })
        .collect())
}

pub async fn isolated_obligations(
    pool: &Pool,
    participant_id: &str,
    settlement_date: Date,
) -> Result<Vec<IsolatedRow>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT trade_id, side, isin, quantity, currency_code, amount_minor,
                    settled_quantity, status
             FROM cns_isolated_obligations
             WHERE participant_id = $1 AND settlement_date = $2
             ORDER BY trade_date, trade_id, side",
            &[&participant_id, &settlement_date],
        )
        .await
        .map_err(db("read isolated obligations"))?;
    Ok(rows
        .iter()
        .map(|row| IsolatedRow {
            trade_id: row.get(0),
            side: row.get(1),
            isin: row.get(2),
            quantity: row.get(3),
            currency_code: row.get(4),
            amount_minor: row.get(5),
            settled_quantity: row.get(6),
            status: row.get(7),
        })
        .collect())
}

/// A refused trade as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredException {
    pub batch_id: String,
    pub trade_id: String,
    pub reason_code: String,
    pub detail: String,
}

pub async fn exceptions(pool: &Pool, market: &str) -> Result<Vec<StoredException>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT batch_id, trade_id, reason_code, detail FROM cns_trade_exceptions
             WHERE market = $1 ORDER BY exception_id",
            &[&market],
        )
        .await
        .map_err(db("read trade exceptions"))?;
    Ok(rows
        .iter()
        .map(|row| StoredException {
            batch_id: row.get(0),
            trade_id: row.get(1),
            reason_code: row.get(2),
            detail: row.get(3),
        })
        .collect())
}

/// Trades captured for `market` (all trade dates).
pub async fn trade_count(pool: &Pool, market: &str) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(trade_count), 0)::int8 FROM exchange_trade_sets WHERE market = $1",
            &[&market],
        )
        .await
        .map_err(db("count exchange trades"))?;
    Ok(row.get(0))
}

// ---------------------------------------------------------------------------------------
// Cut-off

/// A captured CNS trade as the cut-off re-nets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnsTradeRow {
    pub buyer_participant_id: String,
    pub seller_participant_id: String,
    pub isin: String,
    pub quantity: i64,
    pub price_micros: i64,
    pub currency_code: String,
}

/// The cut-off transaction of one settlement date: holds the date's lock exclusively, so no
/// capture adds to it meanwhile.
pub struct Cutoff<'a> {
    transaction: deadpool_postgres::Transaction<'a>,
    settlement_date: Date,
}

impl<'a> Cutoff<'a> {
    /// Begins the cut-off of `settlement_date`; `None` when it was already closed.
    pub async fn begin(
        client: &'a mut deadpool_postgres::Client,
        settlement_date: Date,
    ) -> Result<Option<Cutoff<'a>>, HostDbError> {
        let transaction = client.transaction().await.map_err(db("begin cut-off"))?;
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&CUTOFF_LOCK_NAMESPACE, &settlement_date.to_julian_day()],
            )
            .await
            .map_err(db("lock settlement date"))?;
        let closed = transaction
            .query_opt(
                "SELECT 1 FROM cns_cutoffs WHERE settlement_date = $1",
                &[&settlement_date],
            )
            .await
            .map_err(db("read cut-off"))?
            .is_some();
        if closed {
            return Ok(None);
        }
        // Under the exclusive lock no capture appends meanwhile: fold everything netted.
        fold_position_deltas(&transaction, settlement_date).await?;
        Ok(Some(Cutoff {
            transaction,
            settlement_date,
        }))
    }

    /// Every captured CNS trade of the settlement date.
    pub async fn cns_trades(&self) -> Result<Vec<CnsTradeRow>, HostDbError> {
        let rows = self
            .transaction
            .query(
                "SELECT buyer_participant_id, seller_participant_id, isin, quantity,
                        price_micros, currency_code
                 FROM exchange_trades
                 WHERE settlement_date = $1 AND settlement_type = 'cns'",
                &[&self.settlement_date],
            )
            .await
            .map_err(db("read cns trades of the settlement date"))?;
        Ok(rows
            .iter()
            .map(|row| CnsTradeRow {
                buyer_participant_id: row.get(0),
                seller_participant_id: row.get(1),
                isin: row.get(2),
                quantity: row.get(3),
                price_micros: row.get(4),
                currency_code: row.get(5),
            })
            .collect())
    }

    /// The positions stored for the settlement date (netted incrementally by capture).
    pub async fn stored_positions(
        &self,
    ) -> Result<(Vec<StockDelta>, Vec<MoneyDelta>), HostDbError> {
        let stock = self
            .transaction
            .query(
                // Remainders carried in from an earlier date are not netted trades.
                "SELECT participant_id, isin, net_quantity - carried_in_quantity,
                        obligation_count - carried_in_count
                 FROM cns_stock_positions
                 WHERE settlement_date = $1 AND obligation_count > carried_in_count",
                &[&self.settlement_date],
            )
            .await
            .map_err(db("read stock positions"))?
            .iter()
            .map(|row| StockDelta {
                participant_id: row.get(0),
                isin: row.get(1),
                net_quantity: row.get(2),
                obligation_count: row.get(3),
            })
            .collect();
        let money = self
            .transaction
            .query(
                "SELECT participant_id, currency_code, net_amount_minor, obligation_count
                 FROM cns_money_positions WHERE settlement_date = $1",
                &[&self.settlement_date],
            )
            .await
            .map_err(db("read money positions"))?
            .iter()
            .map(|row| MoneyDelta {
                participant_id: row.get(0),
                currency_code: row.get(1),
                net_amount_minor: row.get(2),
                obligation_count: row.get(3),
            })
            .collect();
        Ok((stock, money))
    }

    /// Marks every position and isolated obligation of the date final, appends their events
    /// to the outbox, records the cut-off and commits.
    pub async fn commit(
        self,
        trade_count: i64,
        outbox: &[super::settlement::OutboxRow],
    ) -> Result<(u64, u64), HostDbError> {
        let date = &self.settlement_date;
        super::cns_settlement::append_outbox(&self.transaction, outbox).await?;
        let stock = self
            .transaction
            .execute(
                "UPDATE cns_stock_positions SET status = 'final', updated_at = now()
                 WHERE settlement_date = $1 AND status = 'provisional'",
                &[date],
            )
            .await
            .map_err(db("finalise stock positions"))?;
        let money = self
            .transaction
            .execute(
                "UPDATE cns_money_positions SET status = 'final', updated_at = now()
                 WHERE settlement_date = $1 AND status = 'provisional'",
                &[date],
            )
            .await
            .map_err(db("finalise money positions"))?;
        self.transaction
            .execute(
                "UPDATE cns_isolated_obligations SET status = 'final', updated_at = now()
                 WHERE settlement_date = $1 AND status = 'provisional'",
                &[date],
            )
            .await
            .map_err(db("finalise isolated obligations"))?;
        self.transaction
            .execute(
                "INSERT INTO cns_cutoffs (settlement_date, trade_count, stock_position_count,
                     money_position_count) VALUES ($1, $2, $3, $4)",
                &[date, &trade_count, &(stock as i64), &(money as i64)],
            )
            .await
            .map_err(db("record cut-off"))?;
        self.transaction
            .commit()
            .await
            .map_err(db("commit cut-off"))?;
        Ok((stock, money))
    }
}

// ---------------------------------------------------------------------------------------
// Benchmark baseline

/// The straightforward SQL forms of netting: both turn each CNS trade into its two
/// obligations and sum them per (participant, security, settlement date). The benchmark
/// times each and compares against the faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupByForm {
    /// Buyer side and seller side as two scans glued with `UNION ALL`.
    UnionAll,
    /// One scan; each row unpivoted into its two obligations with `CROSS JOIN LATERAL`.
    Lateral,
}

impl GroupByForm {
    pub const ALL: [GroupByForm; 2] = [GroupByForm::UnionAll, GroupByForm::Lateral];

    pub fn name(self) -> &'static str {
        match self {
            GroupByForm::UnionAll => "union all",
            GroupByForm::Lateral => "lateral",
        }
    }
}

/// Copies the trades of `market` out of their sets into `baseline_trades`, a plain table of
/// one row per trade (dropped and created), vacuumed and analysed: what [`group_by_netting`]
/// reads, so the baseline nets rows, as SQL would in a schema of one row per trade, instead
/// of parsing the sets on every read. Returns the number of trades copied.
pub async fn materialize_baseline_trades(pool: &Pool, market: &str) -> Result<u64, HostDbError> {
    let client = super::client(pool).await?;
    client
        .batch_execute("DROP TABLE IF EXISTS baseline_trades")
        .await
        .map_err(db("drop baseline trades"))?;
    let copied = client
        .execute(
            "CREATE TABLE baseline_trades AS SELECT * FROM exchange_trades WHERE market = $1",
            &[&market],
        )
        .await
        .map_err(db("materialize baseline trades"))?;
    client
        .batch_execute("VACUUM ANALYZE baseline_trades")
        .await
        .map_err(db("vacuum baseline trades"))?;
    Ok(copied)
}

/// Nets every CNS trade of `market` in `baseline_trades` ([`materialize_baseline_trades`])
/// with one SQL `GROUP BY` (the set-based baseline the
/// in-memory netting is measured against). Returns the number of stock positions.
pub async fn group_by_netting(
    pool: &Pool,
    market: &str,
    form: GroupByForm,
) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let sql = match form {
        GroupByForm::UnionAll => {
            "SELECT count(*) FROM (
                 SELECT participant_id, isin, settlement_date, sum(quantity) AS net_quantity
                 FROM (
                     SELECT buyer_participant_id AS participant_id, isin, settlement_date, quantity
                     FROM baseline_trades WHERE market = $1 AND settlement_type = 'cns'
                     UNION ALL
                     SELECT seller_participant_id, isin, settlement_date, -quantity
                     FROM baseline_trades WHERE market = $1 AND settlement_type = 'cns'
                 ) AS obligations
                 GROUP BY participant_id, isin, settlement_date
             ) AS positions"
        }
        GroupByForm::Lateral => {
            "SELECT count(*) FROM (
                 SELECT o.participant_id, t.isin, t.settlement_date, sum(o.quantity) AS net_quantity
                 FROM baseline_trades t
                 CROSS JOIN LATERAL (VALUES (t.buyer_participant_id, t.quantity),
                                            (t.seller_participant_id, -t.quantity))
                     AS o (participant_id, quantity)
                 WHERE t.market = $1 AND t.settlement_type = 'cns'
                 GROUP BY o.participant_id, t.isin, t.settlement_date
             ) AS positions"
        }
    };
    let row = client
        .query_one(sql, &[&market])
        .await
        .map_err(db("net trades with group by"))?;
    Ok(row.get(0))
}

/// Captured batches of `market` (the benchmark waits for all of them).
pub async fn captured_batch_count(pool: &Pool, market: &str) -> Result<i64, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM cns_trade_batches WHERE market = $1",
            &[&market],
        )
        .await
        .map_err(db("count captured batches"))?;
    Ok(row.get(0))
}

/// Stock positions of `settlement_date` (after folding its deltas).
pub async fn stock_position_count(pool: &Pool, settlement_date: Date) -> Result<i64, HostDbError> {
    let mut client = super::client(pool).await?;
    fold_position_deltas_now(&mut client, settlement_date).await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM cns_stock_positions WHERE settlement_date = $1",
            &[&settlement_date],
        )
        .await
        .map_err(db("count stock positions"))?;
    Ok(row.get(0))
}

/// Drops (when present) and creates database `name`, through a pool on another database of
/// the same server. For benchmarks, which own their database.
pub async fn recreate_database(admin: &Pool, name: &str) -> Result<(), HostDbError> {
    let client = super::client(admin).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await
        .map_err(db("drop benchmark database"))?;
    client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
        .map_err(db("create benchmark database"))
}

/// Drops database `name` (when present).
pub async fn drop_database(admin: &Pool, name: &str) -> Result<(), HostDbError> {
    let client = super::client(admin).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await
        .map_err(db("drop benchmark database"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_and_delta_lines_are_the_documented_comma_separated_fields() {
        // Goal: the line formats V0017 documents (and its view parses). Method: a trade and
        // two deltas against hand-written lines; ids a line cannot hold are refused.
        let trade = TradeRow {
            market: "xhkg",
            trade_date: time::macros::date!(2026 - 11 - 24),
            trade_id: "G000000042",
            trade_time: time::macros::time!(09:05:07),
            isin: "HK0000000001",
            buyer_participant_id: "B01234",
            seller_participant_id: "B05678",
            quantity: 4000,
            price_micros: -12_345_000,
            currency_code: "HKD",
            settlement_type: "cns",
            settlement_date: time::macros::date!(2026 - 11 - 26),
        };
        let mut line = String::new();
        push_trade_line(&mut line, &trade);
        assert_eq!(
            line,
            "G000000042,09:05:07,HK0000000001,B01234,B05678,4000,-12345000,HKD,cns"
        );
        let (count, lines) =
            delta_lines([("B01234", "HK0000000001", -400, 3), ("B05678", "HKD", 7, 1)]);
        assert_eq!(count, 2);
        assert_eq!(lines, "B01234,HK0000000001,-400,3\nB05678,HKD,7,1");
        assert_eq!(delta_lines([]), (0, String::new()));
        assert_eq!(
            parse_delta_line("B01234,HK0000000001,-400,3").unwrap(),
            ("B01234", "HK0000000001", -400, 3)
        );
        for bad in [
            "",
            "B01234,HKD,7",
            "B01234,HKD,7,1,2",
            "B01234,HKD,x,1",
            "B01234,HKD,7,",
        ] {
            assert!(
                matches!(
                    parse_delta_line(bad),
                    Err(HostDbError::MalformedData { .. })
                ),
                "{bad}"
            );
        }
        assert!(trade_id_storable("T-1/2026.A:b_c"));
        for bad in ["", "A,1", "A 1", "A\n1", "é1", &"7".repeat(65)] {
            assert!(!trade_id_storable(bad), "{bad}");
        }
    }

    #[test]
    fn a_numbered_trade_id_is_prefix_digit_count_and_number() {
        // Goal: the split V0014's backfill makes with `^([^0-9]*)([0-9]{1,18})$`, one to one.
        // Method: ids of each shape against their expected keys.
        let numbered = |prefix, digits, number| TradeIdKey::Numbered {
            prefix,
            digits,
            number,
        };
        assert_eq!(TradeIdKey::of("G000001234"), numbered("G", 9, 1234));
        assert_eq!(TradeIdKey::of("T1"), numbered("T", 1, 1));
        assert_eq!(TradeIdKey::of("T01"), numbered("T", 2, 1));
        assert_eq!(TradeIdKey::of("42"), numbered("", 2, 42));
        assert_eq!(TradeIdKey::of("ab-_é7"), numbered("ab-_é", 1, 7));
        assert_eq!(
            TradeIdKey::of("X999999999999999999"),
            numbered("X", 18, 999_999_999_999_999_999)
        );
        for other in ["ABC", "", "A1B", "1-2", "X1234567890123456789", "7é"] {
            assert_eq!(TradeIdKey::of(other), TradeIdKey::Other(other), "{other}");
        }
    }

    #[test]
    fn trade_ids_split_into_blocks_in_input_order_whatever_the_runs() {
        // Goal: grouping runs of one block gives what one map entry per id gives: every
        // entry once, under its block, in input order, when runs of two blocks interleave.
        // Method: a straightforward per-id grouping over ids that jump between blocks.
        let day = time::macros::date!(2026 - 11 - 24);
        let other_day = time::macros::date!(2026 - 11 - 25);
        let ids: Vec<(Date, &str)> = vec![
            (day, "G1"),
            (day, "G2"),
            (day, "G8193"),
            (day, "G3"),
            (other_day, "G3"),
            (day, "X-Y"),
            (day, "G8194"),
            (day, "G4"),
            (day, "H4"),
        ];
        let (blocks, others) = split_trade_ids(&ids);
        let mut expected: BTreeMap<BlockKey<'_>, Vec<(usize, usize)>> = BTreeMap::new();
        for (entry, (date, id)) in ids.iter().enumerate() {
            if let Some((key, bit)) = block_bit(*date, id) {
                expected.entry(key).or_default().push((entry, bit));
            }
        }
        assert_eq!(blocks, expected);
        assert_eq!(
            blocks[&(day, "G", 1, 0)],
            vec![(0, 1), (1, 2), (3, 3), (7, 4)]
        );
        assert_eq!(others, vec![5]);
    }
}
