//! Settlement of CNS positions, pure (no I/O): what a short delivers, how the CCP's receipts
//! are allocated to longs, what an isolated trade side can settle. The Batch Settlement Run
//! ([`super::bsr`]) loads positions and balances, calls these, and writes the result.
//!
//! Rules (the allocation rule is the one stated in [`crate::cns`]):
//! - A short delivers what it still owes when the participant's holding covers it; otherwise
//!   the whole board lots the holding covers (CNS positions allow partial delivery); nothing
//!   when not one board lot is available.
//! - Longs of one security and settlement date share what the CCP received for them and has
//!   not yet handed out (never more than the CCP holds). When that covers every outstanding
//!   long, each settles in full. Otherwise each gets its pro rata share of the receipts,
//!   rounded down to whole board lots; the board lots left over go one at a time to the
//!   largest outstanding longs (ties by participant id). Deterministic, and the total never
//!   exceeds the receipts or any long's outstanding quantity.
//! - An isolated trade side settles trade for trade, all or nothing: a sell when the seller's
//!   holding covers the quantity, a buy when the CCP holds the quantity and the buyer's cash
//!   covers the amount.

/// Units a short position delivers now: all of `outstanding` when `available` covers it,
/// else the whole board lots `available` covers.
pub fn short_delivery(outstanding: i64, available: i64, board_lot: i64) -> i64 {
    if outstanding <= 0 || available <= 0 {
        return 0;
    }
    if available >= outstanding {
        return outstanding;
    }
    let lot = board_lot.max(1);
    (available / lot) * lot
}

/// One long position competing for the CCP's receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongClaim<'a> {
    pub participant_id: &'a str,
    /// `net_quantity - settled_quantity` (> 0).
    pub outstanding: i64,
}

/// Allocates `receipts` units among `longs` (see the module docs); the result is in the order
/// of `longs`.
pub fn allocate(receipts: i64, board_lot: i64, longs: &[LongClaim<'_>]) -> Vec<i64> {
    let total: i64 = longs.iter().map(|long| long.outstanding.max(0)).sum();
    if receipts <= 0 || total <= 0 {
        return vec![0; longs.len()];
    }
    if receipts >= total {
        return longs.iter().map(|long| long.outstanding.max(0)).collect();
    }
    let lot = board_lot.max(1);
    let mut allocation: Vec<i64> = longs
        .iter()
        .map(|long| {
            let outstanding = long.outstanding.max(0);
            let share = i128::from(outstanding) * i128::from(receipts) / i128::from(total);
            let share = i64::try_from(share).unwrap_or(0);
            ((share / lot) * lot).min(outstanding)
        })
        .collect();
    let mut left = receipts - allocation.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..longs.len()).collect();
    order.sort_by(|&a, &b| {
        longs[b]
            .outstanding
            .cmp(&longs[a].outstanding)
            .then_with(|| longs[a].participant_id.cmp(longs[b].participant_id))
    });
    // One lot at a time, largest first, round after round while any long can take a lot.
    while left >= lot {
        let mut given = false;
        for &index in &order {
            if left < lot {
                break;
            }
            if longs[index].outstanding - allocation[index] >= lot {
                allocation[index] += lot;
                left -= lot;
                given = true;
            }
        }
        if !given {
            break;
        }
    }
    allocation
}

/// Whether an isolated sell of `quantity` settles against the seller's `available` holding.
pub fn isolated_sell_settles(quantity: i64, available: i64) -> bool {
    quantity > 0 && available >= quantity
}

/// Whether an isolated buy settles: the CCP holds the quantity and the buyer can pay.
pub fn isolated_buy_settles(
    quantity: i64,
    ccp_available: i64,
    amount_minor: i64,
    buyer_cash_minor: Option<i64>,
) -> bool {
    quantity > 0
        && ccp_available >= quantity
        && buyer_cash_minor.is_some_and(|cash| cash >= amount_minor)
}

/// The next status of a position or obligation of `total` units after `settled` of them.
pub fn status_after(settled: i64, total: i64) -> &'static str {
    if settled >= total {
        "settled"
    } else if settled > 0 {
        "partially_settled"
    } else {
        "final"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims<'a>(items: &[(&'a str, i64)]) -> Vec<LongClaim<'a>> {
        items
            .iter()
            .map(|&(participant_id, outstanding)| LongClaim {
                participant_id,
                outstanding,
            })
            .collect()
    }

    #[test]
    fn a_short_delivers_all_it_owes_or_whole_board_lots() {
        assert_eq!(short_delivery(1000, 5000, 100), 1000);
        assert_eq!(short_delivery(1000, 1000, 100), 1000);
        assert_eq!(short_delivery(1000, 950, 100), 900);
        assert_eq!(short_delivery(1000, 99, 100), 0);
        assert_eq!(short_delivery(1000, 0, 100), 0);
        assert_eq!(short_delivery(0, 500, 100), 0);
    }

    #[test]
    fn enough_receipts_settle_every_long_in_full() {
        let longs = claims(&[("B00001", 400), ("B00002", 800)]);
        assert_eq!(allocate(1200, 100, &longs), vec![400, 800]);
        assert_eq!(allocate(5000, 100, &longs), vec![400, 800]);
    }

    #[test]
    fn short_receipts_are_shared_pro_rata_in_board_lots() {
        // 600 of 1200 outstanding: half each, exactly in lots.
        let longs = claims(&[("B00001", 400), ("B00002", 800)]);
        assert_eq!(allocate(600, 100, &longs), vec![200, 400]);
    }

    #[test]
    fn leftover_lots_go_to_the_largest_outstanding_longs_ties_by_participant() {
        // 3 equal longs of 300 share 400 in lots of 100: 133 each rounds down to 100, the one
        // lot left goes to the first by participant id.
        let longs = claims(&[("B00003", 300), ("B00001", 300), ("B00002", 300)]);
        assert_eq!(allocate(400, 100, &longs), vec![100, 200, 100]);
        // Largest first: 700 and 300 share 500 -> 350/150 -> 300/100, lot left to the 700.
        let longs = claims(&[("B00009", 300), ("B00001", 700)]);
        assert_eq!(allocate(500, 100, &longs), vec![100, 400]);
    }

    #[test]
    fn allocation_never_exceeds_receipts_or_outstanding_and_is_deterministic() {
        for receipts in (0..=3000).step_by(100) {
            let longs = claims(&[
                ("B00004", 1200),
                ("B00002", 100),
                ("B00003", 700),
                ("B00001", 700),
            ]);
            let allocation = allocate(receipts, 100, &longs);
            let total: i64 = allocation.iter().sum();
            assert_eq!(total, receipts.min(2700), "receipts {receipts}");
            for (share, long) in allocation.iter().zip(&longs) {
                assert!(*share <= long.outstanding && share % 100 == 0);
            }
            assert_eq!(allocation, allocate(receipts, 100, &longs));
        }
    }

    #[test]
    fn isolated_sides_settle_all_or_nothing() {
        assert!(isolated_sell_settles(500, 500));
        assert!(!isolated_sell_settles(500, 499));
        assert!(isolated_buy_settles(500, 500, 1000, Some(1000)));
        assert!(!isolated_buy_settles(500, 400, 1000, Some(1000)));
        assert!(!isolated_buy_settles(500, 500, 1000, Some(999)));
        assert!(!isolated_buy_settles(500, 500, 1000, None));
    }

    #[test]
    fn status_follows_what_settled() {
        assert_eq!(status_after(0, 100), "final");
        assert_eq!(status_after(50, 100), "partially_settled");
        assert_eq!(status_after(100, 100), "settled");
    }
}
