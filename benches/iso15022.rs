//! ISO 15022 codec throughput: parse, parse+validate and write of the MT540 and MT548 samples
//! and the 40 KB MT537, with a baseline measured in the same run.
//!
//! Run: `cargo bench --bench iso15022`. Criterion prints messages/s and MB/s per benchmark;
//! the summary at the end prints ours beside the baseline and the ratio.
//!
//! The baseline is what a typical hand-written parser does (Prowide, the Java reference, cannot
//! be fetched here): split lines, copy every tag and value into owned `String`s, keep blocks in
//! a `HashMap`, track the sequence path as a `String`. It is kept in this file so both run on
//! the same machine in the same process.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ccass::iso15022::{self, MessageType, ParseOptions};
use criterion::{Criterion, Throughput};

struct Sample {
    name: &'static str,
    text: String,
    options: ParseOptions,
}

fn samples() -> Vec<Sample> {
    let read = |file: &str| {
        let raw = std::fs::read_to_string(format!(
            "{}/tests/data/samples/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("read sample");
        iso15022::normalise_line_endings(&raw)
    };
    vec![
        Sample {
            name: "mt540",
            text: read("mt540-pwintegr-1.fin"),
            options: ParseOptions::fin(),
        },
        Sample {
            name: "mt548",
            text: read("mt548-pwexamples-1.fin"),
            options: ParseOptions::fin(),
        },
        Sample {
            name: "mt537-40kb",
            text: read("mt537-pwexamples-1.fin"),
            options: ParseOptions::text_only(Some(MessageType(537))),
        },
    ]
}

/// A typical allocating parser: owned strings everywhere.
#[derive(Default)]
struct BaselineMessage {
    blocks: HashMap<String, String>,
    fields: Vec<BaselineField>,
}

struct BaselineField {
    path: String,
    tag: String,
    qualifier: Option<String>,
    value: String,
}

impl BaselineMessage {
    /// Touch every owned string, as a caller of such a parser would.
    fn size_bytes(&self) -> usize {
        self.blocks.values().map(String::len).sum::<usize>()
            + self
                .fields
                .iter()
                .map(|field| {
                    field.path.len()
                        + field.tag.len()
                        + field.qualifier.as_ref().map_or(0, String::len)
                        + field.value.len()
                })
                .sum::<usize>()
    }
}

fn baseline_parse(input: &str) -> BaselineMessage {
    let mut message = BaselineMessage::default();
    let Some(text_start) = input.find("{4:") else {
        return message;
    };
    let header = &input[..text_start];
    for block in header.split('{').filter(|block| !block.is_empty()) {
        if let Some((id, value)) = block.split_once(':') {
            message
                .blocks
                .insert(id.to_string(), value.trim_end_matches('}').to_string());
        }
    }
    let body = &input[text_start + 3..];
    let end = body.find("\n-}").unwrap_or(body.len());
    let mut path: Vec<String> = Vec::new();
    for line in body[..end].lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(':') {
            let Some((tag, value)) = rest.split_once(':') else {
                continue;
            };
            match tag {
                "16R" => path.push(value.to_string()),
                "16S" => {
                    path.pop();
                }
                _ => {
                    let (qualifier, value) = match value.strip_prefix(':') {
                        Some(generic) => match generic.split_once('/') {
                            Some((qualifier, rest)) => (
                                Some(qualifier.to_string()),
                                rest.trim_start_matches('/').to_string(),
                            ),
                            None => (None, value.to_string()),
                        },
                        None => (None, value.to_string()),
                    };
                    message.fields.push(BaselineField {
                        path: path.join("/"),
                        tag: tag.to_string(),
                        qualifier,
                        value,
                    });
                }
            }
        } else if let Some(last) = message.fields.last_mut() {
            last.value.push('\n');
            last.value.push_str(line);
        }
    }
    message
}

fn benches(criterion: &mut Criterion) {
    for sample in samples() {
        let bytes = sample.text.len() as u64;
        let mut group = criterion.benchmark_group(sample.name);
        group.throughput(Throughput::ElementsAndBytes { elements: 1, bytes });
        group.bench_function("parse", |bencher| {
            bencher.iter(|| iso15022::parse_with_problems(black_box(&sample.text), sample.options))
        });
        group.bench_function("parse+validate", |bencher| {
            bencher.iter(|| iso15022::check(black_box(&sample.text), sample.options))
        });
        let (message, _) = iso15022::parse_with_problems(&sample.text, sample.options);
        let mut out = String::with_capacity(sample.text.len() + 64);
        group.bench_function("write", |bencher| {
            bencher.iter(|| {
                out.clear();
                iso15022::write(black_box(&message), &mut out);
            })
        });
        group.bench_function("baseline-parse", |bencher| {
            bencher.iter(|| baseline_parse(black_box(&sample.text)).size_bytes())
        });
        group.finish();
    }
}

/// CPU time of the calling thread in seconds, from `/proc/thread-self/stat` (utime + stime in
/// clock ticks, assumed 100 per second as on Linux by default); `None` elsewhere. Used so the
/// summary reports one core's throughput even when other processes share the machine.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let system_ticks: f64 = fields.get(12)?.parse().ok()?;
    Some((user_ticks + system_ticks) / 100.0)
}

/// Messages per second of `function` over about `budget`: (per wall-clock second, per second
/// of this thread's CPU time).
fn rate(budget: Duration, mut function: impl FnMut()) -> (f64, f64) {
    let mut iterations: u64 = 0;
    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..64 {
            function();
        }
        iterations += 64;
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_start, thread_cpu_seconds()) {
        (Some(before), Some(after)) if after > before => after - before,
        _ => wall_seconds,
    };
    (
        iterations as f64 / wall_seconds,
        iterations as f64 / cpu_seconds,
    )
}

fn summary(budget: Duration) {
    println!();
    println!(
        "summary, same run, one thread: ours vs a baseline allocating parser; msg/s per second of \
         this thread's cpu time (wall-clock msg/s in brackets, lower when the machine is shared)"
    );
    println!(
        "{:<11} {:>22} {:>22} {:>22} {:>7} {:>10}",
        "message", "parse msg/s", "parse+validate msg/s", "baseline msg/s", "ratio", "parse MB/s"
    );
    for sample in samples() {
        let parse = rate(budget, || {
            black_box(iso15022::parse_with_problems(
                black_box(&sample.text),
                sample.options,
            ));
        });
        let checked = rate(budget, || {
            black_box(iso15022::check(black_box(&sample.text), sample.options));
        });
        let baseline = rate(budget, || {
            black_box(baseline_parse(black_box(&sample.text)).size_bytes());
        });
        let megabytes = parse.1 * sample.text.len() as f64 / 1e6;
        let cell = |(wall, cpu): (f64, f64)| format!("{cpu:.0} ({wall:.0})");
        println!(
            "{:<11} {:>22} {:>22} {:>22} {:>6.1}x {:>10.0}",
            sample.name,
            cell(parse),
            cell(checked),
            cell(baseline),
            parse.1 / baseline.1,
            megabytes
        );
    }
}

fn main() {
    let benchmarking = std::env::args().any(|argument| argument == "--bench");
    let profiling = std::env::args().any(|argument| argument == "--profile-time");
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    let budget = if benchmarking {
        Duration::from_millis(2_000)
    } else {
        Duration::from_millis(10)
    };
    if !profiling {
        summary(budget);
    }
}
