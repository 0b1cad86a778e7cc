//! Where an accepted message's time goes inside the gateway, per stage, in fixed-size
//! log-scale histograms (lock-free, bounded memory, so always on):
//!
//! * `check`: frame read → codec check, sender and reference (assess) done;
//! * `authorise`: → `si.input` decided (a cache hit, or the auth service);
//! * `publish`: → handed to the NATS client (its in-flight limit may wait here);
//! * `store`: → JetStream's acknowledgement received, as the reply writer sees it (includes
//!   waiting behind earlier messages of the session: replies go out in input order);
//! * `reply`: → the ACK written and flushed to the TLS session.
//!
//! The bench prints them beside its end-to-end figures; the `ack_latency` metric is the sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Stage names in pipeline order.
pub const STAGES: [&str; 5] = ["check", "authorise", "publish", "store", "reply"];

/// Four buckets per power of two of microseconds: upper bounds 1, 2, 3, 4, 5, 6, 7, 8, 10, 12,
/// 14, 16, 20 ... µs; the last bucket holds everything above about 2^31 µs.
const BUCKETS: usize = 4 * 32;

/// One stage's histogram.
struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

fn bucket_of(micros: u64) -> usize {
    if micros < 8 {
        return micros as usize;
    }
    let exponent = 63 - u64::from(micros.leading_zeros()); // >= 3
    let sub = (micros >> (exponent - 2)) & 3;
    (4 * (exponent - 1) + sub).min(BUCKETS as u64 - 1) as usize
}

/// The largest value of a bucket, in microseconds.
fn bucket_bound(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let exponent = index as u64 / 4 + 1;
    let sub = index as u64 % 4;
    ((4 + sub + 1) << (exponent - 2)) - 1
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn record(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }
}

/// The gateway's stage histograms.
pub struct Stages {
    histograms: [Histogram; STAGES.len()],
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            histograms: std::array::from_fn(|_| Histogram::new()),
        }
    }
}

/// The instants one message passed, from its frame read on.
#[derive(Debug, Clone, Copy)]
pub struct Passage {
    pub received: std::time::Instant,
    pub checked: std::time::Instant,
    pub authorised: std::time::Instant,
    pub published: std::time::Instant,
}

impl Stages {
    /// Records one acknowledged message: its passage, when its acknowledgement was seen and
    /// when its ACK was flushed.
    pub fn record(
        &self,
        passage: &Passage,
        stored: std::time::Instant,
        flushed: std::time::Instant,
    ) {
        let points = [
            passage.received,
            passage.checked,
            passage.authorised,
            passage.published,
            stored,
            flushed,
        ];
        for (histogram, pair) in self.histograms.iter().zip(points.windows(2)) {
            histogram.record(pair[1].saturating_duration_since(pair[0]));
        }
    }

    /// Counts so far, per stage.
    pub fn snapshot(&self) -> StageSnapshot {
        StageSnapshot {
            counts: self.histograms.iter().map(Histogram::snapshot).collect(),
        }
    }
}

/// Stage histograms at one moment; subtract two to get a phase.
#[derive(Debug, Clone, Default)]
pub struct StageSnapshot {
    counts: Vec<Vec<u64>>,
}

impl StageSnapshot {
    /// What was recorded after `earlier`.
    pub fn since(&self, earlier: &StageSnapshot) -> StageSnapshot {
        StageSnapshot {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(stage, counts)| {
                    counts
                        .iter()
                        .enumerate()
                        .map(|(bucket, count)| {
                            let before = earlier
                                .counts
                                .get(stage)
                                .and_then(|counts| counts.get(bucket))
                                .copied()
                                .unwrap_or(0);
                            count.saturating_sub(before)
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Messages recorded.
    pub fn messages(&self) -> u64 {
        self.counts
            .first()
            .map(|counts| counts.iter().sum())
            .unwrap_or(0)
    }

    /// The upper bound of the bucket holding quantile `q` (0..1) of `stage`, in milliseconds
    /// (at most a quarter of the value above it); NaN when nothing was recorded.
    pub fn quantile_ms(&self, stage: usize, q: f64) -> f64 {
        let Some(counts) = self.counts.get(stage) else {
            return f64::NAN;
        };
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64 - 1.0) * q).round() as u64;
        let mut seen = 0u64;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return bucket_bound(index) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        // Goal: every value falls in a bucket whose bound is at least the value and at most
        // a quarter above it (exact below 8 µs), and buckets never go backwards.
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 20, (1 << 30) + 12_345]) {
            let index = bucket_of(micros);
            assert!(index >= last || micros > 100_000, "{micros}");
            last = index;
            let bound = bucket_bound(index);
            assert!(bound >= micros, "{micros} -> bucket {index} bound {bound}");
            assert!(bound <= micros + micros / 4, "{micros} -> bound {bound}");
        }
    }

    #[test]
    fn quantiles_of_a_phase() {
        // Goal: a snapshot difference holds only the phase; quantiles land in the right bucket.
        let stages = Stages::default();
        let start = std::time::Instant::now();
        let passage = |check_us: u64| Passage {
            received: start,
            checked: start + Duration::from_micros(check_us),
            authorised: start + Duration::from_micros(check_us),
            published: start + Duration::from_micros(check_us),
        };
        stages.record(&passage(1000), start, start);
        let before = stages.snapshot();
        for check_us in 1..=100 {
            let passage = passage(check_us);
            stages.record(&passage, passage.published, passage.published);
        }
        let phase = stages.snapshot().since(&before);
        assert_eq!(phase.messages(), 100);
        assert_eq!(phase.quantile_ms(0, 0.0), 0.001);
        assert_eq!(phase.quantile_ms(0, 0.5), 0.055); // 51 µs is in the 48..=55 bucket
        assert_eq!(phase.quantile_ms(0, 1.0), 0.111); // 100 µs is in the 96..=111 bucket
        assert_eq!(phase.quantile_ms(3, 0.99), 0.0);
    }
}
