//! Settlement of instructions. This module is an index: intake and matching (MT540–543 in,
//! MT548 out) and the Batch Settlement Run engine live in files beside each other.
//!
//! ```text
//!  instruction_matches (matched pairs, from matching) ──► Batch Settlement Run (leader only)
//!      load due pairs + balances ──► settle in memory (engine) ──► one transaction:
//!      journals (COPY BINARY), balance deltas, instruction_settlements markers, run record,
//!      outbox MT544–547 / MT548 PEND (LACK, MONY)
//! ```
//!
//! - [`intake`], [`matching`], [`lifecycle`]: MT540–543 in, validated and persisted in
//!   micro-batches, matched into `instruction_matches`, MT548 out through the outbox.
//! - [`engine`]: the pure in-memory pass: DvP/FOP, partial settlement, chain resolution.
//! - [`run`]: one run end to end ([`run::run_now`]), and the scheduled runs of `ccass up`.
//!
//! Invariants:
//! - A pair settles exactly once: the run's leader lock, markers and writes commit in one
//!   transaction, and a pair with a complete marker is never loaded again. A run killed
//!   before its commit leaves nothing; the next run settles what it would have.
//! - Per security and currency, the run conserves balances and makes none negative (checked
//!   in memory, release builds included, before anything is written).

pub mod bench;
pub mod engine;
pub mod intake;
pub mod lifecycle;
pub mod matching;
pub mod metrics;
pub mod run;

use serde::Deserialize;

use crate::config::{ConfigError, check_range};

/// `[settlement]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// The day's Batch Settlement Runs, local time `HH:MM`, ascending.
    pub run_times: Vec<String>,
    /// Offset of the market's local time from UTC (Hong Kong: 480).
    pub utc_offset_minutes: i16,
    /// Most pairs one run loads; the rest wait for the next run.
    pub run_pairs_max: i64,
    /// Most retries of chain resolution in one run (see [`engine`]).
    pub chain_retries_max: u64,
    /// Key of the Postgres advisory lock held by the one active run leader.
    pub leader_lock_key: i64,
    /// How often the scheduler looks whether a run is due.
    pub scheduler_poll_ms: u64,
    /// BIC of the place of settlement in confirmations (`PSET`).
    pub place_of_settlement_bic: String,
    /// Input cut-off of a settlement day, local time `HH:MM`: instructions input after it
    /// (on or before their settlement date) are not settled in that day's runs; they wait
    /// for the next settlement date's runs.
    pub input_cutoff_time: String,
}

impl SettlementConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_range(
            "settlement.run_pairs_max",
            self.run_pairs_max,
            1..=100_000_000,
        )?;
        check_range(
            "settlement.chain_retries_max",
            self.chain_retries_max,
            0..=10_000_000_000,
        )?;
        check_range(
            "settlement.utc_offset_minutes",
            self.utc_offset_minutes,
            -720..=840,
        )?;
        check_range(
            "settlement.scheduler_poll_ms",
            self.scheduler_poll_ms,
            10..=3_600_000,
        )?;
        self.run_times_of_day()?;
        self.input_cutoff_of_day()?;
        if self.place_of_settlement_bic.len() != 8
            || !self
                .place_of_settlement_bic
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        {
            return Err(ConfigError::Key {
                key: "settlement.place_of_settlement_bic".to_owned(),
                message: "must be an 8-character BIC".to_owned(),
            });
        }
        Ok(())
    }

    /// The input cut-off, parsed.
    pub fn input_cutoff_of_day(&self) -> Result<time::Time, ConfigError> {
        let format = time::macros::format_description!("[hour]:[minute]");
        time::Time::parse(&self.input_cutoff_time, &format).map_err(|error| ConfigError::Key {
            key: "settlement.input_cutoff_time".to_owned(),
            message: format!("{:?} is not HH:MM: {error}", self.input_cutoff_time),
        })
    }

    /// The instant of `settlement_date`'s input cut-off (local time of the market).
    pub fn input_cutoff_at(
        &self,
        settlement_date: time::Date,
    ) -> Result<time::OffsetDateTime, ConfigError> {
        let offset = time::UtcOffset::from_whole_seconds(i32::from(self.utc_offset_minutes) * 60)
            .map_err(|error| ConfigError::Key {
            key: "settlement.utc_offset_minutes".to_owned(),
            message: error.to_string(),
        })?;
        Ok(settlement_date
            .with_time(self.input_cutoff_of_day()?)
            .assume_offset(offset))
    }

    /// The run times, parsed; ascending.
    pub fn run_times_of_day(&self) -> Result<Vec<time::Time>, ConfigError> {
        let format = time::macros::format_description!("[hour]:[minute]");
        let mut times = Vec::with_capacity(self.run_times.len());
        for text in &self.run_times {
            let parsed = time::Time::parse(text, &format).map_err(|error| ConfigError::Key {
                key: "settlement.run_times".to_owned(),
                message: format!("{text:?} is not HH:MM: {error}"),
            })?;
            if times.last().is_some_and(|last| *last >= parsed) {
                return Err(ConfigError::Key {
                    key: "settlement.run_times".to_owned(),
                    message: "must be ascending".to_owned(),
                });
            }
            times.push(parsed);
        }
        Ok(times)
    }
}
