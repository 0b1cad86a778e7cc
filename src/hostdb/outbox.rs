//! SQL of the outbox relay: take unpublished rows, mark them published; and the layout of the
//! compact rows a Batch Settlement Run writes (V0010).
//!
//! A plain row is one message: `payload` is published as it is. A compact row
//! (`expansion = 'bsr_confirmations'`) is a run's "confirmations due" record for one
//! participant: [`ConfirmationBatch`] (the run, the FIN addresses, and per instruction side
//! what the run settled and what stays pending), which the relay expands at publish time into
//! the individual MT544–547 and MT548 messages, each with its own dedupe id
//! (`bsr:{run}:{instruction}:{type}`). A run writes one compact row per participant per
//! [`CONFIRMATION_ENTRIES_PER_ROW_MAX`] sides instead of two FIN texts per pair.

use tokio_postgres::{GenericClient, Transaction};

use super::HostDbError;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// `outbox.expansion` of a run's compact confirmation rows.
pub const BSR_CONFIRMATIONS: &str = "bsr_confirmations";

/// Instruction sides per compact row. Each side expands to at most two messages (a
/// confirmation and an MT548 pending), so a row is at most 1,024 messages: one relay batch
/// at the default `intake.relay_batch_max`.
pub const CONFIRMATION_ENTRIES_PER_ROW_MAX: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub outbox_id: i64,
    pub subject: String,
    pub dedupe_id: String,
    pub payload: Vec<u8>,
    /// `Some(BSR_CONFIRMATIONS)` for a compact row.
    pub expansion: Option<String>,
}

impl PendingRow {
    /// The most messages this row is published as.
    pub fn messages_max(&self) -> usize {
        if self.expansion.is_some() {
            2 * CONFIRMATION_ENTRIES_PER_ROW_MAX
        } else {
            1
        }
    }
}

/// A row selected as `outbox_id, subject, dedupe_id, payload, expansion`.
fn pending_row(row: &tokio_postgres::Row) -> PendingRow {
    PendingRow {
        outbox_id: row.get(0),
        subject: row.get(1),
        dedupe_id: row.get(2),
        payload: row.get(3),
        expansion: row.get(4),
    }
}

/// The relay lock (a transaction-level advisory lock): one relay publishes at a time.
const RELAY_LOCK: (i32, i32) = (0x6f75_7462, 1);

/// The oldest unpublished rows, locked: as many as fit `messages_max` messages (at least one
/// row), each counted at most [`PendingRow::messages_max`]. Empty when the outbox is, or when
/// another relay is publishing: relays take [`RELAY_LOCK`] for their batch's transaction (try,
/// never wait), so batches are published one after another in outbox order. Relays that took
/// rows side by side (`SKIP LOCKED`, before) published them interleaved, so a participant
/// could read an SI's MT548 "matched" before its "accepted" (test
/// `relay::several_relays_publish_a_participants_messages_in_the_order_they_were_stored`).
pub async fn take_unpublished(
    transaction: &Transaction<'_>,
    messages_max: i64,
) -> Result<Vec<PendingRow>, HostDbError> {
    let relaying: bool = transaction
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, $2)",
            &[&RELAY_LOCK.0, &RELAY_LOCK.1],
        )
        .await
        .map_err(db("take the relay lock"))?
        .get(0);
    if !relaying {
        return Ok(Vec::new());
    }
    let heads = transaction
        .query(
            "SELECT outbox_id, expansion IS NOT NULL FROM outbox
             WHERE published_at IS NULL ORDER BY outbox_id LIMIT $1
             FOR UPDATE",
            &[&messages_max],
        )
        .await
        .map_err(db("take unpublished outbox rows"))?;
    let mut budget = usize::try_from(messages_max).unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(heads.len());
    for head in &heads {
        let cost = if head.get::<_, bool>(1) {
            2 * CONFIRMATION_ENTRIES_PER_ROW_MAX
        } else {
            1
        };
        if !ids.is_empty() && cost > budget {
            break;
        }
        budget = budget.saturating_sub(cost);
        ids.push(head.get::<_, i64>(0));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = transaction
        .query(
            "SELECT outbox_id, subject, dedupe_id, payload, expansion FROM outbox
             WHERE outbox_id = ANY($1) ORDER BY outbox_id",
            &[&ids],
        )
        .await
        .map_err(db("read unpublished outbox rows"))?;
    Ok(rows.iter().map(pending_row).collect())
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

/// Every row on `subject` (published or not), oldest first: what the relay publishes there.
pub async fn rows_of_subject(
    client: &impl GenericClient,
    subject: &str,
) -> Result<Vec<PendingRow>, HostDbError> {
    let rows = client
        .query(
            "SELECT outbox_id, subject, dedupe_id, payload, expansion FROM outbox
             WHERE subject = $1 ORDER BY outbox_id",
            &[&subject],
        )
        .await
        .map_err(db("read outbox rows of a subject"))?;
    Ok(rows.iter().map(pending_row).collect())
}

/// What an instruction's confirmations are built from besides the compact row: its stored
/// fields (the relay reads them at publish time; instructions are never deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionFacts {
    pub instruction_id: i64,
    /// `deliver` or `receive`.
    pub delivers: bool,
    pub participant_id: String,
    pub counterparty_participant_id: String,
    pub account_id: String,
    pub sender_reference: String,
    pub isin: String,
    pub trade_date: Option<time::Date>,
    pub settlement_date: time::Date,
    /// `Some` for DvP.
    pub currency_code: Option<String>,
    pub currency_minor_units: i16,
}

/// The stored facts of `instruction_ids` (primary-key probes), in any order.
pub async fn instruction_facts(
    client: &impl GenericClient,
    instruction_ids: &[i64],
) -> Result<Vec<InstructionFacts>, HostDbError> {
    let rows = client
        .query(
            "SELECT i.instruction_id, i.direction = 'deliver', i.participant_id,
                    i.counterparty_participant_id, i.account_id, i.sender_reference, i.isin,
                    i.trade_date, i.settlement_date, i.currency_code,
                    coalesce(c.minor_units, 0::int2)
             FROM instructions i
             LEFT JOIN currencies c ON c.currency_code = i.currency_code
             WHERE i.instruction_id = ANY($1)",
            &[&instruction_ids],
        )
        .await
        .map_err(db("read instructions of confirmations"))?;
    Ok(rows
        .iter()
        .map(|row| InstructionFacts {
            instruction_id: row.get(0),
            delivers: row.get(1),
            participant_id: row.get(2),
            counterparty_participant_id: row.get(3),
            account_id: row.get(4),
            sender_reference: row.get(5),
            isin: row.get(6),
            trade_date: row.get(7),
            settlement_date: row.get(8),
            currency_code: row.get(9),
            currency_minor_units: row.get(10),
        })
        .collect())
}

/// Why the rest of a pair stays pending (MT548 `PEND//LACK` or `PEND//MONY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingReason {
    Securities,
    Money,
}

/// One instruction side in a compact row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmationEntry {
    pub instruction_id: i64,
    /// Settled by this run (0: nothing, no confirmation).
    pub settled_quantity: i64,
    /// Money moved by this run (0 for free of payment).
    pub settled_amount_minor: i64,
    /// `Some`: the rest stays pending (an MT548), with what remains after this run.
    pub pending: Option<PendingReason>,
    pub remaining_quantity: i64,
    pub remaining_amount_minor: i64,
}

/// A compact row's payload: one run's confirmations due to one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationBatch {
    pub settlement_run_id: i64,
    /// FIN logical terminals: the system's (sender) and the participant's (receiver).
    pub sender: String,
    pub receiver: String,
    /// The place of settlement's BIC (`:95P::PSET`).
    pub place_of_settlement_bic: String,
    pub entries: Vec<ConfirmationEntry>,
}

/// Why a payload is not a [`ConfirmationBatch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compact outbox payload: {0}")]
pub struct DecodeError(&'static str);

const LAYOUT_VERSION: u8 = 1;
const FLAG_SETTLED: u8 = 1;
const FLAG_PENDING_SECURITIES: u8 = 2;
const FLAG_PENDING_MONEY: u8 = 4;

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut value = value as u64;
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError("truncated"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value as i64);
            }
        }
        Err(DecodeError("varint longer than 64 bits"))
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.byte()?);
        if self.bytes.len() < len {
            return Err(DecodeError("truncated text"));
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(text.to_vec()).map_err(|_| DecodeError("text not utf-8"))
    }
}

impl ConfirmationBatch {
    /// Layout (version 1): version byte, run id (LEB128), sender, receiver and place of
    /// settlement (each a length byte and UTF-8), then per entry: a flags byte (1 settled,
    /// 2 pending for securities, 4 pending for money), the instruction id, and the settled
    /// quantity and amount when settled, the remaining quantity and amount when pending
    /// (LEB128 each). About 12 bytes per side.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 14 * self.entries.len());
        out.push(LAYOUT_VERSION);
        put_varint(&mut out, self.settlement_run_id);
        put_text(&mut out, &self.sender);
        put_text(&mut out, &self.receiver);
        put_text(&mut out, &self.place_of_settlement_bic);
        for entry in &self.entries {
            encode_entry(&mut out, entry);
        }
        out
    }

    pub fn decode(payload: &[u8]) -> Result<ConfirmationBatch, DecodeError> {
        let mut reader = Reader { bytes: payload };
        if reader.byte()? != LAYOUT_VERSION {
            return Err(DecodeError("unknown layout version"));
        }
        let settlement_run_id = reader.varint()?;
        let sender = reader.text()?;
        let receiver = reader.text()?;
        let place_of_settlement_bic = reader.text()?;
        let mut entries = Vec::new();
        while !reader.bytes.is_empty() {
            let flags = reader.byte()?;
            let instruction_id = reader.varint()?;
            let (settled_quantity, settled_amount_minor) = if flags & FLAG_SETTLED != 0 {
                (reader.varint()?, reader.varint()?)
            } else {
                (0, 0)
            };
            let pending = match (
                flags & FLAG_PENDING_SECURITIES != 0,
                flags & FLAG_PENDING_MONEY != 0,
            ) {
                (false, false) => None,
                (true, false) => Some(PendingReason::Securities),
                (false, true) => Some(PendingReason::Money),
                (true, true) => return Err(DecodeError("two pending reasons")),
            };
            let (remaining_quantity, remaining_amount_minor) = if pending.is_some() {
                (reader.varint()?, reader.varint()?)
            } else {
                (0, 0)
            };
            entries.push(ConfirmationEntry {
                instruction_id,
                settled_quantity,
                settled_amount_minor,
                pending,
                remaining_quantity,
                remaining_amount_minor,
            });
        }
        Ok(ConfirmationBatch {
            settlement_run_id,
            sender,
            receiver,
            place_of_settlement_bic,
            entries,
        })
    }
}

fn encode_entry(out: &mut Vec<u8>, entry: &ConfirmationEntry) {
    let settled = entry.settled_quantity > 0;
    let flags = if settled { FLAG_SETTLED } else { 0 }
        | match entry.pending {
            None => 0,
            Some(PendingReason::Securities) => FLAG_PENDING_SECURITIES,
            Some(PendingReason::Money) => FLAG_PENDING_MONEY,
        };
    out.push(flags);
    put_varint(out, entry.instruction_id);
    if settled {
        put_varint(out, entry.settled_quantity);
        put_varint(out, entry.settled_amount_minor);
    }
    if entry.pending.is_some() {
        put_varint(out, entry.remaining_quantity);
        put_varint(out, entry.remaining_amount_minor);
    }
}

/// The compact rows' payloads (with their dedupe ids) of run `settlement_run_id`, or of every
/// run when `None`; for `ccass audit` and the demo's counts.
pub(super) async fn confirmation_batches(
    transaction: &Transaction<'_>,
    settlement_run_id: Option<i64>,
) -> Result<Vec<(String, Result<ConfirmationBatch, DecodeError>)>, HostDbError> {
    let pattern = match settlement_run_id {
        Some(run) => format!("bsr-confirmations:{run}:%"),
        None => "bsr-confirmations:%".to_owned(),
    };
    let rows = transaction
        .query(
            "SELECT dedupe_id, payload FROM outbox
             WHERE expansion = $1 AND dedupe_id LIKE $2 ORDER BY outbox_id",
            &[&BSR_CONFIRMATIONS, &pattern],
        )
        .await
        .map_err(db("read compact confirmation rows"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let payload: &[u8] = row.get(1);
            (row.get(0), ConfirmationBatch::decode(payload))
        })
        .collect())
}

/// What names the relay's messages: the instance id (V0012) and the outbox incarnations
/// (V0019) as (first outbox id, incarnation), ascending. One round trip.
pub async fn message_id_parts(
    client: &impl GenericClient,
) -> Result<(String, Vec<(i64, i32)>), HostDbError> {
    let row = client
        .query_one(
            "SELECT (SELECT instance_id FROM system_identity),
                    coalesce((SELECT array_agg(first_outbox_id ORDER BY incarnation)
                              FROM outbox_incarnations), '{}'),
                    coalesce((SELECT array_agg(incarnation ORDER BY incarnation)
                              FROM outbox_incarnations), '{}')",
            &[],
        )
        .await
        .map_err(db("read the outbox's message id parts"))?;
    let first_ids: Vec<i64> = row.get(1);
    let incarnations: Vec<i32> = row.get(2);
    Ok((
        row.get(0),
        first_ids.into_iter().zip(incarnations).collect(),
    ))
}

/// An outbox incarnation ([`begin_incarnation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    pub incarnation: i32,
    pub first_outbox_id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    #[error(transparent)]
    Db(#[from] HostDbError),
    /// `--from-outbox-id` outside (the last incarnation's first id, the next outbox id].
    #[error(
        "outbox id {requested} cannot begin an incarnation: it must be above {after} (where the last one began) and at most {next} (the next outbox id)"
    )]
    FirstIdOutOfRange {
        requested: i64,
        after: i64,
        next: i64,
    },
}

/// Starts the next outbox incarnation (V0019) for `reason`, at `from_outbox_id` (rows stored
/// after the restore but before this, named in the relay's id collision error) or else at
/// the next outbox id. Waits for transactions inserting outbox rows to finish and holds off
/// new ones until it commits (SHARE lock), so every row stored after it belongs to it.
pub async fn begin_incarnation(
    pool: &super::Pool,
    reason: &str,
    from_outbox_id: Option<i64>,
) -> Result<Incarnation, IncarnationError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin outbox incarnation"))?;
    transaction
        .batch_execute("LOCK TABLE outbox IN SHARE MODE")
        .await
        .map_err(db("hold off outbox writers"))?;
    let bounds = transaction
        .query_one(
            "SELECT coalesce((SELECT max(first_outbox_id) FROM outbox_incarnations), 0),
                    coalesce((SELECT max(outbox_id) FROM outbox), 0) + 1",
            &[],
        )
        .await
        .map_err(db("read outbox incarnation bounds"))?;
    let (after, next): (i64, i64) = (bounds.get(0), bounds.get(1));
    if let Some(requested) = from_outbox_id
        && !(after < requested && requested <= next)
    {
        return Err(IncarnationError::FirstIdOutOfRange {
            requested,
            after,
            next,
        });
    }
    // Without a requested id: the sequence's next value (above every id handed out, also
    // those of rolled-back inserts).
    let row = transaction
        .query_one(
            "INSERT INTO outbox_incarnations (incarnation, first_outbox_id, reason)
             SELECT coalesce(max(incarnation), 0) + 1,
                    coalesce($2, nextval(pg_get_serial_sequence('outbox', 'outbox_id'))), $1
             FROM outbox_incarnations
             RETURNING incarnation, first_outbox_id",
            &[&reason, &from_outbox_id],
        )
        .await
        .map_err(db("record outbox incarnation"))?;
    transaction
        .commit()
        .await
        .map_err(db("commit outbox incarnation"))?;
    Ok(Incarnation {
        incarnation: row.get(0),
        first_outbox_id: row.get(1),
    })
}

/// The dedupe id of a run's `chunk`-th compact row for `participant_id`.
pub fn confirmations_dedupe_id(
    settlement_run_id: i64,
    participant_id: &str,
    chunk: usize,
) -> String {
    format!("bsr-confirmations:{settlement_run_id}:{participant_id}:{chunk}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_to_what_was_encoded() {
        let batch = ConfirmationBatch {
            settlement_run_id: 1 << 40,
            sender: "HKSCCHKHAXXX".to_owned(),
            receiver: "B01234HKAXXX".to_owned(),
            place_of_settlement_bic: "CCASHKHH".to_owned(),
            entries: vec![
                ConfirmationEntry {
                    instruction_id: 7,
                    settled_quantity: 1000,
                    settled_amount_minor: 123_456_789_012,
                    pending: None,
                    remaining_quantity: 0,
                    remaining_amount_minor: 0,
                },
                ConfirmationEntry {
                    instruction_id: i64::MAX,
                    settled_quantity: 0,
                    settled_amount_minor: 0,
                    pending: Some(PendingReason::Money),
                    remaining_quantity: 500,
                    remaining_amount_minor: 1,
                },
                ConfirmationEntry {
                    instruction_id: 9,
                    settled_quantity: 100,
                    settled_amount_minor: 0,
                    pending: Some(PendingReason::Securities),
                    remaining_quantity: 400,
                    remaining_amount_minor: 0,
                },
            ],
        };
        let payload = batch.encode();
        assert_eq!(ConfirmationBatch::decode(&payload), Ok(batch));
        assert!(ConfirmationBatch::decode(&payload[..payload.len() - 1]).is_err());
        assert!(ConfirmationBatch::decode(b"\x02").is_err());
    }
}
