//! Novation and netting in memory: the pure core of CNS (no I/O).
//!
//! Each CNS trade is novated into two obligations against the CCP: the buyer receives
//! `quantity` from the CCP and pays `amount_minor`; the seller delivers `quantity` to the CCP
//! and is paid `amount_minor`. A [`NettingBook`] nets the obligations of one settlement date
//! into one stock position per (participant, security) and one money position per
//! (participant, currency).
//!
//! Participants, securities and currencies are interned to dense integer ids by the caller, so
//! a position is an index into a flat array: adding a trade is four array updates, no hashing
//! (DESIGN.md section 6: 34–43 M trades/s on one core). Memory is participants × securities
//! cells of 16 bytes (1,500 × 2,600 ≈ 62 MB), allocated once and reused: the book remembers
//! which cells it touched, so reading and clearing cost only what was netted.
//!
//! A whole day at once ([`NettingBook::add_all`] with many trades) is netted in three
//! sequential passes instead of one random one: the stock cells far exceed the caches, so a
//! trade posted straight into them waits on two cache misses. The first pass posts money (a
//! few cells, always cached) and counts the trades of each block of securities whose stock
//! cells fit a core's L2 cache; the second copies each trade's two stock legs into its block
//! (a stable counting sort, so every cell still sees its obligations in trade order); the
//! third posts the legs block by block, in cache. Measured by `ccass bench cns`.

/// A CNS trade with dense ids, ready to net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NettableTrade {
    pub buyer: u32,
    pub seller: u32,
    pub security: u32,
    pub currency: u16,
    /// Shares, > 0.
    pub quantity: i64,
    /// Trade value in minor units of `currency`, >= 0 (see [`trade_amount_minor`]).
    pub amount_minor: i64,
}

/// One position: signed net and how many obligations made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// Stock: > 0 long (receive from the CCP), < 0 short (deliver). Money: > 0 receive, < 0 pay.
    pub net: i64,
    pub obligation_count: u32,
}

/// A netted stock position (dense ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockPosition {
    pub participant: u32,
    pub security: u32,
    pub cell: Cell,
}

/// A netted money position (dense ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyPosition {
    pub participant: u32,
    pub currency: u16,
    pub cell: Cell,
}

/// The netting of one settlement date.
#[derive(Debug, Clone)]
pub struct NettingBook {
    participant_count: u32,
    security_count: u32,
    currency_count: u16,
    stock: Vec<Cell>,
    money: Vec<Cell>,
    stock_touched: Vec<u32>,
    money_touched: Vec<u32>,
    /// Scratch of [`NettingBook::add_partitioned`], kept between calls (grown, never shrunk).
    stock_legs: Vec<StockLegs>,
}

/// A trade's two stock postings, as cell indices (buyer receives, seller delivers).
#[derive(Debug, Clone, Copy, Default)]
struct StockLegs {
    buyer_cell: u32,
    seller_cell: u32,
    quantity: i64,
}

/// From this many trades on, [`NettingBook::add_all`] partitions by security block first;
/// below it (capture's batches) the plain loop is as fast and needs no scratch.
const PARTITION_TRADES_MIN: usize = 65_536;

/// Stock cells per partition block: 16 Ki cells of 16 bytes (256 KiB) stay in a core's L2
/// cache (512 KiB on this machine's EPYC) beside the streams being read and written.
const PARTITION_BLOCK_CELLS: usize = 16_384;

impl NettingBook {
    /// A book for ids `0..participant_count`, `0..security_count`, `0..currency_count`.
    pub fn new(participant_count: u32, security_count: u32, currency_count: u16) -> NettingBook {
        let stock_cells = participant_count as usize * security_count as usize;
        let money_cells = participant_count as usize * usize::from(currency_count);
        NettingBook {
            participant_count,
            security_count,
            currency_count,
            stock: vec![Cell::default(); stock_cells],
            money: vec![Cell::default(); money_cells],
            stock_touched: Vec::new(),
            money_touched: Vec::new(),
            stock_legs: Vec::new(),
        }
    }

    pub fn dimensions(&self) -> (u32, u32, u16) {
        (
            self.participant_count,
            self.security_count,
            self.currency_count,
        )
    }

    /// Novates one trade and nets its two obligations. Ids out of range panic (the caller
    /// interned them against the same dimensions: a programming error, not bad input).
    #[inline]
    pub fn add(&mut self, trade: &NettableTrade) {
        let participants = self.participant_count as usize;
        let currencies = usize::from(self.currency_count);
        // Security-major: a security's cells are adjacent, so the few securities that take
        // most trades (Zipf) stay in cache.
        let security_row = trade.security as usize * participants;
        let buyer_stock = security_row + trade.buyer as usize;
        let seller_stock = security_row + trade.seller as usize;
        let buyer_money = trade.buyer as usize * currencies + usize::from(trade.currency);
        let seller_money = trade.seller as usize * currencies + usize::from(trade.currency);
        Self::post(
            &mut self.stock,
            &mut self.stock_touched,
            buyer_stock,
            trade.quantity,
        );
        Self::post(
            &mut self.stock,
            &mut self.stock_touched,
            seller_stock,
            -trade.quantity,
        );
        Self::post(
            &mut self.money,
            &mut self.money_touched,
            buyer_money,
            -trade.amount_minor,
        );
        Self::post(
            &mut self.money,
            &mut self.money_touched,
            seller_money,
            trade.amount_minor,
        );
    }

    #[inline]
    fn post(cells: &mut [Cell], touched: &mut Vec<u32>, index: usize, amount: i64) {
        let cell = &mut cells[index];
        if cell.obligation_count == 0 {
            // Fits: `new` sized the array from u32 x u32 and indices stay below it.
            touched.push(index as u32);
        }
        cell.net += amount;
        cell.obligation_count += 1;
    }

    /// Nets many trades: the same positions as [`NettingBook::add`] on each in turn (only the
    /// order of [`NettingBook::stock_positions`] may differ), partitioned when there are many.
    pub fn add_all(&mut self, trades: &[NettableTrade]) {
        if trades.len() < PARTITION_TRADES_MIN {
            for trade in trades {
                self.add(trade);
            }
        } else {
            self.add_partitioned(trades, PARTITION_BLOCK_CELLS);
        }
    }

    /// The three passes of the module docs, with blocks of about `block_cells` stock cells (a
    /// power-of-two number of securities, so a trade's block is a shift, not a division).
    fn add_partitioned(&mut self, trades: &[NettableTrade], block_cells: usize) {
        let participants = self.participant_count as usize;
        let currencies = usize::from(self.currency_count);
        let securities_per_block = (block_cells / participants.max(1)).max(1);
        let block_shift = securities_per_block.ilog2();
        let blocks = (self.security_count as usize >> block_shift) + 1;

        // Pass 1: money, and each block's size (in `block_start[block + 1]`).
        let mut block_start = vec![0usize; blocks + 1];
        for trade in trades {
            let buyer_money = trade.buyer as usize * currencies + usize::from(trade.currency);
            let seller_money = trade.seller as usize * currencies + usize::from(trade.currency);
            Self::post(
                &mut self.money,
                &mut self.money_touched,
                buyer_money,
                -trade.amount_minor,
            );
            Self::post(
                &mut self.money,
                &mut self.money_touched,
                seller_money,
                trade.amount_minor,
            );
            block_start[(trade.security as usize >> block_shift) + 1] += 1;
        }
        for block in 1..=blocks {
            block_start[block] += block_start[block - 1];
        }

        // Pass 2: each trade's stock legs into its block, in trade order.
        if self.stock_legs.len() < trades.len() {
            self.stock_legs.resize(trades.len(), StockLegs::default());
        }
        let legs = &mut self.stock_legs[..trades.len()];
        let mut block_next = block_start;
        for trade in trades {
            let block = trade.security as usize >> block_shift;
            let security_row = trade.security as usize * participants;
            // Cell indices fit u32: `new` sized the array from u32 x u32.
            legs[block_next[block]] = StockLegs {
                buyer_cell: (security_row + trade.buyer as usize) as u32,
                seller_cell: (security_row + trade.seller as usize) as u32,
                quantity: trade.quantity,
            };
            block_next[block] += 1;
        }

        // Pass 3: the legs, block by block, into cells that stay in cache.
        for leg in legs.iter() {
            Self::post(
                &mut self.stock,
                &mut self.stock_touched,
                leg.buyer_cell as usize,
                leg.quantity,
            );
            Self::post(
                &mut self.stock,
                &mut self.stock_touched,
                leg.seller_cell as usize,
                -leg.quantity,
            );
        }
    }

    /// Every stock position with at least one obligation, in first-touched order.
    pub fn stock_positions(&self) -> impl Iterator<Item = StockPosition> + '_ {
        let participants = self.participant_count;
        self.stock_touched.iter().map(move |&index| StockPosition {
            participant: index % participants,
            security: index / participants,
            cell: self.stock[index as usize],
        })
    }

    /// Every money position with at least one obligation, in first-touched order.
    pub fn money_positions(&self) -> impl Iterator<Item = MoneyPosition> + '_ {
        let currencies = u32::from(self.currency_count);
        self.money_touched.iter().map(move |&index| MoneyPosition {
            participant: index / currencies,
            // Below currency_count, a u16.
            currency: (index % currencies) as u16,
            cell: self.money[index as usize],
        })
    }

    pub fn stock_position_count(&self) -> usize {
        self.stock_touched.len()
    }

    pub fn money_position_count(&self) -> usize {
        self.money_touched.len()
    }

    /// Per security, the sum of all participants' net positions: always zero, since the CCP
    /// delivers exactly what it receives. Returns the first security that breaks it.
    pub fn unbalanced_security(&self) -> Option<u32> {
        let mut sums = vec![0i64; self.security_count as usize];
        for position in self.stock_positions() {
            sums[position.security as usize] += position.cell.net;
        }
        sums.iter()
            .position(|&sum| sum != 0)
            .map(|security| security as u32)
    }

    /// Empties the book for reuse (costs what was touched, not the whole array).
    pub fn clear(&mut self) {
        for &index in &self.stock_touched {
            self.stock[index as usize] = Cell::default();
        }
        for &index in &self.money_touched {
            self.money[index as usize] = Cell::default();
        }
        self.stock_touched.clear();
        self.money_touched.clear();
    }
}

/// Price is carried in millionths of a major unit (`numeric(20, 6)` in the host database).
pub const PRICE_SCALE: i64 = 1_000_000;

/// The value of `quantity` shares at `price_micros`, in minor units of a currency with
/// `minor_units` decimals, rounded half away from zero (each trade is rounded, then netted).
/// `None` when it does not fit an i64.
pub fn trade_amount_minor(quantity: i64, price_micros: i64, minor_units: u8) -> Option<i64> {
    let minor_per_major = 10i128.checked_pow(u32::from(minor_units))?;
    let scaled = i128::from(quantity)
        .checked_mul(i128::from(price_micros))?
        .checked_mul(minor_per_major)?;
    let scale = i128::from(PRICE_SCALE);
    // Quantity and price are positive (validated), so half up is half away from zero.
    let rounded = scaled.checked_add(scale / 2)?.div_euclid(scale);
    i64::try_from(rounded).ok()
}

/// Parses a decimal price (`62.35`, at most 6 decimals, > 0) into millionths.
pub fn parse_price_micros(text: &str) -> Option<i64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 12 || fraction.len() > 6 {
        return None;
    }
    if !digits_only(whole) || !digits_only(fraction) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut fraction_micros: i64 = 0;
    for (position, byte) in fraction.bytes().enumerate() {
        fraction_micros += i64::from(byte - b'0') * 10i64.pow(5 - position as u32);
    }
    let micros = whole
        .checked_mul(PRICE_SCALE)?
        .checked_add(fraction_micros)?;
    (micros > 0).then_some(micros)
}

/// Formats millionths as a decimal with at least two decimals (`62.35`, `0.000001`).
pub fn format_price_micros(micros: i64) -> String {
    let whole = micros / PRICE_SCALE;
    let fraction = format!("{:06}", micros % PRICE_SCALE);
    let trimmed = fraction.trim_end_matches('0');
    let fraction = if trimmed.len() < 2 {
        &fraction[..2]
    } else {
        trimmed
    };
    format!("{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn trade(buyer: u32, seller: u32, security: u32, quantity: i64, amount: i64) -> NettableTrade {
        NettableTrade {
            buyer,
            seller,
            security,
            currency: 0,
            quantity,
            amount_minor: amount,
        }
    }

    #[test]
    fn two_trades_net_to_positions_against_the_ccp() {
        // Goal: novation and netting by hand. Method: A buys 1,000 from B, then sells 400 to C;
        // the expected positions are worked out on paper.
        let mut book = NettingBook::new(3, 1, 1);
        book.add(&trade(0, 1, 0, 1_000, 50_000));
        book.add(&trade(2, 0, 0, 400, 21_000));
        let stock: HashMap<u32, Cell> = book
            .stock_positions()
            .map(|p| (p.participant, p.cell))
            .collect();
        assert_eq!(
            stock[&0],
            Cell {
                net: 600,
                obligation_count: 2
            }
        );
        assert_eq!(
            stock[&1],
            Cell {
                net: -1_000,
                obligation_count: 1
            }
        );
        assert_eq!(
            stock[&2],
            Cell {
                net: 400,
                obligation_count: 1
            }
        );
        let money: HashMap<u32, i64> = book
            .money_positions()
            .map(|p| (p.participant, p.cell.net))
            .collect();
        assert_eq!(money[&0], -50_000 + 21_000);
        assert_eq!(money[&1], 50_000);
        assert_eq!(money[&2], -21_000);
        assert_eq!(book.unbalanced_security(), None);
        book.clear();
        assert_eq!(book.stock_position_count(), 0);
        assert!(book.stock.iter().all(|cell| *cell == Cell::default()));
    }

    #[test]
    fn prices_and_amounts() {
        // Goal: exact decimal handling. Method: known prices, amounts and rounding cases.
        assert_eq!(parse_price_micros("62.35"), Some(62_350_000));
        assert_eq!(parse_price_micros("0.000001"), Some(1));
        assert_eq!(parse_price_micros("7"), Some(7_000_000));
        for bad in ["", "0", "0.0", "-1", "1.0000001", "1,5", ".5", "1e3", "abc"] {
            assert_eq!(parse_price_micros(bad), None, "{bad}");
        }
        assert_eq!(format_price_micros(62_350_000), "62.35");
        assert_eq!(format_price_micros(1), "0.000001");
        assert_eq!(format_price_micros(7_000_000), "7.00");
        // 1,000 x 62.35 = 62,350.00 HKD = 6,235,000 cents.
        assert_eq!(trade_amount_minor(1_000, 62_350_000, 2), Some(6_235_000));
        // 1 x 0.005 = 0.5 cent rounds away from zero to 1 cent; 0.004 to 0.
        assert_eq!(trade_amount_minor(1, 5_000, 2), Some(1));
        assert_eq!(trade_amount_minor(1, 4_999, 2), Some(0));
        assert_eq!(trade_amount_minor(i64::MAX, i64::MAX, 2), None);
    }

    proptest! {
        #[test]
        fn netting_agrees_with_a_straightforward_sum(
            trades in proptest::collection::vec(
                (0u32..5, 0u32..5, 0u32..4, 0u16..2, 1i64..10_000, 0i64..1_000_000),
                0..200,
            )
        ) {
            // Goal: the dense book equals a plain per-key sum. Method: random trades netted
            // both ways; also every security sums to zero.
            let mut book = NettingBook::new(5, 4, 2);
            let mut stock: HashMap<(u32, u32), (i64, u32)> = HashMap::new();
            let mut money: HashMap<(u32, u16), (i64, u32)> = HashMap::new();
            // One book netted trade by trade, one in a single add_all call: both must agree
            // with the plain sum.
            let mut by_one = NettingBook::new(5, 4, 2);
            let nettable: Vec<NettableTrade> = trades
                .iter()
                .map(|&(buyer, seller, security, currency, quantity, amount)| NettableTrade {
                    buyer, seller, security, currency, quantity, amount_minor: amount,
                })
                .collect();
            book.add_all(&nettable[..nettable.len() / 2]);
            book.add_all(&nettable[nettable.len() / 2..]);
            for trade in &nettable {
                by_one.add(trade);
            }
            // And the partitioned passes of a whole day, with blocks of one and of two
            // securities (cells 5 and 10), twice into one book to reuse its scratch.
            let mut partitioned = [NettingBook::new(5, 4, 2), NettingBook::new(5, 4, 2)];
            for (book, block_cells) in partitioned.iter_mut().zip([5, 10]) {
                book.add_partitioned(&nettable[..nettable.len() / 2], block_cells);
                book.add_partitioned(&nettable[nettable.len() / 2..], block_cells);
            }
            let key = |p: StockPosition| ((p.participant, p.security), (p.cell.net, p.cell.obligation_count));
            let money_key = |p: MoneyPosition| ((p.participant, p.currency), (p.cell.net, p.cell.obligation_count));
            prop_assert_eq!(
                by_one.stock_positions().map(key).collect::<HashMap<_, _>>(),
                book.stock_positions().map(key).collect::<HashMap<_, _>>()
            );
            for other in &partitioned {
                prop_assert_eq!(
                    by_one.stock_positions().map(key).collect::<HashMap<_, _>>(),
                    other.stock_positions().map(key).collect::<HashMap<_, _>>()
                );
                prop_assert_eq!(
                    by_one.money_positions().map(money_key).collect::<HashMap<_, _>>(),
                    other.money_positions().map(money_key).collect::<HashMap<_, _>>()
                );
                prop_assert_eq!(by_one.stock_position_count(), other.stock_position_count());
                prop_assert_eq!(by_one.money_position_count(), other.money_position_count());
            }
            prop_assert_eq!(by_one.stock_position_count(), book.stock_position_count());
            prop_assert_eq!(by_one.money_position_count(), book.money_position_count());
            for &(buyer, seller, security, currency, quantity, amount) in &trades {
                let entry = stock.entry((buyer, security)).or_default();
                entry.0 += quantity;
                entry.1 += 1;
                let entry = stock.entry((seller, security)).or_default();
                entry.0 -= quantity;
                entry.1 += 1;
                let entry = money.entry((buyer, currency)).or_default();
                entry.0 -= amount;
                entry.1 += 1;
                let entry = money.entry((seller, currency)).or_default();
                entry.0 += amount;
                entry.1 += 1;
            }
            let netted: HashMap<(u32, u32), (i64, u32)> = book
                .stock_positions()
                .map(|p| ((p.participant, p.security), (p.cell.net, p.cell.obligation_count)))
                .collect();
            prop_assert_eq!(netted, stock);
            let netted: HashMap<(u32, u16), (i64, u32)> = book
                .money_positions()
                .map(|p| ((p.participant, p.currency), (p.cell.net, p.cell.obligation_count)))
                .collect();
            prop_assert_eq!(netted, money);
            prop_assert_eq!(book.unbalanced_security(), None);
        }
    }
}
