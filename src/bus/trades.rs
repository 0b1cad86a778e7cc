//! Wire types of the trade feed and the CNS events: the only `Serialize` types of CNS.
//!
//! A [`TradeBatch`] is one message on `ccass.v1.trades.{market}` (at most the TRADES
//! stream's `max_message_bytes`). Its `Nats-Msg-Id` is `market:batch_id`, so JetStream drops
//! a re-published batch within the duplicate window, and the host database holds the same
//! key (`cns_trade_batches`) so a redelivered batch is captured once.
//!
//! Wire format ([`encode_batch`], [`decode_batch`]): comma-separated lines of UTF-8 text, the
//! first `ccass-trade-batch/1,<market>,<batch_id>`, then one line per trade with the fields
//! of [`TradeRecord`] in declaration order:
//! `trade_id,trade_date,trade_time,security,buyer,seller,quantity,price,currency,settlement_type`.
//! Lines end with `\n` (optional after the last). No field may contain a comma, a double
//! quote or a line break (the encoder refuses such a batch: the trade file format has no
//! quoting either); quantity is a decimal integer. Decoding is split and borrow, no field
//! names to match: `ccass bench cns`'s decode phase for 5 M trades went from 2.5 worker-s
//! with the JSON of earlier versions to 1.06 (which also counts waiting for the fetch to end).
//! A payload that starts with `{` is still read as that JSON, so batches published before
//! the change stay capturable.
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

/// The first field of a batch's first line: the format and its version.
pub const BATCH_FORMAT: &str = "ccass-trade-batch/1";

/// Why a payload is not a trade batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDecodeError {
    #[error("trade batch is not utf-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("trade batch does not start with `{BATCH_FORMAT},<market>,<batch_id>`")]
    Header,
    #[error("trade batch line {line}: {fields} fields, expected 10")]
    FieldCount { line: usize, fields: usize },
    #[error("trade batch line {line}: quantity `{quantity}` is not a whole number")]
    Quantity { line: usize, quantity: String },
    #[error("trade batch json: {0}")]
    Json(String),
}

/// Why a batch cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trade batch {batch_id}: {field} `{value}` holds a comma, a double quote or a line break")]
pub struct BatchEncodeError {
    pub batch_id: String,
    pub field: &'static str,
    pub value: String,
}

/// The payload of `batch` (format in the module docs).
pub fn encode_batch(batch: &TradeBatch) -> Result<Vec<u8>, BatchEncodeError> {
    let mut payload = String::with_capacity(64 + batch.trades.len() * 96);
    let mut quantity = itoa::Buffer::new();
    let field = |payload: &mut String, name: &'static str, value: &str, separator: char| {
        if value.contains([',', '"', '\n', '\r']) {
            return Err(BatchEncodeError {
                batch_id: batch.batch_id.clone(),
                field: name,
                value: value.to_owned(),
            });
        }
        payload.push_str(value);
        payload.push(separator);
        Ok(())
    };
    payload.push_str(BATCH_FORMAT);
    payload.push(',');
    field(&mut payload, "market", &batch.market, ',')?;
    field(&mut payload, "batch_id", &batch.batch_id, '\n')?;
    for trade in &batch.trades {
        field(&mut payload, "trade_id", &trade.trade_id, ',')?;
        field(&mut payload, "trade_date", &trade.trade_date, ',')?;
        field(&mut payload, "trade_time", &trade.trade_time, ',')?;
        field(&mut payload, "security", &trade.security, ',')?;
        field(&mut payload, "buyer", &trade.buyer, ',')?;
        field(&mut payload, "seller", &trade.seller, ',')?;
        payload.push_str(quantity.format(trade.quantity));
        payload.push(',');
        field(&mut payload, "price", &trade.price, ',')?;
        field(&mut payload, "currency", &trade.currency, ',')?;
        field(
            &mut payload,
            "settlement_type",
            &trade.settlement_type,
            '\n',
        )?;
    }
    Ok(payload.into_bytes())
}

/// Splits `line` at its commas into exactly `N` fields (no quoting: the trade file and the
/// wire format have none); otherwise `Err` with the number of fields it has.
pub fn split_fields<const N: usize>(line: &str) -> Result<[&str; N], usize> {
    let mut fields = [""; N];
    let mut parts = split_ascii(line, b',');
    for field in &mut fields {
        *field = parts
            .next()
            .ok_or_else(|| split_ascii(line, b',').count())?;
    }
    match parts.next() {
        None => Ok(fields),
        Some(_) => Err(split_ascii(line, b',').count()),
    }
}

/// `text.split(separator)` for an ASCII separator, found as bytes with memchr
/// (`str::split(',')` compares each candidate as UTF-8 through a call per byte). An ASCII
/// byte is never inside a multi-byte character, so every slice ends on a character boundary.
fn split_ascii(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    debug_assert!(separator.is_ascii());
    let mut ends =
        memchr::memchr_iter(separator, text.as_bytes()).chain(std::iter::once(text.len()));
    let mut start = 0;
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let part = text.get(start..end)?;
        start = end + 1;
        Some(part)
    })
}

/// Reads a payload as a batch without copying its strings (format in the module docs).
pub fn decode_batch(payload: &[u8]) -> Result<TradeBatchView<'_>, BatchDecodeError> {
    if payload.first() == Some(&b'{') {
        return serde_json::from_slice(payload)
            .map_err(|error| BatchDecodeError::Json(error.to_string()));
    }
    let text = std::str::from_utf8(payload)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = split_ascii(text, b'\n');
    let header = lines.next().unwrap_or_default();
    let mut header_fields = header.split(',');
    let (Some(BATCH_FORMAT), Some(market), Some(batch_id), None) = (
        header_fields.next(),
        header_fields.next(),
        header_fields.next(),
        header_fields.next(),
    ) else {
        return Err(BatchDecodeError::Header);
    };
    let mut trades = Vec::with_capacity(text.len() / 80);
    for (index, line) in lines.enumerate() {
        let [
            trade_id,
            trade_date,
            trade_time,
            security,
            buyer,
            seller,
            quantity,
            price,
            currency,
            settlement_type,
        ] = split_fields(line).map_err(|fields| BatchDecodeError::FieldCount {
            line: index + 2,
            fields,
        })?;
        let quantity = quantity
            .parse::<i64>()
            .map_err(|_| BatchDecodeError::Quantity {
                line: index + 2,
                quantity: quantity.to_owned(),
            })?;
        trades.push(TradeRecordView {
            trade_id: Cow::Borrowed(trade_id),
            trade_date: Cow::Borrowed(trade_date),
            trade_time: Cow::Borrowed(trade_time),
            security: Cow::Borrowed(security),
            buyer: Cow::Borrowed(buyer),
            seller: Cow::Borrowed(seller),
            quantity,
            price: Cow::Borrowed(price),
            currency: Cow::Borrowed(currency),
            settlement_type: Cow::Borrowed(settlement_type),
        });
    }
    Ok(TradeBatchView {
        market: Cow::Borrowed(market),
        batch_id: Cow::Borrowed(batch_id),
        trades,
    })
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
    fn a_view_decodes_the_batch_json_of_earlier_versions_and_borrows_plain_strings() {
        // Goal: capture's borrowed view reads exactly the JSON a TradeBatch wrote before the
        // line format, copies only escaped strings. Method: encode a batch as JSON, decode it
        // as a view, compare.
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
        let view: TradeBatchView<'_> = decode_batch(&json).unwrap();
        assert_eq!(view, batch.view());
        assert!(matches!(view.trades[0].buyer, Cow::Borrowed(_)));
        assert_eq!(view.trades[0].trade_id, "T\"1");
        assert_eq!(
            serde_json::to_value(&view.trades[0]).unwrap(),
            serde_json::to_value(&batch.trades[0]).unwrap()
        );
    }

    fn batch_of(trades: Vec<TradeRecord>) -> TradeBatch {
        TradeBatch {
            market: "xhkg".to_owned(),
            batch_id: "feed-2026-11-24:1-2".to_owned(),
            trades,
        }
    }

    fn trade(trade_id: &str, quantity: i64) -> TradeRecord {
        TradeRecord {
            trade_id: trade_id.to_owned(),
            trade_date: "2026-11-24".to_owned(),
            trade_time: "10:00:00".to_owned(),
            security: "00005".to_owned(),
            buyer: "B01234".to_owned(),
            seller: "B05678".to_owned(),
            quantity,
            price: "62.35".to_owned(),
            currency: "HKD".to_owned(),
            settlement_type: "cns".to_owned(),
        }
    }

    #[test]
    fn a_batch_round_trips_through_its_lines_borrowing_every_string() {
        // Goal: the documented line format, decoded without copies, malformed field values
        // passed through for capture to refuse. Method: encode, compare with the expected
        // text, decode, compare with the batch.
        let batch = batch_of(vec![trade("T1", 400), trade(" odd id ", -5), trade("", 0)]);
        let payload = encode_batch(&batch).unwrap();
        assert_eq!(
            std::str::from_utf8(&payload).unwrap(),
            concat!(
                "ccass-trade-batch/1,xhkg,feed-2026-11-24:1-2\n",
                "T1,2026-11-24,10:00:00,00005,B01234,B05678,400,62.35,HKD,cns\n",
                " odd id ,2026-11-24,10:00:00,00005,B01234,B05678,-5,62.35,HKD,cns\n",
                ",2026-11-24,10:00:00,00005,B01234,B05678,0,62.35,HKD,cns\n",
            )
        );
        let view = decode_batch(&payload).unwrap();
        assert_eq!(view, batch.view());
        assert!(matches!(view.trades[1].trade_id, Cow::Borrowed(_)));
        // Without the last line break, and with no trades at all.
        assert_eq!(
            decode_batch(&payload[..payload.len() - 1]).unwrap(),
            batch.view()
        );
        let empty = batch_of(vec![]);
        assert_eq!(
            decode_batch(&encode_batch(&empty).unwrap()).unwrap(),
            empty.view()
        );
    }

    #[test]
    fn fields_and_lines_split_as_str_split_does() {
        // Goal: the byte-searching splitters agree with `str::split` on every shape of line,
        // multi-byte text included. Method: compare on edge cases.
        for line in [
            "", ",", "a", "a,b", "a,b,", ",a,b", "a,,b", "é,ü,ß", "a,b,c,d",
        ] {
            let naive: Vec<&str> = line.split(',').collect();
            let expected = <[&str; 3]>::try_from(naive.as_slice()).map_err(|_| naive.len());
            assert_eq!(split_fields::<3>(line), expected, "{line:?}");
            let lines = line.replace(',', "\n");
            assert_eq!(
                split_ascii(&lines, b'\n').collect::<Vec<_>>(),
                lines.split('\n').collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_payload_that_is_not_a_batch_is_refused_with_its_reason() {
        // Goal: each way a payload can fail names what is wrong; unrepresentable fields are
        // refused by the encoder, never silently mangled.
        let header = "ccass-trade-batch/1,xhkg,b1\n";
        let line = "T1,2026-11-24,10:00:00,00005,B01234,B05678,400,62.35,HKD,cns";
        let cases: [(Vec<u8>, BatchDecodeError); 5] = [
            (b"garbage".to_vec(), BatchDecodeError::Header),
            (
                b"ccass-trade-batch/2,xhkg,b1\n".to_vec(),
                BatchDecodeError::Header,
            ),
            (
                format!("{header}{line},extra").into_bytes(),
                BatchDecodeError::FieldCount {
                    line: 2,
                    fields: 11,
                },
            ),
            (
                format!("{header}{line}\nT2,2026-11-24").into_bytes(),
                BatchDecodeError::FieldCount { line: 3, fields: 2 },
            ),
            (
                format!("{header}{}", line.replace(",400,", ",4e2,")).into_bytes(),
                BatchDecodeError::Quantity {
                    line: 2,
                    quantity: "4e2".to_owned(),
                },
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(decode_batch(&payload).unwrap_err(), expected);
        }
        assert!(matches!(
            decode_batch(b"\xff\xfe"),
            Err(BatchDecodeError::NotUtf8(_))
        ));
        assert!(matches!(
            decode_batch(b"{\"market\":1}"),
            Err(BatchDecodeError::Json(_))
        ));
        for (bad, field) in [
            ("A,1", "trade_id"),
            ("A\"1", "trade_id"),
            ("A\n1", "trade_id"),
        ] {
            let error = encode_batch(&batch_of(vec![trade(bad, 1)])).unwrap_err();
            assert_eq!((error.field, error.value.as_str()), (field, bad));
        }
    }
}
