//! CPU time from Linux's `/proc`, for the benchmarks' reports (how much of a run was this
//! process's work, how busy the machine was). Every reader returns `None` where `/proc` is not
//! Linux's; the counters are in clock ticks of [`TICKS_PER_SECOND`].

use std::time::Duration;

/// Clock ticks per second of `/proc`'s CPU counters (USER_HZ, 100 on every Linux ABI).
pub const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time of this process so far, in ticks.
pub fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After "pid (comm) " (comm may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// User + system CPU time of this process so far.
pub fn process_cpu_time() -> Option<Duration> {
    process_ticks().map(|ticks| Duration::from_millis(ticks * 1_000 / TICKS_PER_SECOND))
}

/// The whole machine's CPU counters so far, summed over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    /// Every state but idle and iowait.
    pub busy: u64,
    pub total: u64,
    pub cpus: usize,
}

/// The machine's counters from `/proc/stat`.
pub fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // "cpu  user nice system idle iowait irq softirq steal ..."
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|value| value.parse().ok())
        .collect();
    if ticks.len() < 8 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let cpus = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(MachineTicks {
        busy: total - ticks[3] - ticks[4],
        total,
        cpus: cpus.max(1),
    })
}
