//! The demo's closing table: each number as the demo saw it (PSS replies, run reports), as the
//! host database holds it (`hostdb::demo`), and as the plan expects it. A row whose numbers
//! disagree fails the demo.

use std::fmt;

use std::collections::BTreeMap;

use super::plan::Expected;
use crate::cns::day_end::DayEndReport;
use crate::cns::positions::CutoffReport;
use crate::hostdb::demo::DemoCounts;
use crate::settlement::run::RunReport;
use crate::statements::EndOfDayReport;

/// The end-of-day statement types, as FIN message type numbers.
pub const STATEMENT_TYPES: [&str; 3] = ["535", "536", "537"];

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
    /// The CNS cut-off after the runs (`None`: not reached).
    pub cutoff: Option<CutoffReport>,
    /// Money the CNS money positions owed just before day-end and just after it, per
    /// currency (from the positions, not the cash journal).
    pub money_due_before_day_end_minor: BTreeMap<String, i64>,
    pub money_due_after_day_end_minor: BTreeMap<String, i64>,
    /// Day-end (`None`: the date had already ended, or not reached).
    pub day_end: Option<DayEndReport>,
    pub statements: Option<EndOfDayReport>,
    /// Messages to the PSS found on the OUTBOUND stream (by `Nats-Msg-Id` = the outbox row's
    /// dedupe id), all and the statement pages by type.
    pub outbound_delivered: u64,
    pub statements_delivered_by_type: BTreeMap<String, u64>,
    /// Participants with a stock account in the reference data (each gets statements).
    pub participants_with_accounts: u64,
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
                // A matched SI whose pair settled in full is swept to `settled` (V0016).
                Some(status("matched") + status("settled")),
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
        rows.extend(cns_rows(observed, counts));
        rows.extend(statement_rows(observed, counts));
        rows.push(Row::new(
            "messages out (outbox) / published by the relay",
            Some(counts.outbox_rows),
            Some(counts.outbox_published),
            None,
        ));
        rows.push(Row::new(
            "messages out to the PSS: on OUTBOUND / outbox",
            Some(count(observed.outbound_delivered)),
            Some(counts.outbound_messages),
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

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The CNS cut-off and day-end: positions final, settled, carried; money settled or unpaid.
fn cns_rows(observed: &Observed, counts: &DemoCounts) -> Vec<Row> {
    let cutoff = observed.cutoff.as_ref();
    let day_end = observed.day_end.as_ref();
    let mut rows = vec![
        Row::new(
            "CNS cut-off: stock positions final",
            cutoff.map(|report| count(report.stock_positions)),
            Some(counts.cns_stock_positions),
            None,
        ),
        Row::new(
            "CNS cut-off: money positions final",
            cutoff.map(|report| count(report.money_positions)),
            Some(counts.cns_money_positions),
            None,
        ),
        // The cut-off comes after the day's runs (see the module docs of `demo`).
        Row::new(
            "CNS stock positions settled by the runs",
            None,
            Some(counts.cns_stock_positions_settled),
            Some(0),
        ),
        Row::new(
            "day end: stock positions carried forward",
            day_end.map(|report| report.carried_stock_position_count),
            Some(counts.cns_stock_positions_carried),
            None,
        ),
        Row::new(
            "day end: money positions settled",
            day_end.map(|report| report.money_positions_settled_count),
            Some(counts.cns_money_positions_settled),
            None,
        ),
        Row::new(
            "day end: money positions unpaid",
            day_end.map(|report| report.money_positions_unpaid_count),
            Some(counts.cns_money_positions_unpaid),
            None,
        ),
    ];
    // Per currency: what the positions stopped owing is what the cash journal moved; what
    // they still owe is what was due less what the journal moved.
    let amount = |map: &BTreeMap<String, i64>, currency: &str| map.get(currency).copied();
    let currencies: std::collections::BTreeSet<&String> = observed
        .money_due_before_day_end_minor
        .keys()
        .chain(counts.money_settled_minor.keys())
        .collect();
    for currency in currencies {
        let before = amount(&observed.money_due_before_day_end_minor, currency).unwrap_or(0);
        let after = amount(&observed.money_due_after_day_end_minor, currency).unwrap_or(0);
        let journal = amount(&counts.money_settled_minor, currency).unwrap_or(0);
        rows.push(Row::new(
            format!("day end: money settled, {currency} minor units"),
            day_end.map(|_| before - after),
            Some(journal),
            None,
        ));
        rows.push(Row::new(
            format!("day end: money unpaid, {currency} minor units"),
            day_end.map(|_| before - journal),
            Some(after),
            None,
        ));
    }
    rows
}

/// The end-of-day statements: pages queued and journalled, per type delivered on OUTBOUND.
fn statement_rows(observed: &Observed, counts: &DemoCounts) -> Vec<Row> {
    let statements = observed.statements.as_ref();
    let journalled: i64 = counts.statement_pages_by_type.values().sum();
    let mut rows = vec![
        Row::new(
            "statements: participants with all three",
            statements.map(|report| count(report.participants as u64)),
            Some(counts.statement_participants),
            Some(count(observed.participants_with_accounts)),
        ),
        Row::new(
            "statements: pages queued / journalled",
            statements.map(|report| count(report.pages_queued)),
            Some(journalled),
            None,
        ),
    ];
    for message_type in STATEMENT_TYPES {
        let journalled = counts
            .statement_pages_by_type
            .get(message_type)
            .copied()
            .unwrap_or(0);
        rows.push(Row::new(
            format!("statements: MT{message_type} pages on OUTBOUND / journalled"),
            Some(count(
                observed
                    .statements_delivered_by_type
                    .get(message_type)
                    .copied()
                    .unwrap_or(0),
            )),
            Some(journalled),
            None,
        ));
    }
    rows
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
            settled_pairs_by_run: vec![1, 0, 0],
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

    fn day_end_report(settled: i64, unpaid: i64) -> DayEndReport {
        let date = time::macros::date!(2026 - 11 - 26);
        DayEndReport {
            settlement_date: date,
            carried_to: time::macros::date!(2026 - 11 - 27),
            carried_stock_position_count: 2,
            money_positions_settled_count: settled,
            money_positions_unpaid_count: unpaid,
        }
    }

    fn disagreeing(summary: &Summary) -> Vec<&str> {
        summary
            .rows
            .iter()
            .filter(|row| !row.agrees())
            .map(|row| row.what.as_str())
            .collect()
    }

    #[test]
    fn money_settlement_rows_balance_the_positions_against_the_cash_journal() {
        // Goal: per currency, what the positions stopped owing must equal what the journal
        // moved, and what they still owe must equal what was due less what was moved; the
        // report's counts must equal the positions' statuses.
        let observed = Observed {
            day_end: Some(day_end_report(3, 1)),
            money_due_before_day_end_minor: BTreeMap::from([("HKD".to_owned(), 1_000)]),
            money_due_after_day_end_minor: BTreeMap::from([("HKD".to_owned(), 300)]),
            ..Observed::default()
        };
        let mut counts = DemoCounts {
            cns_stock_positions_carried: 2,
            cns_money_positions_settled: 3,
            cns_money_positions_unpaid: 1,
            money_settled_minor: BTreeMap::from([("HKD".to_owned(), 700)]),
            ..DemoCounts::default()
        };
        let summary = Summary::new(&observed, &counts, &Expected::default());
        assert_eq!(disagreeing(&summary), Vec::<&str>::new(), "{summary}");
        assert!(
            summary
                .to_string()
                .contains("day end: money settled, HKD minor units")
        );

        // The journal moved less than the positions say was paid: both money rows fail.
        counts.money_settled_minor.insert("HKD".to_owned(), 600);
        let summary = Summary::new(&observed, &counts, &Expected::default());
        assert_eq!(
            disagreeing(&summary),
            [
                "day end: money settled, HKD minor units",
                "day end: money unpaid, HKD minor units"
            ]
        );
        // A currency only the journal knows is a row too, and it fails.
        counts.money_settled_minor =
            BTreeMap::from([("HKD".to_owned(), 700), ("USD".to_owned(), 5)]);
        counts.cns_money_positions_unpaid = 0;
        let summary = Summary::new(&observed, &counts, &Expected::default());
        assert_eq!(
            disagreeing(&summary),
            [
                "day end: money positions unpaid",
                "day end: money settled, USD minor units",
                "day end: money unpaid, USD minor units"
            ]
        );
    }

    #[test]
    fn statement_rows_compare_queued_delivered_and_journalled_pages() {
        // Goal: pages queued, pages found on OUTBOUND and pages journalled agree per type,
        // and every participant with an account got all three statements.
        let observed = Observed {
            statements: Some(EndOfDayReport {
                participants: 2,
                pages_queued: 7,
            }),
            statements_delivered_by_type: BTreeMap::from([
                ("535".to_owned(), 2),
                ("536".to_owned(), 3),
                ("537".to_owned(), 2),
            ]),
            participants_with_accounts: 2,
            ..Observed::default()
        };
        let mut counts = DemoCounts {
            statement_pages_by_type: BTreeMap::from([
                ("535".to_owned(), 2),
                ("536".to_owned(), 3),
                ("537".to_owned(), 2),
            ]),
            statement_participants: 2,
            ..DemoCounts::default()
        };
        let summary = Summary::new(&observed, &counts, &Expected::default());
        assert_eq!(disagreeing(&summary), Vec::<&str>::new(), "{summary}");

        // A page the relay never put on the stream, and a participant without its MT537.
        counts.statement_pages_by_type.insert("537".to_owned(), 3);
        counts.statement_participants = 1;
        let summary = Summary::new(&observed, &counts, &Expected::default());
        assert_eq!(
            disagreeing(&summary),
            [
                "statements: participants with all three",
                "statements: pages queued / journalled",
                "statements: MT537 pages on OUTBOUND / journalled"
            ]
        );
        assert!(!summary.passed());
    }
}
