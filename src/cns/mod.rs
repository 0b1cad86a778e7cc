//! CNS clearing: the exchange trade feed, capture, novation to the CCP and continuous net
//! settlement positions.
//!
//! ```text
//!  feed (CSV file, generator) ──► TRADES ccass.v1.trades.{market} ──► capture workers
//!      ──► one transaction per fetch: exchange_trade_sets (COPY BINARY, a row of trade
//!          lines per trade date, no index), cns_trade_exceptions, cns_trade_batches,
//!          position deltas netted in memory (COPY BINARY into cns_position_delta_sets, a row
//!          of delta lines per date and kind, no position row updated), and last the
//!          trade id claims (bitmap blocks, V0014) ──► commit ──► ack
//!          and reject events in the outbox (ccass.v1.events.{participant}.trade)
//!  cut-off (per settlement date) ──► re-net every CNS trade in memory, check against the
//!      incremental positions, mark them final in one transaction
//! ```
//!
//! - [`feed`]: the CSV format, the synthetic day generator, publishing batches.
//! - [`capture`]: validation and the capture worker.
//! - [`netting`]: novation and netting in memory on dense ids (pure).
//! - [`positions`]: the cut-off and the positions view.
//! - [`quarantine`]: batches capture set aside (malformed, or refused by the database), and
//!   their release.
//! - [`bench`]: `ccass bench cns`.
//! - [`settle`] (pure), [`bsr`]: settlement of positions in the Batch Settlement Run.
//! - [`day_end`]: carry forward and money settlement; [`statement`]: clearing statements;
//!   [`schedule`]: cut-off, statements and day-end at their times in `ccass up`.
//!
//! Invariants:
//! - A trade is netted exactly once: its batch marker, its line in a trade set and its
//!   position delta commit in one transaction, and a redelivered batch finds its marker and changes nothing.
//! - A position is its `cns_stock_positions`/`cns_money_positions` row plus its deltas not
//!   folded yet; folding moves a date's deltas in one statement (each delta exactly once),
//!   done by the cut-off under its exclusive lock and before every positions read, so the
//!   Batch Settlement Run and the day-end (after the cut-off) see rows only.
//! - A refused trade is stored with its reason and never netted.
//! - A trade id is accepted once per (market, trade date): duplicates are found against the
//!   claims read at the start of the transaction (no lock), and the accepted trades claim
//!   their ids just before the commit (`hostdb::cns::claim_trade_ids`: bits of
//!   `cns_trade_id_blocks` locked in key order, or rows of `cns_trade_ids` for ids that are
//!   not `<prefix><digits>`). A claim another transaction committed in between makes the
//!   transaction start over, and the trade is then refused as `duplicate_trade`. Isolated
//!   obligations (keyed by trade id) are written after the claim.
//! - Per security and settlement date, the participants' net positions sum to zero (the CCP
//!   delivers what it receives); the cut-off re-nets every trade and refuses to finalise
//!   positions that disagree with the incremental ones.
//!
//! # Settlement of positions
//!
//! Positions are settled by the one BSR engine: `settlement::run::run_now` calls
//! [`bsr::settle_shorts`] before its SI pass and [`bsr::settle_longs`] after it, inside the
//! run's one transaction (pure rules in [`settle`], SQL in `hostdb::cns_settlement`). Input
//! per run: `cns_stock_positions` of settlement dates up to the run's with `status` in
//! (`final`, `partially_settled`) and `net_quantity <> 0`, and `cns_isolated_obligations`
//! likewise. The order and rule:
//! 1. Short positions first: each participant delivers `|net_quantity| - settled_quantity`
//!    from its settlement account (first active house account, else client account) to the
//!    CCP's `ccp` account, in full when its holding covers it, else the whole board lots it
//!    covers (CNS positions allow partial delivery in board lots). Isolated sells deliver
//!    whole, paid by the CCP's settlement cash account (DvP).
//! 2. Then SIs (they see what the shorts moved: same transaction).
//! 3. Then longs, from what the CCP received for that security and settlement date and has
//!    not handed out yet (capped by what it holds): when that covers every outstanding long,
//!    every long settles in full. When shorts failed, the receipts are allocated **pro rata
//!    to the outstanding long quantity, rounded down to whole board lots**; the remaining
//!    board lots go one at a time to the largest outstanding longs (ties by participant id),
//!    so allocation is deterministic and never exceeds receipts. Isolated buys receive whole
//!    when the CCP holds the quantity and the buyer's cash covers the amount (DvP).
//! 4. What is left unsettled stays `partially_settled`/`final` for the next run of the day;
//!    the day-end ([`day_end`], after the day's final run) carries it forward: the row
//!    becomes `carried_forward` and its remainder is added to the next business day's
//!    position of the same participant and security (counted in `carried_in_quantity`),
//!    netting continuously with the later trades. Isolated obligations are not netted and
//!    simply stay due until they settle.
//!
//! A position's settlement is its `settled_quantity`/`status` and a `cns_position_settlements`
//! row, written in the run's transaction: a killed run settles nothing twice. Stock settles
//! free of payment; money positions (`cns_money_positions`) settle once per day at the
//! day-end against the CCP's settlement cash account (a payer whose balance does not cover
//! its position stays unpaid, reported in the day-end's counts). Each settled position is
//! reported on `ccass.v1.events.{participant}.settlement` through the outbox; clearing
//! statements ([`statement`], MT537) go to `ccass.v1.outbound.{participant}`.

pub mod bench;
pub mod bsr;
pub mod calendar;
pub mod capture;
pub mod day_end;
pub mod feed;
pub mod metrics;
pub mod netting;
pub mod positions;
pub mod quarantine;
pub mod schedule;
pub mod settle;
pub mod statement;

use serde::Deserialize;
use time::Date;

use crate::config::{ConfigError, check_range};

/// Upper bound on capture fetch bytes in flight on one NATS connection: three quarters of
/// nats-server's default per-client `max_pending` (64 MiB). Measured: 2 workers x 48 MiB
/// stalled 1 M trades for a whole ack wait (61 s instead of 10 s).
const CAPTURE_IN_FLIGHT_BYTES_MAX: usize = 48 * 1024 * 1024;

/// The scheduler warns daily once the holiday list covers fewer days ahead than this: enough
/// for a change of config to be reviewed and deployed.
pub const CALENDAR_HORIZON_WARN_DAYS: i64 = 60;

/// `[cns]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnsConfig {
    /// The CCP participant every CNS trade is novated to (`HKSCC0`).
    pub ccp_participant: String,
    /// The exchange market whose trades this deployment clears (`xhkg`).
    pub market: String,
    /// CNS trades settle this many business days after the trade date (T+2).
    pub settlement_cycle_days: u8,
    /// Non-business days besides Saturdays and Sundays, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
    /// The last date the holiday list covers (`YYYY-MM-DD`): settlement dates after it are
    /// refused, and `ccass up` warns when fewer than [`CALENDAR_HORIZON_WARN_DAYS`] remain.
    pub holidays_known_through: String,
    /// Capture workers started by `ccass up` (one pull consumer shared by all).
    pub capture_workers: usize,
    /// Messages (trade batches) taken per fetch, captured in one transaction.
    pub capture_fetch_messages_max: usize,
    /// Bytes taken per fetch. All workers of a process share one NATS connection, so
    /// `capture_workers` x this must stay well below the server's per-client pending limit
    /// (nats-server `max_pending`, 64 MiB by default): beyond it the server drops deliveries
    /// as a slow consumer and they come back only after the consumer's ack wait.
    pub capture_fetch_bytes_max: usize,
    /// How long a fetch waits for messages before capturing what it has.
    pub capture_fetch_wait_ms: u64,
    /// How long a worker waits before retrying after the host database failed.
    pub capture_retry_delay_ms: u64,
    /// How often a worker reloads participants and securities.
    pub reference_refresh_ms: u64,
    /// Trades per feed message (JSON, below the TRADES stream's 1 MiB message limit).
    pub feed_trades_per_batch_max: usize,
    /// Local `HH:MM` (settlement.utc_offset_minutes) on each business day when `ccass up`
    /// closes the netting of the settlement date of that day's trades.
    pub cutoff_time: String,
    /// Local `HH:MM` on each business day when `ccass up` ends that settlement date: carry
    /// forward and money settlement; after the day's final Batch Settlement Run.
    pub day_end_time: String,
    /// How often the CNS scheduler of `ccass up` looks whether a cut-off or day-end is due.
    pub scheduler_poll_ms: u64,
    /// Whether `ccass up` runs the CNS schedule (cut-off, day-end, clearing statements) on
    /// the real clock. `ccass demo` turns it off: it plays the same date on its own clock.
    pub schedule_enabled: bool,
    /// Local `HH:MM` on trade day when each participant's provisional clearing statement of
    /// that day's settlement date is queued.
    pub provisional_statement_time: String,
    /// Local `HH:MM` the next business morning when the final clearing statement (after the
    /// cut-off) is queued.
    pub final_statement_time: String,
    /// Stock positions per page (`28E`) of a clearing statement (MT537 below 10,000 chars).
    pub statement_positions_per_page_max: usize,
}

impl CnsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        crate::ids::ParticipantId::parse(&self.ccp_participant).map_err(|error| {
            ConfigError::Key {
                key: "cns.ccp_participant".to_owned(),
                message: error.to_string(),
            }
        })?;
        if crate::bus::subjects::Market::parse(&self.market).is_none() {
            return Err(ConfigError::Key {
                key: "cns.market".to_owned(),
                message: format!("`{}` is not 1 to 16 of [a-z0-9]", self.market),
            });
        }
        check_range(
            "cns.settlement_cycle_days",
            self.settlement_cycle_days,
            0..=10,
        )?;
        let holidays = self.holiday_dates()?;
        let known_through =
            parse_date(&self.holidays_known_through).ok_or_else(|| ConfigError::Key {
                key: "cns.holidays_known_through".to_owned(),
                message: format!(
                    "`{}` is not a date such as 2027-12-31",
                    self.holidays_known_through
                ),
            })?;
        if let Some(late) = holidays.iter().find(|holiday| **holiday > known_through) {
            return Err(ConfigError::Key {
                key: "cns.holidays_known_through".to_owned(),
                message: format!(
                    "holiday {late} is after the horizon {known_through}: move the horizon to the last day the list covers"
                ),
            });
        }
        check_range("cns.capture_workers", self.capture_workers, 1..=64)?;
        check_range(
            "cns.capture_fetch_messages_max",
            self.capture_fetch_messages_max,
            1..=4096,
        )?;
        let in_flight_bytes = self.capture_workers * self.capture_fetch_bytes_max;
        if in_flight_bytes > CAPTURE_IN_FLIGHT_BYTES_MAX {
            return Err(ConfigError::Key {
                key: "cns.capture_fetch_bytes_max".to_owned(),
                message: format!(
                    "{} workers x {} bytes = {in_flight_bytes} bytes in flight on one connection, over {CAPTURE_IN_FLIGHT_BYTES_MAX} (nats-server drops deliveries to slow consumers past its 64 MiB max_pending)",
                    self.capture_workers, self.capture_fetch_bytes_max
                ),
            });
        }
        check_range(
            "cns.capture_fetch_wait_ms",
            self.capture_fetch_wait_ms,
            1..=60_000,
        )?;
        check_range(
            "cns.capture_retry_delay_ms",
            self.capture_retry_delay_ms,
            1..=600_000,
        )?;
        check_range(
            "cns.reference_refresh_ms",
            self.reference_refresh_ms,
            1..=86_400_000,
        )?;
        for (key, text) in [
            ("cns.cutoff_time", &self.cutoff_time),
            ("cns.day_end_time", &self.day_end_time),
            (
                "cns.provisional_statement_time",
                &self.provisional_statement_time,
            ),
            ("cns.final_statement_time", &self.final_statement_time),
        ] {
            if schedule::parse_time(text).is_none() {
                return Err(ConfigError::Key {
                    key: key.to_owned(),
                    message: format!("{text:?} is not HH:MM"),
                });
            }
        }
        check_range(
            "cns.scheduler_poll_ms",
            self.scheduler_poll_ms,
            10..=3_600_000,
        )?;
        check_range(
            "cns.statement_positions_per_page_max",
            self.statement_positions_per_page_max,
            1..=40,
        )?;
        check_range(
            "cns.feed_trades_per_batch_max",
            self.feed_trades_per_batch_max,
            1..=5_000,
        )?;
        Ok(())
    }

    fn holiday_dates(&self) -> Result<Vec<Date>, ConfigError> {
        self.holidays
            .iter()
            .map(|text| {
                parse_date(text).ok_or_else(|| ConfigError::Key {
                    key: "cns.holidays".to_owned(),
                    message: format!("`{text}` is not a date such as 2026-12-25"),
                })
            })
            .collect()
    }

    /// The settlement calendar (dates were checked at load).
    pub fn calendar(&self) -> calendar::Calendar {
        let holidays = self.holidays.iter().filter_map(|text| parse_date(text));
        let calendar = calendar::Calendar::new(holidays, self.settlement_cycle_days);
        match parse_date(&self.holidays_known_through) {
            Some(last_date) => calendar.known_through(last_date),
            None => calendar,
        }
    }
}

/// `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Date> {
    // By hand: capture parses one per trade, and the format-description parser costs
    // several times this.
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = text.as_bytes() else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let month = time::Month::try_from(u8::try_from(digits(&[m0, m1])?).ok()?).ok()?;
    let day = u8::try_from(digits(&[d0, d1])?).ok()?;
    Date::from_calendar_date(i32::try_from(year).ok()?, month, day).ok()
}

/// `HH:MM:SS` (24-hour).
pub fn parse_time(text: &str) -> Option<time::Time> {
    let &[h0, h1, b':', m0, m1, b':', s0, s1] = text.as_bytes() else {
        return None;
    };
    let part = |pair: [u8; 2]| digits(&pair).and_then(|value| u8::try_from(value).ok());
    time::Time::from_hms(part([h0, h1])?, part([m0, m1])?, part([s0, s1])?).ok()
}

/// The value of a run of ASCII decimal digits (`None` if any byte is not a digit).
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    // Formatting a valid date with a fixed description cannot fail.
    date.format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use time::macros::{date, time};

    use super::*;

    #[test]
    fn the_holiday_horizon_must_cover_the_holiday_list() {
        // Goal: the shipped config loads with a horizon its holidays respect, and a horizon
        // before a listed holiday is refused at load, naming the key. Method: the real config
        // directory, then the same with the horizon overridden to mid-2027.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let config = crate::config::load(&dir, "dev", []).unwrap();
        let calendar = config.cns.calendar();
        let horizon = calendar.horizon().expect("a horizon is configured");
        assert!(calendar.covers(horizon) && !calendar.covers(horizon + time::Duration::days(1)));
        let early = [(
            "CCASS_CNS__HOLIDAYS_KNOWN_THROUGH".to_owned(),
            "2027-06-30".to_owned(),
        )];
        let error = crate::config::load(&dir, "dev", early).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Key { key, message }
                if key == "cns.holidays_known_through" && message.contains("2027-07-01")),
            "{error}"
        );
    }

    #[test]
    fn dates_and_times_parse_by_hand_as_their_formats_say() {
        // Goal: the hand parsers accept exactly `YYYY-MM-DD` and `HH:MM:SS` with valid values.
        assert_eq!(parse_date("2026-11-24"), Some(date!(2026 - 11 - 24)));
        assert_eq!(parse_date("2024-02-29"), Some(date!(2024 - 02 - 29)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-11-31",
            "2026-1-24",
            "2026/11/24",
            "2026-11-2x",
            " 2026-11-24",
            "",
            "+026-11-24",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_time("09:30:05"), Some(time!(09:30:05)));
        assert_eq!(parse_time("23:59:59"), Some(time!(23:59:59)));
        for bad in [
            "24:00:00", "12:60:00", "12:00:60", "9:30:05", "09:30", "09-30-05", "0a:30:05",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
