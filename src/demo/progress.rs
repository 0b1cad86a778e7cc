//! Progress of the demo's steps: indicatif bars on a terminal, plain lines otherwise (CI, a
//! pipe), so a log stays readable.

use std::io::IsTerminal as _;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    bars: bool,
}

impl Progress {
    /// Bars when standard output is a terminal.
    pub fn detect() -> Progress {
        Progress {
            bars: std::io::stdout().is_terminal(),
        }
    }

    /// A step of `total` units (`0`: a step without a count).
    pub fn step(&self, name: &str, total: u64) -> Step {
        let bar = self.bars.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            let template = if total == 0 {
                "{spinner} {msg} {elapsed}"
            } else {
                "{msg:40} [{bar:30}] {pos}/{len} {per_sec} eta {eta}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            if total == 0 {
                println!("{name} ...");
            } else {
                println!("{name}: {total} ...");
            }
        }
        Step {
            name: name.to_owned(),
            bar,
            started: Instant::now(),
        }
    }

    /// A line between steps.
    pub fn line(&self, text: &str) {
        println!("{text}");
    }
}

/// One step under way.
#[derive(Debug, Clone)]
pub struct Step {
    name: String,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Step {
    pub fn inc(&self, units: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(units);
        }
    }

    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Ends the step with what it did.
    pub fn finish(&self, outcome: &str) {
        let seconds = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        println!("{}: {outcome} ({seconds:.1} s)", self.name);
    }
}
