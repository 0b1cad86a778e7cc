//! `ccass bench gateway`: acknowledged MT540s per second and ACK latency through the gateway,
//! beside raw JetStream publish-and-ack measured in the same run on the same server with the
//! same message size and headers.
//!
//! Setup, all in this process: a CA and certificates in a temporary folder, the gateway on
//! 127.0.0.1:0, and the auth service (the real one: LDAP from `[directory]`, its audit trail
//! in Postgres from `[hostdb]`), so every message is authorised as in production, through the
//! gateway's cached [`crate::auth::AuthClient`]. Sessions log in as `ops1` of B01234, B05678
//! and C00123 (users of the development directory, `tests/data/ldap/directory.ldif`), round
//! robin. Messages go to the INBOUND stream of the configured NATS server (created with the
//! catalogue when missing); afterwards the bench purges those participants' MT540 subjects
//! from INBOUND, so run it against a development server only. A purge leaves the message ids
//! in INBOUND's duplicate window (10 minutes): a bench started sooner shares nats-server with
//! the last one's ~1.5 M ids (about 0.9 GB there).
//!
//! Steps: with `--rate`, open loop at that rate for `--seconds` (latency from each message's
//! scheduled send time, so a stall is not hidden); without it, first the maximum (each
//! session keeps 4096 / sessions messages unanswered, at most `gateway.in_flight_max`; raw
//! JetStream the same window per sender), then open loop at half of the gateway's maximum.
//!
//! Fairness: the clients (PSS sessions and raw JetStream senders) run on a runtime and threads
//! of their own, so their TLS work competes with the gateway for the CPUs as another process
//! would, not inside the gateway's task queues. A sender only sends; another task awaits its
//! answers, so a slow answer never holds back the next send. Open loop is paced by a thread
//! of its own ([`Pacer`]: within ~100 µs, not tokio's millisecond timer) and latency counts
//! from each message's scheduled send time; the `lag` column says how late the bench itself
//! sent and `pacer` how late the pacer thread released the message, both part of every row's
//! latency, raw and gateway alike. The `cpu` column says how busy the machine was during the
//! phase and with what: this process (gateway and load generator) or the rest (nats-server,
//! other jobs); a p99 measured while the rest takes most of the CPUs measures them. The
//! gateway's own stages ([`super::stages`]) follow.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::protocol::Outcome;
use super::stages::{STAGES, StageSnapshot};
use super::{Gateway, GatewayError};
use crate::bus::inbound as inbound_headers;
use crate::bus::subjects::{self, MessageTypeNumber};
use crate::config::Config;
use crate::ids::ParticipantId;
use crate::pki::{self, PkiConfig};
use crate::pss::{self, PssConfig, PssError, Session};
use crate::telemetry::cpu;

/// Participants whose `ops1` user holds `si.input` in the development directory.
const PARTICIPANTS: [&str; 3] = ["B01234", "B05678", "C00123"];
const USER: &str = "ops1";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub sessions: usize,
    /// Messages per second across all sessions; `None` finds the maximum first.
    pub rate_per_s: Option<u64>,
    pub seconds: u64,
    pub nats_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Catalogue(#[from] crate::bus::catalogue::CatalogueError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Pss(#[from] PssError),
    #[error("bench: {0}")]
    Failed(String),
}

/// One measured phase.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub acked: u64,
    pub refused: u64,
    pub elapsed: Duration,
    /// Sorted, microseconds: from each message's scheduled (open loop) or actual (window)
    /// send time to its answer.
    latencies_us: Vec<u32>,
    /// Sorted, microseconds: how late the bench itself sent each message after its scheduled
    /// time (the pacer's lag plus waking the sender's task); part of the latencies above, not
    /// the server's. Empty in a window (closed loop) phase.
    send_lags_us: Vec<u32>,
    /// Sorted, microseconds: how late the pacer thread released each message after its
    /// scheduled time; part of `send_lags_us`. Empty in a window phase.
    pacer_lags_us: Vec<u32>,
    /// Where the machine's CPUs went during the phase (Linux only).
    pub cpu: Option<CpuUse>,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0..1) in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// The bench's own sending lateness at quantile `q` (0..1) in milliseconds.
    pub fn send_lag_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.send_lags_us, q)
    }

    /// The pacer thread's own lateness at quantile `q` (0..1) in milliseconds.
    pub fn pacer_lag_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.pacer_lags_us, q)
    }

    fn merge(parts: Vec<Measurement>, elapsed: Duration, pacer_lags_us: Vec<u32>) -> Measurement {
        let sorted = |values: &dyn Fn(&Measurement) -> &Vec<u32>| {
            let mut all: Vec<u32> = parts
                .iter()
                .flat_map(|part| values(part).iter().copied())
                .collect();
            all.sort_unstable();
            all
        };
        Measurement {
            acked: parts.iter().map(|part| part.acked).sum(),
            refused: parts.iter().map(|part| part.refused).sum(),
            elapsed,
            latencies_us: sorted(&|part| &part.latencies_us),
            send_lags_us: sorted(&|part| &part.send_lags_us),
            pacer_lags_us: {
                let mut lags = pacer_lags_us;
                lags.sort_unstable();
                lags
            },
            cpu: None,
        }
    }
}

/// CPU time of the whole machine and of this process (gateway, load generator and bench
/// together), from Linux's `/proc`, in clock ticks summed over all CPUs.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    machine_busy_ticks: u64,
    machine_total_ticks: u64,
    process_ticks: u64,
    cpus: usize,
}

impl CpuSample {
    /// `None` where `/proc` is not Linux's.
    fn now() -> Option<CpuSample> {
        let machine = cpu::machine_ticks()?;
        Some(CpuSample {
            machine_busy_ticks: machine.busy,
            machine_total_ticks: machine.total,
            process_ticks: cpu::process_ticks()?,
            cpus: machine.cpus,
        })
    }

    fn since(&self, before: &CpuSample) -> Option<CpuUse> {
        let total = self
            .machine_total_ticks
            .checked_sub(before.machine_total_ticks)
            .filter(|ticks| *ticks > 0)? as f64;
        let cores = |ticks: u64| ticks as f64 / total * self.cpus as f64;
        Some(CpuUse {
            cpus: self.cpus,
            machine_busy_cores: cores(
                self.machine_busy_ticks
                    .saturating_sub(before.machine_busy_ticks),
            ),
            process_cores: cores(self.process_ticks.saturating_sub(before.process_ticks)),
        })
    }
}

/// Where the CPUs went during a phase, in CPUs' worth (2.0 = both CPUs of a 2-CPU machine).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub cpus: usize,
    /// Everything on the machine.
    pub machine_busy_cores: f64,
    /// This process: the gateway, the load generator and the bench.
    pub process_cores: f64,
}

impl CpuUse {
    /// Everything else: nats-server (when it runs here) and other jobs.
    pub fn others_cores(&self) -> f64 {
        (self.machine_busy_cores - self.process_cores).max(0.0)
    }
}

/// Quantile `q` (0..1) of sorted microseconds, in milliseconds; NaN when empty.
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_us[index.min(sorted_us.len() - 1)]) / 1000.0
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub sessions: usize,
    pub seconds: u64,
    pub message_bytes: usize,
    pub nats_url: String,
    /// (raw JetStream, gateway) at full speed, when the maximum was searched.
    pub maximum: Option<(Measurement, Measurement)>,
    /// Messages each session (and each raw sender) keeps unanswered in the maximum phase.
    pub window: usize,
    pub rate_per_s: u64,
    /// (raw JetStream, gateway) open loop at `rate_per_s`.
    pub paced: (Measurement, Measurement),
    /// The gateway's own stages ([`super::stages`]) during the maximum and the paced phase.
    pub stages: (Option<StageSnapshot>, StageSnapshot),
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gateway bench: {} sessions, {} s per phase, MT540 of {} bytes, nats {}",
            self.sessions, self.seconds, self.message_bytes, self.nats_url
        )?;
        writeln!(
            f,
            "{:<44} {:>10} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>16}",
            "phase",
            "acked/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "refused",
            "lag p99 ms",
            "pacer p99",
            "cpu all/own/rest"
        )?;
        let mut row = |label: &str, m: &Measurement| {
            let lag = |value: f64| {
                if value.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{value:.3}")
                }
            };
            writeln!(
                f,
                "{:<44} {:>10.0} {:>8.3} {:>8.3} {:>9.3} {:>8} {:>10} {:>10} {:>16}",
                label,
                m.per_second(),
                m.latency_ms(0.5),
                m.latency_ms(0.99),
                m.latency_ms(0.999),
                m.refused,
                lag(m.send_lag_ms(0.99)),
                lag(m.pacer_lag_ms(0.99)),
                m.cpu.map_or_else(
                    || "-".to_owned(),
                    |cpu| format!(
                        "{:.2}/{:.2}/{:.2}",
                        cpu.machine_busy_cores,
                        cpu.process_cores,
                        cpu.others_cores()
                    )
                )
            )
        };
        if let Some((raw, gateway)) = &self.maximum {
            row("max: raw JetStream publish+ack (baseline)", raw)?;
            row("max: gateway TLS session ACK", gateway)?;
        }
        let (raw, gateway) = &self.paced;
        row(
            &format!("{} msg/s: raw JetStream (baseline)", self.rate_per_s),
            raw,
        )?;
        row(
            &format!("{} msg/s: gateway TLS session ACK", self.rate_per_s),
            gateway,
        )?;
        writeln!(
            f,
            "gateway adds at p99: {:.3} ms (target <= 0.5 ms); targets: >= 50000 acked/s at >= 16 sessions, p99 <= 2 ms at half the maximum",
            gateway.latency_ms(0.99) - raw.latency_ms(0.99)
        )?;
        match &self.maximum {
            Some((_, gateway)) => writeln!(
                f,
                "maximum rate: the gateway's acked/s with each session keeping {} messages unanswered (closed loop, {} s) = {:.0}/s; half of it: {} msg/s open loop (raw JetStream: the same window per sender, then the same rate)",
                self.window,
                self.seconds,
                gateway.per_second(),
                self.rate_per_s
            )?,
            None => writeln!(
                f,
                "rate: {} msg/s open loop, from --rate (no maximum searched)",
                self.rate_per_s
            )?,
        }
        writeln!(
            f,
            "open loop: a pacer thread schedules message k at start + k/rate, round robin over the {} senders; latency counts from that scheduled time",
            self.sessions
        )?;
        writeln!(
            f,
            "lag: how late a sender wrote a message after its scheduled time (part of the latencies); pacer: how late the pacer thread released it (part of lag)"
        )?;
        if let Some(cpus) = self.paced.1.cpu.map(|cpu| cpu.cpus) {
            writeln!(
                f,
                "cpu: CPUs' worth busy during the phase (of {cpus}): the whole machine / this process (gateway, load generator) / the rest (nats-server, other jobs)"
            )?;
        }
        writeln!(
            f,
            "inside the gateway, per stage (bucket bounds, ms), p50 / p99 / p99.9:"
        )?;
        let phases = [
            ("max", self.stages.0.as_ref()),
            ("paced", Some(&self.stages.1)),
        ];
        for (label, stages) in phases {
            let Some(stages) = stages else { continue };
            write!(f, "  {label:<6} {:>8} msgs", stages.messages())?;
            for (index, stage) in STAGES.iter().enumerate() {
                write!(
                    f,
                    "  {stage} {:.3}/{:.3}/{:.3}",
                    stages.quantile_ms(index, 0.5),
                    stages.quantile_ms(index, 0.99),
                    stages.quantile_ms(index, 0.999)
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// An MT540 (the public sample `mt540-pwintegr-1.fin`) from `logical_terminal` with `reference`.
fn mt540(logical_terminal: &str, reference: &str) -> String {
    format!(
        "{{1:F01{logical_terminal}0000000000}}{{2:I540FOOSGB20XGSTN}}{{3:{{108:00000000000007}}}}{{4:\r\n\
:16R:GENL\r\n:20C::SEME//{reference}\r\n:23G:NEWM\r\n:16S:GENL\r\n\
:16R:TRADDET\r\n:98A::SETT//20090109\r\n:98A::TRAD//20090109\r\n\
:35B:ISIN IT0009999001\r\nC1234567\r\nFOO SPA COMMON\r\n:16S:TRADDET\r\n\
:16R:FIAC\r\n:36B::SETT//UNIT/100000,\r\n:97A::SAFE//AAA01\r\n:16S:FIAC\r\n\
:16R:SETDET\r\n:22F::SETR//TRAD\r\n:16R:SETPRTY\r\n:95Q::DEAG//FOOEITM0\r\n:16S:SETPRTY\r\n\
:16R:SETPRTY\r\n:95P::SELL//FOONCHZ080A\r\n:97A::SAFE//999999999\r\n:16S:SETPRTY\r\n\
:16R:SETPRTY\r\n:95Q::PSET//ZZZ\r\n:16S:SETPRTY\r\n:16S:SETDET\r\n-}}"
    )
}

/// How one sender paces itself.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Keep this many messages unanswered, as fast as answers come.
    Window(usize),
    /// Open loop at this many messages per second across all senders ([`Pacer`]).
    Rate(f64),
}

/// Scheduled send times of an open-loop run: message `k` is due at `start + k / rate`.
fn due(start: Instant, rate: f64, index: u64) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate)
}

/// The open-loop schedule of one phase, kept by an OS thread of its own (`bench-pacer`) rather
/// than by tokio's timer, which wakes in whole milliseconds: message `k` of the run is due at
/// `start + k / rate` ([`due`]) and goes to sender `k % senders` (so each sender sends every
/// `senders / rate` seconds, the senders interleaved). The thread sleeps until the next due
/// time, but at least [`PACER_TICK`] after its last wake (Linux adds its timer slack, ~50 µs,
/// and waits for a free CPU), and then releases every message that is due by now, each with
/// its scheduled instant: when the thread or a
/// sender is late, the messages are sent late but keep their scheduled times, so the latency
/// counted from them includes the delay (no coordinated omission), and nothing is skipped.
/// Ends after `duration` and closes the senders' channels.
struct Pacer {
    thread: std::thread::JoinHandle<Vec<u32>>,
}

/// The pacer's shortest sleep: above 10,000 messages/s it releases them in batches rather
/// than waking (and waking the senders' runtime) once per message, whose context switches
/// cost more CPU than the messages on this 2-CPU virtual machine. At most this much (plus
/// timer slack) is added to a message's lag, and counted in its latency.
const PACER_TICK: Duration = Duration::from_micros(100);

impl Pacer {
    /// Starts the schedule at `start`; returns the pacer and each sender's schedule.
    fn start(
        start: Instant,
        rate: f64,
        duration: Duration,
        senders: usize,
    ) -> Result<(Pacer, Vec<mpsc::UnboundedReceiver<Instant>>), BenchError> {
        let (schedules, receivers): (Vec<_>, Vec<_>) =
            (0..senders).map(|_| mpsc::unbounded_channel()).unzip();
        let end = start + duration;
        let thread = std::thread::Builder::new()
            .name("bench-pacer".to_owned())
            .spawn(move || {
                let mut lags_us = Vec::new();
                let mut index = 0u64;
                let mut released = start;
                loop {
                    let next = due(start, rate, index);
                    if next >= end {
                        break;
                    }
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next.max(released + PACER_TICK) - now);
                        continue;
                    }
                    released = now;
                    while due(start, rate, index) <= now && due(start, rate, index) < end {
                        let scheduled = due(start, rate, index);
                        let sender = &schedules[(index % schedules.len() as u64) as usize];
                        lags_us.push(micros(now - scheduled));
                        // A sender that stopped (its session failed) reports its own error.
                        let _ = sender.send(scheduled);
                        index += 1;
                    }
                }
                lags_us
            })
            .map_err(|error| BenchError::Failed(format!("pacer thread: {error}")))?;
        Ok((Pacer { thread }, receivers))
    }

    /// The pacer's lateness per message, microseconds (once its senders' channels closed).
    fn lags_us(self) -> Result<Vec<u32>, BenchError> {
        self.thread
            .join()
            .map_err(|_| BenchError::Failed("pacer thread panicked".to_owned()))
    }
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// A unique reference prefix per run and phase: 4 characters.
fn run_tag(phase: u32) -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    format!("{:03X}{phase:X}", seconds % 4096)
}

pub async fn run(config: &Config, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    if options.sessions == 0 || options.seconds == 0 {
        return Err(BenchError::Failed(
            "--sessions and --seconds must be at least 1".to_owned(),
        ));
    }
    let mut bus = config.bus.clone();
    if let Some(url) = &options.nats_url {
        bus.url = url.clone();
    }
    let client = crate::bus::connect(&bus, "ccass-bench-gateway").await?;
    let jetstream = crate::bus::jetstream(&bus, client.clone());
    let catalogue = crate::bus::catalogue::Catalogue::embedded()?;
    crate::bus::init::run(&bus, &jetstream, &catalogue).await?;

    let (stop_auth, auth_stopped) = oneshot::channel::<()>();
    let auth = tokio::spawn(crate::auth::service::run(
        config.clone(),
        client.clone(),
        async {
            let _ = auth_stopped.await;
        },
    ));

    let folder = std::env::temp_dir().join(format!("ccass-bench-gateway-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let outcome = measure(config, options, &bus, &client, &jetstream, &folder).await;
    let _ = stop_auth.send(());
    let _ = auth.await;
    let _ = std::fs::remove_dir_all(&folder);
    purge(&jetstream).await;
    outcome
}

async fn measure(
    config: &Config,
    options: &BenchOptions,
    bus: &crate::bus::BusConfig,
    client: &async_nats::Client,
    jetstream: &async_nats::jetstream::Context,
    folder: &std::path::Path,
) -> Result<BenchReport, BenchError> {
    let pki = PkiConfig {
        dir: folder.join("ca"),
        ..config.pki.clone()
    };
    pki::init(&pki)?;
    let server = pki::issue_server(&pki, &["localhost".to_owned()], folder)?;
    let mut gateway_config = config.gateway.clone();
    gateway_config.listen_addr = "127.0.0.1:0".to_owned();
    gateway_config.certificate_path = server.certificate_path;
    gateway_config.key_path = server.key_path;
    gateway_config.connections_per_participant_max = gateway_config
        .connections_per_participant_max
        .max(options.sessions);
    gateway_config.connections_max = gateway_config.connections_max.max(options.sessions * 2);
    // One JetStream context admits 5,000 unacknowledged publishes (async-nats' default); the
    // raw senders await their own acks, so the windows together stay below that.
    let window = (4096 / options.sessions).clamp(1, gateway_config.in_flight_max);
    let listener = Gateway::bind(&gateway_config).await?;
    let address = listener
        .local_addr()
        .map_err(|error| BenchError::Failed(format!("gateway address: {error}")))?;
    let gateway = Gateway::new(
        gateway_config,
        &pki,
        crate::auth::AuthClient::new(client.clone(), &config.auth),
        jetstream.clone(),
    )?;
    let (stop_gateway, gateway_stopped) = oneshot::channel::<()>();
    let observed = gateway.clone();
    let serving = tokio::spawn(gateway.serve(listener, async {
        let _ = gateway_stopped.await;
    }));
    let mut pss_configs = Vec::new();
    for participant in PARTICIPANTS {
        let issued = pki::issue_client(&pki, participant, USER, folder)?;
        pss_configs.push(PssConfig {
            address: address.to_string(),
            server_name: "localhost".to_owned(),
            ca_certificate_path: pki.ca_certificate_path(),
            certificate_path: issued.certificate_path,
            key_path: issued.key_path,
            frame_bytes_max: config.gateway.frame_bytes_max,
            in_flight_max: window,
        });
    }

    let duration = Duration::from_secs(options.seconds);
    let load = Load::start()?;
    let outcome = async {
        // Warm up: every session logs in and has one message authorised and stored.
        load.drive_gateway(
            &pss_configs,
            options.sessions,
            Pace::Window(1),
            Duration::from_millis(300),
            &run_tag(0),
        )
        .await?;
        let phase = Phase {
            load: &load,
            jetstream,
            pss_configs: &pss_configs,
            sessions: options.sessions,
            duration,
            observed: &observed,
        };
        let maximum = match options.rate_per_s {
            Some(_) => None,
            None => Some(phase.run(Pace::Window(window), 1).await?),
        };
        let rate_per_s = match (options.rate_per_s, &maximum) {
            (Some(rate), _) => rate,
            (None, Some((_, gateway, _))) => (gateway.per_second() / 2.0).max(1.0) as u64,
            (None, None) => 1,
        };
        let (raw, gateway, paced_stages) = phase.run(Pace::Rate(rate_per_s as f64), 3).await?;
        let (maximum, maximum_stages) = match maximum {
            Some((raw, gateway, stages)) => (Some((raw, gateway)), Some(stages)),
            None => (None, None),
        };
        Ok::<_, BenchError>(BenchReport {
            sessions: options.sessions,
            seconds: options.seconds,
            message_bytes: mt540("B01234XXXXXX", "R0000000000000").len(),
            nats_url: bus.url.clone(),
            maximum,
            window,
            rate_per_s,
            paced: (raw, gateway),
            stages: (maximum_stages, paced_stages),
        })
    }
    .await;

    load.runtime.shutdown_background();
    let _ = stop_gateway.send(());
    let _ = serving.await;
    outcome
}

/// The load generator: its own runtime and threads, so the clients' TLS work competes with
/// the gateway for the CPUs as another process would, not inside the gateway's task queues
/// (in production the PSS runs elsewhere).
struct Load {
    runtime: tokio::runtime::Runtime,
}

impl Load {
    fn start() -> Result<Load, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-load")
            .enable_all()
            .build()
            .map_err(|error| BenchError::Failed(format!("load runtime: {error}")))?;
        Ok(Load { runtime })
    }

    async fn drive_gateway(
        &self,
        configs: &[PssConfig],
        sessions: usize,
        pace: Pace,
        duration: Duration,
        tag: &str,
    ) -> Result<Measurement, BenchError> {
        let (configs, tag) = (configs.to_vec(), tag.to_owned());
        self.measured(async move { drive_gateway(&configs, sessions, pace, duration, &tag).await })
            .await
    }

    async fn drive_jetstream(
        &self,
        jetstream: &async_nats::jetstream::Context,
        senders: usize,
        pace: Pace,
        duration: Duration,
        tag: &str,
    ) -> Result<Measurement, BenchError> {
        let (jetstream, tag) = (jetstream.clone(), tag.to_owned());
        self.measured(
            async move { drive_jetstream(&jetstream, senders, pace, duration, &tag).await },
        )
        .await
    }

    /// Runs one phase's load on the load runtime, with the CPU used meanwhile.
    async fn measured(
        &self,
        load: impl Future<Output = Result<Measurement, BenchError>> + Send + 'static,
    ) -> Result<Measurement, BenchError> {
        let before = CpuSample::now();
        let mut measurement = self
            .runtime
            .spawn(load)
            .await
            .map_err(|error| BenchError::Failed(format!("load task: {error}")))??;
        measurement.cpu = cpu_since(before);
        Ok(measurement)
    }
}

fn cpu_since(before: Option<CpuSample>) -> Option<CpuUse> {
    CpuSample::now()
        .zip(before)
        .and_then(|(after, before)| after.since(&before))
}

/// One measured phase: raw JetStream, then the gateway, at the same pace.
struct Phase<'a> {
    load: &'a Load,
    jetstream: &'a async_nats::jetstream::Context,
    pss_configs: &'a [PssConfig],
    sessions: usize,
    duration: Duration,
    observed: &'a Gateway,
}

impl Phase<'_> {
    /// Runs raw JetStream (run tag `first_tag`) then the gateway (`first_tag + 1`), each from
    /// an empty INBOUND for the bench participants (a fast machine fills the stream's
    /// max_bytes within a run otherwise: NAK G03); returns both and the gateway's stages.
    async fn run(
        &self,
        pace: Pace,
        first_tag: u32,
    ) -> Result<(Measurement, Measurement, StageSnapshot), BenchError> {
        purge(self.jetstream).await;
        let raw = self
            .load
            .drive_jetstream(
                self.jetstream,
                self.sessions,
                pace,
                self.duration,
                &run_tag(first_tag),
            )
            .await?;
        purge(self.jetstream).await;
        let before = self.observed.stages();
        let gateway = self
            .load
            .drive_gateway(
                self.pss_configs,
                self.sessions,
                pace,
                self.duration,
                &run_tag(first_tag + 1),
            )
            .await?;
        Ok((raw, gateway, self.observed.stages().since(&before)))
    }
}

/// Removes the bench participants' MT540s from INBOUND.
async fn purge(jetstream: &async_nats::jetstream::Context) {
    let Ok(stream) = jetstream.get_stream("INBOUND").await else {
        return;
    };
    for participant in PARTICIPANTS {
        let Ok(id) = ParticipantId::parse(participant) else {
            continue;
        };
        let Some(mt) = MessageTypeNumber::new(540) else {
            continue;
        };
        let subject = subjects::inbound(&id, mt);
        if let Err(error) = stream.purge().filter(subject.as_str()).await {
            tracing::warn!(%error, subject = subject.as_str(), "bench: purge failed");
        }
    }
}

/// Each sender's schedule: from a [`Pacer`] in open loop, none with a window.
#[allow(clippy::type_complexity)]
fn schedules(
    pace: Pace,
    start: Instant,
    duration: Duration,
    senders: usize,
) -> Result<(Option<Pacer>, Vec<Option<mpsc::UnboundedReceiver<Instant>>>), BenchError> {
    match pace {
        Pace::Window(_) => Ok((None, (0..senders).map(|_| None).collect())),
        Pace::Rate(rate) => {
            let (pacer, receivers) = Pacer::start(start, rate, duration, senders)?;
            Ok((Some(pacer), receivers.into_iter().map(Some).collect()))
        }
    }
}

fn pacer_lags(pacer: Option<Pacer>) -> Result<Vec<u32>, BenchError> {
    pacer.map_or(Ok(Vec::new()), Pacer::lags_us)
}

/// Sessions through the gateway; latency from send (or scheduled send) to ACK.
async fn drive_gateway(
    configs: &[PssConfig],
    sessions: usize,
    pace: Pace,
    duration: Duration,
    tag: &str,
) -> Result<Measurement, BenchError> {
    let mut connected = Vec::new();
    for index in 0..sessions {
        let config = &configs[index % configs.len()];
        let participant = PARTICIPANTS[index % PARTICIPANTS.len()];
        let terminal = pss::default_logical_terminal(participant);
        let session = Session::connect(config, &terminal, 0).await?;
        connected.push((session, terminal));
    }
    let start = Instant::now();
    let (pacer, schedules) = schedules(pace, start, duration, sessions)?;
    let mut tasks = tokio::task::JoinSet::new();
    for ((index, (session, terminal)), mut schedule) in
        connected.into_iter().enumerate().zip(schedules)
    {
        let reference_prefix = format!("{tag}{index:02}");
        tasks.spawn(async move {
            let (mut writer, mut reader) = session.into_split();
            let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
            let permits = Arc::new(Semaphore::new(match pace {
                Pace::Window(window) => window,
                Pace::Rate(_) => 0,
            }));
            let windowed = matches!(pace, Pace::Window(_));
            let reading = {
                let permits = permits.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let (mut acked, mut refused) = (0u64, 0u64);
                    while let Some(sent) = sent_rx.recv().await {
                        let reply = reader.reply().await?;
                        latencies.push(micros(sent.elapsed()));
                        match reply.outcome {
                            Outcome::Ack => acked += 1,
                            Outcome::Nak { .. } => refused += 1,
                        }
                        if windowed {
                            permits.add_permits(1);
                        }
                    }
                    Ok::<_, PssError>((acked, refused, latencies))
                })
            };
            let mut written = 0u64;
            let mut send_lags = Vec::new();
            loop {
                match schedule.as_mut() {
                    None => {
                        if start.elapsed() >= duration {
                            break;
                        }
                        let Ok(permit) = permits.acquire().await else {
                            break;
                        };
                        permit.forget();
                        let mut burst = 1;
                        while let Ok(permit) = permits.try_acquire() {
                            permit.forget();
                            burst += 1;
                        }
                        let now = Instant::now();
                        for _ in 0..burst {
                            let message =
                                mt540(&terminal, &format!("{reference_prefix}{written:08}"));
                            writer.write(message.as_bytes()).await?;
                            written += 1;
                            let _ = sent_tx.send(now);
                        }
                        writer.flush().await?;
                    }
                    Some(schedule) => {
                        // Everything the pacer released by now, then one flush.
                        let Some(scheduled) = schedule.recv().await else {
                            break;
                        };
                        let mut next = Some(scheduled);
                        while let Some(scheduled) = next.take() {
                            let message =
                                mt540(&terminal, &format!("{reference_prefix}{written:08}"));
                            send_lags.push(micros(scheduled.elapsed()));
                            writer.write(message.as_bytes()).await?;
                            written += 1;
                            let _ = sent_tx.send(scheduled);
                            next = schedule.try_recv().ok();
                        }
                        writer.flush().await?;
                    }
                }
            }
            drop(sent_tx);
            let outcome = reading
                .await
                .map_err(|error| PssError::Protocol(format!("reader task: {error}")))??;
            let _ = writer.close().await;
            Ok::<_, PssError>(Measurement {
                acked: outcome.0,
                refused: outcome.1,
                elapsed: Duration::ZERO,
                latencies_us: outcome.2,
                send_lags_us: send_lags,
                pacer_lags_us: Vec::new(),
                cpu: None,
            })
        });
    }
    let mut parts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        parts.push(joined.map_err(|error| BenchError::Failed(format!("session task: {error}")))??);
    }
    let elapsed = start.elapsed();
    Ok(Measurement::merge(parts, elapsed, pacer_lags(pacer)?))
}

/// Raw JetStream: the same message, headers and subjects, published pipelined by `senders`
/// tasks on one connection (as the gateway's sessions share one). Each sender only publishes
/// (on schedule, or while its window has room); a task of its own awaits the acknowledgements
/// in order, so a slow acknowledgement never holds back the next publish.
async fn drive_jetstream(
    jetstream: &async_nats::jetstream::Context,
    senders: usize,
    pace: Pace,
    duration: Duration,
    tag: &str,
) -> Result<Measurement, BenchError> {
    let start = Instant::now();
    let (pacer, schedules) = schedules(pace, start, duration, senders)?;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut schedule) in schedules.into_iter().enumerate() {
        let jetstream = jetstream.clone();
        let participant = PARTICIPANTS[index % PARTICIPANTS.len()];
        let terminal = pss::default_logical_terminal(participant);
        let reference_prefix = format!("{tag}{index:02}");
        let subject = ParticipantId::parse(participant)
            .ok()
            .zip(MessageTypeNumber::new(540))
            .map(|(id, mt)| subjects::inbound(&id, mt))
            .ok_or_else(|| BenchError::Failed("bench participant".to_owned()))?;
        tasks.spawn(async move {
            let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(
                Instant,
                Option<async_nats::jetstream::context::PublishAckFuture>,
            )>();
            let permits = Arc::new(Semaphore::new(match pace {
                Pace::Window(window) => window,
                Pace::Rate(_) => 0,
            }));
            let windowed = matches!(pace, Pace::Window(_));
            let collecting = {
                let permits = permits.clone();
                tokio::spawn(async move {
                    let (mut acked, mut refused) = (0u64, 0u64);
                    let mut latencies = Vec::new();
                    while let Some((sent, ack)) = sent_rx.recv().await {
                        let stored = match ack {
                            Some(ack) => ack.await.is_ok(),
                            None => false,
                        };
                        latencies.push(micros(sent.elapsed()));
                        if stored {
                            acked += 1;
                        } else {
                            refused += 1;
                        }
                        if windowed {
                            permits.add_permits(1);
                        }
                    }
                    (acked, refused, latencies)
                })
            };
            let mut send_lags = Vec::new();
            let mut written = 0u64;
            loop {
                let scheduled = match schedule.as_mut() {
                    None => {
                        if start.elapsed() >= duration {
                            break;
                        }
                        let Ok(permit) = permits.acquire().await else {
                            break;
                        };
                        permit.forget();
                        Instant::now()
                    }
                    Some(schedule) => {
                        let Some(scheduled) = schedule.recv().await else {
                            break;
                        };
                        scheduled
                    }
                };
                let mut headers = async_nats::HeaderMap::new();
                let reference = format!("{reference_prefix}{written:08}");
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{participant}:{reference}").as_str(),
                );
                headers.insert(
                    inbound_headers::INPUT_SEQUENCE,
                    written.to_string().as_str(),
                );
                headers.insert(
                    inbound_headers::USER,
                    format!("{participant}.{USER}").as_str(),
                );
                headers.insert(inbound_headers::CHANNEL, "bench");
                let payload = Bytes::from(mt540(&terminal, &reference));
                send_lags.push(micros(scheduled.elapsed()));
                let ack = jetstream
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .ok();
                written += 1;
                let _ = sent_tx.send((scheduled, ack));
            }
            drop(sent_tx);
            let (acked, refused, latencies) = collecting
                .await
                .map_err(|error| BenchError::Failed(format!("ack collector: {error}")))?;
            Ok::<_, BenchError>(Measurement {
                acked,
                refused,
                elapsed: Duration::ZERO,
                latencies_us: latencies,
                send_lags_us: send_lags,
                pacer_lags_us: Vec::new(),
                cpu: None,
            })
        });
    }
    let mut parts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        parts.push(joined.map_err(|error| BenchError::Failed(format!("sender task: {error}")))??);
    }
    let elapsed = start.elapsed();
    Ok(Measurement::merge(parts, elapsed, pacer_lags(pacer)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_message_is_a_valid_mt540_and_percentiles_are_exact() {
        // Goal: the bench sends what the gateway accepts, and reads percentiles right. Method:
        // check the message with the codec; percentiles of 1..=1000 µs.
        let text = mt540("B01234XXXXXX", "R0000000000001");
        let report = crate::iso15022::check(&text, crate::iso15022::ParseOptions::fin());
        assert!(
            !report
                .problems
                .iter()
                .any(|problem| problem.severity() == crate::iso15022::Severity::Error),
            "{:?}",
            report.problems
        );
        let measurement = Measurement::merge(
            vec![Measurement {
                acked: 1000,
                refused: 0,
                elapsed: Duration::ZERO,
                latencies_us: (1..=1000).rev().collect(),
                send_lags_us: vec![3, 1, 2],
                pacer_lags_us: Vec::new(),
                cpu: None,
            }],
            Duration::from_secs(2),
            vec![7, 5],
        );
        assert_eq!(measurement.per_second(), 500.0);
        assert_eq!(measurement.latency_ms(0.5), 0.501);
        assert_eq!(measurement.latency_ms(0.99), 0.99);
        assert_eq!(measurement.send_lag_ms(1.0), 0.003);
        assert_eq!(measurement.pacer_lag_ms(0.0), 0.005);
    }

    #[test]
    fn the_pacer_releases_every_message_once_in_order_round_robin() {
        // Goal: open loop sends exactly rate x duration messages, none skipped when late,
        // each sender its share in schedule order. Method: 2,000/s for 250 ms over 3 senders.
        let start = Instant::now();
        let (pacer, receivers) =
            Pacer::start(start, 2000.0, Duration::from_millis(250), 3).unwrap();
        let mut counts = Vec::new();
        for mut receiver in receivers {
            let mut scheduled = Vec::new();
            while let Some(due) = receiver.blocking_recv() {
                scheduled.push(due);
            }
            assert!(scheduled.windows(2).all(|pair| pair[0] < pair[1]));
            counts.push(scheduled.len());
        }
        assert_eq!(counts, vec![167, 167, 166]);
        let lags = pacer.lags_us().unwrap();
        assert_eq!(lags.len(), 500);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_use_is_read_from_proc() {
        // Goal: the report's CPU column has figures on Linux. Method: two samples around a
        // short busy loop; this process cannot have used more than the machine.
        let before = CpuSample::now().unwrap();
        let busy_until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < busy_until {
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_millis(20));
        let cpu = CpuSample::now().unwrap().since(&before).unwrap();
        assert!(cpu.cpus >= 1);
        assert!(cpu.machine_busy_cores <= cpu.cpus as f64 + 1e-9, "{cpu:?}");
        assert!(
            cpu.process_cores >= 0.0 && cpu.others_cores() >= 0.0,
            "{cpu:?}"
        );
    }
}
