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
