//! The Terminal: participants' and operators' web front end (`ccass terminal`).
//!
//! ```text
//!  browser ──HTTPS, client certificate (mutual TLS 1.3)──► tokio-rustls ──► hyper ──► axum
//!     login: certificate subject ─► auth.authenticate(certificate) ┐ same user, else refused
//!            password            ─► auth.authenticate(password)    ┘ ─► session (cookie)
//!     every page: session bound to the connection's certificate ─► auth.authorise(function)
//!     SI input ─► terminal_pending_instructions ─► checker authorises ─► INBOUND (one intake)
//! ```
//!
//! * HTTPS only: axum 0.8 has no TLS, so each accepted TCP connection does its rustls
//!   handshake (the gateway's configuration: TLS 1.3, client certificate chaining to the CA
//!   required, revocation list honoured) and is then served by hyper's HTTP/1.1. The
//!   certificate's subject rides with every request of the connection.
//! * Login = certificate + directory password; both must name the same user. Sessions
//!   ([`session`]): `__Host-` cookie, Secure, HttpOnly, SameSite=Strict, idle timeout, bound to
//!   the certificate (a cookie replayed over another user's connection is refused), and a CSRF
//!   token checked on every form (the login form by double submit).
//! * Every function is authorised by the auth service on the server, whatever the page shows;
//!   the menu only hides what the user's groups do not grant.
//! * SI input ([`si`]) becomes the MT540–543 a PSS would send (the codec's builders) and waits
//!   in `terminal_pending_instructions` (V0009) for a different user with `si.authorise`
//!   (maker–checker); on authorisation it is published to `ccass.v1.inbound.{participant}.mtNNN`
//!   with `Nats-Msg-Id` = participant:SEME before the decision commits.
//! * Errors: [`error`] is the one table of codes; detail is logged, never sent.
//! * Live updates: `/si/{id}/events` (server-sent events) re-reads the SI when an event for its
//!   participant arrives on `ccass.v1.events.{participant}.instruction` and every
//!   `live_poll_ms` (settlement runs write markers, not events), and sends each change.

pub mod chart;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod session;
pub mod si;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::auth::AuthClient;
use crate::config::{ConfigError, check_range};
use crate::gateway::{self, GatewayError};
use crate::hostdb::Pool;
use crate::pki::{self, PkiConfig, RevocationList};
use crate::settlement::SettlementConfig;

/// `[terminal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    pub listen_addr: String,
    /// The terminal's server certificate and key (`ccass pki issue-server`).
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    /// A session unused this long is closed.
    pub session_idle_timeout_ms: u64,
    pub sessions_max: usize,
    pub connections_max: usize,
    /// TLS handshake and the first request's headers.
    pub handshake_timeout_ms: u64,
    /// Rows per page of enquiries (and of a CSV download).
    pub page_rows_max: i64,
    /// How often a live SI page re-reads its SI besides on events.
    pub live_poll_ms: u64,
    /// Largest form body accepted.
    pub request_body_bytes_max: usize,
    /// How long publishing an authorised SI may wait for JetStream's acknowledgement.
    pub publish_timeout_ms: u64,
}

impl TerminalConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        check_range(
            "terminal.session_idle_timeout_ms",
            self.session_idle_timeout_ms,
            1_000..=86_400_000,
        )?;
        check_range("terminal.sessions_max", self.sessions_max, 1..=1_000_000)?;
        check_range(
            "terminal.connections_max",
            self.connections_max,
            1..=100_000,
        )?;
        check_range(
            "terminal.handshake_timeout_ms",
            self.handshake_timeout_ms,
            1..=600_000,
        )?;
        check_range("terminal.page_rows_max", self.page_rows_max, 1..=100_000)?;
        check_range("terminal.live_poll_ms", self.live_poll_ms, 50..=600_000)?;
        check_range(
            "terminal.request_body_bytes_max",
            self.request_body_bytes_max,
            1_024..=10_485_760,
        )?;
        check_range(
            "terminal.publish_timeout_ms",
            self.publish_timeout_ms,
            1..=600_000,
        )?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalStartError {
    #[error("terminal tls: {0}")]
    Tls(#[from] GatewayError),
    #[error("bind terminal on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("terminal templates: {0}")]
    Templates(String),
}

/// What the pages need.
pub struct AppState {
    pub config: TerminalConfig,
    pub settlement: SettlementConfig,
    pub intake: crate::settlement::intake::IntakeConfig,
    pub ccp_participant: String,
    pub auth: AuthClient,
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub sessions: session::Sessions,
    pub templates: minijinja::Environment<'static>,
}

/// The identity of a TLS connection's client certificate, attached to each of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub certificate_subject: String,
}

/// A terminal ready to serve.
pub struct Terminal {
    state: Arc<AppState>,
    acceptor: TlsAcceptor,
    revocations: Arc<RevocationList>,
    connections: Arc<Semaphore>,
}

/// Everything the terminal is built from.
pub struct TerminalParts {
    pub config: TerminalConfig,
    pub pki: PkiConfig,
    pub settlement: SettlementConfig,
    pub intake: crate::settlement::intake::IntakeConfig,
    pub ccp_participant: String,
    pub auth: AuthClient,
    pub pool: Pool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
}

impl Terminal {
    pub fn new(parts: TerminalParts) -> Result<Terminal, TerminalStartError> {
        metrics::describe_all();
        let mut tls = gateway::server_tls_config(
            &parts.config.certificate_path,
            &parts.config.key_path,
            &parts.pki,
        )?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let templates =
            pages::templates().map_err(|error| TerminalStartError::Templates(error.to_string()))?;
        let state = Arc::new(AppState {
            sessions: session::Sessions::new(
                Duration::from_millis(parts.config.session_idle_timeout_ms),
                parts.config.sessions_max,
            ),
            config: parts.config,
            settlement: parts.settlement,
            intake: parts.intake,
            ccp_participant: parts.ccp_participant,
            auth: parts.auth,
            pool: parts.pool,
            nats: parts.nats,
            jetstream: parts.jetstream,
            templates,
        });
        Ok(Terminal {
            connections: Arc::new(Semaphore::new(state.config.connections_max)),
            state,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            revocations: Arc::new(RevocationList::new(parts.pki.revocation_list_path())),
        })
    }

    pub async fn bind(config: &TerminalConfig) -> Result<TcpListener, TerminalStartError> {
        TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| TerminalStartError::Bind {
                address: config.listen_addr.clone(),
                source,
            })
    }

    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let router = pages::router(self.state.clone());
        let terminal = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "terminal: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = terminal.connections.clone().try_acquire_owned() else {
                refused("connections_max", peer, "too many connections");
                continue;
            };
            let terminal = terminal.clone();
            let router = router.clone();
            tokio::spawn(async move {
                terminal.connection(stream, peer, router).await;
                drop(permit);
            });
        }
    }

    async fn connection(&self, stream: tokio::net::TcpStream, peer: SocketAddr, router: Router) {
        let timeout = Duration::from_millis(self.state.config.handshake_timeout_ms);
        let tls = match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return refused("handshake", peer, &error.to_string()),
            Err(_) => return refused("handshake", peer, "handshake timed out"),
        };
        let Some(certificate) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|certificate| certificate.as_ref().to_vec())
        else {
            return refused("certificate", peer, "no client certificate");
        };
        let serial = match pki::serial_of(&certificate) {
            Ok(serial) => serial,
            Err(reason) => return refused("certificate", peer, &reason),
        };
        match self.revocations.is_revoked(&serial) {
            Ok(false) => {}
            Ok(true) => {
                return refused("revoked", peer, &format!("certificate {serial} is revoked"));
            }
            Err(error) => return refused("revocation_list", peer, &error.to_string()),
        }
        let subject = match pki::subject_of(&certificate) {
            Ok(subject) => subject,
            Err(reason) => return refused("certificate", peer, &reason),
        };
        let identity = Peer {
            certificate_subject: subject,
        };
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(identity.clone());
                router.clone().oneshot(request)
            },
        );
        let result = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, %peer, "terminal: connection ended");
        }
    }
}

fn refused(cause: &'static str, peer: SocketAddr, reason: &str) {
    ::metrics::counter!(metrics::CONNECTIONS_REFUSED_TOTAL, "cause" => cause).increment(1);
    tracing::info!(%peer, cause, reason, "terminal: connection refused");
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}
