//! The settlement progress chart: one pair of bars per run (settled value, value still
//! pending on the run's date), as inline SVG rendered on the server. Pure.

use crate::hostdb::terminal::RunView;

const BAR_WIDTH: usize = 14;
const GROUP_WIDTH: usize = 40;
const HEIGHT: usize = 120;

/// An SVG of the runs, oldest on the left; labels carry the run id and values in minor units
/// divided by 100 (every currency here has two minor units).
pub fn progress_svg(runs: &[RunView]) -> String {
    let largest = runs
        .iter()
        .map(|run| run.settled_value_minor.max(run.pending_value_minor))
        .max()
        .unwrap_or(0)
        .max(1);
    let width = GROUP_WIDTH * runs.len().max(1) + 10;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" class=\"chart\" width=\"{width}\" height=\"{}\" \
         aria-label=\"Settled (green) and pending (grey) value per settlement run\">",
        HEIGHT + 20
    );
    for (index, run) in runs.iter().rev().enumerate() {
        let x = 5 + index * GROUP_WIDTH;
        for (offset, value, class, what) in [
            (0, run.settled_value_minor, "settled", "settled"),
            (BAR_WIDTH, run.pending_value_minor, "pending", "pending"),
        ] {
            let height = usize::try_from(value.max(0))
                .unwrap_or(0)
                .saturating_mul(HEIGHT)
                / usize::try_from(largest).unwrap_or(1);
            svg.push_str(&format!(
                "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{BAR_WIDTH}\" height=\"{height}\">\
                 <title>run {} {what} {}.{:02}</title></rect>",
                x + offset,
                HEIGHT - height,
                run.settlement_run_id,
                value / 100,
                (value % 100).abs()
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\">#{}</text>",
            x,
            HEIGHT + 14,
            run.settlement_run_id
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, settled: i64, pending: i64) -> RunView {
        RunView {
            settlement_run_id: id,
            settlement_date: "2026-11-26".into(),
            run_number: 1,
            status: "completed".into(),
            started_at: None,
            finished_at: None,
            settled_count: 0,
            recycled_count: 0,
            settled_value_minor: settled,
            pending_value_minor: pending,
        }
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let svg = progress_svg(&[run(2, 0, 50), run(1, 100, 0)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains("class=\"settled\" x=\"5\" y=\"0\" width=\"14\" height=\"120\""),
            "{svg}"
        );
        assert!(svg.contains("<title>run 2 pending 0.50</title>"), "{svg}");
        assert!(svg.contains("class=\"pending\" x=\"59\" y=\"60\""), "{svg}");
        assert!(progress_svg(&[]).contains("</svg>"));
    }
}
