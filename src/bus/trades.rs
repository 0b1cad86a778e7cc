//! Wire types of the trade feed and the CNS events: the only `Serialize` types of CNS.
//!
//! A [`TradeBatch`] is one message on `ccass.v1.trades.{market}` (JSON, at most the TRADES
//! stream's `max_message_bytes`). Its `Nats-Msg-Id` is `market:batch_id`, so JetStream drops
//! a re-published batch within the duplicate window, and the host database holds the same
//! key (`cns_trade_batches`) so a redelivered batch is captured once.
//!
//! Trade fields stay text on the wire: a malformed field rejects that one trade with a reason
//! (capture validates), never the whole batch.

use std::borrow::Cow;

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

/// A [`TradeBatch`] decoded without copying its strings: capture's view of a message (or of
/// a `TradeBatch`, [`TradeBatch::view`]). The same JSON; a string with escapes is unescaped
/// into its own copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeBatchView<'a> {
    #[serde(borrow)]
    pub market: Cow<'a, str>,
    #[serde(borrow)]
    pub batch_id: Cow<'a, str>,
    #[serde(borrow)]
    pub trades: Vec<TradeRecordView<'a>>,
}

/// A [`TradeRecord`] whose strings borrow from the message (same fields, same JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeRecordView<'a> {
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_date: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_time: Cow<'a, str>,
    #[serde(borrow)]
    pub security: Cow<'a, str>,
    #[serde(borrow)]
    pub buyer: Cow<'a, str>,
    #[serde(borrow)]
    pub seller: Cow<'a, str>,
    pub quantity: i64,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    #[serde(borrow)]
    pub settlement_type: Cow<'a, str>,
}

impl TradeBatch {
    /// This batch as capture reads it (borrows every string).
    pub fn view(&self) -> TradeBatchView<'_> {
        TradeBatchView {
            market: Cow::Borrowed(&self.market),
            batch_id: Cow::Borrowed(&self.batch_id),
            trades: self.trades.iter().map(TradeRecord::view).collect(),
        }
    }
}

impl TradeRecord {
    pub fn view(&self) -> TradeRecordView<'_> {
        TradeRecordView {
            trade_id: Cow::Borrowed(&self.trade_id),
            trade_date: Cow::Borrowed(&self.trade_date),
            trade_time: Cow::Borrowed(&self.trade_time),
            security: Cow::Borrowed(&self.security),
            buyer: Cow::Borrowed(&self.buyer),
            seller: Cow::Borrowed(&self.seller),
            quantity: self.quantity,
            price: Cow::Borrowed(&self.price),
            currency: Cow::Borrowed(&self.currency),
            settlement_type: Cow::Borrowed(&self.settlement_type),
        }
    }
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

/// The stream `ccass bench cns` publishes to: its own, created and deleted by each run, so the
/// benchmark neither depends on what others left in TRADES (whose `discard = new` byte limit
/// refuses a large bench day once it is nearly full) nor disturbs it. Subjects are
/// [`bench_trades_subject`], outside `ccass.v1.>`; payloads are the same [`TradeBatch`]es.
pub const BENCH_STREAM: &str = "CNS_BENCH";
/// Size limit of [`BENCH_STREAM`] (a 5 M trade day is ~1.3 GB of batches).
const BENCH_STREAM_BYTES_MAX: i64 = 4 * 1024 * 1024 * 1024;

/// `ccassbench.trades.{market}`: the trade subject of [`BENCH_STREAM`].
pub fn bench_trades_subject(market: &super::subjects::Market) -> String {
    format!("ccassbench.trades.{}", market.as_str())
}

/// Deletes [`BENCH_STREAM`] when present and creates it empty (file storage, as TRADES).
pub async fn recreate_bench_stream(
    jetstream: &async_nats::jetstream::Context,
) -> Result<async_nats::jetstream::stream::Stream, super::BusError> {
    let _ = jetstream.delete_stream(BENCH_STREAM).await;
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: BENCH_STREAM.to_owned(),
            subjects: vec!["ccassbench.trades.*".to_owned()],
            storage: async_nats::jetstream::stream::StorageType::File,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            max_bytes: BENCH_STREAM_BYTES_MAX,
            max_message_size: 1024 * 1024,
            ..Default::default()
        })
        .await
        .map_err(|error| super::BusError::JetStream {
            operation: format!("create stream {BENCH_STREAM}"),
            message: error.to_string(),
        })
}

/// Deletes [`BENCH_STREAM`] (end of a benchmark run).
pub async fn delete_bench_stream(
    jetstream: &async_nats::jetstream::Context,
) -> Result<(), super::BusError> {
    jetstream
        .delete_stream(BENCH_STREAM)
        .await
        .map(|_| ())
        .map_err(|error| super::BusError::JetStream {
            operation: format!("delete stream {BENCH_STREAM}"),
            message: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_decodes_the_batch_json_and_borrows_plain_strings() {
        // Goal: capture's borrowed view reads exactly the JSON a TradeBatch writes, copies
        // only escaped strings. Method: encode a batch, decode it as a view, compare.
        let batch = TradeBatch {
            market: "xhkg".to_owned(),
            batch_id: "b-1".to_owned(),
            trades: vec![TradeRecord {
                trade_id: "T\"1".to_owned(),
                trade_date: "2026-11-24".to_owned(),
                trade_time: "10:00:00".to_owned(),
                security: "00005".to_owned(),
                buyer: "B01234".to_owned(),
                seller: "B05678".to_owned(),
                quantity: 400,
                price: "62.35".to_owned(),
                currency: "HKD".to_owned(),
                settlement_type: "cns".to_owned(),
            }],
        };
        let json = serde_json::to_vec(&batch).unwrap();
        let view: TradeBatchView<'_> = serde_json::from_slice(&json).unwrap();
        assert_eq!(view, batch.view());
        assert!(matches!(view.trades[0].buyer, Cow::Borrowed(_)));
        assert_eq!(view.trades[0].trade_id, "T\"1");
        assert_eq!(
            serde_json::to_value(&view.trades[0]).unwrap(),
            serde_json::to_value(&batch.trades[0]).unwrap()
        );
    }
}
