//! The settlement calendar: business days are Monday to Friday except configured holidays;
//! CNS trades settle `settlement_cycle_days` business days after the trade date (T+2).
//! Holidays are known only up to a horizon (`cns.holidays_known_through`): a date after it
//! may be a holiday nobody has configured yet, so intake and capture refuse settlement
//! dates beyond it rather than settle on a day the market may be closed.

use std::collections::BTreeSet;

use time::{Date, Duration, Weekday};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
    settlement_cycle_days: u8,
    /// The last date whose holidays are configured; `None` in tests that need no horizon.
    known_through: Option<Date>,
}

impl Calendar {
    pub fn new(holidays: impl IntoIterator<Item = Date>, settlement_cycle_days: u8) -> Calendar {
        Calendar {
            holidays: holidays.into_iter().collect(),
            settlement_cycle_days,
            known_through: None,
        }
    }

    /// This calendar, with holidays known up to and including `last_date`.
    pub fn known_through(self, last_date: Date) -> Calendar {
        Calendar {
            known_through: Some(last_date),
            ..self
        }
    }

    /// The last date whose holidays are configured, if a horizon is set.
    pub fn horizon(&self) -> Option<Date> {
        self.known_through
    }

    /// Whether `date` is within the configured holiday horizon.
    pub fn covers(&self, date: Date) -> bool {
        self.known_through.is_none_or(|last| date <= last)
    }

    pub fn is_business_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.holidays.contains(&date)
    }

    /// The settlement date of a trade done on `trade_date` (a business day).
    pub fn settlement_date(&self, trade_date: Date) -> Date {
        let mut date = trade_date;
        let mut remaining = self.settlement_cycle_days;
        while remaining > 0 {
            date += Duration::days(1);
            if self.is_business_day(date) {
                remaining -= 1;
            }
        }
        date
    }

    /// The last business day before `date`.
    pub fn previous_business_day(&self, date: Date) -> Date {
        let mut previous = date - Duration::days(1);
        while !self.is_business_day(previous) {
            previous -= Duration::days(1);
        }
        previous
    }

    /// The first business day after `date` (where day-end carries unsettled positions).
    pub fn next_business_day(&self, date: Date) -> Date {
        let mut next = date + Duration::days(1);
        while !self.is_business_day(next) {
            next += Duration::days(1);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn settlement_date_skips_weekends_and_holidays() {
        // Goal: T+2 counts business days only. Method: known dates around a weekend and a
        // holiday.
        let calendar = Calendar::new([date!(2026 - 12 - 25)], 2);
        assert_eq!(
            calendar.settlement_date(date!(2026 - 11 - 24)),
            date!(2026 - 11 - 26)
        );
        assert_eq!(
            calendar.settlement_date(date!(2026 - 11 - 26)),
            date!(2026 - 11 - 30)
        );
        assert_eq!(
            calendar.settlement_date(date!(2026 - 12 - 23)),
            date!(2026 - 12 - 28)
        );
        assert!(!calendar.is_business_day(date!(2026 - 12 - 25)));
        assert!(!calendar.is_business_day(date!(2026 - 11 - 28)));
    }

    #[test]
    fn horizon_bounds_the_dates_covered() {
        // Goal: a date after the configured horizon is not covered; without one every date
        // is. Method: the last covered day, the day after, and a calendar with no horizon.
        let calendar = Calendar::new([], 2);
        assert!(calendar.covers(date!(2099 - 01 - 01)));
        let calendar = calendar.known_through(date!(2027 - 12 - 31));
        assert!(calendar.covers(date!(2027 - 12 - 31)));
        assert!(!calendar.covers(date!(2028 - 01 - 01)));
        assert_eq!(calendar.horizon(), Some(date!(2027 - 12 - 31)));
    }
}
