//! One Batch Settlement Run end to end, and the day's scheduled runs.
//!
//! [`run_now`]: take the leader lock and record the run, load the due pairs and the balances
//! they touch (locked), settle in memory ([`engine::settle`]), check conservation and
//! no-negative, then write everything in the same transaction and commit. Confirmations go to
//! each side's outbound subject through the outbox: MT544 (receive free), MT545 (receive
//! against payment), MT546 (deliver free), MT547 (deliver against payment), for the quantity
//! this run settled; a pair that stays pending gets an MT548 (`:25D::SETT//PEND`, reason
//! `PEND//LACK` or `PEND//MONY`) to each side. The run writes them as compact rows (a few
//! per participant, [`ConfirmationBatch`], V0010) that the relay expands at publish time with
//! [`confirmation_messages`]; dedupe ids `bsr:{run}:{instruction}:{type}`. After the commit,
//! a sweep in its own transaction moves the instructions of pairs settled in full to status
//! `settled`, so the next runs read only open pairs (V0016).
//!
//! [`schedule`]: the loop `ccass up` runs: at each configured run time (local) it tries
//! [`run_now`]; only the process holding the advisory lock runs, so with several processes
//! one leads and the others stand by (a standby leads as soon as the leader's lock is gone).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use time::{Date, OffsetDateTime, UtcOffset};

use super::SettlementConfig;
use super::engine::{self, InvariantError, Ledger, Pair, Shortage};
use super::metrics;
use crate::bus::subjects;
use crate::hostdb::journal::{CashJournal, CashMovementKind, HoldingJournal, HoldingMovementKind};
use crate::hostdb::outbox::{
    CONFIRMATION_ENTRIES_PER_ROW_MAX, ConfirmationBatch, ConfirmationEntry, InstructionFacts,
    PendingReason, confirmations_dedupe_id,
};
use crate::hostdb::settlement::{
    DuePairs, HoldingRow, KeyId, LoadedRows, LogicalTerminals, OutboxRow, RunTotals,
    RunTransaction, SettledMarker, sweep_settled,
};
use crate::hostdb::{self, HostDbError, Pool};
use crate::ids::{Isin, ParticipantId};
use crate::iso15022::build::{
    self, Envelope, ReasonSpec, SettlementInstructionSpec, StatusAdviceSpec, StatusSpec,
    StatusTransactionSpec,
};
use crate::iso15022::fields::{Amount, Function, FunctionCode, PartyId, Quantity, QuantityKind};
use crate::iso15022::views::{Linkage, Party};
use crate::iso15022::{MessageType, ReasonCode};

/// How to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Who leads (recorded in `settlement_runs.leader`).
    pub leader: String,
    /// Test hook: write everything, then fail instead of committing (as a leader killed
    /// between settle and commit).
    pub abort_before_commit: bool,
    /// Test hook: write everything, log `paused before commit`, wait this long, then commit
    /// (0: no pause); lets a test kill the process with its transaction open.
    pub pause_before_commit_ms: u64,
}

impl RunOptions {
    /// A run led by `leader`, with the test hooks off.
    pub fn leader(leader: impl Into<String>) -> RunOptions {
        RunOptions {
            leader: leader.into(),
            abort_before_commit: false,
            pause_before_commit_ms: 0,
        }
    }
}

/// What a run did, with its wall times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub settlement_run_id: i64,
    pub run_number: i16,
    pub pairs_due: usize,
    /// Rows the due read loaded (open instructions, their matches and settled markers):
    /// the read's cost, which grows with the open pairs only.
    pub loaded: LoadedRows,
    /// Pairs settled in full by this run.
    pub settled_count: usize,
    /// Pairs of which this run settled a part (and a part remains).
    pub partially_settled_count: usize,
    /// Pairs left pending (in whole or in part) for the next run.
    pub recycled_count: usize,
    /// Settled in full by the first pass alone (first come, first served).
    pub first_pass_settled_count: usize,
    pub chain_retry_count: u64,
    /// Money due and settled, per currency, in minor units.
    pub due_value_minor: BTreeMap<String, i64>,
    pub settled_value_minor: BTreeMap<String, i64>,
    pub holding_movements_count: usize,
    pub cash_movements_count: usize,
    /// Compact outbox rows written (V0010).
    pub outbox_count: usize,
    /// Messages those rows expand to (MT544–547 and MT548 pending, both sides).
    pub confirmations_count: usize,
    pub load: Duration,
    /// Parts of `load`.
    pub load_steps: LoadSteps,
    pub settle: Duration,
    pub write: Duration,
    /// Parts of `write`.
    pub write_steps: WriteSteps,
    pub commit: Duration,
    /// The sweep after the commit ([`sweep_settled`], its own transaction): outside the
    /// run's end to end.
    pub sweep: Duration,
    /// Instructions the sweep moved to `settled` (this run's and any left by earlier runs).
    pub swept_instruction_count: u64,
}

/// Where a run's load phase went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSteps {
    /// Beginning the transaction: leader lock, waiting for changes to matched pairs in
    /// flight, freezing the balances, the run record.
    pub begin: Duration,
    /// The CNS short positions' phase (delivering to the CCP first).
    pub cns_shorts: Duration,
    /// The due pairs (four reads joined in memory).
    pub pairs: Duration,
    /// The holdings and cash balances the pairs touch.
    pub balances: Duration,
}

/// Where a run's write phase went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSteps {
    /// Building the compact confirmation rows (the FIN texts are built by the relay): part
    /// of `build`.
    pub build_messages: Duration,
    /// The journals, markers and confirmation rows built (while the server applies the
    /// balance deltas); each journal's COPY starts aside (its own connection) as soon as it
    /// is built. Part of `build_and_balances`.
    pub build: Duration,
    /// The balance deltas computed, then applied (set-based updates) while the client builds.
    pub build_and_balances: Duration,
    /// Settled markers by COPY BINARY.
    pub markers: Duration,
    /// Compact outbox rows by COPY BINARY.
    pub outbox: Duration,
    /// Part of `commit`: waiting for the journals written aside, after everything else.
    pub journals_wait: Duration,
}

impl RunReport {
    /// Settled money over due money, all currencies added (1.0 when nothing was due).
    pub fn value_efficiency(&self) -> f64 {
        let due: i64 = self.due_value_minor.values().sum();
        let settled: i64 = self.settled_value_minor.values().sum();
        if due == 0 {
            1.0
        } else {
            settled as f64 / due as f64
        }
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "settlement run {} (number {}): {} pair(s) due, {} settled ({} by the first pass, \
             {} more by chain resolution), {} partially, {} recycled",
            self.settlement_run_id,
            self.run_number,
            self.pairs_due,
            self.settled_count,
            self.first_pass_settled_count,
            self.settled_count - self.first_pass_settled_count,
            self.partially_settled_count,
            self.recycled_count
        )?;
        writeln!(
            f,
            "value settled {:.2}% of due; {} holding and {} cash movement(s), {} confirmation \
             message(s) in {} outbox row(s)",
            100.0 * self.value_efficiency(),
            self.holding_movements_count,
            self.cash_movements_count,
            self.confirmations_count,
            self.outbox_count
        )?;
        writeln!(
            f,
            "loaded {} open instruction(s), {} match(es), {} pair(s) with settled markers",
            self.loaded.instructions, self.loaded.matches, self.loaded.settled_pairs
        )?;
        write!(
            f,
            "wall time: load {} ms, settle {} ms, write {} ms, commit {} ms; then sweep {} ms \
             ({} instruction(s) to settled)",
            self.load.as_millis(),
            self.settle.as_millis(),
            self.write.as_millis(),
            self.commit.as_millis(),
            self.sweep.as_millis(),
            self.swept_instruction_count
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another process holds the leader lock (a run is under way).
    #[error("another settlement run leader holds the lock")]
    LeaderBusy,
    #[error(transparent)]
    HostDb(#[from] HostDbError),
    /// The in-memory pass broke conservation or went negative: nothing was written.
    #[error("settlement run refused its own result: {0}")]
    Invariant(#[from] InvariantError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("bad reference data in a due pair: {0}")]
    Reference(String),
    /// The test hook fired: everything was written and rolled back.
    #[error("settlement run aborted before commit by the test hook")]
    AbortedBeforeCommit,
}

/// Runs one Batch Settlement Run for `settlement_date` now. Pairs whose instructions were
/// input after the day's input cut-off ([`SettlementConfig::input_cutoff_at`]) wait for the
/// next settlement date's runs. Counts the run in the engine's metrics.
///
/// After the commit, sweeps ([`sweep_settled`], its own transaction): the instructions of
/// pairs settled in full move to status `settled`, out of the next runs' due read. A sweep
/// that fails is logged and left to the next run's sweep (the run itself committed; a pair
/// not swept is still skipped by its complete marker).
pub async fn run_now(
    pool: &Pool,
    config: &SettlementConfig,
    settlement_date: Date,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let mut result = settle_and_commit(pool, config, settlement_date, options).await;
    if let Ok(report) = &mut result {
        let started = Instant::now();
        match sweep_settled(pool).await {
            Ok(swept) => report.swept_instruction_count = swept.instructions,
            Err(error) => tracing::warn!(
                %error,
                run = report.settlement_run_id,
                "settlement run: sweep of settled instructions failed; the next run's sweep \
                 takes it over"
            ),
        }
        report.sweep = started.elapsed();
    }
    match &result {
        Ok(report) => {
            metrics::record_run_outcome("completed");
            metrics::record_completed_run(report);
        }
        Err(RunError::LeaderBusy) => metrics::record_run_outcome("leader_busy"),
        Err(RunError::AbortedBeforeCommit) => metrics::record_run_outcome("aborted"),
        Err(_) => metrics::record_run_outcome("failed"),
    }
    result
}

async fn settle_and_commit(
    pool: &Pool,
    config: &SettlementConfig,
    settlement_date: Date,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let input_cutoff = config.input_cutoff_at(settlement_date)?;
    let mut client = hostdb::client(pool).await?;
    let mut step = Instant::now();
    let mut lap = || {
        let elapsed = step.elapsed();
        step = Instant::now();
        elapsed
    };
    let run = RunTransaction::begin(
        &mut client,
        pool,
        config.leader_lock_key,
        settlement_date,
        &options.leader,
    )
    .await?
    .ok_or(RunError::LeaderBusy)?;
    let mut load_steps = LoadSteps {
        begin: lap(),
        ..LoadSteps::default()
    };
    // CNS short positions deliver to the CCP before the SIs (src/cns/bsr.rs).
    crate::cns::bsr::settle_shorts(&run, settlement_date).await?;
    load_steps.cns_shorts = lap();
    let due = run
        .due_pairs(settlement_date, input_cutoff, config.run_pairs_max)
        .await?;
    let pairs = &due.pairs;
    load_steps.pairs = lap();
    let dense = Dense::new(&due);
    let holdings = run
        .holdings(&dense.stock_accounts(), &dense.stock_isins())
        .await?;
    let cash = run
        .lock_cash_balances(&dense.cash_participants(), &dense.cash_currencies())
        .await?;
    load_steps.balances = lap();
    let load = started.elapsed();

    let settle_started = Instant::now();
    let (engine_pairs, before, cash_keys) = dense.ledger(&holdings, &cash);
    let mut after = before.clone();
    let settlement = engine::settle(&engine_pairs, &mut after, config.chain_retries_max);
    engine::check_invariants(&before, &after)?;
    let settle = settle_started.elapsed();

    let write_started = Instant::now();
    let mut report = RunReport {
        settlement_run_id: run.settlement_run_id,
        run_number: run.run_number,
        pairs_due: pairs.len(),
        loaded: due.loaded,
        first_pass_settled_count: settlement.first_pass_settled_count,
        settled_count: settlement.settled_count,
        chain_retry_count: settlement.retry_count,
        load,
        load_steps,
        settle,
        ..RunReport::default()
    };
    // The logical terminals first (the confirmation rows name them).
    let terminals = run.logical_terminals().await?;
    lap(); // the write steps start here
    // Three server processes write at once. This transaction applies the balance deltas
    // while the client builds the rest; each journal goes to the run's table on a connection
    // of its own as soon as it is built (rows are encoded as pushed; a task sends them). Then
    // this transaction writes the markers and confirmation rows, and the commit waits for the
    // journals and attaches their tables (V0021). The build yields after it queued each
    // statement: a task this one wakes or spawns (the connection's, which sends the UPDATE;
    // a journal's COPY) waits in this worker's LIFO slot, which no other worker may steal,
    // until this task yields, and the build runs for tenths of a second without awaiting.
    let stored = dense.stored_stock(&holdings);
    let (holding_updates, new_holdings, cash_deltas) =
        dense.deltas(&before, &after, &stored, &cash_keys);
    let balances = run.apply_run_balance_deltas(&holding_updates, &new_holdings, &cash_deltas);
    let run_id = run.settlement_run_id;
    let build = async {
        let build_started = Instant::now();
        tokio::task::yield_now().await;
        let holding_journal = holding_journal(&due, &settlement.results, settlement_date, run_id);
        report.holding_movements_count = holding_journal.len();
        let holding_copy = run.spawn_journal(holding_journal);
        tokio::task::yield_now().await;
        let (cash_journal, markers) = cash_journal_and_markers(
            &due,
            &settlement.results,
            settlement_date,
            run_id,
            &mut report,
        );
        report.cash_movements_count = cash_journal.len();
        let cash_copy = run.spawn_journal(cash_journal);
        tokio::task::yield_now().await;
        let messages_started = Instant::now();
        let (outbox, confirmations_count) =
            confirmation_rows(&due, &settlement.results, run_id, config, &terminals)?;
        report.write_steps.build_messages = messages_started.elapsed();
        report.write_steps.build = build_started.elapsed();
        Ok::<_, RunError>((
            vec![holding_copy, cash_copy],
            markers,
            outbox,
            confirmations_count,
        ))
    };
    let (balances_written, built) = tokio::join!(balances, build);
    let (journal_copies, markers, outbox, confirmations_count) = built?;
    balances_written?;
    report.write_steps.build_and_balances = lap();
    run.append_markers(&markers).await?;
    report.write_steps.markers = lap();
    run.append_confirmation_rows(&outbox).await?;
    report.write_steps.outbox = lap();
    report.outbox_count = outbox.len();
    report.confirmations_count = confirmations_count;
    // CNS long positions receive what the CCP received, after the SIs.
    crate::cns::bsr::settle_longs(&run, settlement_date).await?;
    report.write = write_started.elapsed();
    if options.abort_before_commit {
        return Err(RunError::AbortedBeforeCommit);
    }
    if options.pause_before_commit_ms > 0 {
        tracing::warn!(
            run = run.settlement_run_id,
            pause_ms = options.pause_before_commit_ms,
            "settlement run test hook: paused before commit"
        );
        tokio::time::sleep(Duration::from_millis(options.pause_before_commit_ms)).await;
    }
    let commit_started = Instant::now();
    let totals = RunTotals {
        instructions_settled_count: 2 * report.settled_count as i64,
        instructions_recycled_count: 2 * report.recycled_count as i64,
        holding_movements_count: report.holding_movements_count as i64,
        cash_movements_count: report.cash_movements_count as i64,
        settled_value_minor_json: settled_value_json(&report.settled_value_minor),
    };
    report.write_steps.journals_wait = run.commit(&totals, journal_copies).await?;
    report.commit = commit_started.elapsed();
    Ok(report)
}

fn settled_value_json(values: &BTreeMap<String, i64>) -> String {
    let fields: Vec<String> = values
        .iter()
        .map(|(currency, amount)| format!("\"{currency}\":{amount}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Dense integer ids of the balances and securities a run touches, over the due pairs'
/// interned keys.
struct Dense<'p> {
    due: &'p DuePairs,
    /// (account, isin) -> stock balance id.
    stock: foldhash::HashMap<(KeyId, KeyId), u32>,
    stock_keys: Vec<(KeyId, KeyId)>,
    /// (participant, currency) -> cash key id.
    cash: foldhash::HashMap<(KeyId, KeyId), u32>,
    cash_keys: Vec<(KeyId, KeyId)>,
}

impl<'p> Dense<'p> {
    fn new(due: &'p DuePairs) -> Dense<'p> {
        let mut dense = Dense {
            due,
            stock: Default::default(),
            stock_keys: Vec::new(),
            cash: Default::default(),
            cash_keys: Vec::new(),
        };
        for pair in &due.pairs {
            for account in [pair.deliverer_account, pair.receiver_account] {
                let key = (account, pair.isin);
                let next = dense.stock_keys.len() as u32;
                dense.stock.entry(key).or_insert_with(|| {
                    dense.stock_keys.push(key);
                    next
                });
            }
            if let Some(currency) = pair.currency {
                for participant in [pair.deliverer_participant, pair.receiver_participant] {
                    let key = (participant, currency);
                    let next = dense.cash_keys.len() as u32;
                    dense.cash.entry(key).or_insert_with(|| {
                        dense.cash_keys.push(key);
                        next
                    });
                }
            }
        }
        dense
    }

    /// The text of one side of each key (`pick` chooses it).
    fn names(
        &self,
        keys: &[(KeyId, KeyId)],
        pick: impl Fn(&(KeyId, KeyId)) -> KeyId,
    ) -> Vec<&'p str> {
        let due = self.due;
        keys.iter().map(|key| due.name(pick(key))).collect()
    }

    fn stock_accounts(&self) -> Vec<&'p str> {
        self.names(&self.stock_keys, |key| key.0)
    }

    fn stock_isins(&self) -> Vec<&'p str> {
        self.names(&self.stock_keys, |key| key.1)
    }

    fn cash_participants(&self) -> Vec<&'p str> {
        self.names(&self.cash_keys, |key| key.0)
    }

    fn cash_currencies(&self) -> Vec<&'p str> {
        self.names(&self.cash_keys, |key| key.1)
    }

    /// The stock balance id of a stored holding, if the run touches it.
    fn stock_id(&self, row: &HoldingRow) -> Option<u32> {
        let key = (self.due.id(&row.account_id)?, self.due.id(&row.isin)?);
        self.stock.get(&key).copied()
    }

    /// The engine's pairs and ledger. A cash key without a stored balance has no account.
    fn ledger(
        &self,
        holdings: &[HoldingRow],
        cash: &[hostdb::settlement::CashRow],
    ) -> (Vec<Pair>, Ledger, Vec<(&'p str, &'p str)>) {
        let mut security_ids: foldhash::HashMap<KeyId, u32> = Default::default();
        let stock_security = self
            .stock_keys
            .iter()
            .map(|key| {
                let next = security_ids.len() as u32;
                *security_ids.entry(key.1).or_insert(next)
            })
            .collect();
        let mut stock = vec![0; self.stock_keys.len()];
        for row in holdings {
            if let Some(id) = self.stock_id(row) {
                stock[id as usize] = row.quantity;
            }
        }
        // Cash ids: only keys with a stored balance; the rest map to `None`.
        let mut cash_index: Vec<Option<u32>> = vec![None; self.cash_keys.len()];
        let mut cash_keys = Vec::with_capacity(cash.len());
        let mut currency_ids: foldhash::HashMap<KeyId, u32> = Default::default();
        let mut ledger = Ledger {
            stock,
            stock_security,
            cash: Vec::with_capacity(cash.len()),
            cash_currency: Vec::with_capacity(cash.len()),
            cash_may_go_negative: Vec::with_capacity(cash.len()),
        };
        for row in cash {
            let key = self
                .due
                .id(&row.participant_id)
                .zip(self.due.id(&row.currency_code));
            if let Some(&id) = key.and_then(|key| self.cash.get(&key)) {
                let (participant, currency) = self.cash_keys[id as usize];
                cash_index[id as usize] = Some(ledger.cash.len() as u32);
                cash_keys.push((self.due.name(participant), self.due.name(currency)));
                let next = currency_ids.len() as u32;
                ledger
                    .cash_currency
                    .push(*currency_ids.entry(currency).or_insert(next));
                ledger.cash.push(row.amount_minor);
                ledger.cash_may_go_negative.push(row.may_go_negative);
            }
        }
        let engine_pairs = self
            .due
            .pairs
            .iter()
            .map(|pair| {
                let stock_id = |account: KeyId| self.stock[&(account, pair.isin)];
                let cash_id = |participant: KeyId, currency: KeyId| {
                    cash_index[self.cash[&(participant, currency)] as usize]
                };
                Pair {
                    deliverer_stock: stock_id(pair.deliverer_account),
                    receiver_stock: stock_id(pair.receiver_account),
                    cash: pair.currency.map(|currency| {
                        (
                            cash_id(pair.receiver_participant, currency),
                            cash_id(pair.deliverer_participant, currency),
                        )
                    }),
                    remaining_quantity: pair.quantity - pair.settled_quantity,
                    remaining_amount_minor: pair.amount_minor.unwrap_or(0)
                        - pair.settled_amount_minor,
                    board_lot: pair.board_lot,
                    partial_allowed: pair.partial_allowed,
                }
            })
            .collect();
        (engine_pairs, ledger, cash_keys)
    }

    /// Which stock keys have a stored holding (the rest start at 0 without a row).
    fn stored_stock(&self, holdings: &[HoldingRow]) -> Vec<bool> {
        let mut stored = vec![false; self.stock_keys.len()];
        for row in holdings {
            if let Some(id) = self.stock_id(row) {
                stored[id as usize] = true;
            }
        }
        stored
    }

    /// Net changes per balance (non-zero only): holdings as rows, split into those with a
    /// stored row (`stored`, updated) and new ones (inserted; a new holding only receives),
    /// cash as (participant, currency, delta); `cash_keys` names the ledger's cash balances.
    fn deltas(
        &self,
        before: &Ledger,
        after: &Ledger,
        stored: &[bool],
        cash_keys: &[(&str, &str)],
    ) -> HoldingAndCashDeltas {
        let (updates, inserts): (Vec<_>, Vec<_>) = self
            .stock_keys
            .iter()
            .enumerate()
            .filter(|(id, _)| after.stock[*id] != before.stock[*id])
            .map(|(id, key)| {
                (
                    stored[id],
                    HoldingRow {
                        account_id: self.due.name(key.0).to_owned(),
                        isin: self.due.name(key.1).to_owned(),
                        quantity: after.stock[id] - before.stock[id],
                    },
                )
            })
            .partition(|(stored, _)| *stored);
        let holdings = (
            updates.into_iter().map(|(_, row)| row).collect(),
            inserts.into_iter().map(|(_, row)| row).collect(),
        );
        let cash = cash_keys
            .iter()
            .enumerate()
            .filter(|(id, _)| after.cash[*id] != before.cash[*id])
            .map(|(id, key)| {
                (
                    key.0.to_owned(),
                    key.1.to_owned(),
                    after.cash[id] - before.cash[id],
                )
            })
            .collect();
        (holdings.0, holdings.1, cash)
    }
}

/// Holding deltas of stored rows, new holdings, cash deltas.
type HoldingAndCashDeltas = (Vec<HoldingRow>, Vec<HoldingRow>, Vec<(String, String, i64)>);

/// `n` in base 36 (upper case), for references that fit `:20C::SEME` (16 characters).
fn base36(mut n: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// `match:{match_id}`, the reference of a settled pair's journal rows, into `reference`.
fn match_reference(reference: &mut String, match_id: i64) {
    use std::fmt::Write as _;
    reference.clear();
    let _ = write!(reference, "match:{match_id}");
}

/// The run's holding movements: one per pair that settled some quantity, deliverer to
/// receiver.
fn holding_journal(
    due: &DuePairs,
    results: &[engine::PairResult],
    settlement_date: Date,
    settlement_run_id: i64,
) -> HoldingJournal {
    let mut reference = String::new();
    let mut journal = HoldingJournal::default();
    for (pair, result) in due.pairs.iter().zip(results) {
        if result.settled_quantity == 0 {
            continue;
        }
        match_reference(&mut reference, pair.match_id);
        journal.push(
            settlement_date,
            Some(settlement_run_id),
            Some(due.name(pair.deliverer_account)),
            Some(due.name(pair.receiver_account)),
            due.name(pair.isin),
            result.settled_quantity,
            HoldingMovementKind::Settlement,
            &reference,
        );
    }
    journal
}

/// The run's cash movements (one per DvP pair that settled an amount, receiver to deliverer)
/// and the settled markers (one per pair that settled some quantity); counts the recycled and
/// partially settled pairs and the due and settled values into `report`.
fn cash_journal_and_markers(
    due: &DuePairs,
    results: &[engine::PairResult],
    settlement_date: Date,
    settlement_run_id: i64,
    report: &mut RunReport,
) -> (CashJournal, Vec<SettledMarker>) {
    let mut reference = String::new();
    let mut journal = CashJournal::default();
    let mut markers = Vec::new();
    for (pair, result) in due.pairs.iter().zip(results) {
        let currency = pair.currency.map(|id| due.name(id));
        if let (Some(currency), Some(amount)) = (currency, pair.amount_minor) {
            *report
                .due_value_minor
                .entry(currency.to_owned())
                .or_default() += amount - pair.settled_amount_minor;
        }
        if result.shortage.is_some() {
            report.recycled_count += 1;
        }
        if result.settled_quantity == 0 {
            continue;
        }
        if result.shortage.is_some() {
            report.partially_settled_count += 1;
        }
        let amount_minor = (result.settled_amount_minor > 0).then_some(result.settled_amount_minor);
        if let (Some(currency), Some(amount)) = (currency, amount_minor) {
            *report
                .settled_value_minor
                .entry(currency.to_owned())
                .or_default() += amount;
            match_reference(&mut reference, pair.match_id);
            journal.push(
                settlement_date,
                Some(settlement_run_id),
                Some(due.name(pair.receiver_participant)),
                Some(due.name(pair.deliverer_participant)),
                currency,
                amount,
                CashMovementKind::Dvp,
                &reference,
            );
        }
        markers.push(SettledMarker {
            match_id: pair.match_id,
            delivering_instruction_id: pair.delivering_instruction_id,
            receiving_instruction_id: pair.receiving_instruction_id,
            quantity: result.settled_quantity,
            amount_minor,
            complete: result.shortage.is_none(),
        });
    }
    (journal, markers)
}

/// The compact outbox rows of a run (V0010, [`ConfirmationBatch`]): per participant, one row
/// per [`CONFIRMATION_ENTRIES_PER_ROW_MAX`] sides this run settled (in part) or left pending,
/// in pair order. The relay expands them with [`confirmation_messages`]. Returns the rows and
/// the number of messages they expand to.
fn confirmation_rows(
    due: &DuePairs,
    results: &[engine::PairResult],
    settlement_run_id: i64,
    config: &SettlementConfig,
    terminals: &LogicalTerminals,
) -> Result<(Vec<OutboxRow>, usize), RunError> {
    // Without a CCP participant, the place of settlement's BIC names the system.
    let sender = match &terminals.own {
        Some(own) => own.clone(),
        None => format!("{}AXXX", config.place_of_settlement_bic),
    };
    let mut by_participant: HashMap<&str, Vec<ConfirmationEntry>> = HashMap::new();
    let mut message_count = 0;
    for (pair, result) in due.pairs.iter().zip(results) {
        if result.settled_quantity == 0 && result.shortage.is_none() {
            continue;
        }
        let pending = result.shortage.map(|shortage| match shortage {
            Shortage::Securities => PendingReason::Securities,
            Shortage::Money => PendingReason::Money,
        });
        let remaining_quantity = pair.quantity - pair.settled_quantity - result.settled_quantity;
        let remaining_amount_minor = pair.amount_minor.unwrap_or(0)
            - pair.settled_amount_minor
            - result.settled_amount_minor;
        message_count +=
            2 * (usize::from(result.settled_quantity > 0) + usize::from(pending.is_some()));
        for (participant, instruction_id) in [
            (
                due.name(pair.deliverer_participant),
                pair.delivering_instruction_id,
            ),
            (
                due.name(pair.receiver_participant),
                pair.receiving_instruction_id,
            ),
        ] {
            by_participant
                .entry(participant)
                .or_default()
                .push(ConfirmationEntry {
                    instruction_id,
                    settled_quantity: result.settled_quantity,
                    settled_amount_minor: result.settled_amount_minor,
                    pending,
                    remaining_quantity,
                    remaining_amount_minor,
                });
        }
    }
    let mut participants: Vec<_> = by_participant.into_iter().collect();
    participants.sort_unstable_by_key(|(participant, _)| *participant);
    let mut rows = Vec::new();
    for (participant_id, entries) in participants {
        let participant = ParticipantId::parse(participant_id).map_err(|error| {
            RunError::Reference(format!("participant {participant_id}: {error}"))
        })?;
        let receiver = terminals
            .by_participant
            .get(participant_id)
            .ok_or_else(|| {
                RunError::Reference(format!(
                    "participant {participant_id} has no logical terminal"
                ))
            })?;
        let subject = subjects::outbound(&participant).as_str().to_owned();
        for (chunk, entries) in entries.chunks(CONFIRMATION_ENTRIES_PER_ROW_MAX).enumerate() {
            let batch = ConfirmationBatch {
                settlement_run_id,
                sender: sender.clone(),
                receiver: receiver.clone(),
                place_of_settlement_bic: config.place_of_settlement_bic.clone(),
                entries: entries.to_vec(),
            };
            rows.push(OutboxRow {
                subject: subject.clone(),
                dedupe_id: confirmations_dedupe_id(settlement_run_id, participant_id, chunk),
                payload: batch.encode(),
            });
        }
    }
    Ok((rows, message_count))
}

/// Why a compact row's messages could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmationError {
    #[error("instruction {instruction_id} of a confirmation is not stored")]
    MissingInstruction { instruction_id: i64 },
    #[error("instruction {instruction_id}: bad {field} {value}")]
    Reference {
        instruction_id: i64,
        field: &'static str,
        value: String,
    },
    #[error("build confirmation for instruction {instruction_id}: {source}")]
    Build {
        instruction_id: i64,
        source: build::BuildError,
    },
}

fn amount(facts: &InstructionFacts, amount_minor: i64) -> Option<Amount> {
    let currency = facts.currency_code.as_deref()?;
    let mut code = [0u8; 3];
    code.copy_from_slice(currency.as_bytes().get(..3)?);
    Some(Amount {
        currency: code,
        value: Decimal::new(
            amount_minor,
            u32::from(facts.currency_minor_units.unsigned_abs()),
        ),
    })
}

/// The messages one side of a compact row stands for, as (dedupe id, FIN text): MT544
/// (receive free), MT545 (receive against payment), MT546 (deliver free) or MT547 (deliver
/// against payment) for what the run settled, and an MT548 (`:25D::SETT//PEND`, reason
/// `PEND//LACK` or `PEND//MONY`) for what stays pending. Pure: `facts` are the instruction's
/// stored fields. Dedupe ids `bsr:{run}:{instruction}:{type}`.
pub fn confirmation_messages(
    batch: &ConfirmationBatch,
    entry: &ConfirmationEntry,
    facts: &InstructionFacts,
) -> Result<Vec<(String, String)>, ConfirmationError> {
    let settlement_run_id = batch.settlement_run_id;
    let instruction_id = entry.instruction_id;
    let isin = Isin::parse(&facts.isin).map_err(|_| ConfirmationError::Reference {
        instruction_id,
        field: "isin",
        value: facts.isin.clone(),
    })?;
    let build_error = |source| ConfirmationError::Build {
        instruction_id,
        source,
    };
    let dvp = facts.currency_code.is_some();
    let envelope = Envelope {
        sender: &batch.sender,
        receiver: &batch.receiver,
        session: 1,
        sequence: 1,
    };
    let mut messages = Vec::with_capacity(2);
    if entry.settled_quantity > 0 {
        let number = match (facts.delivers, dvp) {
            (false, false) => 544,
            (false, true) => 545,
            (true, false) => 546,
            (true, true) => 547,
        };
        let links = [Linkage {
            qualifier: "RELA",
            reference: &facts.sender_reference,
        }];
        let parties = [
            Party {
                role: if facts.delivers { "REAG" } else { "DEAG" },
                id: PartyId::Proprietary {
                    scheme: "CCAS",
                    id: &facts.counterparty_participant_id,
                },
                safekeeping_account: None,
            },
            Party {
                role: "PSET",
                id: PartyId::Bic(&batch.place_of_settlement_bic),
                safekeeping_account: None,
            },
        ];
        let reference = format!("S{}-{}", base36(settlement_run_id), base36(instruction_id));
        let text = build::settlement_instruction(
            Some(&envelope),
            &SettlementInstructionSpec {
                message_type: MessageType(number),
                function: Function {
                    code: FunctionCode::Newm,
                    subfunction: None,
                },
                reference: &reference,
                links: &links,
                prepared: None,
                trade_date: facts.trade_date,
                settlement_date: facts.settlement_date,
                isin,
                description: None,
                quantity: Quantity {
                    kind: QuantityKind::Unit,
                    value: Decimal::from(entry.settled_quantity),
                },
                account: &facts.account_id,
                transaction_type: "TRAD",
                parties: &parties,
                settlement_amount: amount(facts, entry.settled_amount_minor),
            },
        )
        .map_err(build_error)?;
        messages.push((
            format!("bsr:{settlement_run_id}:{instruction_id}:{number}"),
            text,
        ));
    }
    if let Some(pending) = entry.pending {
        let code = match pending {
            PendingReason::Securities => ReasonCode::Lack,
            PendingReason::Money => ReasonCode::Mony,
        };
        let reasons = [ReasonSpec {
            qualifier: "PEND",
            code,
            narrative: None,
        }];
        let statuses = [StatusSpec {
            qualifier: "SETT",
            code: "PEND",
            reasons: &reasons,
        }];
        let reference = format!("P{}-{}", base36(settlement_run_id), base36(instruction_id));
        let text = build::status_advice(
            Some(&envelope),
            &StatusAdviceSpec {
                reference: &reference,
                function: Function {
                    code: FunctionCode::Inst,
                    subfunction: None,
                },
                prepared: None,
                related_reference: &facts.sender_reference,
                statuses: &statuses,
                transaction: Some(StatusTransactionSpec {
                    isin,
                    quantity: Quantity {
                        kind: QuantityKind::Unit,
                        value: Decimal::from(entry.remaining_quantity),
                    },
                    account: &facts.account_id,
                    transaction_type: "TRAD",
                    receive_deliver: if facts.delivers { "DELI" } else { "RECE" },
                    payment: if dvp { "APMT" } else { "FREE" },
                    settlement_date: facts.settlement_date,
                    settlement_amount: amount(facts, entry.remaining_amount_minor),
                }),
            },
        )
        .map_err(build_error)?;
        messages.push((
            format!("bsr:{settlement_run_id}:{instruction_id}:548"),
            text,
        ));
    }
    Ok(messages)
}

/// The scheduled runs of `ccass up`: at each configured run time (local) on each day, try to
/// lead a run for that day; a process that finds the lock taken, or the slot's run already
/// done, stands by. Past slots at start are not caught up (the leader ran them, or the next
/// run settles what they would have). Ends when `shutdown` completes.
pub async fn schedule(
    pool: Pool,
    config: SettlementConfig,
    leader: String,
    shutdown: impl Future<Output = ()>,
) {
    let run_times = match config.run_times_of_day() {
        Ok(times) => times,
        Err(error) => {
            tracing::error!(%error, "settlement scheduler: bad run times");
            return;
        }
    };
    let offset = UtcOffset::from_whole_seconds(i32::from(config.utc_offset_minutes) * 60)
        .unwrap_or(UtcOffset::UTC);
    let latest_slot = |now: OffsetDateTime| {
        let local = now.to_offset(offset);
        run_times
            .iter()
            .rev()
            .find(|time| **time <= local.time())
            .map(|time| local.replace_time(*time))
    };
    let mut handled = latest_slot(OffsetDateTime::now_utc());
    let options = RunOptions {
        leader,
        abort_before_commit: false,
        pause_before_commit_ms: 0,
    };
    let poll = Duration::from_millis(config.scheduler_poll_ms);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(poll) => {}
        }
        let slot = latest_slot(OffsetDateTime::now_utc());
        let Some(due) = slot.filter(|slot| Some(*slot) != handled) else {
            continue;
        };
        handled = Some(due);
        match hostdb::settlement::run_completed_since(&pool, due).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "settlement scheduler: look for the slot's run");
                continue;
            }
        }
        match run_now(&pool, &config, due.date(), &options).await {
            Ok(report) => tracing::info!(
                run = report.settlement_run_id,
                settled = report.settled_count,
                recycled = report.recycled_count,
                "settlement run completed"
            ),
            Err(RunError::LeaderBusy) => {
                tracing::info!("settlement run: another leader is running it; standing by");
            }
            Err(error) => tracing::error!(%error, "settlement run failed"),
        }
    }
}
