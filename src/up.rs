//! `ccass up`: every service in one process, sharing one ops port.
//!
//! The ops port with readiness over Postgres, NATS and the LDAP directory; the auth service
//! (`ccass.v1.auth.*`); CNS capture workers and the CNS cut-off/day-end schedule; SI intake,
//! the outbox relay and the scheduled Batch Settlement Runs; end-of-day statements; the
//! Participant Gateway when `gateway.enabled` (its certificate and key files must exist, else
//! startup fails first, naming the file and the `ccass pki` commands that make it); the
//! terminal when its server certificate and the CA exist. Startup fails fast, with the
//! dependency named, when Postgres, NATS or LDAP is unreachable, the schema is not migrated or
//! the streams are missing; after startup, outages show on `/readyz` instead.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpListener;

use crate::bus::catalogue::Catalogue;
use crate::config::Config;
use crate::telemetry::ops::{OpsState, Probe};
use crate::{auth, bus, cns, gateway, hostdb, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("postgres at {address}: {source}")]
    Postgres {
        address: String,
        source: hostdb::HostDbError,
    },
    #[error(
        "postgres at {address}: {count} migration(s) pending, first {first}: run `ccass migrate`"
    )]
    SchemaBehind {
        address: String,
        count: usize,
        first: String,
    },
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Directory(#[from] auth::DirectoryError),
    #[error(transparent)]
    Catalogue(#[from] bus::catalogue::CatalogueError),
    #[error("nats: stream {0} is missing: run `ccass bus init`")]
    StreamMissing(String),
    #[error("bind ops port {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("serve ops port: {0}")]
    Serve(std::io::Error),
    #[error("auth service: {0}")]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Terminal(#[from] crate::terminal::TerminalStartError),
    #[error(
        "gateway certificate {path} is missing: run `ccass pki init` and `ccass pki issue-server localhost 127.0.0.1` (or set gateway.enabled = false)"
    )]
    GatewayCertificateMissing { path: std::path::PathBuf },
    #[error(transparent)]
    Gateway(#[from] gateway::GatewayError),
    #[error("{service} service task: {message}")]
    Task {
        service: &'static str,
        message: String,
    },
}

/// The running system's listeners, bound before `run` so callers (tests) can pick port 0 and
/// learn the address.
pub struct Listeners {
    pub ops: TcpListener,
    /// `[gateway] listen_addr` when `gateway.enabled`.
    pub gateway: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, UpError> {
        let ops = bind_ops(config).await?;
        let gateway = if config.gateway.enabled {
            Some(gateway::Gateway::bind(&config.gateway).await?)
        } else {
            None
        };
        Ok(Listeners { ops, gateway })
    }
}

/// Connects to every dependency, then serves until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    // The gateway's certificate is a file on this machine: check it before any server.
    if let Some(path) = [&config.gateway.certificate_path, &config.gateway.key_path]
        .into_iter()
        .find(|path| listeners.gateway.is_some() && !path.exists())
    {
        return Err(UpError::GatewayCertificateMissing { path: path.clone() });
    }
    let pool = connect_postgres(&config, "ccass-up").await?;
    let client = bus::connect(&config.bus, "ccass-up").await?;
    let jetstream = bus::jetstream(&config.bus, client.clone());
    check_streams(&jetstream).await?;

    let directory = auth::Directory::new(config.directory.clone());
    directory.ping().await?;

    let capture = CaptureWorkers::spawn(&config, &pool, &jetstream).await?;
    // Settlement intake workers, the unmatched reporter and the outbox relay.
    let settlement_services =
        crate::settlement::intake::spawn_services(&config, &pool, &jetstream, &capture.stopped)
            .await?;

    let ops = OpsPort::new(
        &config,
        listeners.ops,
        vec![
            postgres_probe(&config, &pool),
            nats_probe(&client),
            directory_probe(directory),
        ],
    );
    let ops_address = ops.local_addr()?;
    let shutdown = shared_shutdown(shutdown);
    let schedules = spawn_leader_schedules(
        &config,
        &pool,
        format!("up:{}", std::process::id()),
        shutdown.clone(),
    );
    // The terminal runs when its server certificate and the CA are there (`ccass pki`).
    let terminal = start_terminal(&config, &pool, &client, &jetstream, shutdown.clone()).await?;
    let auth_service = tokio::spawn(auth::service::run(
        config.clone(),
        client.clone(),
        shutdown.clone(),
    ));
    // The Participant Gateway, when enabled: TLS sessions of participants' PSS.
    let gateway_task = match listeners.gateway {
        Some(listener) => {
            let gateway = gateway::Gateway::new(
                config.gateway.clone(),
                &config.pki,
                auth::AuthClient::new(client.clone(), &config.auth),
                jetstream.clone(),
            )?;
            let address = listener.local_addr().map_err(UpError::Serve)?;
            tracing::info!(%address, "gateway listening");
            Some(tokio::spawn(gateway.serve(listener, shutdown.clone())))
        }
        None => None,
    };
    let postgres_address = format!("{}:{}", config.hostdb.host, config.hostdb.port);
    tracing::info!(%ops_address, postgres = %postgres_address, nats = %config.bus.url, "ccass up: serving");
    // A service that fails stops `ccass up` with its error rather than leaving it half up;
    // on shutdown the auth service finishes its requests in hand.
    let outcome = ops
        .serve_beside(shutdown, async { auth_finished(auth_service.await) })
        .await
        .and_then(|finished| finished);
    if let Some(terminal) = terminal {
        let _ = terminal.await;
    }
    // Capture workers finish their current transaction (or abandon it unacknowledged) and stop.
    capture.stop().await;
    // The schedulers end on shutdown; a run in hand commits or rolls back with its connection.
    for schedule in schedules {
        let _ = schedule.await;
    }
    if let Some(gateway_task) = gateway_task {
        // It stops with ccass up: open sessions are dropped (what was not ACKed is the PSS's
        // to send again; unacknowledged output messages wait in JetStream).
        gateway_task.abort();
        let _ = gateway_task.await;
    }
    for worker in settlement_services {
        let _ = worker.await;
    }
    outcome?;
    tracing::info!("ccass up: stopped");
    Ok(())
}

/// `ccass settlement bsr`: the leader's work only. The scheduled Batch Settlement Runs, the
/// CNS cut-off/day-end schedule and end-of-day statements (each run takes the advisory lock
/// `settlement.leader_lock_key`, so of several replicas one leads and the others stand by and
/// take over at the next due time when it is gone), the CNS capture workers (a shared durable
/// consumer, so every replica pulls) and the ops port, ready while Postgres and NATS answer.
pub async fn bsr(
    config: Config,
    ops: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    let pool = connect_postgres(&config, "ccass-bsr").await?;
    let client = bus::connect(&config.bus, "ccass-bsr").await?;
    let jetstream = bus::jetstream(&config.bus, client.clone());
    check_streams(&jetstream).await?;
    let capture = CaptureWorkers::spawn(&config, &pool, &jetstream).await?;
    let ops = OpsPort::new(
        &config,
        ops,
        vec![postgres_probe(&config, &pool), nats_probe(&client)],
    );
    let ops_address = ops.local_addr()?;
    let shutdown = shared_shutdown(shutdown);
    let leader = format!("bsr:{}", std::process::id());
    tracing::info!(%ops_address, %leader, "ccass settlement bsr: serving");
    let schedules = spawn_leader_schedules(&config, &pool, leader, shutdown.clone());
    let served = ops.serve(shutdown).await;
    capture.stop().await;
    for schedule in schedules {
        let _ = schedule.await;
    }
    served?;
    tracing::info!("ccass settlement bsr: stopped");
    Ok(())
}

/// A shutdown future every task of a command can await.
pub type Shutdown = futures::future::Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

pub fn shared_shutdown(shutdown: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    let boxed: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    futures::FutureExt::shared(boxed)
}

/// Binds `telemetry.ops_listen_addr` (the per-command `--ops-listen-addr` overrides it in the
/// configuration before this).
pub async fn bind_ops(config: &Config) -> Result<TcpListener, UpError> {
    let address = config.telemetry.ops_listen_addr;
    TcpListener::bind(address)
        .await
        .map_err(|source| UpError::Bind { address, source })
}

/// A pool whose server answers and whose schema is current, connecting as `application_name`.
pub async fn connect_postgres(
    config: &Config,
    application_name: &str,
) -> Result<hostdb::Pool, UpError> {
    let postgres_address = format!("{}:{}", config.hostdb.host, config.hostdb.port);
    let postgres_error = |source| UpError::Postgres {
        address: postgres_address.clone(),
        source,
    };
    let pool = hostdb::connect_as(&config.hostdb, application_name).map_err(postgres_error)?;
    hostdb::ping(&pool, config.hostdb.connect_timeout())
        .await
        .map_err(postgres_error)?;
    let pending = hostdb::migrate::pending(&pool)
        .await
        .map_err(postgres_error)?;
    if let Some(first) = pending.first() {
        return Err(UpError::SchemaBehind {
            address: postgres_address,
            count: pending.len(),
            first: first.clone(),
        });
    }
    Ok(pool)
}

/// Fails naming the first stream of the catalogue that JetStream does not have.
pub async fn check_streams(jetstream: &async_nats::jetstream::Context) -> Result<(), UpError> {
    for stream in &Catalogue::embedded()?.streams {
        if jetstream.get_stream(&stream.name).await.is_err() {
            return Err(UpError::StreamMissing(stream.name.clone()));
        }
    }
    Ok(())
}

/// Readiness of Postgres, bounded by `telemetry.readiness_check_timeout_ms`.
pub fn postgres_probe(config: &Config, pool: &hostdb::Pool) -> Box<dyn Probe> {
    Box::new(hostdb::PostgresProbe {
        pool: pool.clone(),
        timeout: config.telemetry.readiness_check_timeout(),
    })
}

pub fn nats_probe(client: &async_nats::Client) -> Box<dyn Probe> {
    Box::new(bus::NatsProbe(client.clone()))
}

pub fn directory_probe(directory: auth::Directory) -> Box<dyn Probe> {
    Box::new(auth::DirectoryProbe(directory))
}

/// The ops port of one command: `/metrics`, `/healthz`, and `/readyz` over `probes` — exactly
/// the dependencies that command uses.
pub struct OpsPort {
    listener: TcpListener,
    state: OpsState,
}

impl OpsPort {
    pub fn new(config: &Config, listener: TcpListener, probes: Vec<Box<dyn Probe>>) -> OpsPort {
        let state = OpsState::new(
            telemetry::metrics_handle(),
            probes,
            config.telemetry.readiness_check_timeout(),
        );
        OpsPort { listener, state }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, UpError> {
        self.listener.local_addr().map_err(UpError::Serve)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), UpError> {
        telemetry::ops::serve(self.listener, self.state, shutdown)
            .await
            .map_err(UpError::Serve)
    }

    /// Serves beside `service` (which ends on the same `shutdown`): a service that ends first
    /// ends the command with its outcome (an `Ok` waits for the ops port to shut down too); an
    /// ops port that fails ends it with `UpError::Serve`.
    pub async fn serve_beside<E>(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        service: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<(), E>, UpError> {
        let serve = telemetry::ops::serve(self.listener, self.state, shutdown);
        tokio::pin!(serve);
        tokio::pin!(service);
        tokio::select! {
            served = &mut serve => match served {
                Err(error) => Err(UpError::Serve(error)),
                Ok(()) => Ok(service.await),
            },
            finished = &mut service => {
                if finished.is_ok() {
                    serve.await.map_err(UpError::Serve)?;
                }
                Ok(finished)
            }
        }
    }
}

/// The schedules that belong to the run leader: Batch Settlement Runs at
/// `settlement.run_times`, end-of-day statements after the day's last run (when
/// `statements.end_of_day_enabled`), and the CNS cut-off and day-end (when
/// `cns.schedule_enabled`). Each takes the advisory
/// lock `settlement.leader_lock_key` for its work, so any number of processes may run them.
pub fn spawn_leader_schedules(
    config: &Config,
    pool: &hostdb::Pool,
    leader: String,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(crate::settlement::run::schedule(
        pool.clone(),
        config.settlement.clone(),
        leader,
        shutdown.clone(),
    ))];
    // Dedupe ids of statements: one copy per page.
    crate::statements::metrics::describe_all();
    if config.statements.end_of_day_enabled {
        tasks.push(tokio::spawn(crate::statements::schedule(
            pool.clone(),
            config.statements.clone(),
            config.settlement.clone(),
            config.cns.calendar(),
            config.cns.ccp_participant.clone(),
            shutdown.clone(),
        )));
    }
    // Both idempotent.
    if config.cns.schedule_enabled {
        tasks.push(tokio::spawn(cns::schedule::schedule(
            pool.clone(),
            config.cns.clone(),
            config.settlement.utc_offset_minutes,
            config.settlement.leader_lock_key,
            shutdown,
        )));
    }
    tasks
}

/// `cns.capture_workers` CNS capture workers on the durable `cns-capture` consumer of TRADES.
struct CaptureWorkers {
    stop: tokio::sync::watch::Sender<bool>,
    /// Ends with the workers: the settlement intake services of `ccass up` stop on it too.
    stopped: tokio::sync::watch::Receiver<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl CaptureWorkers {
    async fn spawn(
        config: &Config,
        pool: &hostdb::Pool,
        jetstream: &async_nats::jetstream::Context,
    ) -> Result<CaptureWorkers, UpError> {
        let consumer = cns::capture::capture_consumer(jetstream).await?;
        cns::metrics::describe_all();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = (0..config.cns.capture_workers)
            .map(|_| {
                tokio::spawn(cns::capture::run_worker(
                    config.cns.clone(),
                    pool.clone(),
                    consumer.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(CaptureWorkers {
            stop,
            stopped,
            workers,
        })
    }

    /// Each worker finishes its current transaction (or abandons it unacknowledged) and stops.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// Starts the terminal if `[terminal] certificate_path` and the CA certificate exist.
async fn start_terminal(
    config: &Config,
    pool: &hostdb::Pool,
    client: &async_nats::Client,
    jetstream: &async_nats::jetstream::Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<()>>, UpError> {
    use crate::terminal::{Terminal, TerminalParts};
    if !config.terminal.certificate_path.exists() || !config.pki.ca_certificate_path().exists() {
        tracing::info!(
            certificate = %config.terminal.certificate_path.display(),
            "ccass up: terminal not started (no server certificate or CA; see `ccass pki`)"
        );
        return Ok(None);
    }
    let listener = Terminal::bind(&config.terminal).await?;
    let terminal = Terminal::new(TerminalParts {
        config: config.terminal.clone(),
        pki: config.pki.clone(),
        settlement: config.settlement.clone(),
        intake: config.intake.clone(),
        ccp_participant: config.auth.ccp_participant.clone(),
        auth: auth::AuthClient::new(client.clone(), &config.auth),
        pool: pool.clone(),
        nats: client.clone(),
        jetstream: jetstream.clone(),
    })?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "ccass up: terminal listening");
    }
    Ok(Some(tokio::spawn(terminal.serve(listener, shutdown))))
}

fn auth_finished(
    finished: Result<Result<(), auth::AuthError>, tokio::task::JoinError>,
) -> Result<(), UpError> {
    match finished {
        Ok(result) => result.map_err(UpError::from),
        Err(error) => Err(UpError::Task {
            service: "auth",
            message: error.to_string(),
        }),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; SIGINT still stops ccass");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
