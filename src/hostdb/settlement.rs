//! The Batch Settlement Run's SQL: load the due pairs and the balances they touch, write a
//! run's results in its one transaction.
//!
//! Guarantees:
//! - [`RunTransaction::begin`] takes the run leader's transaction-level advisory lock without
//!   waiting ([`RunTransaction::begin`] returns `None` when another leader holds it), so two
//!   runs never overlap; the lock goes with the transaction (commit, rollback or a killed
//!   process).
//! - Everything a run writes (journals by COPY BINARY, balance deltas, settled markers, the
//!   run record, compact confirmation rows in the outbox by COPY BINARY) is in that transaction: a run that does not
//!   commit leaves no trace, and a pair with a complete marker is never settled again.
//! - A run reads only open pairs: [`sweep_settled`] (after each run, in its own transaction,
//!   never in the run's) moves the instructions of pairs settled in full to status
//!   `settled` in one set-based statement; the due read takes status `matched` only (V0016's
//!   partial index), and the matches and markers of those instructions only (ranges of
//!   their ids, [`id_ranges`]). A complete pair not swept yet (the sweep failed or has not
//!   run) is still read, and skipped by its complete marker: the sweep keeps the reads
//!   small, the markers keep a run right.
//! - A run freezes the balances: its transaction holds `holdings` and `cash_balances` in
//!   EXCLUSIVE mode from the start (plain reads go on; every other writer, e.g. the CNS
//!   day-end money settlement or a reference-data seed, waits for the run to end), so
//!   nothing changes them between load and commit. One table lock instead of a row lock
//!   per loaded balance: `SELECT … FOR UPDATE` wrote every locked row once more before the
//!   run updated it.

use std::pin::Pin;
use std::time::{Duration, Instant};

use time::Date;
use tokio_postgres::types::Type;

use super::copy::PendingCopy;
use super::copy::{CopyOut, CopyRows, Field, copy_rows};
use super::journal::{self, CashMovement, CopyIn, HoldingMovement};
use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// Adds `(participant, currency, delta)` to the cash balances in one statement: the BSR's
/// DvP legs and CNS day-end money settlement both move cash through here.
/// The stored cash balances of the (participant, currency) keys, locked until the
/// transaction ends, in key order (every locker takes them in the same order); keys without a
/// balance row are absent.
pub(super) async fn lock_cash_rows(
    transaction: &tokio_postgres::Transaction<'_>,
    participant_ids: &[&str],
    currency_codes: &[&str],
) -> Result<Vec<CashRow>, HostDbError> {
    let rows = transaction
        .query(
            "SELECT c.participant_id, c.currency_code, c.amount_minor,
                    c.account_kind = 'ccp_settlement'
             FROM cash_balances c
             JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]))
                 AS k(participant_id, currency_code)
               ON c.participant_id = k.participant_id AND c.currency_code = k.currency_code
             ORDER BY 1, 2
             FOR UPDATE OF c",
            &[&participant_ids, &currency_codes],
        )
        .await
        .map_err(db("load cash balances"))?;
    Ok(rows
        .iter()
        .map(|row| CashRow {
            participant_id: row.get(0),
            currency_code: row.get(1),
            amount_minor: row.get(2),
            may_go_negative: row.get(3),
        })
        .collect())
}

pub(super) async fn apply_cash_deltas(
    transaction: &tokio_postgres::Transaction<'_>,
    cash_deltas: &[(String, String, i64)],
) -> Result<(), HostDbError> {
    let participants: Vec<&str> = cash_deltas.iter().map(|d| d.0.as_str()).collect();
    let currencies: Vec<&str> = cash_deltas.iter().map(|d| d.1.as_str()).collect();
    let amounts: Vec<i64> = cash_deltas.iter().map(|d| d.2).collect();
    transaction
        .execute(
            "UPDATE cash_balances c
             SET amount_minor = c.amount_minor + d.delta, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::int8[])
                 AS d(participant_id, currency_code, delta)
             WHERE c.participant_id = d.participant_id
               AND c.currency_code = d.currency_code",
            &[&participants, &currencies, &amounts],
        )
        .await
        .map_err(db("apply cash deltas"))?;
    Ok(())
}

/// Holding rows as the three arrays the set-based statements unnest.
fn holding_columns(rows: &[HoldingRow]) -> (Vec<&str>, Vec<&str>, Vec<i64>) {
    (
        rows.iter().map(|row| row.account_id.as_str()).collect(),
        rows.iter().map(|row| row.isin.as_str()).collect(),
        rows.iter().map(|row| row.quantity).collect(),
    )
}

/// The pairs due for a run. Their text keys (participants, accounts, ISINs, currencies)
/// are interned: a pair names them by [`KeyId`], [`DuePairs::name`] gives the text back.
#[derive(Debug, Clone, Default)]
pub struct DuePairs {
    pub pairs: Vec<DuePair>,
    /// What the due read loaded from the database (the cost of the read).
    pub loaded: LoadedRows,
    keys: Interner,
}

/// Rows a run's due read loaded: the open instructions due, the matches and the settled
/// markers (grouped per pair) in their id ranges. Grows with the open pairs, not with the
/// pairs settled on earlier days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadedRows {
    pub instructions: usize,
    pub matches: usize,
    pub settled_pairs: usize,
}

/// Most id ranges a due read's match and marker reads name ([`id_ranges`]): open pairs left
/// from earlier days (recycled for lack of stock or money) each cost a short range instead
/// of everything between them and today's.
const ID_RANGES_MAX: usize = 256;

/// Covers the sorted, distinct `ids` with at most `ranges_max` inclusive ranges (at least
/// one), splitting at the largest gaps: what the ranges cover beyond `ids` is as little as
/// that many ranges allow. Empty for no ids.
pub fn id_ranges(ids: &[i64], ranges_max: usize) -> Vec<(i64, i64)> {
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return Vec::new();
    };
    // (gap, index of the id before it) for every gap of more than one.
    let mut gaps: Vec<(i64, usize)> = ids
        .windows(2)
        .enumerate()
        .filter(|(_, pair)| pair[1] - pair[0] > 1)
        .map(|(index, pair)| (pair[1] - pair[0], index))
        .collect();
    let splits_max = ranges_max.max(1) - 1;
    if gaps.len() > splits_max {
        gaps.select_nth_unstable_by(splits_max, |a, b| b.cmp(a));
        gaps.truncate(splits_max);
    }
    let mut split_after: Vec<usize> = gaps.iter().map(|&(_, index)| index).collect();
    split_after.sort_unstable();
    let mut ranges = Vec::with_capacity(split_after.len() + 1);
    let mut start = first;
    for index in split_after {
        ranges.push((start, ids[index]));
        start = ids[index + 1];
    }
    ranges.push((start, last));
    ranges
}

/// `column BETWEEN a AND b OR …` over `ranges` (integers from Rust values, never text).
fn ranges_condition(column: &str, ranges: &[(i64, i64)]) -> String {
    if ranges.is_empty() {
        return "false".to_owned();
    }
    ranges
        .iter()
        .map(|(low, high)| format!("{column} BETWEEN {low} AND {high}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A text key of [`DuePairs`].
pub type KeyId = u32;

impl DuePairs {
    pub fn name(&self, id: KeyId) -> &str {
        self.keys.name(id)
    }

    /// The id of a key the pairs name; `None` for any other text.
    pub fn id(&self, name: &str) -> Option<KeyId> {
        self.keys.ids.get(name).copied()
    }
}

/// A matched pair due for settlement, with what remains of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePair {
    pub match_id: i64,
    pub delivering_instruction_id: i64,
    pub receiving_instruction_id: i64,
    pub deliverer_participant: KeyId,
    pub deliverer_account: KeyId,
    pub receiver_participant: KeyId,
    pub receiver_account: KeyId,
    pub isin: KeyId,
    pub board_lot: i64,
    pub settlement_date: Date,
    /// The instructed quantity (the deliverer's; matching made both equal).
    pub quantity: i64,
    /// Settled by earlier runs (partial settlements).
    pub settled_quantity: i64,
    /// `Some` for DvP: the deliverer's instructed amount and currency.
    pub currency: Option<KeyId>,
    pub amount_minor: Option<i64>,
    pub settled_amount_minor: i64,
    /// Both instructions allow partial settlement.
    pub partial_allowed: bool,
}

/// A due matched instruction as [`RunTransaction::due_pairs`] reads it (text keys interned).
struct DueInstruction {
    participant: u32,
    account: u32,
    isin: u32,
    settlement_date: Date,
    quantity: i64,
    currency: Option<u32>,
    amount_minor: Option<i64>,
    partial_allowed: bool,
}

/// Text keys (participants, accounts, ISINs, currencies) read once each: a million due
/// instructions name a few thousand distinct keys.
#[derive(Debug, Clone, Default)]
struct Interner {
    ids: foldhash::HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// A stored holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingRow {
    pub account_id: String,
    pub isin: String,
    pub quantity: i64,
}

/// A stored cash balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashRow {
    pub participant_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    /// The CCP settlement account may go negative (see V0001).
    pub may_go_negative: bool,
}

/// A settled marker (`instruction_settlements`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledMarker {
    pub match_id: i64,
    pub delivering_instruction_id: i64,
    pub receiving_instruction_id: i64,
    pub quantity: i64,
    pub amount_minor: Option<i64>,
    pub complete: bool,
}

/// An outbox row (published by the relay after commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub subject: String,
    pub dedupe_id: String,
    pub payload: Vec<u8>,
}

/// FIN addresses for a run's messages (blocks 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalTerminals {
    /// The system's own: the CCP participant's logical terminal (the sender); `None`
    /// without a CCP participant.
    pub own: Option<String>,
    /// Each participant's (the receivers).
    pub by_participant: std::collections::HashMap<String, String>,
}

/// What a run wrote, for its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub instructions_settled_count: i64,
    pub instructions_recycled_count: i64,
    pub holding_movements_count: i64,
    pub cash_movements_count: i64,
    /// `{"HKD": 123}` as JSON text.
    pub settled_value_minor_json: String,
}

/// One Batch Settlement Run's transaction.
pub struct RunTransaction<'c> {
    pub(super) transaction: deadpool_postgres::Transaction<'c>,
    /// For the journals' connections of their own ([`RunTransaction::spawn_journal`]).
    pool: Pool,
    pub settlement_run_id: i64,
    pub run_number: i16,
}

/// `work_mem` of a run's transaction (the server default, 4 MB, spilled the due pairs'
/// hash joins of a million-SI day to temporary files).
const RUN_WORK_MEM_MB: u32 = 256;

impl<'c> RunTransaction<'c> {
    /// Begins the run's transaction and takes the leader lock `leader_lock_key` without
    /// waiting; `None` when another run holds it. Records the run as `running` (number: the
    /// next of `settlement_date`). Drops the journal tables of runs that never committed and
    /// creates this run's, on another connection of `pool` (V0021).
    pub async fn begin(
        client: &'c mut deadpool_postgres::Client,
        pool: &Pool,
        leader_lock_key: i64,
        settlement_date: Date,
        leader: &str,
    ) -> Result<Option<RunTransaction<'c>>, HostDbError> {
        let transaction = client
            .transaction()
            .await
            .map_err(db("begin settlement run"))?;
        let locked: bool = transaction
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&leader_lock_key])
            .await
            .map_err(db("take settlement leader lock"))?
            .get(0);
        if !locked {
            return Ok(None);
        }
        // Changes to matched pairs (cancel, hold, exclude) wait for the run, and the run for
        // those in flight (milliseconds): see `intake::hold_off_settlement_runs`. Balances
        // are locked always in this order (holdings, then cash balances) so lockers never
        // deadlock. The run's joins and sorts hash and sort up to a million rows: give them
        // memory rather than temporary files, and skip JIT compilation (measured: ~0.1 s of
        // the due pairs' query, not won back on one execution). One round trip; the values
        // are integer constants.
        let (lock_namespace, lock_key) = super::intake::SETTLEMENT_RUN_LOCK;
        transaction
            .batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({lock_namespace}, {lock_key});
                 LOCK TABLE holdings, cash_balances IN EXCLUSIVE MODE;
                 SET LOCAL work_mem = '{RUN_WORK_MEM_MB}MB';
                 SET LOCAL jit = off;"
            ))
            .await
            .map_err(db("hold off pair changes and freeze balances for the run"))?;
        let row = transaction
            .query_one(
                "INSERT INTO settlement_runs (settlement_date, run_number, scheduled_at,
                     started_at, status, leader)
                 SELECT $1, coalesce(max(run_number), 0) + 1, now(), clock_timestamp(),
                     'running', $2
                 FROM settlement_runs WHERE settlement_date = $1
                 RETURNING settlement_run_id, run_number",
                &[&settlement_date, &leader],
            )
            .await
            .map_err(db("record settlement run"))?;
        let settlement_run_id: i64 = row.get(0);
        // Before this run's tables exist: every unattached one is a dead run's.
        transaction
            .execute("SELECT ccass_drop_unattached_run_journals()", &[])
            .await
            .map_err(db("drop the journal tables of runs that never committed"))?;
        journal::create_run_tables(pool, settlement_run_id).await?;
        Ok(Some(RunTransaction {
            transaction,
            pool: pool.clone(),
            settlement_run_id,
            run_number: row.get(1),
        }))
    }

    /// Every pair due on `settlement_date` (at most `limit`) whose two instructions were
    /// input (`instructions.created_at`, when intake stored them) by `input_cutoff`, oldest
    /// settlement date first, then by match id.
    ///
    /// Four narrow reads (COPY … TO STDOUT (FORMAT binary)) joined here rather than one
    /// three-way join in the server: the due open instructions (status `matched`: the sweep
    /// moved the fully settled ones to `settled`), the matches of those instructions neither
    /// on hold nor excluded, what earlier runs settled of those matches, and the board lots
    /// (measured on a day of 1 M SIs: the join took 1.3–2.6 s in the server, the four reads
    /// ~0.7 s and the join in memory ~0.1 s). The match and marker reads name the ids they
    /// need as at most [`ID_RANGES_MAX`] ranges ([`id_ranges`]), so they read what is open,
    /// not every pair ever matched. The reads see one state because nothing they read changes
    /// during a run: runs are serialised by the leader lock, changes to matched pairs wait for
    /// the run (see [`RunTransaction::begin`]), and the sweep only moves pairs with a complete
    /// marker (skipped either way); a pair matched meanwhile is left for the next run (its
    /// instructions were not read yet).
    pub async fn due_pairs(
        &self,
        settlement_date: Date,
        input_cutoff: time::OffsetDateTime,
        limit: i64,
    ) -> Result<DuePairs, HostDbError> {
        // COPY takes no parameters: the values are inlined from typed Rust values (a date,
        // the cut-off in epoch microseconds, id ranges), never from text.
        let cutoff_micros = input_cutoff.unix_timestamp_nanos() / 1_000;
        let mut interned = Interner::default();
        let mut loaded = LoadedRows::default();
        let mut instructions: foldhash::HashMap<i64, DueInstruction> = Default::default();
        let statement = format!(
            "COPY (SELECT instruction_id, account_id, isin, settlement_date, quantity,
                          currency_code, amount_minor, partial_settlement_allowed
                   FROM instructions
                   WHERE status = 'matched' AND settlement_date <= '{settlement_date}'::date
                     AND created_at <= to_timestamp({cutoff_micros}::float8 / 1000000))
             TO STDOUT (FORMAT binary)"
        );
        let mut instruction_ids = Vec::new();
        let mut rows = self.copy_out(&statement, "load due instructions").await?;
        while let Some(mut row) = rows.next().await? {
            let instruction_id = row.int8()?;
            let account = row.text()?;
            // instructions_check2: an account id starts with its participant's id.
            let participant = account.get(..6).unwrap_or(account);
            let instruction = DueInstruction {
                participant: interned.id(participant),
                account: interned.id(account),
                isin: interned.id(row.text()?),
                settlement_date: row.date()?,
                quantity: row.int8()?,
                currency: row.optional_text()?.map(|code| interned.id(code)),
                amount_minor: row.optional_int8()?,
                partial_allowed: row.boolean()?,
            };
            instructions.insert(instruction_id, instruction);
            instruction_ids.push(instruction_id);
        }
        loaded.instructions = instruction_ids.len();
        if instruction_ids.is_empty() {
            return Ok(DuePairs {
                loaded,
                ..DuePairs::default()
            });
        }
        // Read in (mostly) id order: the sort finds the runs and costs little.
        instruction_ids.sort_unstable();
        let statement = format!(
            "COPY (SELECT match_id, delivering_instruction_id, receiving_instruction_id
                   FROM instruction_matches
                   WHERE NOT on_hold AND NOT excluded_from_runs AND ({}))
             TO STDOUT (FORMAT binary)",
            ranges_condition(
                "delivering_instruction_id",
                &id_ranges(&instruction_ids, ID_RANGES_MAX)
            )
        );
        drop(instruction_ids);
        let mut due_matches: Vec<(i64, i64, i64)> = Vec::new();
        let mut rows = self.copy_out(&statement, "load due matches").await?;
        while let Some(mut row) = rows.next().await? {
            loaded.matches += 1;
            let due_match = (row.int8()?, row.int8()?, row.int8()?);
            if instructions.contains_key(&due_match.1) && instructions.contains_key(&due_match.2) {
                due_matches.push(due_match);
            }
        }
        let mut board_lots: foldhash::HashMap<&str, i64> = Default::default();
        let lot_rows = self
            .transaction
            .query("SELECT isin, board_lot::int8 FROM securities", &[])
            .await
            .map_err(db("load board lots"))?;
        for row in &lot_rows {
            board_lots.insert(row.get(0), row.get(1));
        }
        // What earlier runs settled of each due pair (partial settlements; a complete one
        // not swept yet drops).
        let mut settled: foldhash::HashMap<i64, (i64, i64, bool)> = Default::default();
        let mut match_ids: Vec<i64> = due_matches.iter().map(|due_match| due_match.0).collect();
        match_ids.sort_unstable();
        if !match_ids.is_empty() {
            let statement = format!(
                "COPY (SELECT match_id, sum(quantity)::int8, coalesce(sum(amount_minor), 0)::int8,
                              bool_or(complete)
                       FROM instruction_settlements WHERE {} GROUP BY match_id)
                 TO STDOUT (FORMAT binary)",
                ranges_condition("match_id", &id_ranges(&match_ids, ID_RANGES_MAX))
            );
            let mut rows = self.copy_out(&statement, "load settled so far").await?;
            while let Some(mut row) = rows.next().await? {
                loaded.settled_pairs += 1;
                settled.insert(row.int8()?, (row.int8()?, row.int8()?, row.boolean()?));
            }
        }
        let mut pairs = Vec::with_capacity(due_matches.len());
        for (match_id, delivering_instruction_id, receiving_instruction_id) in due_matches {
            let (Some(deliver), Some(receive)) = (
                instructions.get(&delivering_instruction_id),
                instructions.get(&receiving_instruction_id),
            ) else {
                continue;
            };
            let (settled_quantity, settled_amount_minor, complete) =
                settled.get(&match_id).copied().unwrap_or((0, 0, false));
            if complete {
                continue;
            }
            let isin = interned.name(deliver.isin);
            // Instructions reference securities (foreign key): never missing.
            let Some(&board_lot) = board_lots.get(isin) else {
                continue;
            };
            pairs.push(DuePair {
                match_id,
                delivering_instruction_id,
                receiving_instruction_id,
                deliverer_participant: deliver.participant,
                deliverer_account: deliver.account,
                receiver_participant: receive.participant,
                receiver_account: receive.account,
                isin: deliver.isin,
                board_lot,
                settlement_date: deliver.settlement_date,
                quantity: deliver.quantity,
                settled_quantity,
                currency: deliver.currency,
                amount_minor: deliver.amount_minor,
                settled_amount_minor,
                partial_allowed: deliver.partial_allowed && receive.partial_allowed,
            });
        }
        pairs.sort_unstable_by_key(|pair| (pair.settlement_date, pair.match_id));
        pairs.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        Ok(DuePairs {
            pairs,
            loaded,
            keys: interned,
        })
    }

    /// The rows of `statement`, a COPY … TO STDOUT (FORMAT binary).
    async fn copy_out(
        &self,
        statement: &str,
        context: &'static str,
    ) -> Result<CopyOut<Pin<Box<tokio_postgres::CopyOutStream>>>, HostDbError> {
        let stream = self
            .transaction
            .copy_out(statement)
            .await
            .map_err(db(context))?;
        Ok(CopyOut::new(Box::pin(stream), context))
    }

    /// The stored holdings of the (account, isin) keys (frozen until the run ends: see
    /// [`RunTransaction::begin`]). Keys without a row are absent (a balance of 0).
    pub async fn holdings(
        &self,
        account_ids: &[&str],
        isins: &[&str],
    ) -> Result<Vec<HoldingRow>, HostDbError> {
        let rows = self
            .transaction
            .query(
                "SELECT h.account_id, h.isin, h.quantity
                 FROM holdings h
                 JOIN unnest($1::text[], $2::text[]) AS k(account_id, isin)
                   ON h.account_id = k.account_id AND h.isin = k.isin",
                &[&account_ids, &isins],
            )
            .await
            .map_err(db("load holdings"))?;
        Ok(rows
            .iter()
            .map(|row| HoldingRow {
                account_id: row.get(0),
                isin: row.get(1),
                quantity: row.get(2),
            })
            .collect())
    }

    /// The stored cash balances of the (participant, currency) keys, locked until the run
    /// ends. A key without a row has no cash account: it can neither pay nor be paid.
    pub async fn lock_cash_balances(
        &self,
        participant_ids: &[&str],
        currency_codes: &[&str],
    ) -> Result<Vec<CashRow>, HostDbError> {
        lock_cash_rows(&self.transaction, participant_ids, currency_codes).await
    }

    /// Appends the journals (COPY BINARY) and applies the net balance deltas set-based.
    pub async fn apply_movements(
        &self,
        holding_movements: &[HoldingMovement],
        cash_movements: &[CashMovement],
        holding_deltas: &[HoldingRow],
        cash_deltas: &[(String, String, i64)],
    ) -> Result<(), HostDbError> {
        self.append_journals(holding_movements, cash_movements)
            .await?;
        self.apply_balance_deltas(holding_deltas, cash_deltas).await
    }

    /// Appends one of the run's journals to its run table on a connection of its own, while
    /// this transaction writes the rest; [`RunTransaction::commit`] waits for it.
    pub fn spawn_journal<K: journal::JournalKind>(
        &self,
        journal: journal::Journal<K>,
    ) -> PendingCopy {
        journal.spawn_append_to_run(&self.pool, self.settlement_run_id)
    }

    /// Appends movements to the run's journal tables in this transaction (COPY BINARY).
    pub async fn append_journals(
        &self,
        holding_movements: &[HoldingMovement],
        cash_movements: &[CashMovement],
    ) -> Result<(), HostDbError> {
        let run_id = self.settlement_run_id;
        holding_movements
            .iter()
            .collect::<journal::HoldingJournal>()
            .append_to_run(&self.transaction, run_id)
            .await?;
        cash_movements
            .iter()
            .collect::<journal::CashJournal>()
            .append_to_run(&self.transaction, run_id)
            .await?;
        Ok(())
    }

    /// Adds each delta to its stored holding (one UPDATE, arrays unnested).
    async fn update_holdings(&self, holding_deltas: &[HoldingRow]) -> Result<(), HostDbError> {
        let (accounts, isins, quantities) = holding_columns(holding_deltas);
        self.transaction
            .execute(
                "UPDATE holdings h SET quantity = h.quantity + d.delta, updated_at = now()
                 FROM unnest($1::text[], $2::text[], $3::int8[]) AS d(account_id, isin, delta)
                 WHERE h.account_id = d.account_id AND h.isin = d.isin",
                &[&accounts, &isins, &quantities],
            )
            .await
            .map_err(db("apply holding deltas"))?;
        Ok(())
    }

    /// Applies the net balance deltas: one statement per balance table (arrays unnested),
    /// plus one insert of receivers' new holdings.
    pub async fn apply_balance_deltas(
        &self,
        holding_deltas: &[HoldingRow],
        cash_deltas: &[(String, String, i64)],
    ) -> Result<(), HostDbError> {
        let (accounts, isins, quantities) = holding_columns(holding_deltas);
        // Existing rows first (a negative delta never meets the insert path), then the new
        // rows, which only receive.
        self.update_holdings(holding_deltas).await?;
        self.transaction
            .execute(
                "INSERT INTO holdings (account_id, isin, quantity)
                 SELECT d.account_id, d.isin, d.delta
                 FROM unnest($1::text[], $2::text[], $3::int8[]) AS d(account_id, isin, delta)
                 WHERE NOT EXISTS (SELECT 1 FROM holdings h
                                   WHERE h.account_id = d.account_id AND h.isin = d.isin)",
                &[&accounts, &isins, &quantities],
            )
            .await
            .map_err(db("insert new holdings"))?;
        apply_cash_deltas(&self.transaction, cash_deltas).await
    }

    /// The run's balance deltas, whose holdings it loaded (locked): `holding_updates` have a
    /// stored row (one UPDATE, arrays unnested), `new_holdings` had none (one INSERT, no
    /// existence probe: a row that appeared since the load fails the run rather than losing
    /// the delta), then the cash deltas (one UPDATE).
    pub async fn apply_run_balance_deltas(
        &self,
        holding_updates: &[HoldingRow],
        new_holdings: &[HoldingRow],
        cash_deltas: &[(String, String, i64)],
    ) -> Result<(), HostDbError> {
        self.update_holdings(holding_updates).await?;
        if !new_holdings.is_empty() {
            let (accounts, isins, quantities) = holding_columns(new_holdings);
            self.transaction
                .execute(
                    "INSERT INTO holdings (account_id, isin, quantity)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])",
                    &[&accounts, &isins, &quantities],
                )
                .await
                .map_err(db("insert new holdings"))?;
        }
        apply_cash_deltas(&self.transaction, cash_deltas).await
    }

    /// Every participant's logical terminal, and the CCP's as the system's own (the sender of
    /// the run's messages, as of intake's MT548).
    pub async fn logical_terminals(&self) -> Result<LogicalTerminals, HostDbError> {
        let rows = self
            .transaction
            .query(
                "SELECT participant_id, logical_terminal, participant_type = 'ccp'
                 FROM participants ORDER BY participant_id",
                &[],
            )
            .await
            .map_err(db("load logical terminals"))?;
        let mut own = None;
        let mut by_participant = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let terminal: String = row.get(1);
            if row.get::<_, bool>(2) && own.is_none() {
                own = Some(terminal.clone());
            }
            by_participant.insert(row.get(0), terminal);
        }
        Ok(LogicalTerminals {
            own,
            by_participant,
        })
    }

    /// Appends the settled markers with COPY BINARY (encoded in bulk).
    pub async fn append_markers(&self, markers: &[SettledMarker]) -> Result<u64, HostDbError> {
        let mut rows = CopyRows::<7>::new();
        for marker in markers {
            rows.push([
                Field::Int8(marker.match_id),
                Field::Int8(self.settlement_run_id),
                Field::Int8(marker.delivering_instruction_id),
                Field::Int8(marker.receiving_instruction_id),
                Field::Int8(marker.quantity),
                Field::optional_int8(marker.amount_minor),
                Field::Bool(marker.complete),
            ]);
        }
        copy_rows(
            &self.transaction,
            "copy settled markers",
            "COPY instruction_settlements (match_id, settlement_run_id,
                 delivering_instruction_id, receiving_instruction_id, quantity,
                 amount_minor, complete) FROM STDIN BINARY",
            rows,
        )
        .await
    }

    /// Appends plain outbox rows (one message each) with COPY BINARY (the CNS phases').
    pub async fn append_outbox(&self, rows: &[OutboxRow]) -> Result<u64, HostDbError> {
        super::cns_settlement::append_outbox(&self.transaction, rows).await
    }

    /// Appends the run's compact confirmation rows (`expansion = 'bsr_confirmations'`,
    /// V0010) with COPY BINARY.
    pub async fn append_confirmation_rows(&self, rows: &[OutboxRow]) -> Result<u64, HostDbError> {
        let mut copy = CopyIn::start(
            &self.transaction,
            "copy compact confirmation rows",
            "COPY outbox (subject, dedupe_id, payload, expansion) FROM STDIN BINARY",
            &[Type::TEXT, Type::TEXT, Type::BYTEA, Type::TEXT],
        )
        .await?;
        for outbox in rows {
            copy.write(&[
                &outbox.subject,
                &outbox.dedupe_id,
                &outbox.payload,
                &super::outbox::BSR_CONFIRMATIONS,
            ])
            .await?;
        }
        copy.finish().await
    }

    /// Waits for the journals written aside (`journal_copies`), attaches the run's journal
    /// tables, completes the run record and commits everything: the journals' rows are part
    /// of the journal exactly when the rest of the run is. Returns the time spent waiting for
    /// the journals.
    pub async fn commit(
        self,
        totals: &RunTotals,
        journal_copies: Vec<PendingCopy>,
    ) -> Result<Duration, HostDbError> {
        let waited = Instant::now();
        for copy in journal_copies {
            copy.finish().await?;
        }
        let journals_wait = waited.elapsed();
        self.transaction
            .execute(
                "SELECT ccass_attach_run_journals($1)",
                &[&self.settlement_run_id],
            )
            .await
            .map_err(db("attach the run's journal tables"))?;
        self.transaction
            .execute(
                "UPDATE settlement_runs SET status = 'completed', finished_at = clock_timestamp(),
                     instructions_settled_count = $2, instructions_recycled_count = $3,
                     holding_movements_count = $4, cash_movements_count = $5,
                     settled_value_minor = $6::text::jsonb
                 WHERE settlement_run_id = $1",
                &[
                    &self.settlement_run_id,
                    &totals.instructions_settled_count,
                    &totals.instructions_recycled_count,
                    &totals.holding_movements_count,
                    &totals.cash_movements_count,
                    &totals.settled_value_minor_json,
                ],
            )
            .await
            .map_err(db("complete settlement run record"))?;
        self.transaction
            .commit()
            .await
            .map_err(db("commit settlement run"))?;
        Ok(journals_wait)
    }
}

/// One instruction to insert for tests and the benchmark (intake inserts real ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstruction {
    pub participant_id: String,
    pub sender_reference: String,
    pub account_id: String,
    pub counterparty_participant_id: String,
    pub counterparty_account_id: String,
    pub isin: String,
    pub quantity: i64,
    pub settlement_date: Date,
    /// `Some((currency, amount))` for DvP.
    pub payment: Option<(String, i64)>,
    pub partial_settlement_allowed: bool,
}

/// A matched pair to insert directly (tests, benchmark): both instructions with status
/// `matched` and their `instruction_matches` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMatchedPair {
    pub deliver: NewInstruction,
    pub receive: NewInstruction,
}

/// Inserts matched pairs set-based (bypassing intake); returns their match ids in order.
pub async fn insert_matched_pairs(
    pool: &Pool,
    pairs: &[NewMatchedPair],
) -> Result<Vec<i64>, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin matched pair insert"))?;
    let mut ids = Vec::with_capacity(pairs.len() * 2);
    for (side, direction) in [(0, "deliver"), (1, "receive")] {
        let instructions: Vec<&NewInstruction> = pairs
            .iter()
            .map(|pair| {
                if side == 0 {
                    &pair.deliver
                } else {
                    &pair.receive
                }
            })
            .collect();
        let column = |f: fn(&NewInstruction) -> &str| -> Vec<&str> {
            instructions.iter().map(|i| f(i)).collect()
        };
        let participants = column(|i| &i.participant_id);
        let references = column(|i| &i.sender_reference);
        let accounts = column(|i| &i.account_id);
        let counterparties = column(|i| &i.counterparty_participant_id);
        let counterparty_accounts = column(|i| &i.counterparty_account_id);
        let isins = column(|i| &i.isin);
        let quantities: Vec<i64> = instructions.iter().map(|i| i.quantity).collect();
        let dates: Vec<Date> = instructions.iter().map(|i| i.settlement_date).collect();
        let currencies: Vec<Option<&str>> = instructions
            .iter()
            .map(|i| i.payment.as_ref().map(|p| p.0.as_str()))
            .collect();
        let amounts: Vec<Option<i64>> = instructions
            .iter()
            .map(|i| i.payment.as_ref().map(|p| p.1))
            .collect();
        let partial: Vec<bool> = instructions
            .iter()
            .map(|i| i.partial_settlement_allowed)
            .collect();
        let rows = transaction
            .query(
                "INSERT INTO instructions (participant_id, sender_reference, message_type,
                     function, direction, payment, account_id, counterparty_participant_id,
                     counterparty_account_id, isin, quantity, settlement_date, currency_code,
                     amount_minor, partial_settlement_allowed, status)
                 SELECT p, r,
                     CASE WHEN $12 = 'deliver' THEN (CASE WHEN c IS NULL THEN '542' ELSE '543' END)
                          ELSE (CASE WHEN c IS NULL THEN '540' ELSE '541' END) END,
                     'NEWM', $12, CASE WHEN c IS NULL THEN 'FOP' ELSE 'DVP' END, a, cp, ca, i, q,
                     d, c, m, pa, 'matched'
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::int8[], $8::date[], $9::text[], $10::int8[], $11::bool[])
                     WITH ORDINALITY AS u(p, r, a, cp, ca, i, q, d, c, m, pa, n)
                 ORDER BY n
                 RETURNING instruction_id",
                &[
                    &participants,
                    &references,
                    &accounts,
                    &counterparties,
                    &counterparty_accounts,
                    &isins,
                    &quantities,
                    &dates,
                    &currencies,
                    &amounts,
                    &partial,
                    &direction,
                ],
            )
            .await
            .map_err(db("insert matched instructions"))?;
        ids.push(
            rows.iter()
                .map(|row| row.get::<_, i64>(0))
                .collect::<Vec<_>>(),
        );
    }
    let rows = transaction
        .query(
            "INSERT INTO instruction_matches (delivering_instruction_id, receiving_instruction_id)
             SELECT d, r FROM unnest($1::int8[], $2::int8[]) WITH ORDINALITY AS u(d, r, n)
             ORDER BY n
             RETURNING match_id",
            &[&ids[0], &ids[1]],
        )
        .await
        .map_err(db("insert instruction matches"))?;
    transaction
        .commit()
        .await
        .map_err(db("commit matched pair insert"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// What [`sweep_settled`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Completed runs whose settled pairs it swept.
    pub runs: usize,
    /// Instructions moved from `matched` to `settled`.
    pub instructions: u64,
}

/// Sweeper lock (two-key form): one sweep at a time; a second waits, then finds nothing.
const SWEEP_LOCK: (i32, i32) = (0x7365_7474, 2);

/// The sweep's statement timeout: one statement moves a day's settled instructions (two
/// million rows after a run of a million pairs), longer than the pool's default allows.
const SWEEP_STATEMENT_TIMEOUT_MS: u32 = 600_000;

/// Runs one sweep transaction takes: a run settles up to a million pairs (two million
/// instruction updates); a backlog (e.g. the runs before V0016) goes a few runs at a time.
const SWEEP_RUNS_PER_TRANSACTION: i64 = 4;

/// Transactions one sweep call runs at most (then the next call goes on).
const SWEEP_TRANSACTIONS_MAX: usize = 1_000;

/// Moves the instructions of pairs settled in full by completed runs not swept yet
/// (`settlement_runs.swept_at IS NULL`, V0016) from status `matched` to `settled`, one
/// set-based UPDATE per few runs, and marks those runs swept; its own transactions, never a
/// run's (the run appends markers, no per-pair update). Idempotent: an instruction already
/// `settled` is left alone, and a sweep that fails leaves its runs for the next. The
/// settlement itself stays recorded by the markers (what the terminal's history shows);
/// the status takes the instruction out of the runs' due read.
pub async fn sweep_settled(pool: &Pool) -> Result<Swept, HostDbError> {
    let mut swept = Swept::default();
    for _ in 0..SWEEP_TRANSACTIONS_MAX {
        let batch = sweep_runs(pool, SWEEP_RUNS_PER_TRANSACTION).await?;
        if batch.runs == 0 {
            break;
        }
        swept.runs += batch.runs;
        swept.instructions += batch.instructions;
    }
    Ok(swept)
}

/// One sweep transaction over at most `runs_max` runs, oldest first.
async fn sweep_runs(pool: &Pool, runs_max: i64) -> Result<Swept, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin sweep of settled instructions"))?;
    let (lock_namespace, lock_key) = SWEEP_LOCK;
    transaction
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({lock_namespace}, {lock_key});
             SET LOCAL statement_timeout = {SWEEP_STATEMENT_TIMEOUT_MS};"
        ))
        .await
        .map_err(db("take the sweep lock"))?;
    let runs: Vec<i64> = transaction
        .query(
            "SELECT settlement_run_id FROM settlement_runs
             WHERE status = 'completed' AND swept_at IS NULL ORDER BY 1 LIMIT $1",
            &[&runs_max],
        )
        .await
        .map_err(db("find runs to sweep"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let (Some(&first), Some(&last)) = (runs.first(), runs.last()) else {
        return Ok(Swept::default());
    };
    // The range lets the markers' BRIN index (V0016) skip earlier runs' markers.
    let instructions = transaction
        .execute(
            "UPDATE instructions i SET status = 'settled', updated_at = now()
             FROM (SELECT unnest(ARRAY[delivering_instruction_id, receiving_instruction_id])
                   FROM instruction_settlements
                   WHERE complete AND settlement_run_id BETWEEN $1 AND $2
                     AND settlement_run_id = ANY($3)) AS done(instruction_id)
             WHERE i.instruction_id = done.instruction_id AND i.status = 'matched'",
            &[&first, &last, &runs],
        )
        .await
        .map_err(db("move settled instructions to status settled"))?;
    transaction
        .execute(
            "UPDATE settlement_runs SET swept_at = clock_timestamp()
             WHERE settlement_run_id = ANY($1)",
            &[&runs],
        )
        .await
        .map_err(db("mark runs swept"))?;
    transaction
        .commit()
        .await
        .map_err(db("commit sweep of settled instructions"))?;
    Ok(Swept {
        runs: runs.len(),
        instructions,
    })
}

/// Whether a run completed that started at or after `since` (the scheduler's slot check).
pub async fn run_completed_since(
    pool: &Pool,
    since: time::OffsetDateTime,
) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM settlement_runs
                            WHERE status = 'completed' AND started_at >= $1)",
            &[&since],
        )
        .await
        .map_err(db("look for a completed settlement run"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_split_at_the_largest_gaps() {
        // Goal: the match and marker reads cover the open ids with few, tight ranges.
        // Method: a dense run of ids with two stragglers far below, at several limits.
        let ids = [3, 4, 900, 5000, 5001, 5002, 5004];
        assert_eq!(id_ranges(&ids, 3), vec![(3, 4), (900, 900), (5000, 5004)]);
        assert_eq!(id_ranges(&ids, 2), vec![(3, 900), (5000, 5004)]);
        assert_eq!(id_ranges(&ids, 1), vec![(3, 5004)]);
        assert_eq!(id_ranges(&ids, 0), vec![(3, 5004)]);
        assert_eq!(
            id_ranges(&ids, 100),
            vec![(3, 4), (900, 900), (5000, 5002), (5004, 5004)]
        );
        assert!(id_ranges(&[], 4).is_empty());
        assert_eq!(id_ranges(&[7], 4), vec![(7, 7)]);
    }

    #[test]
    fn ranges_condition_names_every_range() {
        // Goal: the SQL condition covers exactly the ranges; no ids reads nothing.
        assert_eq!(
            ranges_condition("match_id", &[(1, 2), (9, 9)]),
            "match_id BETWEEN 1 AND 2 OR match_id BETWEEN 9 AND 9"
        );
        assert_eq!(ranges_condition("match_id", &[]), "false");
    }
}
