//! The CNS day in `ccass up`: at `cns.day_end_time` (local) on each business day, the day-end
//! of that settlement date ([`super::day_end`]: carry forward, money settlement); at
//! `cns.cutoff_time` (local) on each business day, the cut-off of the settlement date of that
//! day's trades ([`super::positions::cutoff`]). Both are idempotent (a day-end or cut-off
//! already done changes nothing), so several processes may run the schedule; a slot missed
//! while no process ran is caught up at the next poll of that day.

use std::future::Future;
use std::time::Duration;

use time::{Date, OffsetDateTime, Time, UtcOffset};

use super::CnsConfig;
use super::positions::{self, CutoffError};
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
    let (Some(cutoff_time), Some(day_end_time)) = (
        parse_time(&config.cutoff_time),
        parse_time(&config.day_end_time),
    ) else {
        tracing::error!("cns scheduler: bad cutoff_time or day_end_time (checked at load)");
        return;
    };
    let offset =
        UtcOffset::from_whole_seconds(i32::from(utc_offset_minutes) * 60).unwrap_or(UtcOffset::UTC);
    let calendar = config.calendar();
    let poll = Duration::from_millis(config.scheduler_poll_ms);
    let mut cut_off: Option<Date> = None;
    let mut ended: Option<Date> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(poll) => {}
        }
        let local = OffsetDateTime::now_utc().to_offset(offset);
        let today = local.date();
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

/// `HH:MM`.
pub fn parse_time(text: &str) -> Option<Time> {
    Time::parse(text, time::macros::format_description!("[hour]:[minute]")).ok()
}
