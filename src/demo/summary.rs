//! The demo's closing table: each number as the demo saw it (PSS replies, run reports), as the
//! host database holds it (`hostdb::demo`), and as the plan expects it. A row whose numbers
//! disagree fails the demo.

use std::fmt;

use super::plan::Expected;
use crate::hostdb::demo::DemoCounts;
use crate::settlement::run::RunReport;

/// What the demo itself saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub trades_published: u64,
    pub trades_captured: i64,
    pub trades_refused: i64,
    pub stock_positions: i64,
    pub messages_sent: u64,
    pub acked: u64,
    pub naked: u64,
    pub runs: Vec<RunReport>,
    pub audit_violations: Vec<String>,
}

/// One row: demo, host database, plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub what: String,
    pub demo: Option<i64>,
    pub database: Option<i64>,
    pub expected: Option<i64>,
}

impl Row {
    fn new(
        what: impl Into<String>,
        demo: Option<i64>,
        database: Option<i64>,
        expected: Option<i64>,
    ) -> Row {
        Row {
            what: what.into(),
            demo,
            database,
            expected,
        }
    }

    /// Every number present agrees.
    pub fn agrees(&self) -> bool {
        let values: Vec<i64> = [self.demo, self.database, self.expected]
            .into_iter()
            .flatten()
            .collect();
        values.windows(2).all(|pair| pair[0] == pair[1])
    }
}

/// The table and its verdict.
#[derive(Debug, Clone)]
pub struct Summary {
    pub rows: Vec<Row>,
    pub audit_violations: Vec<String>,
}

impl Summary {
    pub fn new(observed: &Observed, counts: &DemoCounts, expected: &Expected) -> Summary {
        let status = |name: &str| {
            counts
                .instructions_by_status
                .get(name)
                .copied()
                .unwrap_or(0)
        };
        let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let mut rows = vec![
            Row::new(
                "exchange trades published / captured + refused",
                Some(count(observed.trades_published)),
                Some(observed.trades_captured + observed.trades_refused),
                None,
            ),
            Row::new(
                "CNS stock positions netted (T+2)",
                None,
                Some(observed.stock_positions),
                None,
            ),
            Row::new(
                "SIs sent by the PSS, ACKed / journalled",
                Some(count(observed.acked)),
                Some(counts.inbound_messages),
                Some(count(observed.messages_sent)),
            ),
            Row::new(
                "SIs NAKed by the gateway",
                Some(count(observed.naked)),
                None,
                Some(0),
            ),
            Row::new(
                "SIs rejected by intake (REJT)",
                None,
                Some(counts.rejected_messages),
                Some(count(expected.rejected_messages)),
            ),
            Row::new(
                "SIs matched",
                None,
                Some(status("matched")),
                Some(count(expected.matched_instructions)),
            ),
            Row::new(
                "SIs unmatched (NMAT)",
                None,
                Some(status("unmatched")),
                Some(count(expected.unmatched_instructions)),
            ),
            Row::new(
                "SIs cancelled",
                None,
                Some(status("cancelled")),
                Some(count(expected.cancelled_instructions)),
            ),
        ];
        for (index, report) in observed.runs.iter().enumerate() {
            let stored = counts.runs.get(index);
            let number = index + 1;
            rows.push(Row::new(
                format!("run {number}: pairs settled"),
                Some(count(report.settled_count as u64)),
                stored.map(|run| run.settled_pairs),
                expected
                    .settled_pairs_by_run
                    .get(index)
                    .map(|value| count(*value)),
            ));
            rows.push(Row::new(
                format!("run {number}: pairs recycled"),
                Some(count(report.recycled_count as u64)),
                stored.map(|run| run.pending_advices_by_reason.values().sum::<i64>() / 2),
                None,
            ));
            rows.push(Row::new(
                format!("run {number}: value settled, HKD cents"),
                Some(report.settled_value_minor.get("HKD").copied().unwrap_or(0)),
                stored.map(|run| run.settled_value_minor.get("HKD").copied().unwrap_or(0)),
                expected.settled_value_minor_by_run.get(index).copied(),
            ));
        }
        let last = counts.runs.last();
        let reason = |code: &str| {
            last.map(|run| {
                run.pending_advices_by_reason
                    .get(code)
                    .copied()
                    .unwrap_or(0)
                    / 2
            })
        };
        let settled: usize = observed.runs.iter().map(|run| run.settled_count).sum();
        rows.push(Row::new(
            "pairs settled in the day",
            Some(count(settled as u64)),
            Some(counts.settled_pairs),
            Some(count(expected.settled_pairs_by_run.iter().sum())),
        ));
        rows.push(Row::new(
            "pairs failed at day end: LACK (no stock)",
            None,
            reason("LACK"),
            Some(count(expected.failed_lack_pairs)),
        ));
        rows.push(Row::new(
            "pairs failed at day end: MONY (no cash)",
            None,
            reason("MONY"),
            Some(count(expected.failed_mony_pairs)),
        ));
        rows.push(Row::new(
            "pairs failed at day end: all",
            observed
                .runs
                .last()
                .map(|run| count(run.recycled_count as u64)),
            Some(counts.unsettled_pairs),
            Some(count(
                expected.failed_lack_pairs + expected.failed_mony_pairs,
            )),
        ));
        rows.push(Row::new(
            "messages out (outbox) / published by the relay",
            Some(counts.outbox_rows),
            Some(counts.outbox_published),
            None,
        ));
        Summary {
            rows,
            audit_violations: observed.audit_violations.clone(),
        }
    }

    /// Every row agrees and the audit found nothing.
    pub fn passed(&self) -> bool {
        self.audit_violations.is_empty() && self.rows.iter().all(Row::agrees)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = |value: Option<i64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
        writeln!(
            f,
            "{:<48} {:>16} {:>16} {:>16}  check",
            "", "demo", "host database", "expected"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "{:<48} {:>16} {:>16} {:>16}  {}",
                row.what,
                cell(row.demo),
                cell(row.database),
                cell(row.expected),
                if row.agrees() { "ok" } else { "DISAGREES" }
            )?;
        }
        if self.audit_violations.is_empty() {
            write!(f, "audit: ok")
        } else {
            for violation in &self.audit_violations {
                writeln!(f, "audit: {violation}")?;
            }
            write!(f, "audit: {} violation(s)", self.audit_violations.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_agrees_only_when_every_present_number_is_equal() {
        // Goal: missing numbers are not compared; any difference fails.
        assert!(Row::new("a", Some(3), None, Some(3)).agrees());
        assert!(Row::new("a", None, None, None).agrees());
        assert!(!Row::new("a", Some(3), Some(4), None).agrees());
        assert!(!Row::new("a", None, Some(4), Some(5)).agrees());
    }

    #[test]
    fn the_summary_fails_on_a_disagreement_or_an_audit_violation() {
        // Goal: the verdict is the conjunction of the rows and the audit.
        let expected = Expected {
            matched_instructions: 2,
            settled_pairs_by_run: [1, 0, 0],
            ..Expected::default()
        };
        let mut counts = DemoCounts::default();
        counts
            .instructions_by_status
            .insert("matched".to_owned(), 2);
        counts.inbound_messages = 2;
        counts.settled_pairs = 1;
        let observed = Observed {
            messages_sent: 2,
            acked: 2,
            ..Observed::default()
        };
        let summary = Summary::new(&observed, &counts, &expected);
        assert!(!summary.passed(), "{summary}");
        let disagreeing: Vec<&str> = summary
            .rows
            .iter()
            .filter(|row| !row.agrees())
            .map(|row| row.what.as_str())
            .collect();
        // No run reports: the day's settled total (1 expected) is 0 by the demo's count.
        assert_eq!(disagreeing, ["pairs settled in the day"]);
        let mut audited = summary.clone();
        audited.rows.retain(Row::agrees);
        assert!(audited.passed());
        audited.audit_violations.push("negative holding".to_owned());
        assert!(!audited.passed());
        assert!(audited.to_string().contains("1 violation(s)"));
    }
}
