//! `ccass demo`: a settlement day end to end through the real channels.
//!
//! ```text
//!  recreate [demo] database ─► migrate ─► seed ─► bus init ─► CA + certificates (pki)
//!  + a PKCS#12 browser bundle per PSS user ─► the system in-process: everything of
//!  `ccass up` + the gateway on a loopback port
//!  ─► trade day on ccass.v1.trades.{market} (cns::feed generator) ─► captured and netted
//!  ─► the settlement day on the compressed clock (timeline.rs), by the configured times:
//!     08:00 input opens: PSS sessions (ccass::pss over TLS) send wave one of MT540–543,
//!           then the cancellations ─► intake stores, matches, reports
//!     10:30 run 1 ─► 11:15 wave two (the stock that arrives) ─► 12:00 run 2 ─► 14:00 run 3
//!     ─► 15:45 input cut-off ─► 15:50 run 4 ─► 16:30 end-of-day statements
//!     ─► 17:00 day end: CNS cut-off, carry-forward, money settlement
//!  ─► relay drains the outbox ─► read back from OUTBOUND ─► audit
//!  ─► summary checked against the host database and the plan ─► terminal login steps
//! ```
//! (the times shown are `config/base.toml`'s; the demo takes them from `[settlement]`,
//! `[statements]` and `[cns]`, and `[demo] day_start_time`).
//!
//! Decisions:
//! - The demo owns its database (`[demo] database`, default `ccass_demo`): it drops and
//!   recreates it at every start, so each run starts from the opening balances of
//!   `[demo] reference_file` and `--seed` gives the same numbers. The `[hostdb]` database is
//!   never touched; the demo connects to the `[hostdb]` server's database only to recreate its
//!   own.
//! - Sender's references and trade batch ids carry a run tag (from the clock), so JetStream's
//!   duplicate window never takes a rerun's messages for the last run's. Nothing else depends
//!   on it: the numbers depend on the seed only.
//! - Trade date: the first business day from today (UTC); the SIs settle on its T+2, the CNS
//!   settlement date, and the demo plays that date now on its own compressed clock
//!   ([`timeline::Clock`], `[demo] compressed_hour_ms`): each event waits for its time and
//!   for the event before it to finish, so the numbers depend on the seed only, never on the
//!   machine's speed. The services of `ccass up` inside the demo keep their Batch Settlement
//!   Run and statement schedules on the real clock; those act on the real date, not the
//!   demo's settlement date. The CNS schedule is off (`cns.schedule_enabled`): its cut-off
//!   closes the real T+2, which is the demo's settlement date.
//! - At day end: the CNS cut-off (positions final), day-end (positions carried to the
//!   next business day, money settled against the CCP) and the end-of-day statements, each
//!   a checked row of the summary: the reports' counts against the positions' statuses, the
//!   money the positions stopped owing against the cash journal per currency, the statement
//!   pages queued against the outbound message journal per type. The cut-off comes after the
//!   runs (in production it closes on the trade date) because the SI outcomes are planned
//!   from the opening balances alone, and CNS shorts would deliver first.
//! - The terminal login: each PSS user's certificate, key and the CA in a PKCS#12 bundle
//!   (`<participant>-<uid>.p12` in `[demo] pki_dir`, 0600) under a fresh random password
//!   printed with the steps; the terminal still requires a client certificate of the CA.
//! - Delivery is checked on the wire: every outbox row to a PSS must be on the OUTBOUND
//!   stream, found by its `Nats-Msg-Id` (the dedupe id), read back with an ordered consumer.
//! - Every number of the summary is checked against SQL counts (`hostdb::demo`) and the plan's
//!   expectation, and `hostdb::audit` runs; any disagreement fails the demo.
//! - The NATS streams are shared: do not run another `ccass up` against the same NATS while
//!   the demo runs (its workers would take the demo's messages).

pub mod plan;
pub mod progress;
pub mod summary;
pub mod timeline;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use time::{Date, OffsetDateTime};

use crate::bus::auth::UserRef;
use crate::bus::catalogue::Catalogue;
use crate::config::{Config, ConfigError, check_range};
use crate::gateway::Gateway;
use crate::gateway::outbound::OUTBOUND_STREAM;
use crate::gateway::protocol::Outcome;
use crate::hostdb::{self, HostDbError, Pool};
use crate::pki::{self, PkiConfig};
use crate::pss::{self, PssConfig};
use crate::settlement::run::{self, RunError, RunOptions, RunReport};
use crate::{bus, cns, up};
use plan::{Outgoing, Plan, PlanInput};
use progress::Progress;
use summary::{Observed, Summary};

/// `[demo]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// The database the demo owns on the `[hostdb]` server (dropped and recreated each run).
    pub database: String,
    /// Reference data loaded into it.
    pub reference_file: PathBuf,
    /// The demo's CA and certificates.
    pub pki_dir: PathBuf,
    /// PSS users, `<participant>.<uid>`, one session each.
    pub pss_users: Vec<String>,
    /// Until the gateway admits the first PSS login (the auth service starting).
    pub startup_timeout_ms: u64,
    /// Longest wait for one stage (capture of the trades, intake of a wave, the relay).
    pub stage_timeout_ms: u64,
    /// How often a stage's completion is polled.
    pub poll_interval_ms: u64,
    /// Wait before retrying a run whose leader lock another process holds.
    pub leader_busy_retry_ms: u64,
    /// Local time `HH:MM` the demo's clock starts at: input opens (wave one).
    pub day_start_time: String,
    /// How long one hour of the settlement day lasts on the demo's compressed clock (0: no
    /// waiting, every event as soon as the one before it has finished).
    pub compressed_hour_ms: u64,
}

impl DemoConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.database.is_empty()
            || !self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::Key {
                key: "demo.database".to_owned(),
                message: "must be letters, digits and underscores".to_owned(),
            });
        }
        for user in &self.pss_users {
            user.parse::<UserRef>()
                .map_err(|message| ConfigError::Key {
                    key: "demo.pss_users".to_owned(),
                    message,
                })?;
        }
        check_range("demo.pss_users", self.pss_users.len(), 3..=64)?;
        check_range(
            "demo.startup_timeout_ms",
            self.startup_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "demo.stage_timeout_ms",
            self.stage_timeout_ms,
            1..=86_400_000,
        )?;
        check_range("demo.poll_interval_ms", self.poll_interval_ms, 1..=60_000)?;
        check_range(
            "demo.leader_busy_retry_ms",
            self.leader_busy_retry_ms,
            1..=60_000,
        )?;
        self.day_start()?;
        check_range(
            "demo.compressed_hour_ms",
            self.compressed_hour_ms,
            0..=3_600_000,
        )?;
        Ok(())
    }

    /// `day_start_time`, parsed.
    pub fn day_start(&self) -> Result<time::Time, ConfigError> {
        parse_time_key("demo.day_start_time", &self.day_start_time)
    }
}

fn parse_time_key(key: &str, text: &str) -> Result<time::Time, ConfigError> {
    cns::schedule::parse_time(text).ok_or_else(|| ConfigError::Key {
        key: key.to_owned(),
        message: format!("{text:?} is not HH:MM"),
    })
}

/// The configured times of the day the demo plays (the same keys `ccass up` schedules by).
fn schedule_times(config: &Config) -> Result<timeline::ScheduleTimes, ConfigError> {
    Ok(timeline::ScheduleTimes {
        day_start: config.demo.day_start()?,
        run_times: config.settlement.run_times_of_day()?,
        input_cutoff: config.settlement.input_cutoff_of_day()?,
        statements: config.statements.end_of_day()?,
        day_end: parse_time_key("cns.day_end_time", &config.cns.day_end_time)?,
    })
}

/// Command-line choices.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Exchange trades of the synthetic trade day.
    pub trades: usize,
    /// SI pairs (each category a share of them, see [`plan`]).
    pub pairs: usize,
    pub seed: u64,
    /// Return after the summary instead of serving until interrupted.
    pub exit_after_summary: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    HostDb(#[from] HostDbError),
    #[error(transparent)]
    Migrate(#[from] hostdb::migrate::MigrateError),
    #[error("seed {path}: {message}")]
    Seed { path: PathBuf, message: String },
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Catalogue(#[from] bus::catalogue::CatalogueError),
    #[error("pki in {dir}: {error}")]
    Pki { dir: PathBuf, error: pki::PkiError },
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Up(#[from] up::UpError),
    #[error("system stopped during the demo: {0}")]
    Stopped(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    #[error(transparent)]
    Feed(#[from] cns::feed::FeedError),
    #[error("pss {participant}: {error}")]
    Pss {
        participant: String,
        error: pss::PssError,
    },
    #[error("{stage}: not done within {timeout_ms} ms ({detail})")]
    Timeout {
        stage: &'static str,
        timeout_ms: u64,
        detail: String,
    },
    #[error("settlement run {number}: {error}")]
    Run { number: usize, error: RunError },
    #[error("demo task: {0}")]
    Task(String),
    #[error(transparent)]
    Cutoff(#[from] cns::positions::CutoffError),
    #[error(transparent)]
    Statements(#[from] crate::statements::StatementError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Timeline(#[from] timeline::TimelineError),
}

/// How the demo ended.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub summary: Summary,
}

impl DemoOutcome {
    pub fn passed(&self) -> bool {
        self.summary.passed()
    }
}

/// Runs the demo; with `exit_after_summary` unset, serves until `shutdown` completes.
pub async fn run(
    config: Config,
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<DemoOutcome, DemoError> {
    // Refuse a day that cannot be planned before touching any server.
    if options.pairs < plan::MINIMUM_PAIRS {
        return Err(plan::PlanError::TooFewPairs {
            pairs: options.pairs,
            minimum: plan::MINIMUM_PAIRS,
        }
        .into());
    }
    let progress = Progress::detect();
    let demo = config.demo.clone();
    let poll = Duration::from_millis(demo.poll_interval_ms);

    // --- The demo's database, reference data, streams, certificates --------------------
    let step = progress.step(&format!("database {}", demo.database), 0);
    let admin = hostdb::connect_as(&config.hostdb, "ccass-demo-admin")?;
    hostdb::ping(&admin, config.hostdb.connect_timeout()).await?;
    hostdb::demo::recreate_database(&admin, &demo.database).await?;
    admin.close();
    let mut system = config.clone();
    system.hostdb = config.hostdb.with_database(&demo.database);
    // The demo plays the CNS day (cut-off, day-end) of the real T+2 itself; the real-clock
    // CNS schedule would close that same date at `cns.cutoff_time` (checked: after 18:30 HKT
    // the demo's own cut-off found the date closed).
    system.cns.schedule_enabled = false;
    let pool = hostdb::connect_as(&system.hostdb, "ccass-demo")?;
    hostdb::migrate::run(&pool).await?;
    let reference =
        hostdb::seed::load_file(&demo.reference_file).map_err(|error| DemoError::Seed {
            path: demo.reference_file.clone(),
            message: error.to_string(),
        })?;
    hostdb::seed::apply(&pool, &reference)
        .await
        .map_err(|error| DemoError::Seed {
            path: demo.reference_file.clone(),
            message: error.to_string(),
        })?;
    step.finish("recreated, migrated, seeded");

    let client = bus::connect(&system.bus, "ccass-demo").await?;
    let jetstream = bus::jetstream(&system.bus, client);
    bus::init::run(&system.bus, &jetstream, &Catalogue::embedded()?).await?;

    let step = progress.step("certificates", 0);
    let pki = PkiConfig {
        dir: demo.pki_dir.clone(),
        ..config.pki.clone()
    };
    let pki_error = |error| DemoError::Pki {
        dir: demo.pki_dir.clone(),
        error,
    };
    if !pki.ca_certificate_path().exists() {
        pki::init(&pki).map_err(pki_error)?;
    }
    let server = pki::issue_server(
        &pki,
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
        &pki.dir,
    )
    .map_err(pki_error)?;
    let users: Vec<UserRef> = demo
        .pss_users
        .iter()
        .filter_map(|user| user.parse().ok())
        .collect();
    let mut certificates = BTreeMap::new();
    // One password for this run's browser bundles (PKCS#12), printed with the login steps.
    let bundle_password = pki::bundle_password().map_err(pki_error)?;
    let mut bundles = BTreeMap::new();
    for user in &users {
        let issued =
            pki::issue_client(&pki, &user.participant, &user.uid, &pki.dir).map_err(pki_error)?;
        let bundle = pki::write_pkcs12(&pki, &issued, &bundle_password).map_err(pki_error)?;
        bundles.insert(user.to_string(), bundle);
        certificates.insert(user.participant.clone(), issued);
    }
    step.finish(&format!(
        "CA, {} client certificates and their browser bundles (.p12) in {}",
        certificates.len(),
        pki.dir.display()
    ));

    // --- The system ---------------------------------------------------------------------
    let step = progress.step("system (ccass up + gateway)", 0);
    system.gateway.certificate_path = server.certificate_path.clone();
    system.gateway.key_path = server.key_path.clone();
    // The demo serves its own gateway below (on the same listen address), not `ccass up`'s.
    system.gateway.enabled = false;
    // `ccass up` starts the terminal with the demo's CA and server certificate.
    system.pki = pki.clone();
    system.terminal.certificate_path = server.certificate_path.clone();
    system.terminal.key_path = server.key_path.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let listeners = up::Listeners::bind(&system).await?;
    let ops_address = listeners.ops.local_addr().ok();
    let mut up_task = tokio::spawn(up::run(
        system.clone(),
        listeners,
        stop_signal(stopped.clone()),
    ));
    let gateway_listener = Gateway::bind(&system.gateway).await?;
    let gateway_address = gateway_listener
        .local_addr()
        .map_err(|error| DemoError::Task(format!("gateway address: {error}")))?;
    let auth_client = crate::auth::AuthClient::new(
        bus::connect(&system.bus, "ccass-demo-gateway").await?,
        &system.auth,
    );
    let gateway = Gateway::new(
        system.gateway.clone(),
        &pki,
        auth_client.clone(),
        jetstream.clone(),
    )?;
    let gateway_task = tokio::spawn(gateway.serve(gateway_listener, stop_signal(stopped.clone())));
    let pss_config = |participant: &str| -> Option<PssConfig> {
        let issued = certificates.get(participant)?;
        Some(PssConfig {
            address: gateway_address.to_string(),
            server_name: "localhost".to_owned(),
            ca_certificate_path: pki.ca_certificate_path(),
            certificate_path: issued.certificate_path.clone(),
            key_path: issued.key_path.clone(),
            frame_bytes_max: system.gateway.frame_bytes_max,
            in_flight_max: system.gateway.in_flight_max,
        })
    };
    // The auth service answers for the first PSS user, then its login proves the gateway.
    let first = users
        .first()
        .map(|user| user.participant.clone())
        .unwrap_or_default();
    let started = Instant::now();
    let startup_timeout = Duration::from_millis(demo.startup_timeout_ms);
    if let Some(user) = users.first() {
        let subject = format!(
            "CN={},OU={},O={}",
            user.uid,
            user.participant,
            pki::ORGANISATION
        );
        while let Err(denial) = auth_client.authenticate_certificate(&subject).await {
            if up_task.is_finished() {
                return Err(stopped_error(&mut up_task).await);
            }
            if started.elapsed() > startup_timeout {
                return Err(DemoError::Timeout {
                    stage: "auth service",
                    timeout_ms: demo.startup_timeout_ms,
                    detail: denial.reason,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
    loop {
        if up_task.is_finished() {
            return Err(stopped_error(&mut up_task).await);
        }
        let Some(settings) = pss_config(&first) else {
            return Err(DemoError::Task(format!("no certificate for {first}")));
        };
        match pss::Session::connect(&settings, &pss::default_logical_terminal(&first), 0).await {
            Ok(session) => {
                let _ = session.close().await;
                break;
            }
            Err(error) if started.elapsed() > startup_timeout => {
                return Err(DemoError::Timeout {
                    stage: "pss login",
                    timeout_ms: demo.startup_timeout_ms,
                    detail: error.to_string(),
                });
            }
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
    step.finish(&format!(
        "gateway on {gateway_address}, ops port on {}",
        ops_address.map_or_else(|| "?".to_owned(), |a| a.to_string())
    ));

    let outcome = day(
        &system,
        &options,
        &progress,
        &pool,
        &jetstream,
        &reference,
        &users,
        &pss_config,
        &mut up_task,
    )
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let _ = stop.send(true);
            let _ = gateway_task.await;
            let _ = up_task.await;
            return Err(error);
        }
    };
    println!("{}", outcome.summary);
    println!(
        "check it yourself: CCASS_HOSTDB__DATABASE={} ccass audit",
        demo.database
    );
    if outcome.passed() {
        println!("demo: every number agrees with the host database; audit ok");
    } else {
        println!("demo: FAILED: numbers disagree with the host database or the audit");
    }
    if !options.exit_after_summary {
        if let Some(address) = ops_address {
            println!(
                "ccass: running. Ops port http://{address}/metrics, /healthz, /readyz; gateway {gateway_address} (client certificates in {}). Ctrl-C stops.",
                pki.dir.display()
            );
            if let Some(user) = users.first() {
                let url = format!(
                    "https://{}",
                    system.terminal.listen_addr.replace("0.0.0.0", "127.0.0.1")
                );
                // Absolute paths: the user types them into a browser's file dialog.
                let absolute = |path: &std::path::Path| {
                    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
                };
                let bundle = bundles
                    .get(&user.to_string())
                    .map_or_else(String::new, |path| absolute(path).display().to_string());
                println!(
                    "{}",
                    terminal_login_steps(
                        &url,
                        user,
                        &bundle,
                        &bundle_password,
                        &absolute(&pki.ca_certificate_path())
                    )
                );
            }
        }
        tokio::select! {
            () = shutdown => {}
            finished = &mut up_task => {
                let message = match finished {
                    Ok(Ok(())) => "stopped".to_owned(),
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                };
                tracing::error!(%message, "ccass demo: the system stopped");
            }
        }
    }
    let _ = stop.send(true);
    let _ = gateway_task.await;
    if !up_task.is_finished() {
        let _ = up_task.await;
    }
    pool.close();
    Ok(outcome)
}

/// How to log in to the terminal with the demo's bundle: the terminal requires a client
/// certificate of the demo CA, then the user's directory password.
fn terminal_login_steps(
    url: &str,
    user: &UserRef,
    bundle: &str,
    bundle_password: &str,
    ca_certificate: &std::path::Path,
) -> String {
    format!(
        "terminal: {url} — demo login in three steps:
  1. import the certificate and key of {user}: {bundle}
     password: {bundle_password}
     (Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your
     Certificates > Import; Chrome, Edge: Settings > Privacy and security > Security > Manage
     certificates > Import; macOS: open the file, Keychain Access imports it)
  2. trust the demo CA for websites: {ca} (Firefox: View Certificates > Authorities > Import,
     tick \"identify websites\"; Chrome, Edge: Manage certificates > Authorities/Trusted Root
     > Import), or accept the browser's warning for this address once
  3. open {url} and choose the certificate CN={uid},OU={participant},O={organisation} when
     asked; the login page names {user}: enter its development directory password
     ccass-dev-{participant}-{uid}",
        ca = ca_certificate.display(),
        uid = user.uid,
        participant = user.participant,
        organisation = pki::ORGANISATION,
    )
}

async fn stopped_error(task: &mut tokio::task::JoinHandle<Result<(), up::UpError>>) -> DemoError {
    match task.await {
        Ok(Ok(())) => DemoError::Stopped("the system stopped".to_owned()),
        Ok(Err(error)) => DemoError::Up(error),
        Err(error) => DemoError::Stopped(error.to_string()),
    }
}

/// The trading and settlement day, once the system serves.
#[allow(clippy::too_many_arguments)]
async fn day(
    config: &Config,
    options: &DemoOptions,
    progress: &Progress,
    pool: &Pool,
    jetstream: &async_nats::jetstream::Context,
    reference: &hostdb::seed::ReferenceData,
    users: &[UserRef],
    pss_config: &(dyn Fn(&str) -> Option<PssConfig> + Sync),
    up_task: &mut tokio::task::JoinHandle<Result<(), up::UpError>>,
) -> Result<DemoOutcome, DemoError> {
    let demo = &config.demo;
    let calendar = config.cns.calendar();
    let mut trade_date = OffsetDateTime::now_utc().date();
    while !calendar.is_business_day(trade_date) {
        trade_date = trade_date.next_day().unwrap_or(trade_date);
    }
    let settlement_date = calendar.settlement_date(trade_date);
    let run_tag = run_tag();
    progress.line(&format!(
        "settlement day: trades of {trade_date} and SIs settle on {settlement_date}; seed {}, run tag {run_tag}",
        options.seed
    ));
    let mut observed = Observed::default();

    // --- Exchange trades -------------------------------------------------------------
    let trades = publish_trades(
        config, options, progress, pool, jetstream, trade_date, &run_tag,
    )
    .await?;
    observed.trades_published = trades.published;
    let batch_prefix = trade_batch_prefix(&run_tag);
    wait_for(
        progress,
        "trades: captured and netted",
        trades.batches,
        demo,
        up_task,
        || async {
            hostdb::demo::run_trades(pool, &batch_prefix)
                .await
                .map(|(batches, _, _)| batches as u64)
        },
    )
    .await?;
    let (_, captured, refused) = hostdb::demo::run_trades(pool, &batch_prefix).await?;
    observed.trades_captured = captured;
    observed.trades_refused = refused;
    observed.stock_positions = hostdb::cns::stock_position_count(pool, settlement_date).await?;

    // --- The settlement day on the schedule's clock -------------------------------------
    let times = schedule_times(config)?;
    let slots = timeline::timeline(&times)?;
    let participants: Vec<String> = users.iter().map(|user| user.participant.clone()).collect();
    let plan: Plan = plan::plan(&PlanInput {
        reference,
        participants: &participants,
        place_of_settlement_bic: &config.settlement.place_of_settlement_bic,
        settlement_date,
        trade_date,
        pairs: options.pairs,
        runs: times.run_times.len(),
        seed: options.seed,
        run_tag: &run_tag,
    })?;
    progress.line(&format!(
        "SI pairs: {} normal, {} short of stock, {} where stock arrives later, {} short of cash, {} mismatched, {} cancelled, {} rejected",
        plan.counts.normal,
        plan.counts.short_of_stock,
        plan.counts.stock_arrives,
        plan.counts.short_of_cash,
        plan.counts.mismatched,
        plan.counts.cancelled,
        plan.counts.rejected
    ));
    progress.line(&format!(
        "the day of {settlement_date} on the schedule's clock, one hour in {:.1} s: {}",
        demo.compressed_hour_ms as f64 / 1000.0,
        timeline::describe(&slots)
    ));
    observed.participants_with_accounts = reference
        .stock_accounts
        .iter()
        .map(|account| account.participant.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let options_run = RunOptions::leader(format!("demo:{}", std::process::id()));
    let compressed_minute = Duration::from_millis(demo.compressed_hour_ms / 60);
    let clock = timeline::Clock::start(times.day_start, demo.compressed_hour_ms);
    let mut journalled = 0u64;
    for slot in &slots {
        let late = clock.until(slot.at).await;
        let behind = if demo.compressed_hour_ms > 0 && late > compressed_minute {
            format!(" ({} ms behind the clock)", late.as_millis())
        } else {
            String::new()
        };
        progress.line(&format!(
            "{} {}{behind}",
            timeline::hh_mm(slot.at),
            headline(slot.event)
        ));
        match slot.event {
            timeline::Event::InputOpens => {
                for (name, messages) in [
                    ("SIs wave one", &plan.wave_one),
                    ("cancellations", &plan.cancellations),
                ] {
                    send_wave(name, messages, progress, pss_config, &mut observed).await?;
                    journalled += messages.len() as u64;
                    wait_intake(progress, demo, pool, journalled, up_task).await?;
                }
            }
            timeline::Event::Run(number) => {
                observed.runs.push(
                    settle(
                        config,
                        progress,
                        pool,
                        settlement_date,
                        &options_run,
                        number,
                    )
                    .await?,
                );
            }
            timeline::Event::WaveTwo => {
                send_wave(
                    "SIs wave two",
                    &plan.wave_two,
                    progress,
                    pss_config,
                    &mut observed,
                )
                .await?;
                journalled += plan.wave_two.len() as u64;
                wait_intake(progress, demo, pool, journalled, up_task).await?;
            }
            timeline::Event::InputCutoff => {}
            timeline::Event::Statements => {
                let step = progress.step("end-of-day statements (MT535, MT536, MT537)", 0);
                let statements = crate::statements::send_end_of_day(
                    pool,
                    &config.statements,
                    &config.cns.ccp_participant,
                    settlement_date,
                )
                .await?;
                step.finish(&format!(
                    "{} pages queued for {} participants",
                    statements.pages_queued, statements.participants
                ));
                observed.statements = Some(statements);
            }
            timeline::Event::DayEnd => {
                day_end(config, progress, pool, settlement_date, &mut observed).await?;
            }
        }
    }

    // --- The relay drains the outbox onto OUTBOUND, then the checks --------------------
    let outbox_rows = hostdb::demo::counts(pool, settlement_date)
        .await?
        .outbox_rows as u64;
    wait_for(
        progress,
        "relay: messages out published",
        outbox_rows,
        demo,
        up_task,
        || async {
            hostdb::demo::counts(pool, settlement_date)
                .await
                .map(|counts| counts.outbox_published as u64)
        },
    )
    .await?;
    let step = progress.step("messages out: read back from OUTBOUND", 0);
    let mut outbound = hostdb::demo::outbound_dedupe_ids(pool, settlement_date).await?;
    let everyone: Vec<String> = reference
        .participants
        .iter()
        .map(|participant| participant.id.clone())
        .collect();
    // The runs' confirmations: compact outbox rows, each the messages the relay expands it to.
    let plain: std::collections::HashSet<String> = outbound
        .iter()
        .map(|(dedupe_id, _)| dedupe_id.clone())
        .collect();
    for participant in &everyone {
        let Ok(id) = crate::ids::ParticipantId::parse(participant) else {
            continue;
        };
        let subject = bus::subjects::outbound(&id);
        for message in crate::relay::messages_of_subject(pool, subject.as_str()).await? {
            if !plain.contains(&message.dedupe_id) {
                outbound.push((message.dedupe_id, None));
            }
        }
    }
    let on_stream = outbound_message_ids(jetstream, &everyone, demo).await?;
    let ids = crate::relay::MessageIds::load(&**hostdb::client(pool).await?).await?;
    let on_stream: std::collections::HashSet<&str> = on_stream
        .iter()
        .filter_map(|message_id| ids.dedupe_id_in(message_id))
        .collect();
    for (dedupe_id, statement_type) in &outbound {
        if on_stream.contains(dedupe_id.as_str()) {
            observed.outbound_delivered += 1;
            if let Some(message_type) = statement_type {
                *observed
                    .statements_delivered_by_type
                    .entry(message_type.clone())
                    .or_default() += 1;
            }
        }
    }
    step.finish(&format!(
        "{} of {} messages to the PSS are on the stream",
        observed.outbound_delivered,
        outbound.len()
    ));
    let step = progress.step("audit", 0);
    observed.audit_violations = hostdb::audit::run(pool)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    step.finish(&format!("{} violation(s)", observed.audit_violations.len()));
    let counts = hostdb::demo::counts(pool, settlement_date).await?;
    Ok(DemoOutcome {
        summary: Summary::new(&observed, &counts, &plan.expected),
    })
}

/// The `Nats-Msg-Id` of every message on the OUTBOUND subjects of `participants` (the outbox
/// relay publishes each row with its dedupe id), read with an ordered consumer per participant.
/// A message published again within the stream's duplicate window (a rerun of the demo the
/// same day) is the one stored before: its id is found all the same.
async fn outbound_message_ids(
    jetstream: &async_nats::jetstream::Context,
    participants: &[String],
    demo: &DemoConfig,
) -> Result<std::collections::HashSet<String>, DemoError> {
    use futures::StreamExt;
    let error = |error: &dyn std::fmt::Display| {
        DemoError::Task(format!("read stream {OUTBOUND_STREAM}: {error}"))
    };
    let stream = jetstream
        .get_stream(OUTBOUND_STREAM)
        .await
        .map_err(|e| error(&e))?;
    let deadline = Instant::now() + Duration::from_millis(demo.stage_timeout_ms);
    let mut ids = std::collections::HashSet::new();
    for participant in participants {
        let Ok(id) = crate::ids::ParticipantId::parse(participant) else {
            continue;
        };
        let mut consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: bus::subjects::outbound(&id).as_str().to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|e| error(&e))?;
        let mut pending = consumer.info().await.map_err(|e| error(&e))?.num_pending;
        let mut messages = consumer.messages().await.map_err(|e| error(&e))?;
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match tokio::time::timeout(left, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(error(&e)),
                Ok(None) => break,
                Err(_) => {
                    return Err(DemoError::Timeout {
                        stage: "messages out: read back from OUTBOUND",
                        timeout_ms: demo.stage_timeout_ms,
                        detail: format!("{pending} messages of {participant} not read"),
                    });
                }
            };
            pending = message.info().map_err(|e| error(&e))?.pending;
            if let Some(id) = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
            {
                ids.insert(id.as_str().to_owned());
            }
        }
    }
    Ok(ids)
}

/// What a slot of the day does, for its progress line.
fn headline(event: timeline::Event) -> String {
    match event {
        timeline::Event::InputOpens => "input opens: SIs of wave one, then cancellations".to_owned(),
        timeline::Event::Run(number) => format!("Batch Settlement Run {number}"),
        timeline::Event::WaveTwo => "SIs of wave two: the stock that arrives".to_owned(),
        timeline::Event::InputCutoff => {
            "input cut-off: instructions input from now on settle from the next settlement date"
                .to_owned()
        }
        timeline::Event::Statements => "end-of-day statements".to_owned(),
        timeline::Event::DayEnd => {
            "day end: CNS cut-off (held back from the trade date until after the runs), carry-forward, money settlement"
                .to_owned()
        }
    }
}

/// The CNS cut-off of `settlement_date` (the demo's SI outcomes are planned from the opening
/// balances alone, so the positions, whose shorts would deliver first, wait for the next
/// business day's runs), then day-end: carry-forward and money settlement.
async fn day_end(
    config: &Config,
    progress: &Progress,
    pool: &Pool,
    settlement_date: Date,
    observed: &mut Observed,
) -> Result<(), DemoError> {
    let step = progress.step("CNS cut-off: positions final", 0);
    let cutoff = cns::positions::cutoff(pool, &config.cns.ccp_participant, settlement_date).await?;
    step.finish(&format!(
        "{} stock and {} money positions from {} trades",
        cutoff.stock_positions, cutoff.money_positions, cutoff.trade_count
    ));
    observed.cutoff = Some(cutoff);
    observed.money_due_before_day_end_minor =
        hostdb::demo::money_due(pool, settlement_date).await?;
    let step = progress.step("CNS carry-forward and money settlement", 0);
    let report = cns::day_end::day_end(
        pool,
        &config.cns.calendar(),
        &config.cns.ccp_participant,
        config.settlement.leader_lock_key,
        settlement_date,
    )
    .await?;
    step.finish(&match &report {
        Some(report) => format!(
            "{} money positions settled, {} unpaid; {} stock positions carried to {}",
            report.money_positions_settled_count,
            report.money_positions_unpaid_count,
            report.carried_stock_position_count,
            report.carried_to
        ),
        None => "already ended".to_owned(),
    });
    observed.day_end = report;
    observed.money_due_after_day_end_minor = hostdb::demo::money_due(pool, settlement_date).await?;
    Ok(())
}

/// A run tag for references and batch ids: the clock in base 36, 5 characters.
fn run_tag() -> String {
    let mut value = OffsetDateTime::now_utc().unix_timestamp().unsigned_abs() % 36u64.pow(5);
    let mut tag = Vec::with_capacity(5);
    for _ in 0..5 {
        let digit = (value % 36) as u8;
        tag.push(if digit < 10 {
            b'0' + digit
        } else {
            b'A' + digit - 10
        });
        value /= 36;
    }
    tag.reverse();
    String::from_utf8_lossy(&tag).into_owned()
}

/// The start of this run's trade batch ids.
fn trade_batch_prefix(run_tag: &str) -> String {
    format!("demo{run_tag}-")
}

struct PublishedTrades {
    published: u64,
    batches: u64,
}

/// Generates the trade day and publishes it to the trade feed, in chunks (memory stays small).
async fn publish_trades(
    config: &Config,
    options: &DemoOptions,
    progress: &Progress,
    pool: &Pool,
    jetstream: &async_nats::jetstream::Context,
    trade_date: Date,
    run_tag: &str,
) -> Result<PublishedTrades, DemoError> {
    let rows = hostdb::cns::load_reference(pool).await?;
    let universe = cns::feed::Universe::from_reference(&rows, &config.cns.ccp_participant)?;
    let generated = cns::feed::generate(&universe, options.trades, options.seed);
    let date_text = cns::format_date(trade_date);
    let step = progress.step("trades: published", options.trades as u64);
    let chunk_trades = config.cns.feed_trades_per_batch_max.max(1) * 16;
    let mut batches = 0u64;
    for (chunk_number, chunk) in generated.chunks(chunk_trades).enumerate() {
        let records = chunk
            .iter()
            .map(|trade| {
                let mut record = cns::feed::to_record(&universe, trade, &date_text);
                // Unique per run: a trade of an interrupted earlier run is never a duplicate.
                record.trade_id = format!("{run_tag}-{}", record.trade_id);
                (config.cns.market.clone(), record)
            })
            .collect();
        let chunk_batches = cns::feed::into_batches(
            records,
            config.cns.feed_trades_per_batch_max,
            &format!("{}{date_text}-{chunk_number}", trade_batch_prefix(run_tag)),
        )?;
        batches += chunk_batches.len() as u64;
        cns::feed::publish_batches(jetstream, chunk_batches, config.bus.publish_in_flight_max)
            .await?;
        step.inc(chunk.len() as u64);
    }
    step.finish(&format!(
        "{} trades in {batches} batches on the trade feed",
        options.trades
    ));
    Ok(PublishedTrades {
        published: options.trades as u64,
        batches,
    })
}

/// Each participant's PSS sends its messages of `messages` in one session, all at once.
async fn send_wave(
    name: &str,
    messages: &[Outgoing],
    progress: &Progress,
    pss_config: &(dyn Fn(&str) -> Option<PssConfig> + Sync),
    observed: &mut Observed,
) -> Result<(), DemoError> {
    let mut by_participant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for message in messages {
        by_participant
            .entry(message.participant.as_str())
            .or_default()
            .push(message.text.as_str());
    }
    let step = progress.step(
        &format!("{name}: sent through the gateway"),
        messages.len() as u64,
    );
    let mut sessions = tokio::task::JoinSet::new();
    for (participant, texts) in by_participant {
        let settings = pss_config(participant)
            .ok_or_else(|| DemoError::Task(format!("no certificate for {participant}")))?;
        let texts: Vec<String> = texts.into_iter().map(str::to_owned).collect();
        let participant = participant.to_owned();
        let step = step.clone();
        sessions.spawn(async move {
            let pss_error = |error| DemoError::Pss {
                participant: participant.clone(),
                error,
            };
            let mut session =
                pss::Session::connect(&settings, &pss::default_logical_terminal(&participant), 0)
                    .await
                    .map_err(pss_error)?;
            let mut replies = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(settings.in_flight_max.max(1)) {
                replies.extend(session.send_all(chunk).await.map_err(pss_error)?);
                step.inc(chunk.len() as u64);
            }
            let _ = session.close().await;
            Ok::<_, DemoError>(replies)
        });
    }
    let (mut acked, mut naked) = (0u64, 0u64);
    let mut nak_codes: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = sessions.join_next().await {
        let replies = joined.map_err(|error| DemoError::Task(error.to_string()))??;
        for reply in replies {
            match reply.outcome {
                Outcome::Ack => acked += 1,
                Outcome::Nak { code, .. } => {
                    naked += 1;
                    *nak_codes.entry(code).or_default() += 1;
                }
            }
        }
    }
    observed.messages_sent += messages.len() as u64;
    observed.acked += acked;
    observed.naked += naked;
    step.finish(&format!("{acked} ACK, {naked} NAK {nak_codes:?}"));
    Ok(())
}

async fn wait_intake(
    progress: &Progress,
    demo: &DemoConfig,
    pool: &Pool,
    journalled: u64,
    up_task: &mut tokio::task::JoinHandle<Result<(), up::UpError>>,
) -> Result<(), DemoError> {
    wait_for(
        progress,
        "intake: stored, matched, reported",
        journalled,
        demo,
        up_task,
        || async {
            hostdb::demo::inbound_message_count(pool)
                .await
                .map(|count| count as u64)
        },
    )
    .await
}

/// Polls `current` until it reaches `target`, within `[demo] stage_timeout_ms`.
async fn wait_for<F, Fut>(
    progress: &Progress,
    name: &'static str,
    target: u64,
    demo: &DemoConfig,
    up_task: &mut tokio::task::JoinHandle<Result<(), up::UpError>>,
    current: F,
) -> Result<(), DemoError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, HostDbError>>,
{
    let step = progress.step(name, target);
    let started = Instant::now();
    loop {
        let now = current().await?;
        step.set(now);
        if now >= target {
            step.finish(&format!("{now} of {target}"));
            return Ok(());
        }
        if up_task.is_finished() {
            return Err(stopped_error(up_task).await);
        }
        if started.elapsed() > Duration::from_millis(demo.stage_timeout_ms) {
            return Err(DemoError::Timeout {
                stage: name,
                timeout_ms: demo.stage_timeout_ms,
                detail: format!("{now} of {target}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(demo.poll_interval_ms)).await;
    }
}

/// One Batch Settlement Run now, retried while another leader holds the lock.
async fn settle(
    config: &Config,
    progress: &Progress,
    pool: &Pool,
    settlement_date: Date,
    options: &RunOptions,
    number: usize,
) -> Result<RunReport, DemoError> {
    let step = progress.step(&format!("settlement run {number}"), 0);
    let started = Instant::now();
    loop {
        match run::run_now(pool, &config.settlement, settlement_date, options).await {
            Ok(report) => {
                step.finish(&format!(
                    "{} pairs due, {} settled, {} recycled, HKD {:.2} settled",
                    report.pairs_due,
                    report.settled_count,
                    report.recycled_count,
                    report.settled_value_minor.get("HKD").copied().unwrap_or(0) as f64 / 100.0
                ));
                return Ok(report);
            }
            Err(RunError::LeaderBusy)
                if started.elapsed() < Duration::from_millis(config.demo.stage_timeout_ms) =>
            {
                tokio::time::sleep(Duration::from_millis(config.demo.leader_busy_retry_ms)).await;
            }
            Err(error) => return Err(DemoError::Run { number, error }),
        }
    }
}
