//! Capture: validate feed trades, persist them, net them into provisional positions.
//!
//! [`capture_batches`] is the whole write path for a group of batches and runs in ONE
//! transaction: batch markers, trades (COPY BINARY, as trade sets: V0017), exceptions, the position deltas netted
//! in memory, then the trade id claims and isolated obligations (V0014: duplicates are found
//! against the claims read at the start, the accepted ids claimed last, just before the
//! commit; a claim another transaction made meanwhile starts the transaction over).
//! [`run_worker`] decodes the fetched messages in place as borrowed `TradeBatchView`s, feeds
//! them to it and acknowledges the messages only after that transaction committed. Refused trades are
//! reported on `ccass.v1.events.{participant}.trade` through the outbox, written in the same
//! transaction (the exceptions table is the record; the relay publishes the events).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use time::Date;

use super::calendar::Calendar;
use super::netting::{NettableTrade, NettingBook, parse_price_micros, trade_amount_minor};
use super::{CnsConfig, metrics as names, parse_date, parse_time};
use crate::bus;
use crate::bus::subjects::{self, EventKind};
use crate::bus::trades::{TradeBatch, TradeBatchView, TradeRecordView, TradeRejectedEvent};
use crate::hostdb::cns::{
    self as sql, BatchRow, ExceptionRow, IsolatedObligationRow, MoneyDelta, ReferenceRows,
    StockDelta, TradeRow,
};
use crate::hostdb::settlement::OutboxRow;
use crate::hostdb::{HostDbError, Pool};
use crate::ids::ParticipantId;

/// Why a trade was refused (`cns_trade_exceptions.reason_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    MalformedField,
    UnknownParticipant,
    ParticipantNotActive,
    CcpAsParty,
    UnknownSecurity,
    SecurityNotActive,
    CurrencyMismatch,
    NotBoardLot,
    BadPrice,
    NotBusinessDay,
    BeyondCalendar,
    DuplicateTrade,
    SettlementDateClosed,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::MalformedField => "malformed_field",
            RejectReason::UnknownParticipant => "unknown_participant",
            RejectReason::ParticipantNotActive => "participant_not_active",
            RejectReason::CcpAsParty => "ccp_as_party",
            RejectReason::UnknownSecurity => "unknown_security",
            RejectReason::SecurityNotActive => "security_not_active",
            RejectReason::CurrencyMismatch => "currency_mismatch",
            RejectReason::NotBoardLot => "not_board_lot",
            RejectReason::BadPrice => "bad_price",
            RejectReason::NotBusinessDay => "not_business_day",
            RejectReason::BeyondCalendar => "beyond_calendar",
            RejectReason::DuplicateTrade => "duplicate_trade",
            RejectReason::SettlementDateClosed => "settlement_date_closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

#[derive(Debug, Clone)]
struct SecurityInfo {
    isin: String,
    currency: u16,
    board_lot: i64,
    active: bool,
}

/// Reference data interned to dense ids: participants, securities and currencies are
/// numbered in key order, the ids the netting book uses.
#[derive(Debug, Clone)]
pub struct Reference {
    participant_ids: Vec<String>,
    participants: foldhash::HashMap<String, (u32, bool)>,
    ccp: String,
    securities: Vec<SecurityInfo>,
    by_isin: foldhash::HashMap<String, u32>,
    by_stock_code: foldhash::HashMap<String, u32>,
    currency_codes: Vec<String>,
    currency_minor_units: Vec<u8>,
    currencies: foldhash::HashMap<String, u16>,
}

impl Reference {
    pub fn new(rows: &ReferenceRows, ccp_participant: &str) -> Reference {
        let currency_codes: Vec<String> = rows
            .currencies
            .iter()
            .map(|c| c.currency_code.clone())
            .collect();
        let currencies: foldhash::HashMap<String, u16> = currency_codes
            .iter()
            .enumerate()
            .map(|(index, code)| (code.clone(), index as u16))
            .collect();
        let securities: Vec<SecurityInfo> = rows
            .securities
            .iter()
            .map(|s| SecurityInfo {
                isin: s.isin.clone(),
                // A security's currency is a foreign key to currencies: always present.
                currency: currencies
                    .get(&s.currency_code)
                    .copied()
                    .unwrap_or(u16::MAX),
                board_lot: i64::from(s.board_lot),
                active: s.status == "active",
            })
            .collect();
        Reference {
            participant_ids: rows
                .participants
                .iter()
                .map(|p| p.participant_id.clone())
                .collect(),
            participants: rows
                .participants
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    (
                        p.participant_id.clone(),
                        (index as u32, p.status == "active"),
                    )
                })
                .collect(),
            ccp: ccp_participant.to_owned(),
            by_isin: rows
                .securities
                .iter()
                .enumerate()
                .map(|(index, s)| (s.isin.clone(), index as u32))
                .collect(),
            by_stock_code: rows
                .securities
                .iter()
                .enumerate()
                .map(|(index, s)| (s.stock_code.clone(), index as u32))
                .collect(),
            securities,
            currency_minor_units: rows
                .currencies
                .iter()
                .map(|c| u8::try_from(c.minor_units).unwrap_or(0))
                .collect(),
            currency_codes,
            currencies,
        }
    }

    pub async fn load(pool: &Pool, ccp_participant: &str) -> Result<Reference, HostDbError> {
        Ok(Reference::new(
            &sql::load_reference(pool).await?,
            ccp_participant,
        ))
    }

    /// A netting book sized for this reference data.
    pub fn netting_book(&self) -> NettingBook {
        NettingBook::new(
            self.participant_ids.len() as u32,
            self.securities.len() as u32,
            self.currency_codes.len() as u16,
        )
    }

    pub fn participant_id(&self, dense: u32) -> &str {
        &self.participant_ids[dense as usize]
    }

    pub fn isin(&self, dense: u32) -> &str {
        &self.securities[dense as usize].isin
    }

    pub fn currency_code(&self, dense: u16) -> &str {
        &self.currency_codes[usize::from(dense)]
    }

    pub fn participant_dense(&self, id: &str) -> Option<u32> {
        self.participants.get(id).map(|(dense, _)| *dense)
    }

    pub fn security_dense(&self, isin_or_code: &str) -> Option<u32> {
        self.by_isin
            .get(isin_or_code)
            .or_else(|| self.by_stock_code.get(isin_or_code))
            .copied()
    }

    pub fn currency_dense(&self, code: &str) -> Option<u16> {
        self.currencies.get(code).copied()
    }

    pub fn minor_units(&self, currency: u16) -> u8 {
        self.currency_minor_units[usize::from(currency)]
    }

    fn party(&self, role: &str, id: &str) -> Result<u32, Rejection> {
        if id == self.ccp {
            return Err(reject(
                RejectReason::CcpAsParty,
                format!("{role} {id} is the ccp, which is never a party to an exchange trade"),
            ));
        }
        match self.participants.get(id) {
            None => Err(reject(
                RejectReason::UnknownParticipant,
                format!("{role} {id} is not a participant"),
            )),
            Some((_, false)) => Err(reject(
                RejectReason::ParticipantNotActive,
                format!("{role} {id} is not active"),
            )),
            Some((dense, true)) => Ok(*dense),
        }
    }
}

/// A trade that passed validation (its strings borrowed from the record and the reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTrade<'a> {
    pub row: TradeRow<'a>,
    pub buyer: u32,
    pub seller: u32,
    pub security: u32,
    pub currency: u16,
    pub amount_minor: i64,
    pub isolated: bool,
}

impl ValidTrade<'_> {
    pub fn nettable(&self) -> NettableTrade {
        NettableTrade {
            buyer: self.buyer,
            seller: self.seller,
            security: self.security,
            currency: self.currency,
            quantity: self.row.quantity,
            amount_minor: self.amount_minor,
        }
    }
}

/// What the calendar says of the trade date last validated: the trades of a batch share
/// their date, so capture parses it and walks the calendar once per run of equal dates.
pub struct TradeDates<'c> {
    calendar: &'c Calendar,
    /// (the date as the record wrote it, parsed, business day, settlement date)
    last: Option<(String, Date, bool, Date)>,
}

impl<'c> TradeDates<'c> {
    pub fn new(calendar: &'c Calendar) -> TradeDates<'c> {
        TradeDates {
            calendar,
            last: None,
        }
    }

    /// (trade date, is a business day, settlement date), `None` if `text` is not a date.
    fn of(&mut self, text: &str) -> Option<(Date, bool, Date)> {
        match &self.last {
            Some((last, date, business, settlement)) if last == text => {
                Some((*date, *business, *settlement))
            }
            _ => {
                let date = parse_date(text)?;
                let business = self.calendar.is_business_day(date);
                let settlement = self.calendar.settlement_date(date);
                self.last = Some((text.to_owned(), date, business, settlement));
                Some((date, business, settlement))
            }
        }
    }
}

/// Checks one trade against reference data and the calendar (everything that needs no
/// database: duplicates and closed dates are checked in the capture transaction).
pub fn validate<'a>(
    reference: &'a Reference,
    calendar: &Calendar,
    market: &'a str,
    record: &'a TradeRecordView<'_>,
) -> Result<ValidTrade<'a>, Rejection> {
    validate_dated(reference, &mut TradeDates::new(calendar), market, record)
}

/// [`validate`] with the calendar's answers for recent trade dates kept in `dates`.
pub fn validate_dated<'a>(
    reference: &'a Reference,
    dates: &mut TradeDates<'_>,
    market: &'a str,
    record: &'a TradeRecordView<'_>,
) -> Result<ValidTrade<'a>, Rejection> {
    let malformed = |field: &str, value: &str| {
        reject(
            RejectReason::MalformedField,
            format!("{field} `{value}` is malformed"),
        )
    };
    if !sql::trade_id_storable(&record.trade_id) {
        return Err(malformed("trade_id", &record.trade_id));
    }
    let (trade_date, business_day, settlement_date) = dates
        .of(&record.trade_date)
        .ok_or_else(|| malformed("trade_date", &record.trade_date))?;
    let trade_time = parse_time(&record.trade_time)
        .ok_or_else(|| malformed("trade_time", &record.trade_time))?;
    let isolated = match record.settlement_type.as_ref() {
        "cns" => false,
        "isolated" => true,
        other => return Err(malformed("settlement_type", other)),
    };
    if !business_day {
        return Err(reject(
            RejectReason::NotBusinessDay,
            format!("trade date {} is not a business day", record.trade_date),
        ));
    }
    if !dates.calendar.covers(settlement_date) {
        return Err(reject(
            RejectReason::BeyondCalendar,
            format!(
                "settlement date {} of trade date {} is beyond the holiday calendar (cns.holidays_known_through)",
                super::format_date(settlement_date),
                record.trade_date
            ),
        ));
    }
    let buyer = reference.party("buyer", &record.buyer)?;
    let seller = reference.party("seller", &record.seller)?;
    let security = reference.security_dense(&record.security).ok_or_else(|| {
        reject(
            RejectReason::UnknownSecurity,
            format!("security {} is unknown", record.security),
        )
    })?;
    let info = &reference.securities[security as usize];
    if !info.active {
        return Err(reject(
            RejectReason::SecurityNotActive,
            format!("security {} is not active", info.isin),
        ));
    }
    let currency = reference
        .currency_dense(&record.currency)
        .filter(|c| *c == info.currency);
    let Some(currency) = currency else {
        return Err(reject(
            RejectReason::CurrencyMismatch,
            format!(
                "currency {} is not the currency of {} ({})",
                record.currency,
                info.isin,
                reference.currency_code(info.currency)
            ),
        ));
    };
    if record.quantity <= 0 || record.quantity % info.board_lot != 0 {
        return Err(reject(
            RejectReason::NotBoardLot,
            format!(
                "quantity {} is not a positive multiple of the board lot {} of {}",
                record.quantity, info.board_lot, info.isin
            ),
        ));
    }
    let price_micros = parse_price_micros(&record.price).ok_or_else(|| {
        reject(
            RejectReason::BadPrice,
            format!(
                "price `{}` is not a positive decimal with at most 6 decimals",
                record.price
            ),
        )
    })?;
    let amount_minor = trade_amount_minor(
        record.quantity,
        price_micros,
        reference.minor_units(currency),
    )
    .ok_or_else(|| {
        reject(
            RejectReason::BadPrice,
            format!(
                "value of {} at {} is out of range",
                record.quantity, record.price
            ),
        )
    })?;
    Ok(ValidTrade {
        row: TradeRow {
            market,
            trade_date,
            trade_id: &record.trade_id,
            trade_time,
            isin: &info.isin,
            buyer_participant_id: &record.buyer,
            seller_participant_id: &record.seller,
            quantity: record.quantity,
            price_micros,
            currency_code: &record.currency,
            settlement_type: if isolated { "isolated" } else { "cns" },
            settlement_date,
        },
        buyer,
        seller,
        security,
        currency,
        amount_minor,
        isolated,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("batch {batch_id} is for market {batch_market}, not {market}")]
    WrongMarket {
        batch_id: String,
        batch_market: String,
        market: String,
    },
    #[error("netting of settlement date {settlement_date} is unbalanced in security {isin}")]
    Unbalanced {
        settlement_date: String,
        isin: String,
    },
    #[error("encode {0}")]
    Encode(String),
    #[error(transparent)]
    Db(#[from] HostDbError),
}

impl CaptureError {
    /// Whether capturing the same batches again can only fail the same way: set the batch
    /// aside rather than retry it (see [`HostDbError::refuses_the_data`]).
    pub fn refuses_the_batch(&self) -> bool {
        match self {
            CaptureError::WrongMarket { .. }
            | CaptureError::Unbalanced { .. }
            | CaptureError::Encode(_) => true,
            CaptureError::Db(error) => error.refuses_the_data(),
        }
    }
}

/// A refused trade to report, with the parties it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedRejection {
    pub buyer: String,
    pub seller: String,
    pub event: TradeRejectedEvent,
}

/// What one capture transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureReport {
    pub batches_captured: usize,
    /// Batches captured before (redelivered): nothing done for them.
    pub batches_already_captured: usize,
    pub trades_accepted: usize,
    pub rejections: Vec<ReportedRejection>,
}

/// Where capture time goes, summed over transactions (nanoseconds per phase), for
/// `ccass bench cns`. Shared by the workers of one run.
#[derive(Debug, Default)]
pub struct CapturePhases {
    pub fetch_ns: std::sync::atomic::AtomicU64,
    pub decode_ns: std::sync::atomic::AtomicU64,
    pub validate_ns: std::sync::atomic::AtomicU64,
    pub prepare_ns: std::sync::atomic::AtomicU64,
    pub claim_ns: std::sync::atomic::AtomicU64,
    pub copy_trades_ns: std::sync::atomic::AtomicU64,
    pub positions_ns: std::sync::atomic::AtomicU64,
    pub commit_ns: std::sync::atomic::AtomicU64,
    pub ack_ns: std::sync::atomic::AtomicU64,
}

impl CapturePhases {
    fn add(counter: &std::sync::atomic::AtomicU64, since: Instant) -> Instant {
        let now = Instant::now();
        let nanos = u64::try_from((now - since).as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        now
    }

    /// (phase name, total time) in pipeline order.
    pub fn totals(&self) -> [(&'static str, Duration); 9] {
        let read = |counter: &std::sync::atomic::AtomicU64| {
            Duration::from_nanos(counter.load(std::sync::atomic::Ordering::Relaxed))
        };
        [
            ("fetch", read(&self.fetch_ns)),
            ("decode", read(&self.decode_ns)),
            ("validate", read(&self.validate_ns)),
            ("prepare", read(&self.prepare_ns)),
            ("claim ids", read(&self.claim_ns)),
            ("copy trades", read(&self.copy_trades_ns)),
            ("positions", read(&self.positions_ns)),
            ("commit", read(&self.commit_ns)),
            ("ack", read(&self.ack_ns)),
        ]
    }
}

struct Candidate<'a> {
    batch: usize,
    record: &'a TradeRecordView<'a>,
    outcome: Result<ValidTrade<'a>, Rejection>,
}

/// Captures `batches` of `market` in one transaction (see the module docs). `book` is
/// scratch space sized by [`Reference::netting_book`], reused between calls.
pub async fn capture_batches(
    pool: &Pool,
    reference: &Reference,
    calendar: &Calendar,
    market: &str,
    batches: &[TradeBatch],
    book: &mut NettingBook,
) -> Result<CaptureReport, CaptureError> {
    let phases = CapturePhases::default();
    let views: Vec<TradeBatchView<'_>> = batches.iter().map(TradeBatch::view).collect();
    capture_batches_timed(pool, reference, calendar, market, &views, book, &phases).await
}

/// [`capture_batches`], adding the time of each phase to `phases`.
pub async fn capture_batches_timed(
    pool: &Pool,
    reference: &Reference,
    calendar: &Calendar,
    market: &str,
    batches: &[TradeBatchView<'_>],
    book: &mut NettingBook,
    phases: &CapturePhases,
) -> Result<CaptureReport, CaptureError> {
    let mut mark = Instant::now();
    for batch in batches {
        if batch.market != market {
            return Err(CaptureError::WrongMarket {
                batch_id: batch.batch_id.to_string(),
                batch_market: batch.market.to_string(),
                market: market.to_owned(),
            });
        }
    }
    // Validation needs no database: do it before the transaction.
    let mut seen_batches: HashSet<&str> = HashSet::new();
    // Sized once: a capture holds ~200 k trades, and growing by doubling copies them all.
    let mut candidates: Vec<Candidate<'_>> =
        Vec::with_capacity(batches.iter().map(|batch| batch.trades.len()).sum());
    let mut dates = TradeDates::new(calendar);
    for (index, batch) in batches.iter().enumerate() {
        if !seen_batches.insert(&batch.batch_id) {
            continue;
        }
        candidates.extend(batch.trades.iter().map(|record| Candidate {
            batch: index,
            record,
            outcome: validate_dated(reference, &mut dates, market, record),
        }));
    }
    let batch_ids: Vec<&str> = seen_batches.into_iter().collect();
    mark = CapturePhases::add(&phases.validate_ns, mark);

    let mut client = crate::hostdb::client(pool).await?;
    // A second pass only when a trade id was claimed by another transaction between this
    // one's read of the claims and its own claim (a duplicate in flight in two workers).
    loop {
        let transaction = client
            .transaction()
            .await
            .map_err(|error| HostDbError::from_postgres("begin capture", error))?;
        let captured = sql::captured_batches(&transaction, market, &batch_ids).await?;
        let live = |candidate: &&Candidate<'_>| {
            !captured.contains(batches[candidate.batch].batch_id.as_ref())
        };
        let mut dates: Vec<Date> = candidates
            .iter()
            .filter(live)
            .filter_map(|c| c.outcome.as_ref().ok().map(|t| t.row.settlement_date))
            .collect();
        dates.sort();
        dates.dedup();
        let closed = sql::lock_open_settlement_dates(&transaction, &dates).await?;

        // Duplicates: a trade id repeated within this call, or claimed by a committed
        // transaction (read without locks; the accepted trades claim their ids just before the
        // commit, which refuses a claim made meanwhile).
        let mut keys_in_call: foldhash::HashSet<(Date, &str)> =
            foldhash::HashSet::with_capacity_and_hasher(candidates.len(), Default::default());
        let mut first_seen: Vec<(Date, &str)> = Vec::with_capacity(candidates.len());
        // Per live candidate: the valid trade and its entry in `first_seen`, or why it is
        // refused already.
        type Pending<'t> = Result<(&'t ValidTrade<'t>, usize), Rejection>;
        let mut pending: Vec<(&Candidate<'_>, Pending<'_>)> = Vec::with_capacity(candidates.len());
        for candidate in candidates.iter().filter(live) {
            let outcome = match &candidate.outcome {
                Err(rejection) => Err(rejection.clone()),
                Ok(trade) => {
                    let key = (trade.row.trade_date, trade.row.trade_id);
                    if keys_in_call.insert(key) {
                        first_seen.push(key);
                        Ok((trade, first_seen.len() - 1))
                    } else {
                        Err(duplicate(trade))
                    }
                }
            };
            pending.push((candidate, outcome));
        }
        mark = CapturePhases::add(&phases.prepare_ns, mark);
        let claimed = sql::claimed_trade_ids(&transaction, market, &first_seen).await?;
        mark = CapturePhases::add(&phases.claim_ns, mark);

        let mut report = CaptureReport::default();
        let mut accepted: Vec<&ValidTrade> = Vec::with_capacity(pending.len());
        let mut exceptions: Vec<ExceptionRow> = Vec::new();
        let mut batch_rows: BTreeMap<usize, BatchRow> = BTreeMap::new();
        for (candidate, outcome) in pending {
            let batch = &batches[candidate.batch];
            let marker = batch_rows
                .entry(candidate.batch)
                .or_insert_with(|| BatchRow {
                    market: market.to_owned(),
                    batch_id: batch.batch_id.to_string(),
                    trade_count: 0,
                    accepted_count: 0,
                });
            marker.trade_count += 1;
            let outcome = outcome.and_then(|(trade, entry)| {
                if claimed[entry] {
                    Err(duplicate(trade))
                } else if closed.contains(&trade.row.settlement_date) {
                    Err(reject(
                        RejectReason::SettlementDateClosed,
                        format!(
                            "netting of settlement date {} is closed",
                            trade.row.settlement_date
                        ),
                    ))
                } else {
                    Ok(trade)
                }
            });
            match outcome {
                Ok(trade) => {
                    marker.accepted_count += 1;
                    accepted.push(trade);
                }
                Err(rejection) => {
                    let record = candidate.record;
                    exceptions.push(ExceptionRow {
                        market: market.to_owned(),
                        batch_id: batch.batch_id.to_string(),
                        trade_id: record.trade_id.to_string(),
                        trade_date: parse_date(&record.trade_date),
                        reason_code: rejection.reason.code(),
                        detail: rejection.detail.clone(),
                        trade: serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
                    });
                    report.rejections.push(ReportedRejection {
                        buyer: record.buyer.to_string(),
                        seller: record.seller.to_string(),
                        event: TradeRejectedEvent {
                            market: market.to_owned(),
                            batch_id: batch.batch_id.to_string(),
                            trade_id: record.trade_id.to_string(),
                            reason_code: rejection.reason.code().to_owned(),
                            detail: rejection.detail,
                        },
                    });
                }
            }
        }
        // Batches with no trades still get their marker.
        for (index, batch) in batches.iter().enumerate() {
            if !captured.contains(batch.batch_id.as_ref())
                && !batch_rows
                    .values()
                    .any(|row| row.batch_id == batch.batch_id)
            {
                batch_rows.insert(
                    index,
                    BatchRow {
                        market: market.to_owned(),
                        batch_id: batch.batch_id.to_string(),
                        trade_count: 0,
                        accepted_count: 0,
                    },
                );
            }
        }
        report.batches_captured = batch_rows.len();
        report.batches_already_captured = batch_ids.len() - batch_rows.len();
        report.trades_accepted = accepted.len();
        if batch_rows.is_empty() {
            transaction
                .rollback()
                .await
                .map_err(|error| HostDbError::from_postgres("end capture", error))?;
            return Ok(report);
        }

        let batch_rows: Vec<BatchRow> = batch_rows.into_values().collect();
        sql::insert_batches(&transaction, &batch_rows).await?;
        sql::insert_exceptions(&transaction, &exceptions).await?;
        mark = CapturePhases::add(&phases.prepare_ns, mark);
        let rows: Vec<&TradeRow> = accepted.iter().map(|t| &t.row).collect();
        sql::copy_trade_sets(&transaction, &rows).await?;
        mark = CapturePhases::add(&phases.copy_trades_ns, mark);
        let isolated = persist_netting(&transaction, reference, &accepted, book).await?;
        let outbox = rejection_outbox(&reference.ccp, market, &report.rejections)?;
        crate::hostdb::cns_settlement::append_outbox(&transaction, &outbox).await?;
        mark = CapturePhases::add(&phases.positions_ns, mark);
        // Claim last: the blocks stay locked only from here to the commit.
        let ids: Vec<(Date, &str)> = accepted
            .iter()
            .map(|t| (t.row.trade_date, t.row.trade_id))
            .collect();
        let taken_meanwhile = sql::claim_trade_ids(&transaction, market, &ids).await?;
        mark = CapturePhases::add(&phases.claim_ns, mark);
        if taken_meanwhile.contains(&true) {
            // Another transaction committed one of these ids after our read: start over (the
            // read now sees it, and the trade is refused as a duplicate).
            transaction
                .rollback()
                .await
                .map_err(|error| HostDbError::from_postgres("roll back capture", error))?;
            metrics::counter!(names::CAPTURE_RETRIES_TOTAL).increment(1);
            continue;
        }
        // Keyed by trade id, so written only once the ids are this transaction's.
        sql::insert_isolated_obligations(&transaction, &isolated).await?;
        transaction
            .commit()
            .await
            .map_err(|error| HostDbError::from_postgres("commit capture", error))?;
        CapturePhases::add(&phases.commit_ns, mark);
        return Ok(report);
    }
}

fn duplicate(trade: &ValidTrade) -> Rejection {
    reject(
        RejectReason::DuplicateTrade,
        format!(
            "trade {} of {} was already received",
            trade.row.trade_id, trade.row.trade_date
        ),
    )
}

/// Nets the accepted CNS trades per settlement date in memory and appends the deltas to
/// the stored positions; returns isolated trades' obligations, for the caller to insert
/// after it claimed their trade ids.
async fn persist_netting(
    transaction: &tokio_postgres::Transaction<'_>,
    reference: &Reference,
    accepted: &[&ValidTrade<'_>],
    book: &mut NettingBook,
) -> Result<Vec<IsolatedObligationRow>, CaptureError> {
    let mut by_date: BTreeMap<Date, Vec<NettableTrade>> = BTreeMap::new();
    let mut isolated: Vec<IsolatedObligationRow> = Vec::new();
    for trade in accepted {
        if trade.isolated {
            for (side, participant) in [
                ("buy", &trade.row.buyer_participant_id),
                ("sell", &trade.row.seller_participant_id),
            ] {
                isolated.push(IsolatedObligationRow {
                    market: trade.row.market.to_owned(),
                    trade_date: trade.row.trade_date,
                    trade_id: trade.row.trade_id.to_owned(),
                    side,
                    participant_id: (*participant).to_owned(),
                    settlement_date: trade.row.settlement_date,
                    isin: trade.row.isin.to_owned(),
                    quantity: trade.row.quantity,
                    currency_code: trade.row.currency_code.to_owned(),
                    amount_minor: trade.amount_minor,
                    status: "provisional",
                });
            }
        } else {
            by_date
                .entry(trade.row.settlement_date)
                .or_default()
                .push(trade.nettable());
        }
    }
    for (date, trades) in by_date {
        book.clear();
        book.add_all(&trades);
        if let Some(security) = book.unbalanced_security() {
            return Err(CaptureError::Unbalanced {
                settlement_date: super::format_date(date),
                isin: reference.isin(security).to_owned(),
            });
        }
        // Straight from the book: ids borrowed from the reference data, no sort (appends).
        let stock = book.stock_positions().map(|p| {
            (
                reference.participant_id(p.participant),
                reference.isin(p.security),
                p.cell.net,
                i32::try_from(p.cell.obligation_count).unwrap_or(i32::MAX),
            )
        });
        let money = book.money_positions().map(|p| {
            (
                reference.participant_id(p.participant),
                reference.currency_code(p.currency),
                p.cell.net,
                i32::try_from(p.cell.obligation_count).unwrap_or(i32::MAX),
            )
        });
        sql::append_position_deltas(transaction, date, stock, money).await?;
    }
    book.clear();
    Ok(isolated)
}

/// The book's positions as rows keyed by participant id, sorted by key (lock order).
pub fn deltas(reference: &Reference, book: &NettingBook) -> (Vec<StockDelta>, Vec<MoneyDelta>) {
    let mut stock: Vec<StockDelta> = book
        .stock_positions()
        .map(|p| StockDelta {
            participant_id: reference.participant_id(p.participant).to_owned(),
            isin: reference.isin(p.security).to_owned(),
            net_quantity: p.cell.net,
            obligation_count: i32::try_from(p.cell.obligation_count).unwrap_or(i32::MAX),
        })
        .collect();
    stock.sort_by(|a, b| (&a.participant_id, &a.isin).cmp(&(&b.participant_id, &b.isin)));
    let mut money: Vec<MoneyDelta> = book
        .money_positions()
        .map(|p| MoneyDelta {
            participant_id: reference.participant_id(p.participant).to_owned(),
            currency_code: reference.currency_code(p.currency).to_owned(),
            net_amount_minor: p.cell.net,
            obligation_count: i32::try_from(p.cell.obligation_count).unwrap_or(i32::MAX),
        })
        .collect();
    money.sort_by(|a, b| {
        (&a.participant_id, &a.currency_code).cmp(&(&b.participant_id, &b.currency_code))
    });
    (stock, money)
}

/// The outbox rows reporting `rejections` on the CCP's, the buyer's and the seller's (when
/// they are valid ids) `ccass.v1.events.{participant}.trade`, written in the capture
/// transaction (published by the relay after commit, at least once). Dedupe id:
/// `cns-reject:{market}:{batch}:{n}:{participant}`, `n` counting the batch's rejections (a
/// batch is captured once, so the ids never repeat).
pub fn rejection_outbox(
    ccp_participant: &str,
    market: &str,
    rejections: &[ReportedRejection],
) -> Result<Vec<OutboxRow>, CaptureError> {
    let mut rows = Vec::new();
    let mut per_batch: HashMap<&str, usize> = HashMap::new();
    for rejection in rejections {
        let counter = per_batch
            .entry(rejection.event.batch_id.as_str())
            .or_default();
        let n = *counter;
        *counter += 1;
        let payload = serde_json::to_vec(&rejection.event)
            .map_err(|error| CaptureError::Encode(format!("trade rejected event: {error}")))?;
        let mut recipients: Vec<&str> = vec![ccp_participant, &rejection.buyer, &rejection.seller];
        recipients.sort_unstable();
        recipients.dedup();
        for recipient in recipients {
            let Ok(participant) = ParticipantId::parse(recipient) else {
                continue;
            };
            rows.push(OutboxRow {
                subject: subjects::events(&participant, EventKind::Trade)
                    .as_str()
                    .to_owned(),
                dedupe_id: format!(
                    "cns-reject:{market}:{}:{n}:{recipient}",
                    rejection.event.batch_id
                ),
                payload: payload.clone(),
            });
        }
    }
    Ok(rows)
}

/// The durable pull consumer capture workers share (`cns-capture` on TRADES).
pub async fn capture_consumer(
    jetstream: &jetstream::Context,
) -> Result<jetstream::consumer::PullConsumer, crate::bus::BusError> {
    let stream = jetstream
        .get_stream(crate::bus::trades::TRADES_STREAM)
        .await
        .map_err(|error| crate::bus::BusError::JetStream {
            operation: format!("get stream {}", crate::bus::trades::TRADES_STREAM),
            message: error.to_string(),
        })?;
    stream
        .get_consumer(crate::bus::trades::CAPTURE_CONSUMER)
        .await
        .map_err(|error| crate::bus::BusError::JetStream {
            operation: format!("get consumer {}", crate::bus::trades::CAPTURE_CONSUMER),
            message: error.to_string(),
        })
}

/// One capture worker: fetch up to `capture_fetch_messages_max` batches, capture them in one
/// transaction, acknowledge, report rejections; until `shutdown` turns true. A host database
/// failure leaves the messages unacknowledged (negative ack with a delay) and is retried.
pub async fn run_worker(
    config: CnsConfig,
    pool: Pool,
    consumer: jetstream::consumer::PullConsumer,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let phases = std::sync::Arc::new(CapturePhases::default());
    run_worker_timed(config, pool, consumer, shutdown, phases).await
}

/// [`run_worker`], adding the time of each phase to `phases`.
pub async fn run_worker_timed(
    config: CnsConfig,
    pool: Pool,
    consumer: jetstream::consumer::PullConsumer,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    phases: std::sync::Arc<CapturePhases>,
) {
    let calendar = config.calendar();
    let retry_delay = Duration::from_millis(config.capture_retry_delay_ms);
    let refresh = Duration::from_millis(config.reference_refresh_ms);
    let mut loaded: Option<(Reference, NettingBook, Instant)> = None;
    while !*shutdown.borrow() {
        if loaded
            .as_ref()
            .is_none_or(|(_, _, at)| at.elapsed() >= refresh)
        {
            match Reference::load(&pool, &config.ccp_participant).await {
                Ok(reference) => {
                    let book = match loaded.take() {
                        Some((_, book, _))
                            if book.dimensions() == reference.netting_book_dimensions() =>
                        {
                            book
                        }
                        _ => reference.netting_book(),
                    };
                    loaded = Some((reference, book, Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(%error, "cns capture: cannot load reference data; retrying");
                    sleep_or_shutdown(retry_delay, &mut shutdown).await;
                    continue;
                }
            }
        }
        let Some((reference, book, _)) = loaded.as_mut() else {
            continue;
        };
        let mut mark = Instant::now();
        let fetched = consumer
            .fetch()
            .max_messages(config.capture_fetch_messages_max)
            .max_bytes(config.capture_fetch_bytes_max)
            .expires(Duration::from_millis(config.capture_fetch_wait_ms))
            .messages()
            .await;
        let mut messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cns capture: fetch failed; retrying");
                sleep_or_shutdown(retry_delay, &mut shutdown).await;
                continue;
            }
        };
        let mut fetched: Vec<jetstream::Message> = Vec::new();
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.changed() => None,
            };
            let Some(message) = next else { break };
            mark = CapturePhases::add(&phases.fetch_ns, mark);
            match message {
                Ok(message) => fetched.push(message),
                Err(error) => {
                    // A fetch also ends this way when the next message would pass
                    // `capture_fetch_bytes_max` (status 409): capture what arrived, fetch again.
                    tracing::debug!(%error, "cns capture: fetch ended early");
                    break;
                }
            }
        }
        // Decoded in place: the views borrow their strings from the fetched payloads. Each
        // market's batches beside their messages, in delivery order.
        let mut by_market: BTreeMap<String, MarketGroup<'_>> = BTreeMap::new();
        for message in &fetched {
            match decode_capturable(&message.payload) {
                Ok(decoded) => {
                    let group = by_market.entry(decoded.market.to_string()).or_default();
                    group.batches.push(decoded);
                    group.messages.push(message);
                }
                Err(error) => {
                    // Never capturable: kept in the quarantine, then terminated on the stream.
                    metrics::counter!(names::BATCHES_MALFORMED_TOTAL).increment(1);
                    set_aside(
                        &pool,
                        message,
                        sql::QuarantineReason::Malformed,
                        &error,
                        retry_delay,
                    )
                    .await;
                }
            }
        }
        CapturePhases::add(&phases.decode_ns, mark);
        if by_market.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut outcome: Result<CaptureReport, CaptureError> = Ok(CaptureReport::default());
        for (market, group) in &by_market {
            let captured = capture_batches_timed(
                &pool,
                reference,
                &calendar,
                market,
                &group.batches,
                book,
                &phases,
            )
            .await;
            match captured {
                Ok(report) => {
                    if let Ok(total) = outcome.as_mut() {
                        total.batches_captured += report.batches_captured;
                        total.batches_already_captured += report.batches_already_captured;
                        total.trades_accepted += report.trades_accepted;
                        total.rejections.extend(report.rejections);
                    }
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        let acks: Vec<&jetstream::Message> = by_market
            .values()
            .flat_map(|group| group.messages.iter().copied())
            .collect();
        match outcome {
            Ok(report) => {
                metrics::histogram!(names::CAPTURE_TRANSACTION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                record_captured(&report);
                // Committed: acknowledge every message (acks are sent, not awaited one by one).
                let acking = Instant::now();
                let acked = futures::future::join_all(acks.iter().map(|m| m.ack())).await;
                CapturePhases::add(&phases.ack_ns, acking);
                if let Some(Err(error)) = acked.into_iter().find(Result::is_err) {
                    // Redelivery is harmless: the batch markers make it a no-op.
                    tracing::warn!(%error, "cns capture: acknowledge captured batches");
                }
            }
            Err(error) if error.refuses_the_batch() => {
                // A batch the database refuses would fail every transaction it is fetched
                // into, for ever: capture the group one batch at a time and set the refused
                // one aside (a group that was refused mid-way is rolled back as a whole).
                metrics::counter!(names::CAPTURE_FAILURES_TOTAL).increment(1);
                tracing::warn!(%error, batches = acks.len(), "cns capture: the group was refused; capturing its batches one by one");
                let mut handled = 0;
                'isolate: for (market, group) in &by_market {
                    for (batch, message) in group.batches.iter().zip(&group.messages) {
                        let alone = capture_batches_timed(
                            &pool,
                            reference,
                            &calendar,
                            market,
                            std::slice::from_ref(batch),
                            book,
                            &phases,
                        )
                        .await;
                        match alone {
                            Ok(report) => {
                                record_captured(&report);
                                if let Err(error) = message.ack().await {
                                    tracing::warn!(%error, "cns capture: acknowledge captured batch");
                                }
                            }
                            Err(error) if error.refuses_the_batch() => {
                                set_aside(
                                    &pool,
                                    message,
                                    sql::QuarantineReason::Refused,
                                    &error.to_string(),
                                    retry_delay,
                                )
                                .await;
                            }
                            Err(error) => {
                                metrics::counter!(names::CAPTURE_FAILURES_TOTAL).increment(1);
                                tracing::error!(%error, "cns capture: transaction failed; the rest of the group will be redelivered");
                                // This batch and those after it, back after the retry delay
                                // rather than the ack wait.
                                let rest: Vec<&jetstream::Message> = by_market
                                    .values()
                                    .flat_map(|group| group.messages.iter().copied())
                                    .skip(handled)
                                    .collect();
                                bus::redeliver_after(&rest, retry_delay).await;
                                sleep_or_shutdown(retry_delay, &mut shutdown).await;
                                break 'isolate;
                            }
                        }
                        handled += 1;
                    }
                }
            }
            Err(error) => {
                metrics::counter!(names::CAPTURE_FAILURES_TOTAL).increment(1);
                tracing::error!(%error, "cns capture: transaction failed; batches will be redelivered");
                bus::redeliver_after(&acks, retry_delay).await;
                sleep_or_shutdown(retry_delay, &mut shutdown).await;
            }
        }
    }
}

/// Decodes a feed message as a batch capture can take: a trade batch whose market and
/// batch id can be stored as its capture marker. The error says why not (a malformed
/// batch: quarantined by the worker, never released).
pub fn decode_capturable(payload: &[u8]) -> Result<TradeBatchView<'_>, String> {
    let batch = crate::bus::trades::decode_batch(payload).map_err(|error| error.to_string())?;
    if !sql::batch_key_storable(&batch.market, &batch.batch_id) {
        return Err(
            "the market or batch id is empty, too long or holds control characters".to_owned(),
        );
    }
    Ok(batch)
}

/// One market's batches of a fetch, each beside the message it came in.
#[derive(Default)]
struct MarketGroup<'a> {
    batches: Vec<TradeBatchView<'a>>,
    messages: Vec<&'a jetstream::Message>,
}

/// Counts what a committed capture transaction did.
fn record_captured(report: &CaptureReport) {
    metrics::counter!(names::BATCHES_CAPTURED_TOTAL).increment(report.batches_captured as u64);
    metrics::counter!(names::BATCHES_REDELIVERED_TOTAL)
        .increment(report.batches_already_captured as u64);
    metrics::counter!(names::TRADES_CAPTURED_TOTAL).increment(report.trades_accepted as u64);
    for rejection in &report.rejections {
        metrics::counter!(names::TRADES_REJECTED_TOTAL, "reason" => reason_label(&rejection.event.reason_code))
            .increment(1);
    }
}

/// Stores `message` in the quarantine (V0020), then terminates it on the stream: it is
/// never redelivered, and never lost. When the quarantine cannot be written, the message is
/// left for redelivery (negative ack with `retry_delay`) instead.
async fn set_aside(
    pool: &Pool,
    message: &jetstream::Message,
    reason: sql::QuarantineReason,
    error: &str,
    retry_delay: Duration,
) {
    let info = match message.info() {
        Ok(info) => info,
        Err(info_error) => {
            tracing::warn!(error = %info_error, "cns capture: message without stream info; left for redelivery");
            return;
        }
    };
    let row = sql::QuarantineRow {
        nats_stream: info.stream,
        nats_stream_sequence: info.stream_sequence,
        subject: message.subject.as_str(),
        payload: &message.payload,
        reason,
        error,
    };
    match sql::quarantine_batch(pool, &row).await {
        Ok(quarantine_id) => {
            metrics::counter!(names::BATCHES_QUARANTINED_TOTAL, "reason" => reason.as_str())
                .increment(1);
            tracing::error!(quarantine_id, reason = reason.as_str(), %error, subject = %message.subject, stream_sequence = info.stream_sequence, "cns capture: batch quarantined; see ccass cns quarantine list");
            if let Err(term_error) = message.ack_with(AckKind::Term).await {
                // Redelivered, it finds its quarantine row and is terminated again.
                tracing::warn!(error = %term_error, "cns capture: terminate quarantined batch");
            }
        }
        Err(store_error) => {
            tracing::error!(error = %store_error, "cns capture: cannot quarantine a batch; left for redelivery");
            bus::redeliver_after(&[message], retry_delay).await;
        }
    }
}

/// The reason code as a static label (bounded label values only).
fn reason_label(code: &str) -> &'static str {
    const ALL: [RejectReason; 13] = [
        RejectReason::MalformedField,
        RejectReason::UnknownParticipant,
        RejectReason::ParticipantNotActive,
        RejectReason::CcpAsParty,
        RejectReason::UnknownSecurity,
        RejectReason::SecurityNotActive,
        RejectReason::CurrencyMismatch,
        RejectReason::NotBoardLot,
        RejectReason::BadPrice,
        RejectReason::NotBusinessDay,
        RejectReason::BeyondCalendar,
        RejectReason::DuplicateTrade,
        RejectReason::SettlementDateClosed,
    ];
    ALL.iter()
        .map(|reason| reason.code())
        .find(|known| *known == code)
        .unwrap_or("other")
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

impl Reference {
    fn netting_book_dimensions(&self) -> (u32, u32, u16) {
        (
            self.participant_ids.len() as u32,
            self.securities.len() as u32,
            self.currency_codes.len() as u16,
        )
    }
}
