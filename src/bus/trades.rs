//! Wire types of the trade feed and the CNS events: the only `Serialize` types of CNS.
//!
//! A [`TradeBatch`] is one message on `ccass.v1.trades.{market}` (JSON, at most the TRADES
//! stream's `max_message_bytes`). Its `Nats-Msg-Id` is `market:batch_id`, so JetStream drops
//! a re-published batch within the duplicate window, and the host database holds the same
//! key (`cns_trade_batches`) so a redelivered batch is captured once.
//!
//! Trade fields stay text on the wire: a malformed field rejects that one trade with a reason
//! (capture validates), never the whole batch.

use serde::{Deserialize, Serialize};

/// A batch of exchange trades of one market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeBatch {
    /// The market of every trade in the batch (also the subject's `{market}` token).
    pub market: String,
    /// Unique per market: the feed's own batch number or file name + line range.
    pub batch_id: String,
    pub trades: Vec<TradeRecord>,
}

/// One exchange trade as the feed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeRecord {
    /// Unique per market and trade date.
    pub trade_id: String,
    /// `YYYY-MM-DD`.
    pub trade_date: String,
    /// `HH:MM:SS`, exchange local time.
    pub trade_time: String,
    /// The ISIN or the local stock code (`HK0005000010` or `00005`).
    pub security: String,
    pub buyer: String,
    pub seller: String,
    /// Shares.
    pub quantity: i64,
    /// Price per share in major units, decimal point, at most 6 decimals (`62.35`).
    pub price: String,
    /// ISO 4217.
    pub currency: String,
    /// `cns` or `isolated`.
    pub settlement_type: String,
}

/// `ccass.v1.events.{participant}.trade`: a trade of the participant was refused by capture
/// (it does not enter netting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeRejectedEvent {
    pub market: String,
    pub batch_id: String,
    pub trade_id: String,
    /// Stable code (`unknown_security`, `not_board_lot`, ...).
    pub reason_code: String,
    pub detail: String,
}

/// `ccass.v1.events.{participant}.settlement`: a CNS position of the participant and its
/// settlement state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionEvent {
    /// `YYYY-MM-DD`.
    pub settlement_date: String,
    /// `stock` (then `isin` is set) or `money` (then `currency` is set).
    pub kind: String,
    pub isin: Option<String>,
    pub currency: Option<String>,
    /// Signed: > 0 long / receive from the CCP, < 0 short / deliver or pay to the CCP.
    /// Shares for stock, minor units for money.
    pub net: i64,
    pub settled: i64,
    pub obligation_count: i32,
    /// `provisional`, `final`, `partially_settled`, `settled`, `carried_forward`.
    pub status: String,
}

/// The `Nats-Msg-Id` of a batch: JetStream drops a second publish within the duplicate window.
pub fn batch_message_id(market: &str, batch_id: &str) -> String {
    format!("{market}:{batch_id}")
}

/// The stream of trade batches (`subjects/trades.toml`).
pub const TRADES_STREAM: &str = "TRADES";
/// The durable consumer the capture workers share (`subjects/trades.toml`).
pub const CAPTURE_CONSUMER: &str = "cns-capture";
