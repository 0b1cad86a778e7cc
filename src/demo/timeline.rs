//! The demo's settlement day on the configured schedule, played on a compressed clock.
//!
//! The times are the ones `ccass up` schedules by (`settlement.run_times`,
//! `settlement.input_cutoff_time`, `statements.end_of_day_time`, `cns.day_end_time`, parsed
//! by their own config methods); the demo adds only where its clock starts
//! (`demo.day_start_time`, input opens: wave one and the cancellations) and puts wave two
//! half-way between the first two runs. [`Clock`] maps a local time of day to an instant:
//! one hour lasts `demo.compressed_hour_ms`. An event starts when its time has come **and**
//! the event before it has finished (every stage waits for its work), so the numbers never
//! depend on how fast the machine is, only the pace does.
//!
//! The CNS cut-off is the one deviation: `ccass up` closes a date's netting at
//! `cns.cutoff_time` on its trade date, before the settlement day; the demo closes it at
//! day end, just before the money settlement, because its SI outcomes are planned from the
//! opening balances alone (CNS shorts would deliver first in the runs).

use std::fmt;
use std::time::Duration;

use time::Time;

/// What happens at a time of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Input opens: SIs of wave one, then the cancellations.
    InputOpens,
    /// Batch Settlement Run `n` (1-based).
    Run(usize),
    /// Wave two: the stock that arrives between the first two runs.
    WaveTwo,
    /// `settlement.input_cutoff_time`: later input settles from the next settlement date.
    InputCutoff,
    /// `statements.end_of_day_time`: MT535, MT536, MT537 to every participant.
    Statements,
    /// `cns.day_end_time`: the CNS cut-off, carry-forward and money settlement.
    DayEnd,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::InputOpens => write!(f, "input opens"),
            Event::Run(number) => write!(f, "run {number}"),
            Event::WaveTwo => write!(f, "wave two"),
            Event::InputCutoff => write!(f, "input cut-off"),
            Event::Statements => write!(f, "statements"),
            Event::DayEnd => write!(f, "day end"),
        }
    }
}

/// One event at its local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub at: Time,
    pub event: Event,
}

/// The configured times the day is played by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTimes {
    pub day_start: Time,
    /// Ascending (`SettlementConfig::run_times_of_day`).
    pub run_times: Vec<Time>,
    pub input_cutoff: Time,
    pub statements: Time,
    pub day_end: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    #[error(
        "the demo needs at least 2 settlement runs (settlement.run_times), not {0}: wave two arrives between the first two"
    )]
    TooFewRuns(usize),
    #[error("demo.day_start_time {day_start} must come before the first run at {first_run}")]
    StartsTooLate { day_start: Time, first_run: Time },
    #[error("{key} {at} must come after the last run at {last_run}")]
    BeforeLastRun {
        key: &'static str,
        at: Time,
        last_run: Time,
    },
}

/// The day's events in time order (at equal times, in the order listed in [`Event`]).
pub fn timeline(times: &ScheduleTimes) -> Result<Vec<Slot>, TimelineError> {
    let (Some(&first_run), Some(&second_run), Some(&last_run)) = (
        times.run_times.first(),
        times.run_times.get(1),
        times.run_times.last(),
    ) else {
        return Err(TimelineError::TooFewRuns(times.run_times.len()));
    };
    if times.day_start >= first_run {
        return Err(TimelineError::StartsTooLate {
            day_start: times.day_start,
            first_run,
        });
    }
    for (key, at) in [
        ("statements.end_of_day_time", times.statements),
        ("cns.day_end_time", times.day_end),
    ] {
        if at <= last_run {
            return Err(TimelineError::BeforeLastRun { key, at, last_run });
        }
    }
    let mut slots = vec![Slot {
        at: times.day_start,
        event: Event::InputOpens,
    }];
    slots.extend(times.run_times.iter().enumerate().map(|(index, at)| Slot {
        at: *at,
        event: Event::Run(index + 1),
    }));
    slots.push(Slot {
        at: first_run + (second_run - first_run) / 2,
        event: Event::WaveTwo,
    });
    slots.push(Slot {
        at: times.input_cutoff,
        event: Event::InputCutoff,
    });
    slots.push(Slot {
        at: times.statements,
        event: Event::Statements,
    });
    slots.push(Slot {
        at: times.day_end,
        event: Event::DayEnd,
    });
    // Stable: a tie keeps the order above (a run before the wave that follows it).
    slots.sort_by_key(|slot| slot.at);
    Ok(slots)
}

/// `HH:MM`.
pub fn hh_mm(at: Time) -> String {
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// The day as one line: `08:00 input opens, 10:30 run 1, ...`.
pub fn describe(slots: &[Slot]) -> String {
    slots
        .iter()
        .map(|slot| format!("{} {}", hh_mm(slot.at), slot.event))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The compressed clock: local time `day_start` is the instant the clock started, and one
/// hour lasts `hour_ms` milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: tokio::time::Instant,
    day_start: Time,
    hour_ms: u64,
}

impl Clock {
    pub fn start(day_start: Time, hour_ms: u64) -> Clock {
        Clock {
            started: tokio::time::Instant::now(),
            day_start,
            hour_ms,
        }
    }

    /// How long after the start local time `at` comes (zero for a time before the start).
    pub fn offset(&self, at: Time) -> Duration {
        let elapsed_ms = (at - self.day_start).whole_milliseconds().max(0);
        let hour_ms = i128::from(self.hour_ms);
        let wall_ms = elapsed_ms * hour_ms / 3_600_000;
        Duration::from_millis(u64::try_from(wall_ms).unwrap_or(u64::MAX))
    }

    /// Waits until local time `at` has come; returns how late the clock already was (the
    /// stages before took longer than their share of the compressed day).
    pub async fn until(&self, at: Time) -> Duration {
        let due = self.started + self.offset(at);
        let now = tokio::time::Instant::now();
        if now >= due {
            return now - due;
        }
        tokio::time::sleep_until(due).await;
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use time::macros::time;

    use super::*;

    fn times() -> ScheduleTimes {
        ScheduleTimes {
            day_start: time!(08:00),
            run_times: vec![time!(10:30), time!(12:00), time!(14:00), time!(15:50)],
            input_cutoff: time!(15:45),
            statements: time!(16:30),
            day_end: time!(17:00),
        }
    }

    #[test]
    fn the_day_follows_the_configured_times() {
        // Goal: every configured time is an event, in time order, wave two between the
        // first two runs, the input cut-off before the last run, statements and day end after.
        let slots = timeline(&times()).unwrap();
        assert_eq!(
            describe(&slots),
            "08:00 input opens, 10:30 run 1, 11:15 wave two, 12:00 run 2, 14:00 run 3, \
             15:45 input cut-off, 15:50 run 4, 16:30 statements, 17:00 day end"
        );
        // Two runs a minute apart: the wave still comes between them.
        let mut close = times();
        close.run_times = vec![time!(10:30), time!(10:31)];
        let events: Vec<Event> = timeline(&close)
            .unwrap()
            .iter()
            .map(|slot| slot.event)
            .collect();
        assert_eq!(
            events[..4],
            [
                Event::InputOpens,
                Event::Run(1),
                Event::WaveTwo,
                Event::Run(2)
            ]
        );
    }

    #[test]
    fn a_schedule_the_demo_cannot_play_is_refused_with_the_key_to_change() {
        let mut one_run = times();
        one_run.run_times.truncate(1);
        assert_eq!(timeline(&one_run), Err(TimelineError::TooFewRuns(1)));
        let mut late = times();
        late.day_start = time!(11:00);
        assert!(matches!(
            timeline(&late),
            Err(TimelineError::StartsTooLate { .. })
        ));
        let mut early = times();
        early.statements = time!(15:00);
        let error = timeline(&early).unwrap_err();
        assert!(
            error.to_string().starts_with("statements.end_of_day_time"),
            "{error}"
        );
    }

    #[test]
    fn the_clock_compresses_hours_into_milliseconds() {
        // Goal: the wall-clock offset of a local time is proportional to the hours since the
        // start; times before the start are due at once.
        let clock = Clock::start(time!(08:00), 2_000);
        assert_eq!(clock.offset(time!(08:00)), Duration::ZERO);
        assert_eq!(clock.offset(time!(10:30)), Duration::from_millis(5_000));
        assert_eq!(clock.offset(time!(17:00)), Duration::from_millis(18_000));
        assert_eq!(clock.offset(time!(07:00)), Duration::ZERO);
        let instant = Clock::start(time!(08:00), 0);
        assert_eq!(instant.offset(time!(17:00)), Duration::ZERO);
    }

    #[tokio::test]
    async fn the_clock_waits_for_a_slot_and_reports_lateness() {
        // Goal: `until` sleeps until the slot's instant, and a slot already past returns how
        // late it is. Method: one hour in 360 ms (a minute in 6 ms); lower bounds only.
        let clock = Clock::start(time!(08:00), 360);
        assert_eq!(clock.until(time!(08:05)).await, Duration::ZERO);
        assert!(clock.started.elapsed() >= Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(clock.until(time!(08:10)).await >= Duration::from_millis(30));
    }
}
