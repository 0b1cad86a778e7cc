//! Metric names of SI intake, the outbox relay and the Batch Settlement Run engine. Labels
//! (bounded): a run's `outcome`, a phase, a currency code.

pub const MESSAGES_ACCEPTED_TOTAL: &str = "ccass_intake_messages_accepted_total";
pub const MESSAGES_REJECTED_TOTAL: &str = "ccass_intake_messages_rejected_total";
pub const MESSAGES_REDELIVERED_TOTAL: &str = "ccass_intake_messages_redelivered_total";
pub const PAIRS_MATCHED_TOTAL: &str = "ccass_intake_pairs_matched_total";
pub const INSTRUCTIONS_CANCELLED_TOTAL: &str = "ccass_intake_instructions_cancelled_total";
pub const BATCH_TRANSACTION_SECONDS: &str = "ccass_intake_batch_transaction_seconds";
pub const BATCH_FAILURES_TOTAL: &str = "ccass_intake_batch_failures_total";
pub const MESSAGES_UNSTORABLE_TOTAL: &str = "ccass_intake_messages_unstorable_total";
pub const RELAY_PUBLISHED_TOTAL: &str = "ccass_relay_rows_published_total";
pub const RELAY_FAILURES_TOTAL: &str = "ccass_relay_failures_total";
pub const RELAY_ID_COLLISIONS_TOTAL: &str = "ccass_relay_id_collisions_total";
pub const RELAY_DUPLICATES_UNCHECKED_TOTAL: &str = "ccass_relay_duplicates_unchecked_total";
pub const RUNS_TOTAL: &str = "ccass_settlement_runs_total";
pub const PAIRS_SETTLED_TOTAL: &str = "ccass_settlement_pairs_settled_total";
pub const PAIRS_PARTIALLY_SETTLED_TOTAL: &str = "ccass_settlement_pairs_partially_settled_total";
pub const PAIRS_RECYCLED_TOTAL: &str = "ccass_settlement_pairs_recycled_total";
pub const RUN_PHASE_SECONDS: &str = "ccass_settlement_run_phase_seconds";
pub const VALUE_SETTLED_MINOR_TOTAL: &str = "ccass_settlement_value_settled_minor_total";

/// `outcome` of a run: `completed`, `leader_busy` (another leader runs), `failed`,
/// `aborted` (the test hook).
pub fn record_run_outcome(outcome: &'static str) {
    metrics::counter!(RUNS_TOTAL, "outcome" => outcome).increment(1);
}

/// What a completed run did: pairs, phase durations, money settled per currency.
pub fn record_completed_run(report: &super::run::RunReport) {
    metrics::counter!(PAIRS_SETTLED_TOTAL).increment(report.settled_count as u64);
    metrics::counter!(PAIRS_PARTIALLY_SETTLED_TOTAL)
        .increment(report.partially_settled_count as u64);
    metrics::counter!(PAIRS_RECYCLED_TOTAL).increment(report.recycled_count as u64);
    for (phase, duration) in [
        ("load", report.load),
        ("settle", report.settle),
        ("write", report.write),
        ("commit", report.commit),
    ] {
        metrics::histogram!(RUN_PHASE_SECONDS, "phase" => phase).record(duration.as_secs_f64());
    }
    for (currency, amount) in &report.settled_value_minor {
        metrics::counter!(VALUE_SETTLED_MINOR_TOTAL, "currency" => currency.clone())
            .increment(u64::try_from(*amount).unwrap_or(0));
    }
}

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
    metrics::describe_counter!(
        MESSAGES_UNSTORABLE_TOTAL,
        "inbound messages the host database refused to store, rejected with MT548 REJT NARR"
    );
    metrics::describe_counter!(
        RELAY_PUBLISHED_TOTAL,
        "messages published from the outbox (a compact run row counts each message it expands to)"
    );
    metrics::describe_counter!(
        RELAY_FAILURES_TOTAL,
        "relay batches that failed and were retried"
    );
    metrics::describe_counter!(
        RELAY_ID_COLLISIONS_TOTAL,
        "messages whose id a stream already holds for a different message (a restored database reissued it; the relay stops until `ccass outbox new-incarnation`)"
    );
    metrics::describe_counter!(
        RELAY_DUPLICATES_UNCHECKED_TOTAL,
        "duplicate acks whose stored copy could not be read to compare (stream limits removed it)"
    );
    metrics::describe_counter!(
        RUNS_TOTAL,
        "Batch Settlement Runs tried, by outcome (completed, leader_busy, failed, aborted)"
    );
    metrics::describe_counter!(PAIRS_SETTLED_TOTAL, "matched pairs settled in full by runs");
    metrics::describe_counter!(
        PAIRS_PARTIALLY_SETTLED_TOTAL,
        "matched pairs of which a run settled a part (the rest recycled)"
    );
    metrics::describe_counter!(
        PAIRS_RECYCLED_TOTAL,
        "matched pairs a run left pending (in whole or in part) for the next run"
    );
    metrics::describe_histogram!(
        RUN_PHASE_SECONDS,
        metrics::Unit::Seconds,
        "wall time of each phase of a completed run (load, settle, write, commit)"
    );
    metrics::describe_counter!(
        VALUE_SETTLED_MINOR_TOTAL,
        "money moved by DvP settlement in runs, minor units, by currency"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_run_is_visible_in_prometheus_text() {
        // Goal: the engine's metrics reach the exporter with their labels. Method: record a
        // report into a local Prometheus recorder and read its rendered text.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let report = crate::settlement::run::RunReport {
            settled_count: 7,
            partially_settled_count: 2,
            recycled_count: 3,
            settled_value_minor: [("HKD".to_owned(), 12_345)].into(),
            write: std::time::Duration::from_millis(250),
            ..Default::default()
        };
        metrics::with_local_recorder(&recorder, || {
            describe_all();
            record_run_outcome("completed");
            record_run_outcome("leader_busy");
            record_completed_run(&report);
        });
        let text = handle.render();
        for expected in [
            "ccass_settlement_runs_total{outcome=\"completed\"} 1",
            "ccass_settlement_runs_total{outcome=\"leader_busy\"} 1",
            "ccass_settlement_pairs_settled_total 7",
            "ccass_settlement_pairs_partially_settled_total 2",
            "ccass_settlement_pairs_recycled_total 3",
            "ccass_settlement_value_settled_minor_total{currency=\"HKD\"} 12345",
            "ccass_settlement_run_phase_seconds_count{phase=\"write\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
    }
}
