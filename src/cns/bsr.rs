//! The CNS phases of a Batch Settlement Run, called by `settlement::run::run_now` inside the
//! run's one transaction: [`settle_shorts`] before the SI pass, [`settle_longs`] after it.
//!
//! - Shorts: each due short position delivers from the participant's settlement account
//!   (first active house account, else client account) to the CCP's `ccp` account what
//!   [`settle::short_delivery`] allows; each due isolated sell delivers its quantity whole and
//!   is paid its amount by the CCP's settlement cash account (DvP).
//! - Longs: per security and settlement date the CCP's receipts not yet handed out (capped by
//!   what the CCP holds) are allocated by [`settle::allocate`]; each due isolated buy
//!   receives its quantity whole from the CCP and pays its amount (DvP).
//! - Everything goes through the run's writers: journals (COPY BINARY) with the balance
//!   deltas, the positions' settled quantity and status with one `cns_position_settlements`
//!   row per (run, position), and a `settlement` event per settled position or isolated side
//!   in the outbox. Stock positions settle free of payment: money settles once per day
//!   ([`super::day_end`]).
//! - Positions and balances are loaded `FOR UPDATE` in the run's transaction, so the phases
//!   see what the earlier phases of the same run moved, and a run that does not commit
//!   settles nothing.

use std::collections::{BTreeMap, HashMap};

use time::Date;

use super::format_date;
use super::settle;
use crate::bus::subjects::{self, EventKind};
use crate::bus::trades::PositionEvent;
use crate::hostdb::HostDbError;
use crate::hostdb::cns_settlement::{Ccp, Direction, DueIsolated, DuePosition, PositionSettlement};
use crate::hostdb::journal::{
    CashMovement, CashMovementKind, HoldingMovement, HoldingMovementKind,
};
use crate::hostdb::settlement::{HoldingRow, OutboxRow, RunTransaction};
use crate::ids::ParticipantId;

/// What one CNS phase of a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseReport {
    pub positions_due: usize,
    pub positions_settled: usize,
    pub isolated_due: usize,
    pub isolated_settled: usize,
    pub holding_movements_count: usize,
    pub cash_movements_count: usize,
    pub outbox_count: usize,
}

/// Balances the phase touches, before and after, and what the phase moved.
struct Book {
    run_id: i64,
    settlement_date: Date,
    holdings: HashMap<(String, String), i64>,
    holdings_before: HashMap<(String, String), i64>,
    cash: HashMap<(String, String), i64>,
    cash_before: HashMap<(String, String), i64>,
    holding_movements: Vec<HoldingMovement>,
    cash_movements: Vec<CashMovement>,
    settlements: Vec<PositionSettlement>,
    outbox: Vec<OutboxRow>,
}

impl Book {
    async fn load(
        run: &RunTransaction<'_>,
        settlement_date: Date,
        stock_keys: &[(String, String)],
        cash_keys: &[(String, String)],
    ) -> Result<Book, HostDbError> {
        let accounts: Vec<&str> = stock_keys.iter().map(|k| k.0.as_str()).collect();
        let isins: Vec<&str> = stock_keys.iter().map(|k| k.1.as_str()).collect();
        let mut book = Book {
            run_id: run.settlement_run_id,
            settlement_date,
            holdings: HashMap::new(),
            holdings_before: HashMap::new(),
            cash: HashMap::new(),
            cash_before: HashMap::new(),
            holding_movements: Vec::new(),
            cash_movements: Vec::new(),
            settlements: Vec::new(),
            outbox: Vec::new(),
        };
        for key in stock_keys {
            book.holdings.insert(key.clone(), 0);
        }
        for row in run.holdings(&accounts, &isins).await? {
            book.holdings
                .insert((row.account_id, row.isin), row.quantity);
        }
        if !cash_keys.is_empty() {
            let participants: Vec<&str> = cash_keys.iter().map(|k| k.0.as_str()).collect();
            let currencies: Vec<&str> = cash_keys.iter().map(|k| k.1.as_str()).collect();
            // Keys without a stored balance have no cash account: absent from `cash`.
            for row in run.cns_lock_cash(&participants, &currencies).await? {
                book.cash
                    .insert((row.participant_id, row.currency_code), row.amount_minor);
            }
        }
        book.holdings_before = book.holdings.clone();
        book.cash_before = book.cash.clone();
        Ok(book)
    }

    fn holding(&self, account: &str, isin: &str) -> i64 {
        self.holdings
            .get(&(account.to_owned(), isin.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn cash(&self, participant: &str, currency: &str) -> Option<i64> {
        self.cash
            .get(&(participant.to_owned(), currency.to_owned()))
            .copied()
    }

    fn move_stock(&mut self, from: &str, to: &str, isin: &str, quantity: i64, reference: String) {
        *self
            .holdings
            .entry((from.to_owned(), isin.to_owned()))
            .or_default() -= quantity;
        *self
            .holdings
            .entry((to.to_owned(), isin.to_owned()))
            .or_default() += quantity;
        self.holding_movements.push(HoldingMovement {
            settlement_date: self.settlement_date,
            settlement_run_id: Some(self.run_id),
            from_account_id: Some(from.to_owned()),
            to_account_id: Some(to.to_owned()),
            isin: isin.to_owned(),
            quantity,
            kind: HoldingMovementKind::Settlement,
            reference,
        });
    }

    fn move_cash(
        &mut self,
        from: &str,
        to: &str,
        currency: &str,
        amount_minor: i64,
        reference: String,
    ) {
        if amount_minor <= 0 {
            return;
        }
        *self
            .cash
            .entry((from.to_owned(), currency.to_owned()))
            .or_default() -= amount_minor;
        *self
            .cash
            .entry((to.to_owned(), currency.to_owned()))
            .or_default() += amount_minor;
        self.cash_movements.push(CashMovement {
            settlement_date: self.settlement_date,
            settlement_run_id: Some(self.run_id),
            from_participant_id: Some(from.to_owned()),
            to_participant_id: Some(to.to_owned()),
            currency_code: currency.to_owned(),
            amount_minor,
            kind: CashMovementKind::Dvp,
            reference,
        });
    }

    /// `quantity` of `position` moves between its account and the CCP's (a short delivers,
    /// a long receives), recorded with its event.
    fn settle_position(
        &mut self,
        ccp: &Ccp,
        position: &DuePosition,
        account: &str,
        direction: Direction,
        quantity: i64,
    ) {
        let (from, to) = match direction {
            Direction::Short => (account, ccp.account_id.as_str()),
            Direction::Long => (ccp.account_id.as_str(), account),
        };
        self.move_stock(
            from,
            to,
            &position.isin,
            quantity,
            position_reference(position),
        );
        record_position(self, position, account, direction, quantity);
    }

    /// An isolated trade settles whole against the CCP: a sell delivers the stock and is
    /// paid, a buy pays and receives the stock.
    fn settle_isolated(&mut self, ccp: &Ccp, side: &DueIsolated, account: &str) {
        let ccp_account = ccp.account_id.as_str();
        let ccp_participant = ccp.participant_id.as_str();
        let ((stock_from, stock_to), (payer, payee)) = if side.side == "sell" {
            (
                (account, ccp_account),
                (ccp_participant, side.participant_id.as_str()),
            )
        } else {
            (
                (ccp_account, account),
                (side.participant_id.as_str(), ccp_participant),
            )
        };
        let reference = isolated_reference(side);
        self.move_stock(
            stock_from,
            stock_to,
            &side.isin,
            side.quantity,
            reference.clone(),
        );
        self.move_cash(
            payer,
            payee,
            &side.currency_code,
            side.amount_minor,
            reference,
        );
        record_isolated(self, side);
    }

    fn event(&mut self, participant_id: &str, dedupe_id: String, event: &PositionEvent) {
        let Ok(participant) = ParticipantId::parse(participant_id) else {
            return;
        };
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        self.outbox.push(OutboxRow {
            subject: subjects::events(&participant, EventKind::Settlement)
                .as_str()
                .to_owned(),
            dedupe_id,
            payload,
        });
    }

    /// Writes journals, balance deltas, settlements and events in the run's transaction.
    async fn write(
        self,
        run: &RunTransaction<'_>,
        settled_isolated: &[&DueIsolated],
        report: &mut PhaseReport,
    ) -> Result<(), HostDbError> {
        let mut holding_deltas: Vec<HoldingRow> = self
            .holdings
            .iter()
            .filter_map(|(key, after)| {
                let before = self.holdings_before.get(key).copied().unwrap_or(0);
                (after != &before).then(|| HoldingRow {
                    account_id: key.0.clone(),
                    isin: key.1.clone(),
                    quantity: after - before,
                })
            })
            .collect();
        holding_deltas.sort_by(|a, b| (&a.account_id, &a.isin).cmp(&(&b.account_id, &b.isin)));
        let mut cash_deltas: Vec<(String, String, i64)> = self
            .cash
            .iter()
            .filter_map(|(key, after)| {
                let before = self.cash_before.get(key).copied().unwrap_or(0);
                (after != &before).then(|| (key.0.clone(), key.1.clone(), after - before))
            })
            .collect();
        cash_deltas.sort();
        if !self.holding_movements.is_empty() || !self.cash_movements.is_empty() {
            run.apply_movements(
                &self.holding_movements,
                &self.cash_movements,
                &holding_deltas,
                &cash_deltas,
            )
            .await?;
        }
        run.cns_record_settlements(&self.settlements).await?;
        run.cns_record_isolated(settled_isolated).await?;
        if !self.outbox.is_empty() {
            run.append_outbox(&self.outbox).await?;
        }
        report.holding_movements_count = self.holding_movements.len();
        report.cash_movements_count = self.cash_movements.len();
        report.outbox_count = self.outbox.len();
        report.positions_settled = self.settlements.len();
        report.isolated_settled = settled_isolated.len();
        Ok(())
    }
}

fn position_reference(position: &DuePosition) -> String {
    format!(
        "cns:{}:{}:{}",
        format_date(position.settlement_date),
        position.participant_id,
        position.isin
    )
}

fn isolated_reference(side: &DueIsolated) -> String {
    format!(
        "cns-isolated:{}:{}:{}:{}",
        side.market,
        format_date(side.trade_date),
        side.trade_id,
        side.side
    )
}

/// Records what `quantity` did to `position` and its event.
fn record_position(
    book: &mut Book,
    position: &DuePosition,
    account_id: &str,
    direction: Direction,
    quantity: i64,
) {
    let total = position.net_quantity.abs();
    let settled = position.settled_quantity + quantity;
    let status = settle::status_after(settled, total);
    book.settlements.push(PositionSettlement {
        settlement_date: position.settlement_date,
        participant_id: position.participant_id.clone(),
        isin: position.isin.clone(),
        direction,
        account_id: account_id.to_owned(),
        quantity,
        status,
    });
    let event = PositionEvent {
        settlement_date: format_date(position.settlement_date),
        kind: "stock".to_owned(),
        isin: Some(position.isin.clone()),
        currency: None,
        net: position.net_quantity,
        settled,
        obligation_count: position.obligation_count,
        status: status.to_owned(),
    };
    let dedupe_id = format!("bsr:{}:{}", book.run_id, position_reference(position));
    book.event(&position.participant_id, dedupe_id, &event);
}

fn record_isolated(book: &mut Book, side: &DueIsolated) {
    let sign = if side.side == "sell" { -1 } else { 1 };
    let event = PositionEvent {
        settlement_date: format_date(side.settlement_date),
        kind: "stock".to_owned(),
        isin: Some(side.isin.clone()),
        currency: Some(side.currency_code.clone()),
        net: sign * side.quantity,
        settled: side.quantity,
        obligation_count: 1,
        status: "settled".to_owned(),
    };
    let dedupe_id = format!("bsr:{}:{}", book.run_id, isolated_reference(side));
    book.event(&side.participant_id, dedupe_id, &event);
}

/// (account, ISIN) of a holding or (participant, currency) of a cash balance.
type BalanceKey = (String, String);

/// The holdings and cash balances a phase touches: each position's and isolated trade's
/// account and the CCP's in the same security; the isolated trades' cash on both sides.
fn balance_keys(
    ccp: &Ccp,
    positions: &[DuePosition],
    isolated: &[DueIsolated],
) -> (Vec<BalanceKey>, Vec<BalanceKey>) {
    let mut stock_keys = Vec::new();
    for (account, isin) in positions
        .iter()
        .map(|p| (&p.account_id, &p.isin))
        .chain(isolated.iter().map(|s| (&s.account_id, &s.isin)))
    {
        if let Some(account) = account {
            stock_keys.push((account.clone(), isin.clone()));
        }
        stock_keys.push((ccp.account_id.clone(), isin.clone()));
    }
    let mut cash_keys = Vec::new();
    for trade in isolated {
        cash_keys.push((trade.participant_id.clone(), trade.currency_code.clone()));
        cash_keys.push((ccp.participant_id.clone(), trade.currency_code.clone()));
    }
    (stock_keys, cash_keys)
}

/// What a phase settles: the CCP, the date's due positions and isolated trades of one
/// direction, and the balances they touch, locked.
struct Phase {
    ccp: Ccp,
    positions: Vec<DuePosition>,
    isolated: Vec<DueIsolated>,
    book: Book,
}

/// Loads a phase; `None` when there is no CCP or nothing is due (`report` counts what is).
async fn load_phase(
    run: &RunTransaction<'_>,
    settlement_date: Date,
    direction: Direction,
    isolated_side: &str,
    report: &mut PhaseReport,
) -> Result<Option<Phase>, HostDbError> {
    let Some(ccp) = run.cns_ccp().await? else {
        return Ok(None);
    };
    let positions = run.cns_due_positions(settlement_date, direction).await?;
    let isolated = run.cns_due_isolated(settlement_date, isolated_side).await?;
    report.positions_due = positions.len();
    report.isolated_due = isolated.len();
    if positions.is_empty() && isolated.is_empty() {
        return Ok(None);
    }
    let (stock_keys, cash_keys) = balance_keys(&ccp, &positions, &isolated);
    let book = Book::load(run, settlement_date, &stock_keys, &cash_keys).await?;
    Ok(Some(Phase {
        ccp,
        positions,
        isolated,
        book,
    }))
}

/// Phase 1 of a run: CNS short positions and isolated sells deliver to the CCP.
pub async fn settle_shorts(
    run: &RunTransaction<'_>,
    settlement_date: Date,
) -> Result<PhaseReport, HostDbError> {
    let mut report = PhaseReport::default();
    let Some(Phase {
        ccp,
        positions: shorts,
        isolated: sells,
        mut book,
    }) = load_phase(run, settlement_date, Direction::Short, "sell", &mut report).await?
    else {
        return Ok(report);
    };
    for position in &shorts {
        let Some(account) = &position.account_id else {
            continue;
        };
        let outstanding = position.net_quantity.abs() - position.settled_quantity;
        let available = book.holding(account, &position.isin);
        let quantity = settle::short_delivery(outstanding, available, position.board_lot);
        if quantity == 0 {
            continue;
        }
        book.settle_position(&ccp, position, account, Direction::Short, quantity);
    }
    let mut settled = Vec::new();
    for sell in &sells {
        let Some(account) = &sell.account_id else {
            continue;
        };
        let paid = book
            .cash(&sell.participant_id, &sell.currency_code)
            .is_some()
            && book
                .cash(&ccp.participant_id, &sell.currency_code)
                .is_some();
        if !paid || !settle::isolated_sell_settles(sell.quantity, book.holding(account, &sell.isin))
        {
            continue;
        }
        book.settle_isolated(&ccp, sell, account);
        settled.push(sell);
    }
    book.write(run, &settled, &mut report).await?;
    log_phase("shorts", &ccp, &report);
    Ok(report)
}

/// Phase 3 of a run: the CCP's receipts go to CNS long positions (allocation rule in
/// [`settle`]), then isolated buys receive from the CCP.
pub async fn settle_longs(
    run: &RunTransaction<'_>,
    settlement_date: Date,
) -> Result<PhaseReport, HostDbError> {
    let mut report = PhaseReport::default();
    let Some(Phase {
        ccp,
        positions: longs,
        isolated: buys,
        mut book,
    }) = load_phase(run, settlement_date, Direction::Long, "buy", &mut report).await?
    else {
        return Ok(report);
    };

    // Longs that can receive, grouped by (settlement date, isin) in date order.
    let mut groups: BTreeMap<(Date, &str), Vec<&DuePosition>> = BTreeMap::new();
    for position in longs.iter().filter(|p| p.account_id.is_some()) {
        groups
            .entry((position.settlement_date, position.isin.as_str()))
            .or_default()
            .push(position);
    }
    let dates: Vec<Date> = groups.keys().map(|key| key.0).collect();
    let isins: Vec<&str> = groups.keys().map(|key| key.1).collect();
    let receipts: HashMap<(Date, String), i64> = run
        .cns_receipts(&dates, &isins)
        .await?
        .into_iter()
        .map(|r| {
            (
                (r.settlement_date, r.isin),
                r.delivered_by_shorts - r.handed_to_longs,
            )
        })
        .collect();
    for ((date, isin), positions) in &groups {
        let unallocated = receipts
            .get(&(*date, (*isin).to_owned()))
            .copied()
            .unwrap_or(0);
        let available = unallocated.min(book.holding(&ccp.account_id, isin));
        let claims: Vec<settle::LongClaim<'_>> = positions
            .iter()
            .map(|p| settle::LongClaim {
                participant_id: &p.participant_id,
                outstanding: p.net_quantity - p.settled_quantity,
            })
            .collect();
        let board_lot = positions.first().map_or(1, |p| p.board_lot);
        let allocation = settle::allocate(available, board_lot, &claims);
        for (position, quantity) in positions.iter().zip(allocation) {
            let Some(account) = &position.account_id else {
                continue;
            };
            if quantity == 0 {
                continue;
            }
            book.settle_position(&ccp, position, account, Direction::Long, quantity);
        }
    }
    let mut settled = Vec::new();
    for buy in &buys {
        let Some(account) = &buy.account_id else {
            continue;
        };
        let ccp_cash = book.cash(&ccp.participant_id, &buy.currency_code);
        let buyer_cash = book.cash(&buy.participant_id, &buy.currency_code);
        if ccp_cash.is_none()
            || !settle::isolated_buy_settles(
                buy.quantity,
                book.holding(&ccp.account_id, &buy.isin),
                buy.amount_minor,
                buyer_cash,
            )
        {
            continue;
        }
        book.settle_isolated(&ccp, buy, account);
        settled.push(buy);
    }
    book.write(run, &settled, &mut report).await?;
    log_phase("longs", &ccp, &report);
    Ok(report)
}

fn log_phase(phase: &'static str, ccp: &Ccp, report: &PhaseReport) {
    tracing::info!(
        phase,
        ccp = %ccp.participant_id,
        positions_due = report.positions_due,
        positions_settled = report.positions_settled,
        isolated_due = report.isolated_due,
        isolated_settled = report.isolated_settled,
        "cns settlement phase"
    );
}
