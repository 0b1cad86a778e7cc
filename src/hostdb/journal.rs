//! Appends to the movement journals with COPY BINARY: the settlement engine's write path.
//!
//! Guarantees: rows are appended within the caller's transaction (nothing is visible until it
//! commits, and a rollback removes them all); the call returns the number of rows the server
//! reports written. The exception is a settlement run's rows, written on connections of their
//! own into the run's tables ([`Journal::spawn_append_to_run`]): those are part of the journal
//! when the run's transaction, which attaches the tables, commits (V0021). It does not touch
//! the stored balances: the caller updates `holdings` / `cash_balances` in the same
//! transaction, and `audit` checks that the two agree.

use time::Date;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::copy::{CopyRows, Field, PendingCopy, copy_rows, spawn_copy_rows_committed};
use super::{HostDbError, Pool};

/// Why a stock movement happened (`holding_movements.movement_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldingMovementKind {
    /// Opening balance loaded from reference data (no source account).
    Opening,
    /// Physical or external deposit into the depository (no source account).
    Deposit,
    /// Withdrawal out of the depository (no destination account).
    Withdrawal,
    /// Account-to-account transfer by settlement.
    Settlement,
}

impl HoldingMovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldingMovementKind::Opening => "opening",
            HoldingMovementKind::Deposit => "deposit",
            HoldingMovementKind::Withdrawal => "withdrawal",
            HoldingMovementKind::Settlement => "settlement",
        }
    }
}

/// One row of `holding_movements`: `quantity` units of `isin` from one account to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldingMovement {
    pub settlement_date: Date,
    pub settlement_run_id: Option<i64>,
    /// `None` for openings and deposits.
    pub from_account_id: Option<String>,
    /// `None` for withdrawals.
    pub to_account_id: Option<String>,
    pub isin: String,
    pub quantity: i64,
    pub kind: HoldingMovementKind,
    /// What caused it: an instruction reference, a CNS position, `seed:opening`.
    pub reference: String,
}

/// Why money moved (`cash_movements.movement_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CashMovementKind {
    Opening,
    Deposit,
    Withdrawal,
    /// The money leg of a DvP settlement or CNS position.
    Dvp,
    /// End-of-day money settlement.
    MoneySettlement,
}

impl CashMovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CashMovementKind::Opening => "opening",
            CashMovementKind::Deposit => "deposit",
            CashMovementKind::Withdrawal => "withdrawal",
            CashMovementKind::Dvp => "dvp",
            CashMovementKind::MoneySettlement => "money_settlement",
        }
    }
}

/// One row of `cash_movements`: `amount_minor` (minor units of the currency) from one
/// participant's cash account to another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashMovement {
    pub settlement_date: Date,
    pub settlement_run_id: Option<i64>,
    pub from_participant_id: Option<String>,
    pub to_participant_id: Option<String>,
    pub currency_code: String,
    pub amount_minor: i64,
    pub kind: CashMovementKind,
    pub reference: String,
}

const HOLDING_COLUMNS: &str = "settlement_date, settlement_run_id, from_account_id, \
    to_account_id, isin, quantity, movement_kind, reference";

const CASH_COLUMNS: &str = "settlement_date, settlement_run_id, from_participant_id, \
    to_participant_id, currency_code, amount_minor, movement_kind, reference";

/// One `COPY … FROM STDIN BINARY` in a transaction: start it, write rows, finish it. Every
/// COPY in hostdb (journals, trades, settled markers, outbox) goes through this, so errors
/// carry the same context everywhere.
pub(crate) struct CopyIn {
    writer: std::pin::Pin<Box<BinaryCopyInWriter>>,
    context: &'static str,
}

impl CopyIn {
    pub(crate) async fn start(
        transaction: &tokio_postgres::Transaction<'_>,
        context: &'static str,
        statement: &str,
        types: &[Type],
    ) -> Result<CopyIn, HostDbError> {
        let sink = transaction
            .copy_in(statement)
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))?;
        Ok(CopyIn {
            writer: Box::pin(BinaryCopyInWriter::new(sink, types)),
            context,
        })
    }

    pub(crate) async fn write(&mut self, row: &[&(dyn ToSql + Sync)]) -> Result<(), HostDbError> {
        let context = self.context;
        self.writer
            .as_mut()
            .write(row)
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))
    }

    /// Completes the COPY; returns the number of rows written.
    pub(crate) async fn finish(mut self) -> Result<u64, HostDbError> {
        let context = self.context;
        self.writer
            .as_mut()
            .finish()
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))
    }
}

/// The journal a movement kind belongs to: its table and the columns its COPY names.
pub trait JournalKind: Copy {
    /// The partitioned journal (V0021: one partition per settlement run, one for the rest).
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    const CONTEXT: &'static str;
    fn as_str(self) -> &'static str;
}

impl JournalKind for HoldingMovementKind {
    const TABLE: &'static str = "holding_movements";
    const COLUMNS: &'static str = HOLDING_COLUMNS;
    const CONTEXT: &'static str = "copy holding movements";
    fn as_str(self) -> &'static str {
        HoldingMovementKind::as_str(self)
    }
}

impl JournalKind for CashMovementKind {
    const TABLE: &'static str = "cash_movements";
    const COLUMNS: &'static str = CASH_COLUMNS;
    const CONTEXT: &'static str = "copy cash movements";
    fn as_str(self) -> &'static str {
        CashMovementKind::as_str(self)
    }
}

/// The table holding settlement run `run_id`'s rows of journal `K`: created by
/// [`create_run_tables`], attached to the journal by the run's commit (V0021).
pub fn run_table<K: JournalKind>(run_id: i64) -> String {
    format!("{}_run_{run_id}", K::TABLE)
}

fn copy_statement<K: JournalKind>(table: &str) -> String {
    format!("COPY {table} ({}) FROM STDIN BINARY", K::COLUMNS)
}

/// Creates settlement run `run_id`'s two journal tables, committed on a connection of their
/// own so that other connections can write them; outside the journals until the run's
/// transaction attaches them (V0021).
pub async fn create_run_tables(pool: &Pool, run_id: i64) -> Result<(), HostDbError> {
    super::client(pool)
        .await?
        .execute("SELECT ccass_create_run_journals($1)", &[&run_id])
        .await
        .map_err(|error| HostDbError::from_postgres("create the run's journal tables", error))?;
    Ok(())
}

/// Rows of one journal, encoded for COPY BINARY as they are pushed (no owned strings per row:
/// the settlement run pushes half a million). Both journals have the same shape: date, run,
/// from and to (accounts, or participants' cash accounts), what moved (an ISIN, or a
/// currency), how much (a quantity, or minor units), kind and reference.
pub struct Journal<K> {
    rows: CopyRows<8>,
    kind: std::marker::PhantomData<K>,
}

/// Rows of `holding_movements`.
pub type HoldingJournal = Journal<HoldingMovementKind>;
/// Rows of `cash_movements`.
pub type CashJournal = Journal<CashMovementKind>;

impl<K> Default for Journal<K> {
    fn default() -> Self {
        Journal {
            rows: CopyRows::new(),
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: JournalKind> Journal<K> {
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        settlement_date: Date,
        settlement_run_id: Option<i64>,
        from: Option<&str>,
        to: Option<&str>,
        asset: &str,
        amount: i64,
        kind: K,
        reference: &str,
    ) {
        self.rows.push([
            Field::Date(settlement_date),
            Field::optional_int8(settlement_run_id),
            Field::optional_text(from),
            Field::optional_text(to),
            Field::Text(asset),
            Field::Int8(amount),
            Field::Text(kind.as_str()),
            Field::Text(reference),
        ]);
    }

    pub fn len(&self) -> usize {
        usize::try_from(self.rows.len()).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Appends the rows to the journal with one COPY BINARY; returns the row count. A row
    /// the journal's CHECK constraints refuse fails the whole COPY (nothing appended).
    pub async fn append(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
    ) -> Result<u64, HostDbError> {
        self.append_into(transaction, K::TABLE).await
    }

    /// [`Journal::append`], into settlement run `run_id`'s table ([`run_table`]): rows the
    /// run's own transaction writes before it attaches the table.
    pub async fn append_to_run(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
        run_id: i64,
    ) -> Result<u64, HostDbError> {
        self.append_into(transaction, &run_table::<K>(run_id)).await
    }

    async fn append_into(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
        table: &str,
    ) -> Result<u64, HostDbError> {
        copy_rows(
            transaction,
            K::CONTEXT,
            &copy_statement::<K>(table),
            self.rows,
        )
        .await
    }

    /// Appends the rows to settlement run `run_id`'s table on a pool connection of its own,
    /// in a transaction of its own, sent by a task while the caller goes on: the run's
    /// transaction (another server process) writes the rest meanwhile. Committed when
    /// [`PendingCopy::finish`] returns, yet outside the journal until the run attaches the
    /// table.
    pub fn spawn_append_to_run(self, pool: &Pool, run_id: i64) -> PendingCopy {
        spawn_copy_rows_committed(
            pool.clone(),
            K::CONTEXT,
            copy_statement::<K>(&run_table::<K>(run_id)),
            self.rows,
        )
    }
}

impl<'a> FromIterator<&'a HoldingMovement> for HoldingJournal {
    fn from_iter<T: IntoIterator<Item = &'a HoldingMovement>>(movements: T) -> Self {
        let mut journal = HoldingJournal::default();
        for movement in movements {
            journal.push(
                movement.settlement_date,
                movement.settlement_run_id,
                movement.from_account_id.as_deref(),
                movement.to_account_id.as_deref(),
                &movement.isin,
                movement.quantity,
                movement.kind,
                &movement.reference,
            );
        }
        journal
    }
}

impl<'a> FromIterator<&'a CashMovement> for CashJournal {
    fn from_iter<T: IntoIterator<Item = &'a CashMovement>>(movements: T) -> Self {
        let mut journal = CashJournal::default();
        for movement in movements {
            journal.push(
                movement.settlement_date,
                movement.settlement_run_id,
                movement.from_participant_id.as_deref(),
                movement.to_participant_id.as_deref(),
                &movement.currency_code,
                movement.amount_minor,
                movement.kind,
                &movement.reference,
            );
        }
        journal
    }
}

/// Appends `movements` to `holding_movements` with one COPY BINARY (encoded in bulk);
/// returns the row count. A row the journal's CHECK constraints refuse fails the whole COPY
/// (nothing appended).
pub async fn append_holding_movements(
    transaction: &tokio_postgres::Transaction<'_>,
    movements: &[HoldingMovement],
) -> Result<u64, HostDbError> {
    movements
        .iter()
        .collect::<HoldingJournal>()
        .append(transaction)
        .await
}

/// Appends `movements` to `cash_movements` with one COPY BINARY (encoded in bulk); returns
/// the row count.
pub async fn append_cash_movements(
    transaction: &tokio_postgres::Transaction<'_>,
    movements: &[CashMovement],
) -> Result<u64, HostDbError> {
    movements
        .iter()
        .collect::<CashJournal>()
        .append(transaction)
        .await
}
