//! Metric names of SI intake and the outbox relay. No labels.

pub const MESSAGES_ACCEPTED_TOTAL: &str = "ccass_intake_messages_accepted_total";
pub const MESSAGES_REJECTED_TOTAL: &str = "ccass_intake_messages_rejected_total";
pub const MESSAGES_REDELIVERED_TOTAL: &str = "ccass_intake_messages_redelivered_total";
pub const PAIRS_MATCHED_TOTAL: &str = "ccass_intake_pairs_matched_total";
pub const INSTRUCTIONS_CANCELLED_TOTAL: &str = "ccass_intake_instructions_cancelled_total";
pub const BATCH_TRANSACTION_SECONDS: &str = "ccass_intake_batch_transaction_seconds";
pub const BATCH_FAILURES_TOTAL: &str = "ccass_intake_batch_failures_total";
pub const RELAY_PUBLISHED_TOTAL: &str = "ccass_relay_rows_published_total";
pub const RELAY_FAILURES_TOTAL: &str = "ccass_relay_failures_total";

pub fn describe_all() {
    metrics::describe_counter!(
        MESSAGES_ACCEPTED_TOTAL,
        "MT540-543 accepted (stored as instructions)"
    );
    metrics::describe_counter!(
        MESSAGES_REJECTED_TOTAL,
        "inbound messages refused with MT548 REJT (or a cancellation denied)"
    );
    metrics::describe_counter!(
        MESSAGES_REDELIVERED_TOTAL,
        "inbound messages delivered again after their batch committed (ignored)"
    );
    metrics::describe_counter!(PAIRS_MATCHED_TOTAL, "instruction pairs matched");
    metrics::describe_counter!(INSTRUCTIONS_CANCELLED_TOTAL, "instructions cancelled");
    metrics::describe_histogram!(
        BATCH_TRANSACTION_SECONDS,
        metrics::Unit::Seconds,
        "time of one intake batch transaction (validate, store, match, report, commit)"
    );
    metrics::describe_counter!(
        BATCH_FAILURES_TOTAL,
        "intake batch transactions that failed (left for redelivery)"
    );
    metrics::describe_counter!(RELAY_PUBLISHED_TOTAL, "outbox rows published");
    metrics::describe_counter!(
        RELAY_FAILURES_TOTAL,
        "relay batches that failed and were retried"
    );
}
