//! The day-end of a settlement date, once, after its final Batch Settlement Run: carry forward
//! and money settlement in ONE transaction (SQL in `hostdb::cns_settlement`).
//!
//! - Carry forward: every stock position of the date still `final`/`partially_settled` becomes
//!   `carried_forward`, and its remainder is added to the position of the same participant and
//!   security on the next business day, where it nets with that day's trades.
//! - Money settlement: each money position of the date is settled against the CCP's settlement
//!   cash account: a participant owed money is credited (the CCP's account may go negative),
//!   a participant that owes is debited when its cash balance covers the amount; otherwise,
//!   or without a cash account in the currency, the position stays unpaid (counted in the
//!   report and left `final` for operations). Each settled position is reported to its
//!   participant with a `settlement` event through the outbox.
//! - Runs at `cns.day_end_time` in `ccass up` (after the day's final run: the day-end takes the
//!   run leader's lock, so it waits for a run under way) or on demand with `ccass cns day-end`.
//!   A second day-end of the same date changes nothing.

use time::Date;

use super::format_date;
use crate::bus::subjects::{self, EventKind};
use crate::bus::trades::PositionEvent;
use crate::hostdb::cns_settlement::{DayEnd, DayEndTotals, MoneySettled};
use crate::hostdb::journal::{CashMovement, CashMovementKind};
use crate::hostdb::settlement::OutboxRow;
use crate::hostdb::{self, HostDbError, Pool};
use crate::ids::ParticipantId;

/// What a day-end did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayEndReport {
    pub settlement_date: Date,
    pub carried_to: Date,
    pub carried_stock_position_count: i64,
    pub money_positions_settled_count: i64,
    pub money_positions_unpaid_count: i64,
}

/// Ends `settlement_date` (see the module docs); `None` when it had already ended.
pub async fn day_end(
    pool: &Pool,
    calendar: &super::calendar::Calendar,
    ccp_participant: &str,
    leader_lock_key: i64,
    settlement_date: Date,
) -> Result<Option<DayEndReport>, HostDbError> {
    let mut client = hostdb::client(pool).await?;
    let Some(day_end) = DayEnd::begin(&mut client, leader_lock_key, settlement_date).await? else {
        return Ok(None);
    };
    let carried_to = calendar.next_business_day(settlement_date);
    let carried = day_end.carry_forward(carried_to).await?;
    let due = day_end.due_money().await?;
    let mut participants: Vec<&str> = Vec::new();
    let mut currencies: Vec<&str> = Vec::new();
    for money in &due {
        participants.push(&money.participant_id);
        currencies.push(&money.currency_code);
        participants.push(ccp_participant);
        currencies.push(&money.currency_code);
    }
    let balances = day_end
        .lock_cash_balances(&participants, &currencies)
        .await?;
    let mut cash: std::collections::HashMap<(String, String), (i64, bool)> = balances
        .into_iter()
        .map(|row| {
            (
                (row.participant_id, row.currency_code),
                (row.amount_minor, row.may_go_negative),
            )
        })
        .collect();
    let mut movements = Vec::new();
    let mut settled = Vec::new();
    let mut outbox = Vec::new();
    let mut unpaid = 0i64;
    let date_text = format_date(settlement_date);
    for money in &due {
        let remaining = money.net_amount_minor.abs() - money.settled_amount_minor;
        let participant_key = (money.participant_id.clone(), money.currency_code.clone());
        let ccp_key = (ccp_participant.to_owned(), money.currency_code.clone());
        let (Some(&(participant_cash, may_go_negative)), Some(_)) =
            (cash.get(&participant_key), cash.get(&ccp_key))
        else {
            unpaid += 1;
            continue;
        };
        let (from, to) = if money.net_amount_minor > 0 {
            (&ccp_key, &participant_key)
        } else {
            if !may_go_negative && participant_cash < remaining {
                unpaid += 1;
                continue;
            }
            (&participant_key, &ccp_key)
        };
        if let Some(balance) = cash.get_mut(from) {
            balance.0 -= remaining;
        }
        if let Some(balance) = cash.get_mut(to) {
            balance.0 += remaining;
        }
        let reference = format!(
            "cns-money:{date_text}:{}:{}",
            money.participant_id, money.currency_code
        );
        movements.push(CashMovement {
            settlement_date,
            settlement_run_id: None,
            from_participant_id: Some(from.0.clone()),
            to_participant_id: Some(to.0.clone()),
            currency_code: money.currency_code.clone(),
            amount_minor: remaining,
            kind: CashMovementKind::MoneySettlement,
            reference: reference.clone(),
        });
        settled.push(MoneySettled {
            participant_id: money.participant_id.clone(),
            currency_code: money.currency_code.clone(),
            amount_minor: remaining,
        });
        if let Ok(participant) = ParticipantId::parse(&money.participant_id) {
            let event = PositionEvent {
                settlement_date: date_text.clone(),
                kind: "money".to_owned(),
                isin: None,
                currency: Some(money.currency_code.clone()),
                net: money.net_amount_minor,
                settled: money.settled_amount_minor + remaining,
                obligation_count: 0,
                status: "settled".to_owned(),
            };
            if let Ok(payload) = serde_json::to_vec(&event) {
                outbox.push(OutboxRow {
                    subject: subjects::events(&participant, EventKind::Settlement)
                        .as_str()
                        .to_owned(),
                    dedupe_id: reference,
                    payload,
                });
            }
        }
    }
    // Net change per cash balance, in key order.
    let mut deltas: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for movement in &movements {
        if let Some(from) = &movement.from_participant_id {
            *deltas
                .entry((from.clone(), movement.currency_code.clone()))
                .or_default() -= movement.amount_minor;
        }
        if let Some(to) = &movement.to_participant_id {
            *deltas
                .entry((to.clone(), movement.currency_code.clone()))
                .or_default() += movement.amount_minor;
        }
    }
    let deltas: Vec<(String, String, i64)> = deltas
        .into_iter()
        .filter(|(_, delta)| *delta != 0)
        .map(|((participant, currency), delta)| (participant, currency, delta))
        .collect();
    day_end.settle_money(&movements, &deltas, &settled).await?;
    day_end.append_outbox(&outbox).await?;
    let totals = DayEndTotals {
        carried_stock_position_count: carried,
        money_positions_settled_count: settled.len() as i64,
        money_positions_unpaid_count: unpaid,
    };
    day_end.commit(carried_to, &totals).await?;
    Ok(Some(DayEndReport {
        settlement_date,
        carried_to,
        carried_stock_position_count: totals.carried_stock_position_count,
        money_positions_settled_count: totals.money_positions_settled_count,
        money_positions_unpaid_count: totals.money_positions_unpaid_count,
    }))
}
