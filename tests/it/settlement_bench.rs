//! A small smoke run of `ccass bench settlement` (the full size is a command, never a test).

use ccass::settlement::bench::{self, BenchOptions};

use crate::harness::postgres;

#[tokio::test]
async fn bench_settlement_smoke_run_settles_the_same_day_three_ways() {
    // Goal: the benchmark's three contenders run on the same generated day and their
    // outcomes are consistent. Method: 4,000 SIs (2,000 pairs) with a 5 % short share; the
    // engine settles most pairs (and at least as many as the single-pass set-based SQL,
    // which never uses receipts), chain resolution adds some, the per-transaction baseline
    // settles its subset. Two prior days settled in full are in the database: none of their
    // pairs is due again. Two rounds, each on fresh copies of the day, settle the same.
    let Some(_reachable) = postgres::database("bench_settlement_probe").await else {
        return;
    };
    let config = crate::harness::test_config();
    let options = BenchOptions {
        instructions: 4_000,
        seed: 3,
        participants: 40,
        securities: 30,
        short_share: 0.05,
        baseline_pairs: 50,
        settled_days: 2,
        rounds: 2,
        keep_database: false,
    };
    let report = bench::run(&config, &options).await.unwrap();
    assert_eq!(report.rounds.len(), 2);
    let first = &report.rounds[0];
    for round in &report.rounds {
        let run = &round.run;
        assert_eq!(run.pairs_due, 2_000);
        assert!(run.settled_count > 1_800, "{report}");
        assert!(run.settled_count as i64 >= round.set_settled, "{report}");
        assert!(run.settled_count > run.first_pass_settled_count, "{report}");
        assert_eq!(
            run.confirmations_count,
            2 * (run.settled_count + run.partially_settled_count) + 2 * run.recycled_count,
            "{report}"
        );
        assert_eq!(run.settled_count, first.run.settled_count, "{report}");
        assert_eq!(
            run.first_pass_settled_count, first.run.first_pass_settled_count,
            "{report}"
        );
        assert_eq!(round.set_settled, first.set_settled, "{report}");
    }
    assert_eq!(report.each_pairs, 50);
    assert!(report.each_settled > 0, "{report}");
    assert!(
        report.to_string().contains("median of 2 round(s)"),
        "{report}"
    );
}
