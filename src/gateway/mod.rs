//! The Participant Gateway: the TLS door through which participants' back-office systems
//! (PSS) send ISO 15022 messages.
//!
//! * TLS 1.3 only (rustls, ring), client certificate required and chaining to the system CA
//!   ([`crate::pki`]); its serial must not be in the revocation list, which is re-read when it
//!   changes (no restart). The certificate's subject maps to one participant and user through
//!   [`AuthClient::authenticate_certificate`].
//! * Session protocol: [`protocol`]. Each message is checked with the codec
//!   ([`iso15022::check`]); a problem whose disposition is a NAK is NAKed with its code; a
//!   business problem (MT548 reason) is left to settlement intake. Block 1's logical terminal
//!   must belong to the certificate's participant. An accepted message is published to
//!   `bus::subjects::inbound(participant, message type)` with `Nats-Msg-Id` =
//!   `<participant>:<SEME>` and the headers of [`crate::bus::inbound`] (input sequence, user,
//!   channel), and ACKed only when JetStream stored it; a duplicate reference within INBOUND's
//!   duplicate window (`subjects/inbound.toml`: 10 minutes) is NAKed `G01`, a later one is
//!   ACKed and then refused by intake (MT548 `REJT/DUPL`, the host database's unique key).
//! * Each message is authorised before it is published: the certificate's user needs
//!   `si.input` on the message's account (`FIAC/97a::SAFE` when it has the `<participant>-<nn>`
//!   form, else on its participant), through [`AuthClient::authorise`] (cached). Refused →
//!   NAK `G05`; no decision (auth service or directory down, or none within
//!   `store_timeout_ms`) → NAK `G06`, fail closed, and the session goes on. While the NATS
//!   connection is down, messages are NAKed `G03` at once.
//! * Publishes are pipelined: the session reads on while up to `in_flight_max` messages await
//!   their JetStream acknowledgement; replies go out in input order. When the window is full
//!   the gateway stops reading from that PSS (backpressure through TCP).
//! * Several sessions of one participant may be open at once (up to
//!   `connections_per_participant_max`); each has its own input sequence numbers, and
//!   duplicate detection spans them all because it keys on participant and reference.
//! * Limits: `frame_bytes_max`, `handshake_timeout_ms` (TLS handshake plus login),
//!   `idle_timeout_ms`, `connections_max`, `connections_per_participant_max`, `in_flight_max`.
//!   A bad prefix or oversized frame gets NAK `G04` and the session closes; a bad message gets
//!   its NAK and the session goes on. Every refusal is logged once with its reason and counted.
//!
//! * Outbound delivery: [`outbound`] (the newest login of a participant takes over delivery;
//!   resume after the ack floor; possible duplicates marked `{PDE:}`).

pub mod bench;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod stages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use self::metrics as names;
use self::protocol::{FrameError, GatewayNak, LOGIN_OK, LOGIN_REFUSED, Outcome, Reply};
use self::stages::{Passage, StageSnapshot, Stages};
use crate::auth::client::Target;
use crate::auth::{AuthClient, Function};
use crate::bus::auth::{DenyCode, UserRef};
use crate::bus::inbound as inbound_headers;
use crate::bus::subjects::{self, MessageTypeNumber};
use crate::config::{ConfigError, check_range};
use crate::ids::ParticipantId;
use crate::iso15022::{self, Disposition, ParseOptions, Severity};
use crate::pki::{self, PkiConfig, RevocationList};

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Whether `ccass up` runs the gateway (`ccass gateway` always does).
    pub enabled: bool,
    pub listen_addr: String,
    /// The gateway's server certificate and key (`ccass pki issue-server`).
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    pub frame_bytes_max: usize,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub connections_max: usize,
    pub connections_per_participant_max: usize,
    /// Messages of one session waiting for JetStream's acknowledgement.
    pub in_flight_max: usize,
    /// How long a message may wait for JetStream's acknowledgement, from its arrival, before
    /// it is NAKed `G03` (not stored, send again).
    pub store_timeout_ms: u64,
    /// Output messages written to a session and not yet acknowledged by its PSS.
    pub outbound_in_flight_max: usize,
    /// How long an output message may stay unacknowledged before JetStream hands it to the
    /// gateway again (then sent again, marked possible duplicate).
    pub outbound_ack_wait_ms: u64,
}

impl GatewayConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        check_range(
            "gateway.frame_bytes_max",
            self.frame_bytes_max,
            64..=999_999,
        )?;
        check_range(
            "gateway.handshake_timeout_ms",
            self.handshake_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "gateway.idle_timeout_ms",
            self.idle_timeout_ms,
            1..=86_400_000,
        )?;
        check_range("gateway.connections_max", self.connections_max, 1..=100_000)?;
        check_range(
            "gateway.connections_per_participant_max",
            self.connections_per_participant_max,
            1..=10_000,
        )?;
        check_range("gateway.in_flight_max", self.in_flight_max, 1..=65_536)?;
        check_range(
            "gateway.store_timeout_ms",
            self.store_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "gateway.outbound_in_flight_max",
            self.outbound_in_flight_max,
            1..=65_536,
        )?;
        check_range(
            "gateway.outbound_ack_wait_ms",
            self.outbound_ack_wait_ms,
            100..=86_400_000,
        )?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("read {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("bind gateway on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// Certificates from a PEM file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let pem_error = |message: String| GatewayError::Pem {
        what: "certificates",
        path: path.to_owned(),
        message,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no certificate in the file".to_owned()));
    }
    Ok(certificates)
}

/// A private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| GatewayError::Pem {
        what: "private key",
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// The crypto provider of every TLS configuration here (one provider in the process: ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 server configuration requiring a client certificate chaining to the CA.
pub fn server_tls_config(
    certificate_path: &Path,
    key_path: &Path,
    pki: &PkiConfig,
) -> Result<rustls::ServerConfig, GatewayError> {
    let provider = crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(&pki.ca_certificate_path())? {
        roots
            .add(certificate)
            .map_err(|error| GatewayError::Tls(format!("ca certificate: {error}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|error| GatewayError::Tls(format!("client verifier: {error}")))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| GatewayError::Tls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certificates(certificate_path)?, load_key(key_path)?)
        .map_err(|error| GatewayError::Tls(format!("server certificate: {error}")))
}

/// A running gateway's shared state.
pub struct Gateway {
    config: GatewayConfig,
    acceptor: TlsAcceptor,
    revocations: RevocationList,
    auth: AuthClient,
    jetstream: async_nats::jetstream::Context,
    /// What sessions publish through ([`publishing_context`]).
    publisher: async_nats::jetstream::Context,
    connections: Arc<Semaphore>,
    per_participant: Mutex<HashMap<String, usize>>,
    deliveries: outbound::DeliverySlots,
    stages: Arc<Stages>,
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        pki: &PkiConfig,
        auth: AuthClient,
        jetstream: async_nats::jetstream::Context,
    ) -> Result<Arc<Gateway>, GatewayError> {
        names::describe_all();
        let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(
            &config.certificate_path,
            &config.key_path,
            pki,
        )?));
        let publisher = publishing_context(&config, &jetstream);
        Ok(Arc::new(Gateway {
            connections: Arc::new(Semaphore::new(config.connections_max)),
            config,
            acceptor,
            revocations: RevocationList::new(pki.revocation_list_path()),
            auth,
            publisher,
            jetstream,
            per_participant: Mutex::new(HashMap::new()),
            deliveries: outbound::DeliverySlots::default(),
            stages: Arc::new(Stages::default()),
        }))
    }

    /// Where acknowledged messages' time went so far, per stage ([`stages`]).
    pub fn stages(&self) -> StageSnapshot {
        self.stages.snapshot()
    }

    /// Binds `[gateway] listen_addr`.
    pub async fn bind(config: &GatewayConfig) -> Result<TcpListener, GatewayError> {
        TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| GatewayError::Bind {
                address: config.listen_addr.clone(),
                source,
            })
    }

    /// Serves `listener` until `shutdown` completes; open sessions are then dropped (a message
    /// not yet ACKed is the PSS's to send again).
    pub async fn serve(
        self: Arc<Gateway>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut sessions = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "gateway accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                        refused("connections_max", peer, "too many connections");
                        continue;
                    };
                    let gateway = self.clone();
                    sessions.spawn(async move {
                        gateway.connection(stream, peer).await;
                        drop(permit);
                    });
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
        Ok(())
    }

    async fn connection(self: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + Duration::from_millis(self.config.handshake_timeout_ms);
        let mut tls =
            match tokio::time::timeout_at(deadline.into(), self.acceptor.accept(stream)).await {
                Err(_) => return refused("handshake_timeout", peer, "tls handshake timed out"),
                Ok(Err(error)) => return refused(tls_cause(&error), peer, &error.to_string()),
                Ok(Ok(tls)) => tls,
            };
        let Some(certificate) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|certificate| certificate.to_vec())
        else {
            return refused("tls", peer, "no client certificate");
        };
        let (participant, user) = match self.identify(&certificate).await {
            Ok(identified) => identified,
            Err((cause, reason)) => {
                refused(cause, peer, &reason);
                let _ =
                    protocol::write_frame(&mut tls, format!("{LOGIN_REFUSED} {reason}").as_bytes())
                        .await;
                let _ = tls.shutdown().await;
                return;
            }
        };
        let Some(_slot) = self.participant_slot(&participant) else {
            refused(
                "connections_per_participant_max",
                peer,
                "too many connections for the participant",
            );
            let _ = protocol::write_frame(
                &mut tls,
                format!("{LOGIN_REFUSED} too many connections for {participant}").as_bytes(),
            )
            .await;
            let _ = tls.shutdown().await;
            return;
        };
        let login = match tokio::time::timeout_at(
            deadline.into(),
            protocol::read_frame(&mut tls, self.config.frame_bytes_max),
        )
        .await
        {
            Err(_) => Err("no login within the handshake timeout".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(None)) => Err("closed before login".to_owned()),
            Ok(Ok(Some(frame))) => protocol::parse_login(&frame, participant.as_str()),
        };
        let login = match login {
            Ok(login) => login,
            Err(reason) => {
                refused("login", peer, &reason);
                let _ =
                    protocol::write_frame(&mut tls, format!("{LOGIN_REFUSED} {reason}").as_bytes())
                        .await;
                let _ = tls.shutdown().await;
                return;
            }
        };
        if protocol::write_frame(
            &mut tls,
            format!("{LOGIN_OK} {}", login.logical_terminal).as_bytes(),
        )
        .await
        .is_err()
            || tls.flush().await.is_err()
        {
            return;
        }
        tracing::info!(
            %peer,
            participant = participant.as_str(),
            logical_terminal = login.logical_terminal,
            last_output_sequence = login.last_output_sequence,
            "gateway session open"
        );
        ::metrics::gauge!(names::SESSIONS_OPEN).increment(1.0);
        let cause = self.session(tls, &participant, &user, &login).await;
        ::metrics::gauge!(names::SESSIONS_OPEN).decrement(1.0);
        ::metrics::counter!(names::SESSIONS_CLOSED_TOTAL, "cause" => cause).increment(1);
        tracing::info!(%peer, participant = participant.as_str(), cause, "gateway session closed");
    }

    /// Certificate → participant: not revoked, known to the directory.
    async fn identify(
        &self,
        certificate: &[u8],
    ) -> Result<(ParticipantId, UserRef), (&'static str, String)> {
        let serial = pki::serial_of(certificate).map_err(|reason| ("certificate", reason))?;
        match self.revocations.is_revoked(&serial) {
            Ok(false) => {}
            Ok(true) => return Err(("revoked", format!("certificate {serial} is revoked"))),
            Err(error) => {
                return Err((
                    "revocation_list",
                    format!("revocation list unreadable: {error}"),
                ));
            }
        }
        let subject = pki::subject_of(certificate).map_err(|reason| ("certificate", reason))?;
        let principal = self
            .auth
            .authenticate_certificate(&subject)
            .await
            .map_err(|denial| {
                (
                    "unknown_certificate",
                    format!("{subject}: {}", denial.reason),
                )
            })?;
        let participant = ParticipantId::parse(&principal.user.participant)
            .map_err(|error| ("unknown_certificate", error.to_string()))?;
        Ok((participant, principal.user))
    }

    /// May the certificate's user input this instruction (`si.input` on its account, or on its
    /// participant when the message names no account of the `<participant>-<nn>` form)? The
    /// answer is cached by [`AuthClient`]; no answer is a refusal (fail closed).
    async fn authorise(
        &self,
        user: &UserRef,
        participant: &ParticipantId,
        accepted: &Accepted,
    ) -> Result<(), Outcome> {
        let target = match &accepted.account {
            Some(account) if account.contains('-') => Target::Account(account.clone()),
            _ => Target::Participant(participant.clone()),
        };
        match self.auth.authorise(user, Function::SiInput, &target).await {
            Ok(_) => Ok(()),
            Err(denial) => {
                let code = match denial.code {
                    DenyCode::DirectoryUnavailable
                    | DenyCode::ServiceUnavailable
                    | DenyCode::AuditUnavailable => GatewayNak::AuthorisationUnavailable,
                    _ => GatewayNak::NotAuthorised,
                };
                Err(nak(
                    code.as_str(),
                    format!(
                        "{user} si.input: {}: {}",
                        denial.code.as_str(),
                        denial.reason
                    ),
                ))
            }
        }
    }

    fn participant_slot(
        self: &Arc<Gateway>,
        participant: &ParticipantId,
    ) -> Option<ParticipantSlot> {
        let mut counts = self
            .per_participant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(participant.as_str().to_owned()).or_insert(0);
        if *count >= self.config.connections_per_participant_max {
            return None;
        }
        *count += 1;
        Some(ParticipantSlot {
            gateway: self.clone(),
            participant: participant.as_str().to_owned(),
        })
    }

    /// Reads messages until the PSS closes or misbehaves; returns the cause of the end.
    async fn session(
        self: &Arc<Gateway>,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        participant: &ParticipantId,
        user: &UserRef,
        login: &protocol::Login,
    ) -> &'static str {
        let logical_terminal = login.logical_terminal.as_str();
        let (frames_tx, frames_rx) = mpsc::channel::<Vec<u8>>(self.config.outbound_in_flight_max);
        let (acked_tx, acked_rx) = watch::channel(0u64);
        let delivery = tokio::spawn(outbound::deliver(
            self.clone(),
            outbound::Delivery {
                participant: participant.clone(),
                logical_terminal: logical_terminal.to_owned(),
                last_output_sequence: login.last_output_sequence,
                frames: frames_tx,
                acked: acked_rx,
            },
        ));
        let user_header = user.to_string();
        let sender = Sender {
            participant,
            user,
            user_header: &user_header,
        };
        let nats = self.jetstream.client();
        let store_timeout = Duration::from_millis(self.config.store_timeout_ms);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        // One task reads, publishes and writes: a message costs no wake-up of another task
        // of the gateway's (JetStream's acknowledgement still comes from the NATS client's).
        // Both halves are polled by this task only, so their shared lock is never contended.
        let (reader, mut writer) = tokio::io::split(tls);
        let mut frames = protocol::FrameReader::new(reader, self.config.frame_bytes_max);
        let mut awaiting = Awaiting::new(store_timeout);
        let mut outgoing = Outgoing::default();
        let mut outputs = frames_rx;
        let mut outputs_open = true;
        let mut acked_tx = Some(acked_tx);
        let mut delivery = delivery;
        let mut delivery_running = true;
        // Once reading ended: the end's cause, and until when delivery may take to stop.
        let mut ended: Option<(&'static str, Instant)> = None;
        let idle_deadline = tokio::time::sleep(idle);
        tokio::pin!(idle_deadline);
        let mut input_sequence = 0u64;
        loop {
            if ended.is_some() && awaiting.is_empty() && outgoing.is_empty() && !delivery_running {
                break;
            }
            // Replies are written without a flush until nothing is ready, or REPLIES_PER_FLUSH_MAX
            // of them wait: then only writing goes on.
            let room = outgoing.acks.len() < REPLIES_PER_FLUSH_MAX;
            let reading = ended.is_none() && room && awaiting.len() < self.config.in_flight_max;
            let mut end = None;
            tokio::select! {
                biased;
                (answered, outcome) = awaiting.next_settled(), if room && !awaiting.is_empty() => {
                    let stored = Instant::now();
                    record(&outcome, answered.input_sequence, answered.received);
                    if let (Outcome::Ack, Some(passage)) = (&outcome, answered.passage) {
                        outgoing.acks.push((passage, stored));
                    }
                    let reply = Reply {
                        input_sequence: answered.input_sequence,
                        outcome,
                    };
                    outgoing.push_frame(reply.encode(logical_terminal).as_bytes());
                }
                output = outputs.recv(), if outputs_open && room => match output {
                    Some(text) => outgoing.push_frame(&text),
                    None => outputs_open = false,
                },
                frame = frames.next_frame(), if reading => {
                    idle_deadline.as_mut().reset((Instant::now() + idle).into());
                    match frame {
                        Ok(Some(frame)) => {
                            if frame.starts_with(protocol::SERVICE_PREFIX) {
                                // The PSS acknowledges output messages; service messages take
                                // no input number.
                                acknowledged(&frame, participant, &acked_tx);
                            } else {
                                input_sequence += 1;
                                let received = Instant::now();
                                let step = self
                                    .accept(frame, input_sequence, received, &nats, &sender)
                                    .await;
                                awaiting.push(Pending {
                                    input_sequence,
                                    received,
                                    step,
                                });
                            }
                        }
                        Ok(None) => end = Some("closed"),
                        Err(error @ (FrameError::BadPrefix(_) | FrameError::TooLarge { .. })) => {
                            input_sequence += 1;
                            tracing::warn!(participant = participant.as_str(), %error, "gateway frame refused");
                            awaiting.push(Pending::ready(
                                input_sequence,
                                nak(GatewayNak::FrameRefused.as_str(), error.to_string()),
                            ));
                            end = Some("frame");
                        }
                        Err(FrameError::Truncated) => end = Some("truncated"),
                        Err(FrameError::Io(_)) => end = Some("io"),
                    }
                }
                () = &mut idle_deadline, if reading => end = Some("idle"),
                _ = &mut delivery, if delivery_running => delivery_running = false,
                () = sleep_until_ended(ended), if delivery_running && ended.is_some() => {
                    delivery.abort();
                    delivery_running = false;
                }
                written = outgoing.write_to(&mut writer, &self.stages), if !outgoing.is_empty() => {
                    if written.is_err() {
                        // Nothing more reaches this PSS: what awaits JetStream goes unanswered
                        // (the PSS sends it again; a stored copy is then NAKed duplicate).
                        outgoing.abandon();
                        awaiting.abandon();
                        end = Some("io");
                    }
                }
            }
            if let (Some(cause), None) = (end, ended) {
                // Delivery acks what the PSS acknowledged last, then stops (bounded: it may be
                // waiting for the bus).
                acked_tx = None;
                ended = Some((cause, Instant::now() + store_timeout));
            }
        }
        drop(acked_tx);
        let _ = writer.shutdown().await;
        ended.map_or("closed", |(cause, _)| cause)
    }

    /// A message's way to its answer: the codec's checks, authorisation, then publishing to
    /// INBOUND (pipelined: JetStream's acknowledgement is awaited later, in input order).
    async fn accept(
        &self,
        frame: Bytes,
        input_sequence: u64,
        received: Instant,
        nats: &async_nats::Client,
        sender: &Sender<'_>,
    ) -> PendingStep {
        let Sender {
            participant,
            user,
            user_header,
        } = *sender;
        let store_timeout = Duration::from_millis(self.config.store_timeout_ms);
        let accepted = match assess(&frame, participant) {
            Err(outcome) => return PendingStep::Ready(outcome),
            Ok(accepted) => accepted,
        };
        let checked = Instant::now();
        ::metrics::counter!(names::MESSAGES_IN_TOTAL, "message_type" => accepted.message_type_label()).increment(1);
        // Without a bus nothing can be stored (nor authorised): say so at once rather than
        // make every message wait for its timeouts in turn.
        if nats.connection_state() != async_nats::connection::State::Connected {
            return PendingStep::Ready(nak(
                GatewayNak::BusUnavailable.as_str(),
                "not stored: nats is disconnected".to_owned(),
            ));
        }
        match tokio::time::timeout_at(
            (received + store_timeout).into(),
            self.authorise(user, participant, &accepted),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(outcome)) => return PendingStep::Ready(outcome),
            Err(_) => {
                return PendingStep::Ready(nak(
                    GatewayNak::AuthorisationUnavailable.as_str(),
                    format!("no authorisation within {} ms", store_timeout.as_millis()),
                ));
            }
        }
        let authorised = Instant::now();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            accepted.message_id.as_str(),
        );
        headers.insert(
            inbound_headers::INPUT_SEQUENCE,
            input_sequence.to_string().as_str(),
        );
        headers.insert(inbound_headers::USER, user_header);
        headers.insert(inbound_headers::CHANNEL, inbound_headers::CHANNEL_GATEWAY);
        match self
            .publisher
            .publish_with_headers(accepted.subject, headers, frame)
            .await
        {
            Ok(ack) => PendingStep::Stored {
                ack: std::future::IntoFuture::into_future(ack),
                reference: accepted.reference,
                passage: Passage {
                    received,
                    checked,
                    authorised,
                    published: Instant::now(),
                },
            },
            Err(error) => PendingStep::Ready(nak(
                GatewayNak::BusUnavailable.as_str(),
                format!("not stored: {error}"),
            )),
        }
    }
}

/// The context sessions publish through: `jetstream`'s connection, with an ack window that
/// every session's full window fits in together (`connections_max` x `in_flight_max`), and
/// JetStream's acknowledgement awaited at most `store_timeout_ms`.
///
/// async-nats bounds a context's unacknowledged publishes with a semaphore (5,000 permits by
/// default), and a publish waits for a permit. A permit is freed only when its ack future is
/// polled to the end, and a session polls its own futures only between publishes: a session
/// waiting for a permit would never free the ones it holds. With the context's window smaller
/// than the sessions' together, every session could end up waiting so, and the gateway would
/// stall for good (no reply, no store timeout). The bound that holds is each session's
/// `in_flight_max` (it stops reading, backpressure through TCP), so the context's must never be
/// the one reached.
fn publishing_context(
    config: &GatewayConfig,
    jetstream: &async_nats::jetstream::Context,
) -> async_nats::jetstream::Context {
    async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_millis(config.store_timeout_ms))
        .max_ack_inflight(
            config
                .connections_max
                .saturating_mul(config.in_flight_max)
                .max(1),
        )
        .build(jetstream.client())
}

/// Who sends on a session: the certificate's participant and user.
#[derive(Clone, Copy)]
struct Sender<'a> {
    participant: &'a ParticipantId,
    user: &'a UserRef,
    /// `user` as the INBOUND header carries it.
    user_header: &'a str,
}

/// Until delivery may take to stop once reading `ended` (never when it has not).
async fn sleep_until_ended(ended: Option<(&'static str, Instant)>) {
    match ended {
        Some((_, deadline)) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The PSS's acknowledgement of output messages up to a number, passed to delivery.
fn acknowledged(frame: &[u8], participant: &ParticipantId, acked: &Option<watch::Sender<u64>>) {
    match std::str::from_utf8(frame).ok().and_then(Reply::parse) {
        Some(Reply {
            input_sequence: output_sequence,
            outcome: Outcome::Ack,
        }) => {
            if let Some(acked) = acked {
                acked.send_if_modified(|acked| {
                    let newer = output_sequence > *acked;
                    if newer {
                        *acked = output_sequence;
                    }
                    newer
                });
            }
        }
        other => tracing::info!(
            participant = participant.as_str(),
            service_message = ?other,
            "gateway ignored a service message that is not an ACK"
        ),
    }
}

/// Holds one of a participant's connection slots.
struct ParticipantSlot {
    gateway: Arc<Gateway>,
    participant: String,
}

impl Drop for ParticipantSlot {
    fn drop(&mut self) {
        let mut counts = self
            .gateway
            .per_participant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.participant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.participant);
            }
        }
    }
}

/// The metric cause of a failed TLS handshake: what was wrong with the client's certificate
/// when rustls says so, else the protocol or the connection.
fn tls_cause(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    {
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "tls_certificate_expired",
        Some(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => "tls_certificate_not_yet_valid",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "tls_certificate_unknown_issuer"
        }
        Some(Error::InvalidCertificate(_)) => "tls_certificate_invalid",
        Some(Error::NoCertificatesPresented) => "tls_no_certificate",
        Some(_) => "tls_protocol",
        None => "tls_io",
    }
}

fn refused(cause: &'static str, peer: SocketAddr, reason: &str) {
    tracing::warn!(%peer, cause, reason, "gateway connection refused");
    ::metrics::counter!(names::CONNECTIONS_REFUSED_TOTAL, "cause" => cause).increment(1);
}

fn nak(code: &str, reason: String) -> Outcome {
    Outcome::Nak {
        code: code.to_owned(),
        reason,
    }
}

/// One message's answer, ready or waiting for JetStream.
struct Pending {
    input_sequence: u64,
    received: Instant,
    step: PendingStep,
}

/// JetStream's acknowledgement of one publish, awaited in place.
type StoreFuture = std::pin::Pin<
    Box<
        dyn Future<
                Output = Result<
                    async_nats::jetstream::publish::PublishAck,
                    async_nats::jetstream::context::PublishError,
                >,
            > + Send,
    >,
>;

enum PendingStep {
    Ready(Outcome),
    Stored {
        ack: StoreFuture,
        reference: String,
        passage: Passage,
    },
}

impl Pending {
    fn ready(input_sequence: u64, outcome: Outcome) -> Pending {
        Pending {
            input_sequence,
            received: Instant::now(),
            step: PendingStep::Ready(outcome),
        }
    }
}

/// A message answered: its number, arrival and (when it was published) its passage.
struct Answered {
    input_sequence: u64,
    received: Instant,
    passage: Option<Passage>,
}

/// A session's messages awaiting their answers, in input order. Only the oldest is awaited:
/// JetStream acknowledges in order anyway, and its `store_timeout` deadline (from its
/// arrival) is the earliest. One timer serves the whole queue: armed for the oldest message,
/// and moved on only when it fires early for a later one (deadlines only grow along the queue),
/// so a message costs no timer of its own.
struct Awaiting {
    queue: std::collections::VecDeque<Pending>,
    store_timeout: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_deadline: Instant,
}

impl Awaiting {
    fn new(store_timeout: Duration) -> Awaiting {
        let timer_deadline = Instant::now() + store_timeout;
        Awaiting {
            queue: std::collections::VecDeque::new(),
            store_timeout,
            timer: Box::pin(tokio::time::sleep_until(timer_deadline.into())),
            timer_deadline,
        }
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, pending: Pending) {
        self.queue.push_back(pending);
    }

    /// Drops every message without an answer (the session can no longer write).
    fn abandon(&mut self) {
        self.queue.clear();
    }

    /// The oldest message's outcome once it has one: JetStream's acknowledgement, or a NAK
    /// `store_timeout` after its arrival. Cancellation safe: the message leaves the queue only
    /// with its outcome. Pending forever when the queue is empty.
    async fn next_settled(&mut self) -> (Answered, Outcome) {
        std::future::poll_fn(|context| self.poll_settled(context)).await
    }

    fn poll_settled(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(Answered, Outcome)> {
        use std::task::Poll;
        loop {
            let Some(head) = self.queue.front_mut() else {
                return Poll::Pending;
            };
            let outcome = match &mut head.step {
                PendingStep::Ready(_) => None,
                PendingStep::Stored { ack, reference, .. } => match ack.as_mut().poll(context) {
                    Poll::Ready(Ok(ack)) if ack.duplicate => Some(nak(
                        GatewayNak::Duplicate.as_str(),
                        format!("duplicate reference {reference}"),
                    )),
                    Poll::Ready(Ok(_)) => Some(Outcome::Ack),
                    Poll::Ready(Err(error)) => Some(nak(
                        GatewayNak::BusUnavailable.as_str(),
                        format!("not stored: {error}"),
                    )),
                    Poll::Pending => {
                        let deadline = head.received + self.store_timeout;
                        if Instant::now() >= deadline {
                            Some(nak(
                                GatewayNak::BusUnavailable.as_str(),
                                format!("not stored within {} ms", self.store_timeout.as_millis()),
                            ))
                        } else {
                            if self.timer_deadline > deadline || self.timer.is_elapsed() {
                                self.timer_deadline = deadline;
                                self.timer.as_mut().reset(deadline.into());
                            }
                            match self.timer.as_mut().poll(context) {
                                // Fired for an earlier message: look again (re-armed above).
                                Poll::Ready(()) => continue,
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                    }
                },
            };
            let Some(head) = self.queue.pop_front() else {
                return Poll::Pending;
            };
            let (outcome, passage) = match (head.step, outcome) {
                (PendingStep::Ready(ready), _) => (ready, None),
                (PendingStep::Stored { passage, .. }, Some(outcome)) => (outcome, Some(passage)),
                (PendingStep::Stored { .. }, None) => continue,
            };
            return Poll::Ready((
                Answered {
                    input_sequence: head.input_sequence,
                    received: head.received,
                    passage,
                },
                outcome,
            ));
        }
    }
}

/// Replies written without a flush at most: then they go out even while more are ready.
const REPLIES_PER_FLUSH_MAX: usize = 256;

/// Frames written to the session but not yet sent: replies and output messages, sent in one
/// write (and one flush) when nothing else is ready, so a batch of replies costs one TLS
/// record and one system call rather than one each.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    /// How much of `bytes` the TLS stream has taken.
    written: usize,
    /// The ACKs among them: each message's passage and when its store was seen.
    acks: Vec<(Passage, Instant)>,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn push_frame(&mut self, text: &[u8]) {
        if let Err(error) = protocol::append_frame(&mut self.bytes, text) {
            tracing::error!(%error, "gateway frame not written");
        }
    }

    fn abandon(&mut self) {
        self.bytes.clear();
        self.written = 0;
        self.acks.clear();
    }

    /// Writes and flushes everything, then records the stages of the ACKs that went out.
    /// Cancellation safe: what the stream took is remembered, and more may be pushed
    /// meanwhile.
    async fn write_to<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        stages: &Stages,
    ) -> std::io::Result<()> {
        use std::task::Poll;
        std::future::poll_fn(|context| {
            while self.written < self.bytes.len() {
                match std::pin::Pin::new(&mut *writer)
                    .poll_write(context, &self.bytes[self.written..])
                {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(taken)) => self.written += taken,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            std::pin::Pin::new(&mut *writer).poll_flush(context)
        })
        .await?;
        self.bytes.clear();
        self.written = 0;
        let flushed = Instant::now();
        for (passage, stored) in self.acks.drain(..) {
            stages.record(&passage, stored, flushed);
        }
        Ok(())
    }
}

fn record(outcome: &Outcome, input_sequence: u64, received: Instant) {
    match outcome {
        Outcome::Ack => {
            ::metrics::counter!(names::ACKS_TOTAL).increment(1);
            ::metrics::histogram!(names::ACK_LATENCY_SECONDS)
                .record(received.elapsed().as_secs_f64());
        }
        Outcome::Nak { code, reason } => {
            tracing::info!(code, reason, input_sequence, "gateway nak");
            ::metrics::counter!(names::NAKS_TOTAL, "code" => code.clone()).increment(1);
        }
    }
}

/// A message the gateway will publish.
#[derive(Debug)]
struct Accepted {
    subject: subjects::Subject,
    /// `FIAC/97a::SAFE` of MT540–547, when readable.
    account: Option<String>,
    message_id: String,
    reference: String,
    message_type: u16,
}

impl Accepted {
    fn message_type_label(&self) -> String {
        format!("{:03}", self.message_type)
    }
}

/// The checks before publishing: the codec's NAK problems, the sender, the reference.
fn assess(frame: &[u8], participant: &ParticipantId) -> Result<Accepted, Outcome> {
    let text = std::str::from_utf8(frame).map_err(|_| {
        nak(
            iso15022::NakCode::T32.as_str(),
            "message is not utf-8".to_owned(),
        )
    })?;
    let report = iso15022::check(text, ParseOptions::fin());
    if let Some((code, problem)) =
        report
            .problems
            .iter()
            .find_map(|problem| match problem.disposition {
                Disposition::Nak(code) if problem.severity() == Severity::Error => {
                    Some((code, problem))
                }
                _ => None,
            })
    {
        return Err(nak(code.as_str(), problem.to_string()));
    }
    let message = &report.message;
    let sender = message
        .basic_header
        .map(|header| header.logical_terminal)
        .ok_or_else(|| {
            nak(
                iso15022::NakCode::H01.as_str(),
                "block 1 missing".to_owned(),
            )
        })?;
    protocol::check_logical_terminal(sender, participant.as_str())
        .map_err(|reason| nak(GatewayNak::ForeignSender.as_str(), reason))?;
    let message_type = message
        .message_type
        .and_then(|message_type| {
            MessageTypeNumber::new(message_type.0).map(|number| (message_type.0, number))
        })
        .ok_or_else(|| {
            nak(
                iso15022::NakCode::H50.as_str(),
                "no valid message type".to_owned(),
            )
        })?;
    let reference = message
        .text
        .root()
        .sequence("GENL")
        .and_then(|genl| genl.field("20", "SEME"))
        .and_then(|field| field.generic())
        .map(|generic| generic.value.to_owned())
        .filter(|reference| !reference.is_empty())
        .ok_or_else(|| {
            nak(
                iso15022::NakCode::T13.as_str(),
                "GENL/20C::SEME missing".to_owned(),
            )
        })?;
    let account = iso15022::views::SettlementInstruction::from_message(message)
        .ok()
        .map(|view| view.account.to_owned());
    Ok(Accepted {
        subject: subjects::inbound(participant, message_type.1),
        account,
        message_id: format!("{}:{reference}", participant.as_str()),
        reference,
        message_type: message_type.0,
    })
}
