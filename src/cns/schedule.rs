//! The CNS day in `ccass up`: at `cns.day_end_time` (local) on each business day, the day-end
//! of that settlement date ([`super::day_end`]: carry forward, money settlement); at
//! `cns.cutoff_time` (local) on each business day, the cut-off of the settlement date of that
//! day's trades ([`super::positions::cutoff`]); at `cns.provisional_statement_time` the
//! provisional clearing statements of that settlement date, at `cns.final_statement_time` the
//! final ones of the date closed the previous business day ([`super::statement`]). All are
//! idempotent (a day-end or cut-off
//! already done changes nothing), so several processes may run the schedule; a slot missed
//! while no process ran is caught up at the next poll of that day.

use std::future::Future;
use std::time::Duration;

use time::{Date, OffsetDateTime, Time, UtcOffset};

use super::CnsConfig;
use super::positions::{self, CutoffError};
use super::statement;
use crate::hostdb::Pool;

/// Runs until `shutdown` completes. `utc_offset_minutes` and `leader_lock_key` are the
/// settlement section's (market local time; the run leader lock the day-end waits for).
pub async fn schedule(
    pool: Pool,
    config: CnsConfig,
    utc_offset_minutes: i16,
    leader_lock_key: i64,
    shutdown: impl Future<Output = ()>,
) {
    let (Some(cutoff_time), Some(day_end_time), Some(provisional_time), Some(final_time)) = (
        parse_time(&config.cutoff_time),
        parse_time(&config.day_end_time),
        parse_time(&config.provisional_statement_time),
        parse_time(&config.final_statement_time),
    ) else {
        tracing::error!("cns scheduler: bad time of day (checked at load)");
        return;
    };
    let mut provisional_queued: Option<Date> = None;
    let mut final_queued: Option<Date> = None;
    let offset =
        UtcOffset::from_whole_seconds(i32::from(utc_offset_minutes) * 60).unwrap_or(UtcOffset::UTC);
    let calendar = config.calendar();
    let poll = Duration::from_millis(config.scheduler_poll_ms);
    let mut cut_off: Option<Date> = None;
    let mut ended: Option<Date> = None;
    let mut horizon_checked: Option<Date> = None;
    let mut quarantine_checked: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(poll) => {}
        }
        let local = OffsetDateTime::now_utc().to_offset(offset);
        let today = local.date();
        if horizon_checked != Some(today) {
            horizon_checked = Some(today);
            check_horizon(&calendar, today);
        }
        if quarantine_checked.is_none_or(|at| at.elapsed() >= QUARANTINE_CHECK_INTERVAL) {
            quarantine_checked = Some(std::time::Instant::now());
            check_quarantine(&pool).await;
        }
        if !calendar.is_business_day(today) {
            continue;
        }
        if local.time() >= day_end_time && ended != Some(today) {
            match super::day_end::day_end(
                &pool,
                &calendar,
                &config.ccp_participant,
                leader_lock_key,
                today,
            )
            .await
            {
                Ok(Some(report)) => {
                    ended = Some(today);
                    tracing::info!(
                        settlement_date = %super::format_date(today),
                        carried = report.carried_stock_position_count,
                        money_settled = report.money_positions_settled_count,
                        money_unpaid = report.money_positions_unpaid_count,
                        "cns day-end completed"
                    );
                }
                Ok(None) => ended = Some(today),
                Err(error) => tracing::error!(%error, "cns day-end failed; retrying"),
            }
        }
        let settlement_date = calendar.settlement_date(today);
        if local.time() >= provisional_time && provisional_queued != Some(settlement_date) {
            match statement::queue(
                &pool,
                settlement_date,
                false,
                config.statement_positions_per_page_max,
            )
            .await
            {
                Ok(_) => provisional_queued = Some(settlement_date),
                Err(error) => {
                    tracing::error!(%error, "cns provisional statements failed; retrying")
                }
            }
        }
        // The final statement of the date whose netting closed on the previous business day.
        let closed_date = calendar.settlement_date(calendar.previous_business_day(today));
        if local.time() >= final_time && final_queued != Some(closed_date) {
            let queued = match crate::hostdb::cns_settlement::cutoff_done(&pool, closed_date).await
            {
                Ok(true) => statement::queue(
                    &pool,
                    closed_date,
                    true,
                    config.statement_positions_per_page_max,
                )
                .await
                .map(|_| true),
                Ok(false) => Ok(false),
                Err(error) => Err(error.into()),
            };
            match queued {
                Ok(true) => final_queued = Some(closed_date),
                Ok(false) => {}
                Err(error) => tracing::error!(%error, "cns final statements failed; retrying"),
            }
        }
        if local.time() >= cutoff_time && cut_off != Some(settlement_date) {
            match positions::cutoff(&pool, &config.ccp_participant, settlement_date).await {
                Ok(report) => {
                    cut_off = Some(settlement_date);
                    tracing::info!(
                        settlement_date = %super::format_date(settlement_date),
                        trades = report.trade_count,
                        "cns cut-off completed"
                    );
                }
                Err(CutoffError::AlreadyClosed(_)) => cut_off = Some(settlement_date),
                Err(error) => tracing::error!(%error, "cns cut-off failed; retrying"),
            }
        }
    }
}

/// How often the scheduler counts the held quarantined batches.
const QUARANTINE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Publishes how many quarantined feed batches are held, and says so while any is: their
/// trades are in no position until an operator releases them (docs/operations.md).
async fn check_quarantine(pool: &Pool) {
    match crate::hostdb::cns::held_quarantined_count(pool).await {
        Ok(held) => {
            metrics::gauge!(super::metrics::BATCHES_QUARANTINED_HELD).set(held as f64);
            if held > 0 {
                tracing::warn!(
                    held,
                    "quarantined trade batches are held and their trades are not netted: ccass cns quarantine list"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cns scheduler: cannot count quarantined batches"),
    }
}

/// Publishes the days left in the holiday list and warns, once a day, when they run short:
/// past the horizon intake and capture refuse every settlement date.
fn check_horizon(calendar: &super::calendar::Calendar, today: Date) {
    let Some(horizon) = calendar.horizon() else {
        return;
    };
    let days_left = (horizon - today).whole_days();
    metrics::gauge!(super::metrics::CALENDAR_HORIZON_DAYS).set(days_left as f64);
    if days_left < super::CALENDAR_HORIZON_WARN_DAYS {
        tracing::warn!(
            known_through = %super::format_date(horizon),
            days_left,
            "cns.holidays_known_through is near: add next year's holidays and move it"
        );
    }
}

/// `HH:MM`.
pub fn parse_time(text: &str) -> Option<Time> {
    Time::parse(text, time::macros::format_description!("[hour]:[minute]")).ok()
}
