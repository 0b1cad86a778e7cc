//! Dates relative to today, for tests whose outcome depends on the wall clock: intake refuses
//! a settlement date in the past, and a Batch Settlement Run takes only instructions input
//! (`instructions.created_at`, the time the test inserts them) before the settlement date's
//! input cut-off. A fixed date turns such tests red once it passes; these do not.
//!
//! Computed once per test process, so every test (and every step of one) sees the same
//! dates even when the run crosses midnight: the settlement date is then still ahead.

use std::sync::LazyLock;

use time::{Date, Duration, OffsetDateTime};

use super::test_config;

/// Business days searched back for a CNS trade date (T+n with n a few days at most).
const TRADE_DATE_SEARCH_DAYS_MAX: usize = 30;

static SETTLEMENT_DATE: LazyLock<Date> = LazyLock::new(|| {
    let calendar = test_config().cns.calendar();
    let mut date = OffsetDateTime::now_utc().date() + Duration::days(2);
    while !calendar.is_business_day(date) {
        date += Duration::days(1);
    }
    date
});

/// The first business day at least two days from today (UTC), by the configured calendar:
/// intake accepts it, and its input cut-off (`settlement.input_cutoff_time`, market local
/// time, at most UTC+14) is still ahead, so instructions input now are due on it.
pub fn settlement_date() -> Date {
    *SETTLEMENT_DATE
}

/// The CNS trade date whose settlement date (T+`cns.settlement_cycle_days` business days) is
/// [`settlement_date`].
pub fn cns_trade_date() -> Date {
    let calendar = test_config().cns.calendar();
    let settlement_date = settlement_date();
    let mut trade_date = settlement_date;
    for _ in 0..TRADE_DATE_SEARCH_DAYS_MAX {
        trade_date = calendar.previous_business_day(trade_date);
        let settles = calendar.settlement_date(trade_date);
        if settles == settlement_date {
            return trade_date;
        }
        assert!(
            settles > settlement_date,
            "no trade date settles on {settlement_date}: {trade_date} settles on {settles}"
        );
    }
    panic!(
        "no trade date settles on {settlement_date} within {TRADE_DATE_SEARCH_DAYS_MAX} business days"
    );
}

/// The business day after [`settlement_date`] (where CNS day-end carries unsettled positions).
pub fn next_settlement_date() -> Date {
    test_config()
        .cns
        .calendar()
        .next_business_day(settlement_date())
}
