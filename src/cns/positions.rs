//! The cut-off of a settlement date and the positions view.
//!
//! [`cutoff`] closes the netting of a settlement date in ONE transaction: it takes the date's
//! lock exclusively (capture of that date waits), re-nets every captured CNS trade of the date
//! in memory, checks the result equals the positions capture netted incrementally, and marks
//! the positions and isolated obligations final. Later trades for that date are refused
//! (`settlement_date_closed`). A disagreement is an error and changes nothing.

use time::Date;

use super::capture::{Reference, deltas};
use super::format_date;
use super::netting::{NettableTrade, trade_amount_minor};
use crate::bus::subjects::{self, EventKind};
use crate::bus::trades::PositionEvent;
use crate::hostdb::cns::{self as sql, Cutoff, MoneyDelta, PositionRow, StockDelta};
use crate::hostdb::settlement::OutboxRow;
use crate::hostdb::{HostDbError, Pool};
use crate::ids::ParticipantId;

#[derive(Debug, thiserror::Error)]
pub enum CutoffError {
    #[error("settlement date {0} is already closed")]
    AlreadyClosed(String),
    #[error("captured trade refers to {0}, which reference data no longer has")]
    UnknownReference(String),
    #[error(
        "positions of {settlement_date} netted during the day disagree with the re-netting of its {trade_count} trades ({detail}); nothing changed"
    )]
    Mismatch {
        settlement_date: String,
        trade_count: usize,
        detail: String,
    },
    #[error(transparent)]
    Db(#[from] HostDbError),
}

/// What the cut-off did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutoffReport {
    pub settlement_date: Date,
    pub trade_count: usize,
    pub stock_positions: u64,
    pub money_positions: u64,
    /// Position events written to the outbox (one per position, on its participant's
    /// `ccass.v1.events.{participant}.settlement`).
    pub events: usize,
}

/// Closes the netting of `settlement_date` (see the module docs).
pub async fn cutoff(
    pool: &Pool,
    ccp_participant: &str,
    settlement_date: Date,
) -> Result<CutoffReport, CutoffError> {
    let reference = Reference::load(pool, ccp_participant).await?;
    let mut client = crate::hostdb::client(pool).await?;
    let Some(cutoff) = Cutoff::begin(&mut client, settlement_date).await? else {
        return Err(CutoffError::AlreadyClosed(format_date(settlement_date)));
    };
    let trades = cutoff.cns_trades().await?;
    let mut nettable = Vec::with_capacity(trades.len());
    for trade in &trades {
        let unknown = |what: &str| CutoffError::UnknownReference(what.to_owned());
        let buyer = reference
            .participant_dense(&trade.buyer_participant_id)
            .ok_or_else(|| unknown(&trade.buyer_participant_id))?;
        let seller = reference
            .participant_dense(&trade.seller_participant_id)
            .ok_or_else(|| unknown(&trade.seller_participant_id))?;
        let security = reference
            .security_dense(&trade.isin)
            .ok_or_else(|| unknown(&trade.isin))?;
        let currency = reference
            .currency_dense(&trade.currency_code)
            .ok_or_else(|| unknown(&trade.currency_code))?;
        let amount_minor = trade_amount_minor(
            trade.quantity,
            trade.price_micros,
            reference.minor_units(currency),
        )
        .ok_or_else(|| unknown("a trade value out of range"))?;
        nettable.push(NettableTrade {
            buyer,
            seller,
            security,
            currency,
            quantity: trade.quantity,
            amount_minor,
        });
    }
    let mut book = reference.netting_book();
    book.add_all(&nettable);
    let (mut stock, mut money) = deltas(&reference, &book);
    let (mut stored_stock, mut stored_money) = cutoff.stored_positions().await?;
    let mismatch = |detail: String| CutoffError::Mismatch {
        settlement_date: format_date(settlement_date),
        trade_count: trades.len(),
        detail,
    };
    let stock_key = |d: &StockDelta| (d.participant_id.clone(), d.isin.clone());
    let money_key = |d: &MoneyDelta| (d.participant_id.clone(), d.currency_code.clone());
    stock.sort_by_key(stock_key);
    stored_stock.sort_by_key(stock_key);
    money.sort_by_key(money_key);
    stored_money.sort_by_key(money_key);
    if stock != stored_stock {
        let differing = stock.iter().zip(&stored_stock).find(|(a, b)| a != b);
        return Err(mismatch(format!(
            "{} stock positions re-netted, {} stored; first difference {differing:?}",
            stock.len(),
            stored_stock.len()
        )));
    }
    if money != stored_money {
        return Err(mismatch(format!(
            "{} money positions re-netted, {} stored",
            money.len(),
            stored_money.len()
        )));
    }
    let outbox = cutoff_events(settlement_date, &stored_stock, &stored_money);
    let (stock_positions, money_positions) = cutoff.commit(trades.len() as i64, &outbox).await?;
    Ok(CutoffReport {
        settlement_date,
        trade_count: trades.len(),
        stock_positions,
        money_positions,
        events: outbox.len(),
    })
}

/// One `final` position event per position of the date, for the outbox of the cut-off's
/// transaction (dedupe id `cns-cutoff:{date}:{participant}:{isin or currency}`).
fn cutoff_events(
    settlement_date: Date,
    stock: &[StockDelta],
    money: &[MoneyDelta],
) -> Vec<OutboxRow> {
    let date = format_date(settlement_date);
    let stock_rows = stock.iter().map(|p| {
        (
            &p.participant_id,
            p.isin.as_str(),
            PositionEvent {
                settlement_date: date.clone(),
                kind: "stock".to_owned(),
                isin: Some(p.isin.clone()),
                currency: None,
                net: p.net_quantity,
                settled: 0,
                obligation_count: p.obligation_count,
                status: "final".to_owned(),
            },
        )
    });
    let money_rows = money.iter().map(|p| {
        (
            &p.participant_id,
            p.currency_code.as_str(),
            PositionEvent {
                settlement_date: date.clone(),
                kind: "money".to_owned(),
                isin: None,
                currency: Some(p.currency_code.clone()),
                net: p.net_amount_minor,
                settled: 0,
                obligation_count: p.obligation_count,
                status: "final".to_owned(),
            },
        )
    });
    stock_rows
        .chain(money_rows)
        .filter_map(|(participant_id, key, event)| {
            let participant = ParticipantId::parse(participant_id).ok()?;
            Some(OutboxRow {
                subject: subjects::events(&participant, EventKind::Settlement)
                    .as_str()
                    .to_owned(),
                dedupe_id: format!("cns-cutoff:{date}:{participant_id}:{key}"),
                payload: serde_json::to_vec(&event).ok()?,
            })
        })
        .collect()
}

/// The positions of one participant (or all) for a settlement date.
pub async fn positions(
    pool: &Pool,
    participant: Option<&ParticipantId>,
    settlement_date: Date,
) -> Result<Vec<PositionRow>, HostDbError> {
    sql::positions(
        pool,
        participant.map(ParticipantId::as_str),
        settlement_date,
    )
    .await
}

/// A stored position as its event payload.
pub fn position_event(row: &PositionRow) -> PositionEvent {
    PositionEvent {
        settlement_date: format_date(row.settlement_date),
        kind: if row.isin.is_some() { "stock" } else { "money" }.to_owned(),
        isin: row.isin.clone(),
        currency: row.currency_code.clone(),
        net: row.net,
        settled: row.settled,
        obligation_count: row.obligation_count,
        status: row.status.clone(),
    }
}
