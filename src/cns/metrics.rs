//! Metric names of CNS clearing. Labels are bounded: `reason` is a reject reason code.

pub const TRADES_CAPTURED_TOTAL: &str = "ccass_cns_trades_captured_total";
pub const TRADES_REJECTED_TOTAL: &str = "ccass_cns_trades_rejected_total";
pub const BATCHES_CAPTURED_TOTAL: &str = "ccass_cns_batches_captured_total";
pub const BATCHES_REDELIVERED_TOTAL: &str = "ccass_cns_batches_redelivered_total";
pub const BATCHES_MALFORMED_TOTAL: &str = "ccass_cns_batches_malformed_total";
pub const BATCHES_QUARANTINED_TOTAL: &str = "ccass_cns_batches_quarantined_total";
pub const BATCHES_QUARANTINED_HELD: &str = "ccass_cns_batches_quarantined_held";
pub const CAPTURE_TRANSACTION_SECONDS: &str = "ccass_cns_capture_transaction_seconds";
pub const CAPTURE_FAILURES_TOTAL: &str = "ccass_cns_capture_failures_total";
pub const CAPTURE_RETRIES_TOTAL: &str = "ccass_cns_capture_retries_total";
pub const CALENDAR_HORIZON_DAYS: &str = "ccass_cns_calendar_horizon_days";

pub fn describe_all() {
    metrics::describe_counter!(TRADES_CAPTURED_TOTAL, "trades captured and netted");
    metrics::describe_counter!(
        TRADES_REJECTED_TOTAL,
        "trades refused by capture, by reason"
    );
    metrics::describe_counter!(BATCHES_CAPTURED_TOTAL, "feed batches captured");
    metrics::describe_counter!(
        BATCHES_REDELIVERED_TOTAL,
        "feed batches delivered again after they were captured (ignored)"
    );
    metrics::describe_counter!(
        BATCHES_MALFORMED_TOTAL,
        "feed messages that are not a trade batch (quarantined, then terminated on the stream)"
    );
    metrics::describe_counter!(
        BATCHES_QUARANTINED_TOTAL,
        "feed batches set aside in cns_quarantined_batches, by reason (malformed, refused): ccass cns quarantine list"
    );
    metrics::describe_gauge!(
        BATCHES_QUARANTINED_HELD,
        "quarantined feed batches not released or dismissed yet: their trades are not netted (read by the CNS scheduler each minute)"
    );
    metrics::describe_histogram!(
        CAPTURE_TRANSACTION_SECONDS,
        metrics::Unit::Seconds,
        "time of one capture transaction (validate, copy, net, commit)"
    );
    metrics::describe_counter!(
        CAPTURE_FAILURES_TOTAL,
        "capture transactions that failed and were retried"
    );
    metrics::describe_counter!(
        CAPTURE_RETRIES_TOTAL,
        "capture transactions started over because another transaction claimed one of their trade ids meanwhile"
    );
    metrics::describe_gauge!(
        CALENDAR_HORIZON_DAYS,
        "days from today to cns.holidays_known_through (settlement dates after it are refused)"
    );
}
