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
        let address = config.telemetry.ops_listen_addr;
        let ops = TcpListener::bind(address)
            .await
            .map_err(|source| UpError::Bind { address, source })?;
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
    let postgres_address = format!("{}:{}", config.hostdb.host, config.hostdb.port);
    let postgres_error = |source| UpError::Postgres {
        address: postgres_address.clone(),
        source,
    };
    // The gateway's certificate is a file on this machine: check it before any server.
    if let Some(path) = [&config.gateway.certificate_path, &config.gateway.key_path]
        .into_iter()
        .find(|path| listeners.gateway.is_some() && !path.exists())
    {
        return Err(UpError::GatewayCertificateMissing { path: path.clone() });
    }
    let pool = hostdb::connect_as(&config.hostdb, "ccass-up").map_err(postgres_error)?;
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

    let client = bus::connect(&config.bus, "ccass-up").await?;
    let jetstream = bus::jetstream(&config.bus, client.clone());
    for stream in &Catalogue::embedded()?.streams {
        if jetstream.get_stream(&stream.name).await.is_err() {
            return Err(UpError::StreamMissing(stream.name.clone()));
        }
    }

    let directory = auth::Directory::new(config.directory.clone());
    directory.ping().await?;

    // CNS capture workers share the durable `cns-capture` consumer of TRADES.
    let capture_consumer = cns::capture::capture_consumer(&jetstream).await?;
    cns::metrics::describe_all();
    let (stop_capture, capture_stopped) = tokio::sync::watch::channel(false);
    let capture_workers: Vec<_> = (0..config.cns.capture_workers)
        .map(|_| {
            tokio::spawn(cns::capture::run_worker(
                config.cns.clone(),
                pool.clone(),
                capture_consumer.clone(),
                capture_stopped.clone(),
            ))
        })
        .collect();
    // Settlement intake workers, the unmatched reporter and the outbox relay.
    let settlement_services =
        crate::settlement::intake::spawn_services(&config, &pool, &jetstream, &capture_stopped)
            .await?;

    let probes: Vec<Box<dyn Probe>> = vec![
        Box::new(hostdb::PostgresProbe {
            pool: pool.clone(),
            timeout: config.telemetry.readiness_check_timeout(),
        }),
        Box::new(bus::NatsProbe(client.clone())),
        Box::new(auth::DirectoryProbe(directory)),
    ];
    let state = OpsState::new(
        telemetry::metrics_handle(),
        probes,
        config.telemetry.readiness_check_timeout(),
    );
    let ops_address = listeners.ops.local_addr().map_err(UpError::Serve)?;
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    // Batch Settlement Runs at the configured times; the advisory lock makes one process lead.
    let settlement_runs = tokio::spawn(crate::settlement::run::schedule(
        pool.clone(),
        config.settlement.clone(),
        format!("up:{}", std::process::id()),
        shutdown.clone(),
    ));
    // End-of-day statements after the day's last run (dedupe ids: one copy per page).
    crate::statements::metrics::describe_all();
    let statements = config.statements.end_of_day_enabled.then(|| {
        tokio::spawn(crate::statements::schedule(
            pool.clone(),
            config.statements.clone(),
            config.settlement.clone(),
            config.cns.calendar(),
            config.cns.ccp_participant.clone(),
            shutdown.clone(),
        ))
    });
    // CNS cut-off and day-end at the configured times (both idempotent).
    let cns_schedule = tokio::spawn(cns::schedule::schedule(
        pool.clone(),
        config.cns.clone(),
        config.settlement.utc_offset_minutes,
        config.settlement.leader_lock_key,
        shutdown.clone(),
    ));
    // The terminal runs when its server certificate and the CA are there (`ccass pki`).
    let terminal = start_terminal(&config, &pool, &client, &jetstream, shutdown.clone()).await?;
    let mut auth_service = tokio::spawn(auth::service::run(
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
    tracing::info!(%ops_address, postgres = %postgres_address, nats = %config.bus.url, "ccass up: serving");
    let serve = telemetry::ops::serve(listeners.ops, state, shutdown);
    tokio::pin!(serve);
    // A service that fails stops `ccass up` with its error rather than leaving it half up.
    let outcome = tokio::select! {
        served = &mut serve => match served {
            Err(error) => {
                auth_service.abort();
                Err(UpError::Serve(error))
            }
            // Shutdown reached the ops port; the auth service finishes its requests in hand.
            Ok(()) => auth_finished(auth_service.await),
        },
        finished = &mut auth_service => match auth_finished(finished) {
            Ok(()) => serve.await.map_err(UpError::Serve),
            Err(error) => Err(error),
        },
    };
    if let Some(terminal) = terminal {
        let _ = terminal.await;
    }
    // Capture workers finish their current transaction (or abandon it unacknowledged) and stop.
    let _ = stop_capture.send(true);
    // The scheduler ends on shutdown; a run in hand commits or rolls back with its connection.
    let _ = settlement_runs.await;
    if let Some(statements) = statements {
        let _ = statements.await;
    }
    let _ = cns_schedule.await;
    if let Some(gateway_task) = gateway_task {
        // It stops with ccass up: open sessions are dropped (what was not ACKed is the PSS's
        // to send again; unacknowledged output messages wait in JetStream).
        gateway_task.abort();
        let _ = gateway_task.await;
    }
    for worker in capture_workers.into_iter().chain(settlement_services) {
        let _ = worker.await;
    }
    outcome?;
    tracing::info!("ccass up: stopped");
    Ok(())
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
