//! The `ccass` command: one subcommand per service and the operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use ccass::bus::auth::{AdminAction, UserRef};
use ccass::bus::catalogue::Catalogue;
use ccass::config::{self, Config};
use ccass::{
    auth, bus, cns, gateway, hostdb, iso15022, pki, pss, settlement, telemetry, terminal, up,
};

/// ccass: Central Clearing And Settlement System.
///
/// Participants' back-office systems send ISO 15022 messages through the gateway; settlement
/// workers match and settle them against the PostgreSQL host database; every component talks
/// over NATS. Configuration: <config-dir>/base.toml, then <config-dir>/<env>.toml, then
/// CCASS_<SECTION>__<KEY> environment variables.
#[derive(Debug, Parser)]
#[command(name = "ccass", version)]
struct Cli {
    /// Folder holding base.toml and <env>.toml.
    #[arg(
        long,
        env = "CCASS_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,
    /// Which <env>.toml to layer over base.toml (dev, test, prod...).
    #[arg(long = "env", env = "CCASS_ENV", default_value = "dev", global = true)]
    environment: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process until SIGINT or SIGTERM.
    Up,
    /// Run the authorisation service alone (answers ccass.v1.auth.* in queue group `auth`)
    /// until SIGINT or SIGTERM, with the ops port (ready while Postgres, NATS and LDAP answer).
    Auth {
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Apply pending host database migrations (idempotent).
    Migrate,
    /// Load reference data (participants, accounts, securities, opening balances) from a file.
    Seed {
        /// A reference-data file, e.g. config/reference/demo.toml.
        #[arg(long)]
        file: PathBuf,
    },
    /// Check the whole host database: journals against balances, conservation, no negatives.
    Audit,
    /// The outbox the relay publishes from.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// NATS and JetStream administration.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// ISO 15022 tools: parse, validate and format FIN messages (no servers needed).
    Fin {
        #[command(subcommand)]
        command: iso15022::cli::FinCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Delegated administration through the auth service, with the caller's own rights.
    ///
    /// The caller authenticates with a password: --as <participant>.<uid> and the password in
    /// CCASS_ADMIN_PASSWORD (or one line on standard input). Prints the result as JSON.
    Admin {
        /// Who is acting: <participant>.<uid>, e.g. B01234.admin1.
        #[arg(long = "as", env = "CCASS_ADMIN_USER")]
        actor: UserRef,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The exchange trade feed: publish trades to ccass.v1.trades.{market}.
    Trades {
        #[command(subcommand)]
        command: TradesCommand,
    },
    /// CNS clearing: positions and the cut-off.
    Cns {
        #[command(subcommand)]
        command: CnsCommand,
    },
    /// Settlement: without a subcommand, run the intake workers on INBOUND, the unmatched
    /// reporter and the outbox relay until SIGINT/SIGTERM, with the ops port (ready while
    /// Postgres and NATS answer); `bsr` runs the scheduled Batch Settlement Runs; `run-now`
    /// runs one Batch Settlement Run.
    Settlement {
        #[command(subcommand)]
        command: Option<SettlementCommand>,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// The system's certificate authority: client and server certificates, revocation.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Run the Participant Gateway alone (TLS sessions of participants' PSS) until SIGINT or
    /// SIGTERM, with the ops port (ready while NATS answers).
    Gateway {
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Run the Terminal alone (HTTPS web front end for participants and operations) until
    /// SIGINT or SIGTERM, with the ops port (ready while Postgres and NATS answer).
    Terminal {
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// A PSS: send FIN messages through the gateway with a participant's certificate.
    Pss {
        #[command(subcommand)]
        command: PssCommand,
    },
    /// A settlement day end to end through the real channels, then a summary checked
    /// against the host database and `ccass audit` (exit 1 on any disagreement).
    ///
    /// Starts the whole system in this process (the services of `ccass up` and the gateway),
    /// issues certificates into [demo] pki_dir, publishes a synthetic trade day, has several
    /// PSS send MT540–543 over TLS (some mismatched, cancelled, short of stock or cash), runs
    /// three Batch Settlement Runs with recycling between them, and prints the summary.
    ///
    /// The demo owns the database [demo] database (default ccass_demo) on the [hostdb] server:
    /// it DROPS AND RECREATES it at every start, so every run starts from the opening
    /// balances of [demo] reference_file and the same --seed gives the same numbers. The
    /// [hostdb] database itself is left alone. Needs the streams' NATS to itself while it runs.
    Demo {
        /// Exchange trades of the synthetic trade day.
        #[arg(long, default_value_t = 1_000_000)]
        trades: usize,
        /// Settlement instruction pairs (two SIs each; a share of them are exceptions).
        #[arg(long, default_value_t = 2_000)]
        pairs: usize,
        /// Seed of the trade day and of the SIs: the same seed gives the same numbers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after the summary instead of serving until Ctrl-C (CI).
        #[arg(long)]
        exit_after_summary: bool,
    },
    /// Benchmarks against the configured servers.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print a participant's statements as FIN (MT535 holdings, MT536 the date's movements,
    /// MT537 pending), one page after another, without sending them. Holdings and pending
    /// instructions are as they stand now; movements are those of --date.
    Statements {
        /// Participant id, e.g. B01234.
        #[arg(long)]
        participant: String,
        /// Statement date, YYYY-MM-DD (default: today, local time of settlement.utc_offset_minutes).
        #[arg(long)]
        date: Option<String>,
        /// holdings, transactions or pending (default: all three).
        #[arg(long)]
        kind: Option<ccass::statements::Kind>,
        /// One stock account only, e.g. B01234-01.
        #[arg(long)]
        account: Option<String>,
    },
    /// The metrics reference (no servers needed).
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MetricsCommand {
    /// Every described metric: name, type, unit, module, help (tab-separated), or the
    /// Markdown of docs/metrics.md with --markdown.
    List {
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the CA in [pki] dir (never overwrites an existing one).
    Init,
    /// Issue a participant user's client certificate: <out>/<participant>-<user>.crt and .key.
    Issue {
        #[arg(long)]
        participant: String,
        #[arg(long)]
        user: String,
        /// Output folder (default: [pki] dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue a server certificate: <out>/server-<first name>.crt and .key.
    IssueServer {
        /// DNS names or IP addresses, e.g. localhost 127.0.0.1.
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add a certificate to the revocation list (the gateway honours it at the next connection).
    Revoke {
        /// The certificate file (PEM).
        certificate: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PssCommand {
    /// Send each FIN file as one message; print each ACK/NAK; exit 1 on any NAK.
    Send {
        #[command(flatten)]
        connection: PssConnection,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print output messages as they arrive and acknowledge each; reconnect after failures and
    /// resume after the last output sequence number held (kept in --state).
    Listen {
        #[command(flatten)]
        connection: PssConnection,
        /// File keeping the last output sequence number held (a restart resumes after it).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Stop after this many new messages (default: run until SIGINT/SIGTERM).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// How a PSS command reaches the gateway and as whom.
#[derive(Debug, clap::Args)]
struct PssConnection {
    /// The participant user's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its key (default: the certificate path with extension .key).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The CA certificate (default: [pki] dir/ca.crt).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Gateway address (default: [gateway] listen_addr).
    #[arg(long)]
    address: Option<String>,
    /// Name in the gateway's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Logical terminal (default: the certificate's participant padded with X to 12).
    #[arg(long)]
    logical_terminal: Option<String>,
}

impl PssConnection {
    /// The library's settings and the logical terminal.
    fn settings(self, config: &Config) -> anyhow::Result<(pss::PssConfig, String)> {
        let participant = pss::participant_of_certificate(&self.cert)?;
        let logical_terminal = self
            .logical_terminal
            .unwrap_or_else(|| pss::default_logical_terminal(&participant));
        let settings = pss::PssConfig {
            address: self
                .address
                .unwrap_or_else(|| config.gateway.listen_addr.replace("0.0.0.0", "127.0.0.1")),
            server_name: self.server_name,
            ca_certificate_path: self.ca.unwrap_or_else(|| config.pki.ca_certificate_path()),
            key_path: self.key.unwrap_or_else(|| self.cert.with_extension("key")),
            certificate_path: self.cert,
            frame_bytes_max: config.gateway.frame_bytes_max,
            in_flight_max: config.gateway.in_flight_max,
        };
        Ok((settings, logical_terminal))
    }
}

#[derive(Debug, Subcommand)]
enum TradesCommand {
    /// Publish a CSV file of trades (format in `ccass::cns::feed`; header
    /// trade_id,market,trade_date,trade_time,security,buyer,seller,quantity,price,currency,settlement_type).
    Load {
        /// The trade file.
        file: PathBuf,
    },
    /// Generate a realistic synthetic trading day from the host database's reference data
    /// (Zipf-skewed securities and participants, board lots, prices); publish it, or write
    /// it as CSV with --out.
    Generate {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Trade date, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        /// Write CSV here instead of publishing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CnsCommand {
    /// Print CNS stock and money positions and isolated obligations of a settlement date.
    Positions {
        /// Participant id, e.g. B01234 (default: every participant).
        #[arg(long)]
        participant: Option<String>,
        /// Settlement date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Close the netting of a settlement date: re-net its trades, check them against the
    /// positions netted during the day, mark positions final, position events to the outbox.
    Cutoff {
        /// Settlement date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Print a participant's clearing statement of a settlement date (MT537 pages, as queued
    /// to its outbound subject).
    Statement {
        /// Participant id, e.g. B01234.
        #[arg(long)]
        participant: String,
        /// Settlement date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// The final statement (after the cut-off) rather than the provisional one.
        #[arg(long)]
        r#final: bool,
    },
    /// End a settlement date after its final Batch Settlement Run (once): carry unsettled
    /// positions to the next business day, settle money positions against the CCP.
    DayEnd {
        /// Settlement date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Feed batches capture set aside (malformed, or refused by the host database).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Print the held batches (oldest first).
    List {
        /// Also the released and dismissed ones.
        #[arg(long)]
        all: bool,
    },
    /// Capture a held batch again, once its cause is mended, and mark it released.
    Release {
        #[arg(long)]
        id: i64,
    },
    /// Mark a held batch handled without capturing it.
    Dismiss {
        #[arg(long)]
        id: i64,
        /// Why (e.g. "corrected and loaded again as batch X").
        #[arg(long)]
        note: String,
    },
}

/// The ops port of a service command (/metrics, /healthz, /readyz).
#[derive(Debug, clap::Args)]
struct OpsArgs {
    /// Serve the ops port here instead of telemetry.ops_listen_addr (e.g. 127.0.0.1:0).
    #[arg(long)]
    ops_listen_addr: Option<std::net::SocketAddr>,
}

impl OpsArgs {
    /// The configuration with the override applied.
    fn apply(&self, mut config: Config) -> Config {
        if let Some(address) = self.ops_listen_addr {
            config.telemetry.ops_listen_addr = address;
        }
        config
    }
}

#[derive(Debug, Subcommand)]
enum SettlementCommand {
    /// Run the Batch Settlement Run leader's work until SIGINT or SIGTERM: the scheduled runs
    /// (settlement.run_times), the CNS cut-off/day-end schedule, end-of-day statements and the
    /// CNS capture workers, with the ops port (ready while Postgres and NATS answer). Run two:
    /// the advisory lock lets one lead each run; the other takes over when it is gone.
    Bsr {
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Run one Batch Settlement Run now (if no other leader is running one): settle every
    /// due matched pair, recycle the rest. Prints what it did.
    RunNow {
        /// Settlement date, YYYY-MM-DD (default: today, local time of settlement.utc_offset_minutes).
        #[arg(long)]
        date: Option<String>,
        /// Test hook: after writing everything, wait this long before committing.
        #[arg(long, hide = true, default_value_t = 0)]
        pause_before_commit_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// In-memory netting vs Postgres GROUP BY, and capture end to end (own database and market).
    Cns {
        #[arg(long, default_value_t = 5_000_000)]
        trades: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1_000)]
        participants: usize,
        #[arg(long, default_value_t = 2_500)]
        securities: usize,
        /// Capture workers (default: cns.capture_workers).
        #[arg(long)]
        workers: Option<usize>,
        /// Keep the benchmark database afterwards.
        #[arg(long)]
        keep_database: bool,
    },
    /// The Batch Settlement Run (run_now) against one SQL transaction per pair and the best
    /// set-based SQL, on the same generated day (own databases).
    Settlement {
        /// Settlement instructions to settle: half as many matched pairs (deliver + receive).
        #[arg(long, default_value_t = 1_000_000)]
        instructions: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1_000)]
        participants: usize,
        #[arg(long, default_value_t = 2_500)]
        securities: usize,
        /// Share of pairs that lack stock or money.
        #[arg(long, default_value_t = 0.05)]
        short_share: f64,
        /// Pairs the one-transaction-per-pair baseline settles (its rate is extrapolated).
        #[arg(long, default_value_t = 20_000)]
        baseline_pairs: usize,
        /// Prior settlement days already settled in full in the database (as many pairs
        /// each as the day to settle): shows what history costs a run.
        #[arg(long, default_value_t = 0)]
        settled_days: usize,
        /// Rounds of the engine and the set-based SQL, each on fresh copies of the day; the
        /// targets are judged on the medians (run-to-run noise on a shared machine).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Keep the benchmark databases afterwards.
        #[arg(long)]
        keep_database: bool,
    },
    /// Participant Gateway: acknowledged MT540/s and ACK latency over TLS sessions beside raw
    /// JetStream publish-and-ack in the same run. Without --rate: the maximum first, then
    /// open loop at half of it.
    Gateway {
        #[arg(long, default_value_t = 16)]
        sessions: usize,
        /// Messages per second across all sessions (open loop).
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// NATS server (default: [bus] url).
        #[arg(long)]
        nats_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users and their user groups.
    User {
        #[command(subcommand)]
        command: AdminUserCommand,
    },
    /// Grants waiting for a second administrator (maker–checker).
    Grants {
        #[command(subcommand)]
        command: AdminGrantsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminUserCommand {
    /// Create a user (no groups yet). An initial password comes from CCASS_ADMIN_NEW_PASSWORD.
    Add {
        /// <participant>.<uid>
        user: UserRef,
        /// Full name.
        #[arg(long)]
        name: String,
        /// Subject of the user's client certificate.
        #[arg(long)]
        cert_subject: Option<String>,
    },
    /// Add a user to a user group (pending when the participant requires approval).
    Grant { user: UserRef, group: String },
    /// Remove a user from a user group.
    Revoke { user: UserRef, group: String },
    /// Show a user's groups, functions and input limits.
    Show { user: UserRef },
}

#[derive(Debug, Subcommand)]
enum AdminGrantsCommand {
    /// List the pending grants the caller may decide.
    Pending,
    /// Approve a pending grant made by another administrator.
    Approve { grant_id: i64 },
    /// Reject a pending grant.
    Reject { grant_id: i64 },
}

impl AdminCommand {
    fn into_action(self) -> AdminAction {
        match self {
            AdminCommand::User { command } => match command {
                AdminUserCommand::Add {
                    user,
                    name,
                    cert_subject,
                } => AdminAction::AddUser {
                    user,
                    name,
                    cert_subject,
                    password: std::env::var("CCASS_ADMIN_NEW_PASSWORD").ok(),
                },
                AdminUserCommand::Grant { user, group } => AdminAction::Grant { user, group },
                AdminUserCommand::Revoke { user, group } => AdminAction::Revoke { user, group },
                AdminUserCommand::Show { user } => AdminAction::Show { user },
            },
            AdminCommand::Grants { command } => match command {
                AdminGrantsCommand::Pending => AdminAction::Pending,
                AdminGrantsCommand::Approve { grant_id } => AdminAction::Approve { grant_id },
                AdminGrantsCommand::Reject { grant_id } => AdminAction::Reject { grant_id },
            },
        }
    }
}

/// The acting administrator's password: CCASS_ADMIN_PASSWORD, else one line of standard input.
fn admin_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("CCASS_ADMIN_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Create or update the streams and durable consumers of the subject catalogue (idempotent).
    Init,
    /// Print the subject catalogue built into this binary.
    Subjects,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// After a point-in-time restore (docs/operations.md): give the outbox rows stored from
    /// now on message ids of their own, so none repeats an id the lost timeline published.
    NewIncarnation {
        /// Why, for the record (e.g. "restored to 2026-12-07 10:15 after disk loss").
        #[arg(long)]
        reason: String,
        /// Begin at this outbox id rather than the next: the first row stored after the
        /// restore (the relay's id collision error names it).
        #[arg(long)]
        from_outbox_id: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and check the configuration, then print it with secrets redacted.
    Check,
}

fn main() -> ExitCode {
    // One crypto provider for the process (NOTES.md): ring, before any TLS configuration.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ccass: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn pki_command(config: &Config, command: PkiCommand) -> anyhow::Result<()> {
    let pki = &config.pki;
    let issued = match command {
        PkiCommand::Init => pki::init(pki)?,
        PkiCommand::Issue {
            participant,
            user,
            out,
        } => pki::issue_client(pki, &participant, &user, out.as_ref().unwrap_or(&pki.dir))?,
        PkiCommand::IssueServer { names, out } => {
            pki::issue_server(pki, &names, out.as_ref().unwrap_or(&pki.dir))?
        }
        PkiCommand::Revoke { certificate } => {
            let serial = pki::revoke(pki, &certificate)?;
            println!("revoked {serial} ({})", certificate.display());
            return Ok(());
        }
    };
    println!(
        "certificate {} key {} serial {}",
        issued.certificate_path.display(),
        issued.key_path.display(),
        issued.serial
    );
    Ok(())
}

async fn pss_command(config: &Config, command: PssCommand) -> anyhow::Result<ExitCode> {
    let (connection, files) = match command {
        PssCommand::Send { connection, files } => (connection, files),
        PssCommand::Listen {
            connection,
            state,
            count,
        } => {
            let (settings, logical_terminal) = connection.settings(config)?;
            let mut state = match &state {
                Some(path) => pss::OutputState::load(path)?,
                None => pss::OutputState::in_memory(),
            };
            let listening = pss::listen(
                &settings,
                &logical_terminal,
                &mut state,
                config.pss.reconnect_delay(),
                count,
                |output| {
                    println!(
                        "OUTPUT {} MT{}{}",
                        output.output_sequence,
                        output.message_type().unwrap_or("???"),
                        if output.possible_duplicate {
                            " PDE"
                        } else {
                            ""
                        }
                    );
                    println!("{}", output.text.replace("\r\n", "\n"));
                },
            );
            tokio::select! {
                handled = listening => { handled?; }
                () = up::shutdown_signal() => {}
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut messages = Vec::with_capacity(files.len());
    for file in &files {
        messages.push(
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?,
        );
    }
    let (settings, logical_terminal) = connection.settings(config)?;
    let mut session = pss::Session::connect(&settings, &logical_terminal, 0).await?;
    let replies = session.send_all(&messages).await?;
    let _ = session.close().await;
    let mut naks = 0;
    for (file, reply) in files.iter().zip(&replies) {
        match &reply.outcome {
            gateway::protocol::Outcome::Ack => {
                println!("{} ACK {}", file.display(), reply.input_sequence)
            }
            gateway::protocol::Outcome::Nak { code, reason } => {
                naks += 1;
                println!(
                    "{} NAK {} {code} {reason}",
                    file.display(),
                    reply.input_sequence
                );
            }
        }
    }
    Ok(if naks == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn load_config(config_dir: &std::path::Path, environment: &str) -> anyhow::Result<Config> {
    config::load(config_dir, environment, std::env::vars()).with_context(|| {
        format!(
            "load config from {} (env {environment})",
            config_dir.display()
        )
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        // The codec tools read files only: they need no configuration and no servers.
        Command::Fin { command } => iso15022::cli::run(&command, &mut std::io::stdout().lock()),
        Command::Metrics {
            command: MetricsCommand::List { markdown },
        } => print_metrics(markdown),
        command => {
            let config = load_config(&cli.config_dir, &cli.environment)?;
            run_with_config(config, command)
        }
    }
}

fn run_with_config(config: Config, command: Command) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing(&config.telemetry)?;
    let runtime = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Up => {
                let listeners = up::Listeners::bind(&config).await?;
                up::run(config, listeners, up::shutdown_signal()).await?;
            }
            Command::Auth { ops } => {
                let config = ops.apply(config);
                let pool = connect_hostdb(&config).await?;
                let client = bus::connect(&config.bus, "ccass-auth").await?;
                let directory = auth::Directory::new(config.directory.clone());
                let ops = up::OpsPort::new(
                    &config,
                    up::bind_ops(&config).await?,
                    vec![
                        up::postgres_probe(&config, &pool),
                        up::nats_probe(&client),
                        up::directory_probe(directory),
                    ],
                );
                tracing::info!(ops_address = %ops.local_addr()?, "ccass auth: serving");
                let shutdown = up::shared_shutdown(up::shutdown_signal());
                ops.serve_beside(
                    shutdown.clone(),
                    auth::service::run(config, client, shutdown),
                )
                .await??;
            }
            Command::Settlement {
                command: None,
                ops,
            } => {
                let config = ops.apply(config);
                let pool = connect_hostdb(&config).await?;
                let client = bus::connect(&config.bus, "ccass-settlement").await?;
                let jetstream = bus::jetstream(&config.bus, client.clone());
                let ops = up::OpsPort::new(
                    &config,
                    up::bind_ops(&config).await?,
                    vec![up::postgres_probe(&config, &pool), up::nats_probe(&client)],
                );
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let tasks =
                    ccass::settlement::intake::spawn_services(&config, &pool, &jetstream, &stopped)
                        .await?;
                tracing::info!(ops_address = %ops.local_addr()?, "ccass settlement: serving");
                let served = ops.serve(up::shutdown_signal()).await;
                let _ = stop.send(true);
                for task in tasks {
                    let _ = task.await;
                }
                served?;
            }
            Command::Settlement {
                command: Some(SettlementCommand::Bsr { ops }),
                ops: parent_ops,
            } => {
                // `ccass settlement --ops-listen-addr A bsr` or `ccass settlement bsr --ops-listen-addr A`.
                let config = ops.apply(parent_ops.apply(config));
                let listener = up::bind_ops(&config).await?;
                up::bsr(config, listener, up::shutdown_signal()).await?;
            }
            Command::Migrate => {
                let pool = connect_hostdb(&config).await?;
                let report = hostdb::migrate::run(&pool).await?;
                println!("{report}");
            }
            Command::Seed { file } => {
                let data = hostdb::seed::load_file(&file)?;
                let pool = connect_hostdb(&config).await?;
                let report = hostdb::seed::apply(&pool, &data).await?;
                println!("{report}");
            }
            Command::Audit => {
                let pool = connect_hostdb(&config).await?;
                let violations = hostdb::audit::run(&pool).await?;
                if !violations.is_empty() {
                    for violation in &violations {
                        println!("{violation}");
                    }
                    println!("audit: {} violation(s)", violations.len());
                    return Ok(ExitCode::FAILURE);
                }
                println!("audit: ok");
            }
            Command::Outbox {
                command:
                    OutboxCommand::NewIncarnation {
                        reason,
                        from_outbox_id,
                    },
            } => {
                let pool = connect_hostdb(&config).await?;
                let started =
                    hostdb::outbox::begin_incarnation(&pool, &reason, from_outbox_id).await?;
                println!(
                    "outbox incarnation {} begins at outbox id {}: rows from it on are published with new message ids",
                    started.incarnation, started.first_outbox_id
                );
            }
            Command::Bus {
                command: BusCommand::Init,
            } => {
                let catalogue = Catalogue::embedded()?;
                let client = bus::connect(&config.bus, "ccass-bus-init").await?;
                let jetstream = bus::jetstream(&config.bus, client);
                let report = bus::init::run(&config.bus, &jetstream, &catalogue).await?;
                for (name, change) in report.streams {
                    println!("stream {name}: {change}");
                }
                for (name, change) in report.consumers {
                    println!("consumer {name}: {change}");
                }
            }
            Command::Bus {
                command: BusCommand::Subjects,
            } => {
                let catalogue = Catalogue::embedded()?;
                for subject in &catalogue.subjects {
                    let home = subject
                        .stream
                        .as_deref()
                        .map(|s| format!("stream {s}"))
                        .or(subject
                            .queue_group
                            .as_deref()
                            .map(|q| format!("queue group {q}")))
                        .unwrap_or_default();
                    println!("{:<48} {home}", subject.pattern);
                }
            }
            Command::Fin { command } => {
                return iso15022::cli::run(&command, &mut std::io::stdout().lock());
            }
            Command::Config {
                command: ConfigCommand::Check,
            } => {
                println!("{config:#?}");
            }
            Command::Admin { actor, command } => {
                let password = admin_password()?;
                let client = bus::connect(&config.bus, "ccass-admin").await?;
                let auth = auth::AuthClient::new(client, &config.auth);
                let principal = auth
                    .authenticate_password(&actor.participant, &actor.uid, &password)
                    .await
                    .with_context(|| format!("authenticate {actor}"))?;
                let result = auth
                    .administer(&principal.user, command.into_action())
                    .await
                    .context("denied")?;
                println!("{}", serde_json::to_string_pretty(&result)?);
            }
            Command::Trades { command } => trades_command(&config, command).await?,
            Command::Pki { command } => pki_command(&config, command)?,
            Command::Gateway { ops } => {
                let config = ops.apply(config);
                let client = bus::connect(&config.bus, "ccass-gateway").await?;
                let auth = auth::AuthClient::new(client.clone(), &config.auth);
                let jetstream = bus::jetstream(&config.bus, client.clone());
                let ops = up::OpsPort::new(
                    &config,
                    up::bind_ops(&config).await?,
                    vec![up::nats_probe(&client)],
                );
                let listener = gateway::Gateway::bind(&config.gateway).await?;
                tracing::info!(address = %listener.local_addr()?, ops_address = %ops.local_addr()?, "gateway listening");
                let gateway =
                    gateway::Gateway::new(config.gateway.clone(), &config.pki, auth, jetstream)?;
                let shutdown = up::shared_shutdown(up::shutdown_signal());
                ops.serve_beside(shutdown.clone(), gateway.serve(listener, shutdown))
                    .await??;
            }
            Command::Terminal { ops } => {
                let config = ops.apply(config);
                let pool = connect_hostdb(&config).await?;
                let client = bus::connect(&config.bus, "ccass-terminal").await?;
                let auth = auth::AuthClient::new(client.clone(), &config.auth);
                let jetstream = bus::jetstream(&config.bus, client.clone());
                let ops = up::OpsPort::new(
                    &config,
                    up::bind_ops(&config).await?,
                    vec![up::postgres_probe(&config, &pool), up::nats_probe(&client)],
                );
                let listener = terminal::Terminal::bind(&config.terminal).await?;
                tracing::info!(address = %listener.local_addr()?, ops_address = %ops.local_addr()?, "terminal listening");
                let terminal = terminal::Terminal::new(terminal::TerminalParts {
                    config: config.terminal.clone(),
                    pki: config.pki.clone(),
                    settlement: config.settlement.clone(),
                    intake: config.intake.clone(),
                    ccp_participant: config.auth.ccp_participant.clone(),
                    auth,
                    pool: pool.clone(),
                    nats: client.clone(),
                    jetstream,
                })?;
                let shutdown = up::shared_shutdown(up::shutdown_signal());
                ops.serve_beside(shutdown.clone(), async {
                    terminal.serve(listener, shutdown).await;
                    Ok::<(), std::convert::Infallible>(())
                })
                .await??;
            }
            Command::Pss { command } => return pss_command(&config, command).await,
            Command::Demo {
                trades,
                pairs,
                seed,
                exit_after_summary,
            } => {
                let options = ccass::demo::DemoOptions {
                    trades,
                    pairs,
                    seed,
                    exit_after_summary,
                };
                let outcome = ccass::demo::run(config, options, up::shutdown_signal()).await?;
                if !outcome.passed() {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Cns { command } => cns_command(&config, command).await?,
            Command::Settlement {
                command:
                    Some(SettlementCommand::RunNow {
                        date,
                        pause_before_commit_ms,
                    }),
                ops: _,
            } => {
                let date = match date {
                    Some(text) => parse_date_arg(&text)?,
                    None => {
                        let offset = time::UtcOffset::from_whole_seconds(
                            i32::from(config.settlement.utc_offset_minutes) * 60,
                        )?;
                        time::OffsetDateTime::now_utc().to_offset(offset).date()
                    }
                };
                let pool = connect_hostdb(&config).await?;
                let options = settlement::run::RunOptions {
                    leader: format!("run-now:{}", std::process::id()),
                    abort_before_commit: false,
                    pause_before_commit_ms,
                };
                let report =
                    settlement::run::run_now(&pool, &config.settlement, date, &options).await?;
                println!("{report}");
            }
            Command::Bench {
                command:
                    BenchCommand::Cns {
                        trades,
                        seed,
                        participants,
                        securities,
                        workers,
                        keep_database,
                    },
            } => {
                let options = cns::bench::BenchOptions {
                    trades,
                    seed,
                    participants,
                    securities,
                    workers: workers.unwrap_or(config.cns.capture_workers),
                    keep_database,
                };
                let report = cns::bench::run(&config, &options).await?;
                println!("{report}");
            }
            Command::Statements {
                participant,
                date,
                kind,
                account,
            } => {
                statements_command(
                    &config,
                    &participant,
                    date.as_deref(),
                    kind,
                    account.as_deref(),
                )
                .await?
            }
            Command::Metrics {
                command: MetricsCommand::List { markdown },
            } => return print_metrics(markdown),
            Command::Bench {
                command:
                    BenchCommand::Settlement {
                        instructions,
                        seed,
                        participants,
                        securities,
                        short_share,
                        baseline_pairs,
                        settled_days,
                        rounds,
                        keep_database,
                    },
            } => {
                let options = settlement::bench::BenchOptions {
                    instructions,
                    seed,
                    participants,
                    securities,
                    short_share,
                    baseline_pairs,
                    settled_days,
                    rounds,
                    keep_database,
                };
                let report = settlement::bench::run(&config, &options).await?;
                println!("{report}");
            }
            Command::Bench {
                command:
                    BenchCommand::Gateway {
                        sessions,
                        rate,
                        seconds,
                        nats_url,
                    },
            } => {
                let options = gateway::bench::BenchOptions {
                    sessions,
                    rate_per_s: rate,
                    seconds,
                    nats_url,
                };
                // The bench's auth service writes the audit trail: an unmigrated database
                // fails here, naming `ccass migrate`, rather than on every authorisation.
                up::connect_postgres(&config, "ccass-bench-gateway").await?;
                let report = gateway::bench::run(&config, &options).await?;
                println!("{report}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A pool whose server answered: fails here, naming the server, rather than in the command.
async fn connect_hostdb(config: &Config) -> anyhow::Result<hostdb::Pool> {
    let context = || {
        format!(
            "connect to postgres at {}:{}",
            config.hostdb.host, config.hostdb.port
        )
    };
    let pool = hostdb::connect(&config.hostdb).with_context(context)?;
    hostdb::ping(&pool, config.hostdb.connect_timeout())
        .await
        .with_context(context)?;
    Ok(pool)
}

fn print_metrics(markdown: bool) -> anyhow::Result<ExitCode> {
    let text = if markdown {
        telemetry::catalogue::markdown()
    } else {
        telemetry::catalogue::text()
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn statements_command(
    config: &Config,
    participant: &str,
    date: Option<&str>,
    kind: Option<ccass::statements::Kind>,
    account: Option<&str>,
) -> anyhow::Result<()> {
    use ccass::statements::{self, Kind, RenderOptions};
    let date = match date {
        Some(text) => parse_date_arg(text)?,
        None => {
            let offset = time::UtcOffset::from_whole_seconds(
                i32::from(config.settlement.utc_offset_minutes) * 60,
            )
            .context("settlement.utc_offset_minutes")?;
            time::OffsetDateTime::now_utc().to_offset(offset).date()
        }
    };
    let pool = connect_hostdb(config).await?;
    let mut client = hostdb::client(&pool).await?;
    let transaction = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .context("begin a read-only transaction")?;
    let sender = statements::own_terminal(&transaction, &config.cns.ccp_participant).await?;
    let (receiver, data) = statements::load(&transaction, participant, date).await?;
    if let Some(account) = account
        && !data.accounts.iter().any(|own| own == account)
    {
        anyhow::bail!("account {account} is not one of {participant}'s accounts");
    }
    let mut out = std::io::stdout().lock();
    for kind in kind.map_or(Kind::ALL.to_vec(), |kind| vec![kind]) {
        let options = RenderOptions {
            sender: &sender,
            receiver: &receiver,
            reference_prefix: &format!("Q{}", kind.message_type().0),
            frequency: "ADHO",
            limits: config.statements.limits(),
        };
        for page in statements::render(kind, date, &data, account, &options)? {
            use std::io::Write as _;
            writeln!(out, "{page}")?;
        }
    }
    Ok(())
}

fn parse_date_arg(text: &str) -> anyhow::Result<time::Date> {
    cns::parse_date(text).with_context(|| format!("`{text}` is not a date such as 2026-11-24"))
}

async fn trades_command(config: &Config, command: TradesCommand) -> anyhow::Result<()> {
    let (trades, prefix) = match command {
        TradesCommand::Load { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8", file.display()))?;
            let trades =
                cns::feed::parse_csv(&text).with_context(|| format!("parse {}", file.display()))?;
            (trades, cns::feed::content_id(text.as_bytes()))
        }
        TradesCommand::Generate {
            count,
            seed,
            date,
            out,
        } => {
            let date = match date {
                Some(text) => parse_date_arg(&text)?,
                None => time::OffsetDateTime::now_utc().date(),
            };
            let pool = connect_hostdb(config).await?;
            let reference = hostdb::cns::load_reference(&pool).await?;
            let universe =
                cns::feed::Universe::from_reference(&reference, &config.cns.ccp_participant)?;
            let date_text = cns::format_date(date);
            let trades: Vec<(String, ccass::bus::trades::TradeRecord)> =
                cns::feed::generate(&universe, count, seed)
                    .iter()
                    .map(|trade| {
                        (
                            config.cns.market.clone(),
                            cns::feed::to_record(&universe, trade, &date_text),
                        )
                    })
                    .collect();
            if let Some(out) = out {
                let mut text = String::from(cns::feed::CSV_HEADER);
                text.push('\n');
                for (market, trade) in &trades {
                    text.push_str(&cns::feed::csv_line(market, trade));
                    text.push('\n');
                }
                std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
                println!("trades: wrote {} trades to {}", trades.len(), out.display());
                return Ok(());
            }
            (trades, format!("gen{seed}-{date_text}-{count}"))
        }
    };
    let count = trades.len();
    let batches = cns::feed::into_batches(trades, config.cns.feed_trades_per_batch_max, &prefix)?;
    let client = bus::connect(&config.bus, "ccass-trades").await?;
    let jetstream = bus::jetstream(&config.bus, client);
    let published =
        cns::feed::publish_batches(&jetstream, batches, config.bus.publish_in_flight_max).await?;
    println!("trades: published {count} trades in {published} batches");
    Ok(())
}

async fn cns_command(config: &Config, command: CnsCommand) -> anyhow::Result<()> {
    let pool = connect_hostdb(config).await?;
    match command {
        CnsCommand::Positions { participant, date } => {
            let date = parse_date_arg(&date)?;
            let participant = participant
                .map(|text| ccass::ids::ParticipantId::parse(&text))
                .transpose()?;
            let rows = cns::positions::positions(&pool, participant.as_ref(), date).await?;
            println!(
                "{:<8} {:<12} {:<5} {:>16} {:>16} {:>8}  status",
                "participant", "isin/currency", "kind", "net", "settled", "obligations"
            );
            for row in &rows {
                let (kind, what) = match (&row.isin, &row.currency_code) {
                    (Some(isin), _) => (
                        if row.net > 0 {
                            "long"
                        } else if row.net < 0 {
                            "short"
                        } else {
                            "flat"
                        },
                        isin.clone(),
                    ),
                    (None, Some(currency)) => ("money", currency.clone()),
                    (None, None) => ("?", String::new()),
                };
                println!(
                    "{:<8} {:<12} {:<5} {:>16} {:>16} {:>8}  {}",
                    row.participant_id,
                    what,
                    kind,
                    row.net,
                    row.settled,
                    row.obligation_count,
                    row.status
                );
            }
            if let Some(participant) = &participant {
                for obligation in
                    hostdb::cns::isolated_obligations(&pool, participant.as_str(), date).await?
                {
                    println!(
                        "isolated {} {} {} {} {} {} settled {} {}",
                        obligation.trade_id,
                        obligation.side,
                        obligation.isin,
                        obligation.quantity,
                        obligation.currency_code,
                        obligation.amount_minor,
                        obligation.settled_quantity,
                        obligation.status
                    );
                }
            }
            println!(
                "cns positions: {} for {}",
                rows.len(),
                cns::format_date(date)
            );
        }
        CnsCommand::Cutoff { date } => {
            let date = parse_date_arg(&date)?;
            let report = cns::positions::cutoff(&pool, &config.cns.ccp_participant, date).await?;
            println!(
                "cns cutoff {}: {} trades, {} stock and {} money positions final, {} position events in the outbox",
                cns::format_date(report.settlement_date),
                report.trade_count,
                report.stock_positions,
                report.money_positions,
                report.events
            );
        }
        CnsCommand::Statement {
            participant,
            date,
            r#final,
        } => {
            let date = parse_date_arg(&date)?;
            let participant = ccass::ids::ParticipantId::parse(&participant)
                .with_context(|| format!("`{participant}` is not a participant id"))?;
            let pages = cns::statement::for_participant(
                &pool,
                &participant,
                date,
                r#final,
                config.cns.statement_positions_per_page_max,
            )
            .await?;
            for page in pages {
                println!("{page}");
            }
        }
        CnsCommand::Quarantine { command } => match command {
            QuarantineCommand::List { all } => {
                let batches = cns::quarantine::list(&pool, all).await?;
                println!(
                    "{:>6}  {:<9} {:<9} {:<25} {:>10}  subject / error",
                    "id", "status", "reason", "quarantined at", "sequence"
                );
                for batch in &batches {
                    println!(
                        "{:>6}  {:<9} {:<9} {:<25} {:>10}  {} / {}{}",
                        batch.quarantine_id,
                        batch.status,
                        batch.reason,
                        batch
                            .quarantined_at
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                        batch.nats_stream_sequence,
                        batch.subject,
                        batch.error,
                        batch
                            .note
                            .as_deref()
                            .map(|note| format!(" ({note})"))
                            .unwrap_or_default()
                    );
                }
                println!("{} batch(es)", batches.len());
            }
            QuarantineCommand::Release { id } => {
                let report = cns::quarantine::release(&pool, &config.cns, id).await?;
                println!(
                    "cns quarantine: batch {id} released: {}",
                    cns::quarantine::summary(&report)
                );
            }
            QuarantineCommand::Dismiss { id, note } => {
                cns::quarantine::dismiss(&pool, id, &note).await?;
                println!("cns quarantine: batch {id} dismissed");
            }
        },
        CnsCommand::DayEnd { date } => {
            let date = parse_date_arg(&date)?;
            let report = cns::day_end::day_end(
                &pool,
                &config.cns.calendar(),
                &config.cns.ccp_participant,
                config.settlement.leader_lock_key,
                date,
            )
            .await?;
            match report {
                Some(report) => println!(
                    "cns day-end {}: {} stock positions carried to {}, {} money positions settled, {} unpaid",
                    cns::format_date(report.settlement_date),
                    report.carried_stock_position_count,
                    cns::format_date(report.carried_to),
                    report.money_positions_settled_count,
                    report.money_positions_unpaid_count
                ),
                None => println!(
                    "cns day-end {}: already done, nothing changed",
                    cns::format_date(date)
                ),
            }
        }
    }
    Ok(())
}
