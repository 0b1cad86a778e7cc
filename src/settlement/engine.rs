//! The in-memory settlement pass of a Batch Settlement Run: sans-I/O, single-threaded, over
//! dense integer ids (DESIGN.md section 6).
//!
//! Input: the due pairs in settlement order (oldest settlement date, then match id) and the
//! balances they touch, each balance an index into [`Ledger`]. Output: per pair what settled
//! in this run and, for what did not, why.
//!
//! Rules:
//! - DvP moves stock from the deliverer's account to the receiver's and money from the
//!   receiver's participant to the deliverer's, both or neither. FOP moves stock only.
//! - Partial settlement, when both instructions allow it and the whole cannot settle: the
//!   largest quantity both the deliverer's stock and the receiver's money cover, rounded down
//!   to whole board lots (the last slice of an instruction is its remainder, whatever its
//!   size). Money is pro rata, rounded down; the last slice pays the rest, so the slices add
//!   up to the instructed amount exactly.
//! - A pair that cannot settle (in full) stays pending with the reason: lack of securities
//!   when the deliverer's stock is short (checked first), else lack of money. It is recycled
//!   into the next run.
//! - No balance goes negative, except a cash balance marked `may_go_negative` (the CCP's).
//!
//! Chain resolution (settlement order beyond first come, first served): after the first pass
//! in settlement order, every pair that fell short waits on the balance it lacked (the
//! deliverer's holding, or the payer's cash). Each settlement credits two balances (the
//! receiver's holding, the payee's cash); a credited balance with waiters is queued, and its
//! waiters are retried in settlement order. A retried pair that still falls short waits again
//! on what it now lacks. So a deliverer waiting for stock that a later pair of the same run
//! delivers to it settles right after that pair. The loop ends when the queue is empty (no
//! credit can help any pending pair). Bound: a retry happens only when a balance a pair waits
//! on was credited, and credits come from settlements (at most one full settlement per pair,
//! and partial slices of at least one board lot each); worst case quadratic in the pair count,
//! so retries are also capped by `chain_retries_max` (config), after which the rest stays
//! pending for the next run.

use std::collections::VecDeque;

/// Why a pair did not settle (in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// The deliverer lacks the securities (MT548 reason LACK).
    Securities,
    /// The receiver lacks the money, or a party has no cash account in the currency (MONY).
    Money,
}

/// One due pair, in dense ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Index into [`Ledger::stock`] of the deliverer's holding.
    pub deliverer_stock: u32,
    /// Index into [`Ledger::stock`] of the receiver's holding.
    pub receiver_stock: u32,
    /// DvP: indexes into [`Ledger::cash`] of the payer (receiver) and payee (deliverer);
    /// `None` inside when that party has no cash account. `None` for FOP.
    pub cash: Option<(Option<u32>, Option<u32>)>,
    /// Quantity still to settle.
    pub remaining_quantity: i64,
    /// Money still to pay (0 for FOP).
    pub remaining_amount_minor: i64,
    pub board_lot: i64,
    pub partial_allowed: bool,
}

/// Balances touched by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// Holding quantities.
    pub stock: Vec<i64>,
    /// Security (dense id) of each holding, for the conservation check.
    pub stock_security: Vec<u32>,
    /// Cash balances in minor units.
    pub cash: Vec<i64>,
    /// Currency (dense id) of each cash balance.
    pub cash_currency: Vec<u32>,
    pub cash_may_go_negative: Vec<bool>,
}

/// What happened to one pair in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairResult {
    pub settled_quantity: i64,
    pub settled_amount_minor: i64,
    /// `Some` when something remains (recycled).
    pub shortage: Option<Shortage>,
}

/// The result of [`settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub results: Vec<PairResult>,
    /// Pairs fully settled by the first pass alone.
    pub first_pass_settled_count: usize,
    /// Pairs fully settled in the run (first pass and chain resolution).
    pub settled_count: usize,
    /// Retries chain resolution made.
    pub retry_count: u64,
}

/// Why the pass refuses to hand over its result: a bug, never a business outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    #[error("security {security} not conserved: {before} before the run, {after} after")]
    SecurityNotConserved {
        security: u32,
        before: i64,
        after: i64,
    },
    #[error("currency {currency} not conserved: {before} before the run, {after} after")]
    CurrencyNotConserved {
        currency: u32,
        before: i64,
        after: i64,
    },
    #[error("holding {index} would be negative: {quantity}")]
    NegativeHolding { index: usize, quantity: i64 },
    #[error("cash balance {index} would be negative: {amount_minor}")]
    NegativeCash { index: usize, amount_minor: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Stock(u32),
    Cash(u32),
}

/// Settles `pairs` (in settlement order) against `ledger`, updating the ledger in place.
pub fn settle(pairs: &[Pair], ledger: &mut Ledger, chain_retries_max: u64) -> Settlement {
    let mut results = vec![PairResult::default(); pairs.len()];
    let mut remaining: Vec<(i64, i64)> = pairs
        .iter()
        .map(|pair| (pair.remaining_quantity, pair.remaining_amount_minor))
        .collect();
    let mut stock_waiters: Vec<Vec<u32>> = vec![Vec::new(); ledger.stock.len()];
    let mut cash_waiters: Vec<Vec<u32>> = vec![Vec::new(); ledger.cash.len()];
    let mut queue = Queue {
        keys: VecDeque::new(),
        stock_queued: vec![false; ledger.stock.len()],
        cash_queued: vec![false; ledger.cash.len()],
    };
    let mut settled_count = 0usize;

    let mut attempt = |index: usize,
                       ledger: &mut Ledger,
                       results: &mut [PairResult],
                       stock_waiters: &mut [Vec<u32>],
                       cash_waiters: &mut [Vec<u32>],
                       credited: &mut Vec<Key>|
     -> bool {
        let pair = &pairs[index];
        let (quantity_left, amount_left) = remaining[index];
        let outcome = try_settle(pair, quantity_left, amount_left, ledger);
        let result = &mut results[index];
        if outcome.quantity > 0 {
            result.settled_quantity += outcome.quantity;
            result.settled_amount_minor += outcome.amount_minor;
            remaining[index] = (
                quantity_left - outcome.quantity,
                amount_left - outcome.amount_minor,
            );
            credited.push(Key::Stock(pair.receiver_stock));
            if let Some((_, Some(payee))) = pair.cash {
                credited.push(Key::Cash(payee));
            }
        }
        result.shortage = outcome.shortage;
        match outcome.shortage {
            None => true,
            Some(Shortage::Securities) => {
                stock_waiters[pair.deliverer_stock as usize].push(index as u32);
                false
            }
            Some(Shortage::Money) => {
                // A pair without a payer account waits on nothing: no credit can help it.
                if let Some((Some(payer), _)) = pair.cash {
                    cash_waiters[payer as usize].push(index as u32);
                }
                false
            }
        }
    };

    let mut credited = Vec::new();
    for index in 0..pairs.len() {
        if attempt(
            index,
            ledger,
            &mut results,
            &mut stock_waiters,
            &mut cash_waiters,
            &mut credited,
        ) {
            settled_count += 1;
        }
        queue.push(&mut credited, &stock_waiters, &cash_waiters);
    }
    let first_pass_settled_count = settled_count;

    let mut retry_count = 0u64;
    'chains: while let Some(key) = queue.keys.pop_front() {
        let mut waiting = match key {
            Key::Stock(id) => {
                queue.stock_queued[id as usize] = false;
                std::mem::take(&mut stock_waiters[id as usize])
            }
            Key::Cash(id) => {
                queue.cash_queued[id as usize] = false;
                std::mem::take(&mut cash_waiters[id as usize])
            }
        };
        waiting.sort_unstable();
        for (position, &index) in waiting.iter().enumerate() {
            if retry_count >= chain_retries_max {
                // Put the untried ones back so their shortage stands as reported.
                let rest = &waiting[position..];
                match key {
                    Key::Stock(id) => stock_waiters[id as usize].extend_from_slice(rest),
                    Key::Cash(id) => cash_waiters[id as usize].extend_from_slice(rest),
                }
                break 'chains;
            }
            retry_count += 1;
            if attempt(
                index as usize,
                ledger,
                &mut results,
                &mut stock_waiters,
                &mut cash_waiters,
                &mut credited,
            ) {
                settled_count += 1;
            }
            queue.push(&mut credited, &stock_waiters, &cash_waiters);
        }
    }
    Settlement {
        results,
        first_pass_settled_count,
        settled_count,
        retry_count,
    }
}

/// Credited balances with waiters, each queued once until processed.
struct Queue {
    keys: VecDeque<Key>,
    stock_queued: Vec<bool>,
    cash_queued: Vec<bool>,
}

impl Queue {
    fn push(
        &mut self,
        credited: &mut Vec<Key>,
        stock_waiters: &[Vec<u32>],
        cash_waiters: &[Vec<u32>],
    ) {
        for key in credited.drain(..) {
            let (waiters, queued, id) = match key {
                Key::Stock(id) => (stock_waiters, &mut self.stock_queued, id as usize),
                Key::Cash(id) => (cash_waiters, &mut self.cash_queued, id as usize),
            };
            if !waiters[id].is_empty() && !queued[id] {
                queued[id] = true;
                self.keys.push_back(key);
            }
        }
    }
}

struct Attempt {
    quantity: i64,
    amount_minor: i64,
    shortage: Option<Shortage>,
}

/// Money for `quantity` of what remains: pro rata rounded down, the rest on the last slice.
fn amount_for(quantity: i64, quantity_left: i64, amount_left: i64) -> i64 {
    if quantity == quantity_left {
        amount_left
    } else {
        (i128::from(amount_left) * i128::from(quantity) / i128::from(quantity_left)) as i64
    }
}

fn try_settle(pair: &Pair, quantity_left: i64, amount_left: i64, ledger: &mut Ledger) -> Attempt {
    let stock_available = ledger.stock[pair.deliverer_stock as usize];
    let (payer, payee) = match pair.cash {
        None => (None, None),
        Some((Some(payer), Some(payee))) => (Some(payer as usize), Some(payee as usize)),
        Some(_) => {
            return Attempt {
                quantity: 0,
                amount_minor: 0,
                shortage: Some(Shortage::Money),
            };
        }
    };
    let money_available = payer.map(|payer| {
        if ledger.cash_may_go_negative[payer] {
            i64::MAX
        } else {
            ledger.cash[payer]
        }
    });
    let stock_short = stock_available < quantity_left;
    let money_short = money_available.is_some_and(|money| money < amount_left);
    let (quantity, shortage) = if !stock_short && !money_short {
        (quantity_left, None)
    } else {
        let shortage = if stock_short {
            Shortage::Securities
        } else {
            Shortage::Money
        };
        if !pair.partial_allowed {
            (0, Some(shortage))
        } else {
            let mut quantity = quantity_left.min(stock_available.max(0));
            if let Some(money) = money_available
                && amount_left > 0
                && money < amount_left
            {
                let affordable =
                    i128::from(money.max(0)) * i128::from(quantity_left) / i128::from(amount_left);
                quantity = quantity.min(affordable as i64);
            }
            let lot = pair.board_lot.max(1);
            (quantity - quantity % lot, Some(shortage))
        }
    };
    if quantity == 0 {
        return Attempt {
            quantity: 0,
            amount_minor: 0,
            shortage,
        };
    }
    let amount_minor = if payer.is_some() {
        amount_for(quantity, quantity_left, amount_left)
    } else {
        0
    };
    ledger.stock[pair.deliverer_stock as usize] -= quantity;
    ledger.stock[pair.receiver_stock as usize] += quantity;
    if let (Some(payer), Some(payee)) = (payer, payee) {
        ledger.cash[payer] -= amount_minor;
        ledger.cash[payee] += amount_minor;
    }
    Attempt {
        quantity,
        amount_minor,
        shortage,
    }
}

/// Checks `after` against `before`: every security and currency conserved, nothing negative
/// that may not be. Runs in release builds, before anything is written.
pub fn check_invariants(before: &Ledger, after: &Ledger) -> Result<(), InvariantError> {
    let securities = before
        .stock_security
        .iter()
        .max()
        .map_or(0, |&s| s as usize + 1);
    let mut stock_totals = vec![(0i64, 0i64); securities];
    for (index, (&old, &new)) in before.stock.iter().zip(&after.stock).enumerate() {
        if new < 0 {
            return Err(InvariantError::NegativeHolding {
                index,
                quantity: new,
            });
        }
        let total = &mut stock_totals[before.stock_security[index] as usize];
        total.0 += old;
        total.1 += new;
    }
    if let Some((security, &(before, after))) = stock_totals
        .iter()
        .enumerate()
        .find(|(_, (before, after))| before != after)
    {
        return Err(InvariantError::SecurityNotConserved {
            security: security as u32,
            before,
            after,
        });
    }
    let currencies = before
        .cash_currency
        .iter()
        .max()
        .map_or(0, |&c| c as usize + 1);
    let mut cash_totals = vec![(0i64, 0i64); currencies];
    for (index, (&old, &new)) in before.cash.iter().zip(&after.cash).enumerate() {
        if new < 0 && !before.cash_may_go_negative[index] {
            return Err(InvariantError::NegativeCash {
                index,
                amount_minor: new,
            });
        }
        let total = &mut cash_totals[before.cash_currency[index] as usize];
        total.0 += old;
        total.1 += new;
    }
    if let Some((currency, &(before, after))) = cash_totals
        .iter()
        .enumerate()
        .find(|(_, (before, after))| before != after)
    {
        return Err(InvariantError::CurrencyNotConserved {
            currency: currency as u32,
            before,
            after,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(stock: &[i64], cash: &[i64]) -> Ledger {
        Ledger {
            stock: stock.to_vec(),
            stock_security: vec![0; stock.len()],
            cash: cash.to_vec(),
            cash_currency: vec![0; cash.len()],
            cash_may_go_negative: vec![false; cash.len()],
        }
    }

    fn dvp(from: u32, to: u32, payer: u32, payee: u32, quantity: i64, amount: i64) -> Pair {
        Pair {
            deliverer_stock: from,
            receiver_stock: to,
            cash: Some((Some(payer), Some(payee))),
            remaining_quantity: quantity,
            remaining_amount_minor: amount,
            board_lot: 100,
            partial_allowed: false,
        }
    }

    #[test]
    fn dvp_moves_stock_and_cash_together_or_not_at_all() {
        // Goal: DvP is all or nothing. Method: one pair the receiver can pay, one it cannot.
        let mut book = ledger(&[1000, 0], &[0, 500]);
        let before = book.clone();
        let pairs = [dvp(0, 1, 1, 0, 400, 300), dvp(0, 1, 1, 0, 400, 300)];
        let result = settle(&pairs, &mut book, 100);
        assert_eq!(result.settled_count, 1);
        assert_eq!(result.results[1].shortage, Some(Shortage::Money));
        assert_eq!(result.results[1].settled_quantity, 0);
        assert_eq!(book.stock, vec![600, 400]);
        assert_eq!(book.cash, vec![300, 200]);
        check_invariants(&before, &book).unwrap();
    }

    #[test]
    fn chain_settles_a_deliverer_waiting_for_stock_delivered_later_in_the_run() {
        // Goal: chain resolution. Method: pair 0 delivers from holding 1, still empty when the
        // first pass reaches it; pair 1, later in order, delivers into holding 1.
        let mut book = ledger(&[100, 0, 0], &[]);
        let free = |from, to| Pair {
            deliverer_stock: from,
            receiver_stock: to,
            cash: None,
            remaining_quantity: 100,
            remaining_amount_minor: 0,
            board_lot: 100,
            partial_allowed: false,
        };
        let pairs = [free(1, 2), free(0, 1)];
        let result = settle(&pairs, &mut book, 100);
        assert_eq!(result.first_pass_settled_count, 1);
        assert_eq!(result.settled_count, 2);
        assert_eq!(book.stock, vec![0, 0, 100]);
    }

    #[test]
    fn partial_settles_whole_board_lots_and_pro_rata_money() {
        // Goal: partial settlement in board lots. Method: 250 available of 1000 (lot 100).
        let mut book = ledger(&[250, 0], &[10_000, 0]);
        let pair = Pair {
            partial_allowed: true,
            ..dvp(0, 1, 0, 1, 1000, 999)
        };
        let result = settle(&[pair], &mut book, 100);
        let outcome = result.results[0];
        assert_eq!(outcome.settled_quantity, 200);
        assert_eq!(outcome.settled_amount_minor, 199);
        assert_eq!(outcome.shortage, Some(Shortage::Securities));
        assert_eq!(book.stock, vec![50, 200]);
    }

    #[test]
    fn invariants_catch_a_negative_balance_and_lost_stock() {
        // Goal: the release-build checks refuse bad ledgers. Method: forge two.
        let before = ledger(&[10, 0], &[5]);
        let negative = ledger(&[-1, 11], &[5]);
        assert!(matches!(
            check_invariants(&before, &negative),
            Err(InvariantError::NegativeHolding { index: 0, .. })
        ));
        let lost = ledger(&[5, 0], &[5]);
        assert!(matches!(
            check_invariants(&before, &lost),
            Err(InvariantError::SecurityNotConserved { .. })
        ));
    }

    #[test]
    fn retries_stop_at_the_cap() {
        // Goal: the chain bound holds. Method: a chain needing one retry, cap 0.
        let mut book = ledger(&[100, 0, 0], &[]);
        let free = |from, to| Pair {
            deliverer_stock: from,
            receiver_stock: to,
            cash: None,
            remaining_quantity: 100,
            remaining_amount_minor: 0,
            board_lot: 1,
            partial_allowed: false,
        };
        let result = settle(&[free(1, 2), free(0, 1)], &mut book, 0);
        assert_eq!(result.settled_count, 1);
        assert_eq!(result.retry_count, 0);
        assert_eq!(result.results[0].shortage, Some(Shortage::Securities));
    }
}
