//! The PSS client library: what a participant's back office links to reach the gateway.
//!
//! ```text
//! let mut session = pss::Session::connect(&config, "B01234XXXXXX", 0).await?;
//! let replies = session.send_all(&messages).await?;   // pipelined, replies in input order
//! ```
//!
//! [`Session::connect`] opens TLS 1.3 with the participant's certificate and logs in;
//! [`Session::send`] writes one message and returns its input sequence number;
//! [`Session::reply`] reads the next ACK/NAK; [`Session::send_all`] writes and reads at once,
//! keeping at most `in_flight_max` messages unanswered. Protocol: [`crate::gateway::protocol`].
//!
//! Output messages: [`Session::receive`] returns the next one (output messages that arrive
//! while waiting for replies, and replies that arrive while waiting for output messages, are
//! kept in order for the other call); [`Session::acknowledge`] acknowledges every output
//! message up to a number. [`listen`] is the loop of `ccass pss listen`: it keeps the last output
//! sequence number it holds in a state file, logs in with it, and reconnects after a failure,
//! so a restart resumes where it stopped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt as _, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::gateway::protocol::{self, FrameError, LOGIN_OK, OutputMessage, Reply};
use crate::gateway::{GatewayError, crypto_provider, load_certificates, load_key};

/// `[pss]`: settings of the PSS client commands.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PssSettings {
    /// `pss listen`: how long to wait before logging in again after a failure.
    pub reconnect_delay_ms: u64,
}

impl PssSettings {
    pub fn check(&self) -> Result<(), crate::config::ConfigError> {
        crate::config::check_range(
            "pss.reconnect_delay_ms",
            self.reconnect_delay_ms,
            1..=600_000,
        )
    }

    pub fn reconnect_delay(&self) -> Duration {
        Duration::from_millis(self.reconnect_delay_ms)
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct PssConfig {
    /// `host:port` of the gateway.
    pub address: String,
    /// The name in the gateway's server certificate (a DNS name or an IP address).
    pub server_name: String,
    pub ca_certificate_path: PathBuf,
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    /// Largest reply frame accepted.
    pub frame_bytes_max: usize,
    /// Messages written but not yet answered, in [`Session::send_all`].
    pub in_flight_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PssError {
    #[error(transparent)]
    Setup(#[from] GatewayError),
    #[error("server name {0:?} is not a dns name or ip address")]
    ServerName(String),
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("tls with {address}: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("login refused: {0}")]
    Refused(String),
    #[error("session: {0}")]
    Frame(#[from] FrameError),
    #[error("write: {0}")]
    Write(#[from] std::io::Error),
    #[error("gateway closed the session")]
    Closed,
    #[error("unexpected frame from the gateway: {0:?}")]
    Protocol(String),
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

/// A logged-in session.
pub struct Session {
    reader: ReadHalf<TlsStream<TcpStream>>,
    writer: BufWriter<WriteHalf<TlsStream<TcpStream>>>,
    next_input_sequence: u64,
    frame_bytes_max: usize,
    in_flight_max: usize,
    logical_terminal: String,
    replies: VecDeque<Reply>,
    outputs: VecDeque<OutputMessage>,
}

/// A frame from the gateway after login.
enum Incoming {
    Reply(Reply),
    Output(OutputMessage),
}

/// TLS 1.3 client configuration with the participant's certificate.
pub fn client_tls_config(config: &PssConfig) -> Result<rustls::ClientConfig, PssError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(&config.ca_certificate_path)? {
        roots
            .add(certificate)
            .map_err(|error| GatewayError::Tls(format!("ca certificate: {error}")))?;
    }
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| GatewayError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            load_certificates(&config.certificate_path)?,
            load_key(&config.key_path)?,
        )
        .map_err(|error| PssError::Setup(GatewayError::Tls(error.to_string())))
}

impl Session {
    /// Connects, completes TLS and logs in as `logical_terminal`.
    pub async fn connect(
        config: &PssConfig,
        logical_terminal: &str,
        last_output_sequence: u64,
    ) -> Result<Session, PssError> {
        let connector = TlsConnector::from(Arc::new(client_tls_config(config)?));
        let server_name = rustls::pki_types::ServerName::try_from(config.server_name.clone())
            .map_err(|_| PssError::ServerName(config.server_name.clone()))?;
        let tcp = TcpStream::connect(&config.address)
            .await
            .map_err(|source| PssError::Connect {
                address: config.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| PssError::Tls {
                address: config.address.clone(),
                source,
            })?;
        protocol::write_frame(
            &mut tls,
            protocol::login(logical_terminal, last_output_sequence).as_bytes(),
        )
        .await?;
        tls.flush().await?;
        let answer = protocol::read_frame(&mut tls, config.frame_bytes_max)
            .await?
            .ok_or(PssError::Closed)?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if !answer.starts_with(LOGIN_OK) {
            return Err(PssError::Refused(answer));
        }
        let (reader, writer) = tokio::io::split(tls);
        Ok(Session {
            reader,
            writer: BufWriter::new(writer),
            next_input_sequence: 1,
            frame_bytes_max: config.frame_bytes_max,
            in_flight_max: config.in_flight_max.max(1),
            logical_terminal: logical_terminal.to_owned(),
            replies: VecDeque::new(),
            outputs: VecDeque::new(),
        })
    }

    /// Writes one message (flushed); returns its input sequence number.
    pub async fn send(&mut self, message: &str) -> Result<u64, PssError> {
        let input_sequence = self.write(message).await?;
        self.writer.flush().await?;
        Ok(input_sequence)
    }

    async fn write(&mut self, message: &str) -> Result<u64, PssError> {
        protocol::write_frame(&mut self.writer, message.as_bytes()).await?;
        let input_sequence = self.next_input_sequence;
        self.next_input_sequence += 1;
        Ok(input_sequence)
    }

    /// The next ACK or NAK (output messages read meanwhile wait for [`Session::receive`]).
    pub async fn reply(&mut self) -> Result<Reply, PssError> {
        loop {
            if let Some(reply) = self.replies.pop_front() {
                return Ok(reply);
            }
            match self.read_incoming().await? {
                Incoming::Reply(reply) => return Ok(reply),
                Incoming::Output(output) => self.outputs.push_back(output),
            }
        }
    }

    /// The next output message (replies read meanwhile wait for [`Session::reply`]).
    pub async fn receive(&mut self) -> Result<OutputMessage, PssError> {
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return Ok(output);
            }
            match self.read_incoming().await? {
                Incoming::Output(output) => return Ok(output),
                Incoming::Reply(reply) => self.replies.push_back(reply),
            }
        }
    }

    /// Acknowledges every output message up to `output_sequence` (flushed).
    pub async fn acknowledge(&mut self, output_sequence: u64) -> Result<(), PssError> {
        protocol::write_frame(
            &mut self.writer,
            protocol::output_ack(&self.logical_terminal, output_sequence).as_bytes(),
        )
        .await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn read_incoming(&mut self) -> Result<Incoming, PssError> {
        let frame = protocol::read_frame(&mut self.reader, self.frame_bytes_max)
            .await?
            .ok_or(PssError::Closed)?;
        let text = String::from_utf8_lossy(&frame);
        if let Some(reply) = Reply::parse(&text) {
            return Ok(Incoming::Reply(reply));
        }
        OutputMessage::parse(&text)
            .map(Incoming::Output)
            .ok_or_else(|| PssError::Protocol(text.into_owned()))
    }

    /// Sends every message, pipelined, and returns the replies in input order.
    pub async fn send_all<S: AsRef<str>>(
        &mut self,
        messages: &[S],
    ) -> Result<Vec<Reply>, PssError> {
        let mut replies = Vec::with_capacity(messages.len());
        let mut written = 0;
        while replies.len() < messages.len() {
            while written < messages.len() && written - replies.len() < self.in_flight_max {
                self.write(messages[written].as_ref()).await?;
                written += 1;
            }
            self.writer.flush().await?;
            replies.push(self.reply().await?);
        }
        Ok(replies)
    }

    /// Splits the session so one task writes messages while another reads replies (as the
    /// benchmark's open-loop senders do). Output messages read by the reader are skipped.
    pub fn into_split(self) -> (SessionWriter, SessionReader) {
        (
            SessionWriter {
                writer: self.writer,
                next_input_sequence: self.next_input_sequence,
            },
            SessionReader {
                reader: self.reader,
                frame_bytes_max: self.frame_bytes_max,
            },
        )
    }

    /// Closes the session cleanly.
    pub async fn close(mut self) -> Result<(), PssError> {
        self.writer.shutdown().await?;
        Ok(())
    }
}

/// The writing half of a split [`Session`].
pub struct SessionWriter {
    writer: BufWriter<WriteHalf<TlsStream<TcpStream>>>,
    next_input_sequence: u64,
}

impl SessionWriter {
    /// Writes one message (not flushed); returns its input sequence number.
    pub async fn write(&mut self, message: &[u8]) -> Result<u64, PssError> {
        protocol::write_frame(&mut self.writer, message).await?;
        let input_sequence = self.next_input_sequence;
        self.next_input_sequence += 1;
        Ok(input_sequence)
    }

    pub async fn flush(&mut self) -> Result<(), PssError> {
        self.writer.flush().await?;
        Ok(())
    }

    pub async fn close(mut self) -> Result<(), PssError> {
        self.writer.shutdown().await?;
        Ok(())
    }
}

/// The reading half of a split [`Session`].
pub struct SessionReader {
    reader: ReadHalf<TlsStream<TcpStream>>,
    frame_bytes_max: usize,
}

impl SessionReader {
    /// The next ACK or NAK (output messages are skipped).
    pub async fn reply(&mut self) -> Result<Reply, PssError> {
        loop {
            let frame = protocol::read_frame(&mut self.reader, self.frame_bytes_max)
                .await?
                .ok_or(PssError::Closed)?;
            let text = String::from_utf8_lossy(&frame);
            if let Some(reply) = Reply::parse(&text) {
                return Ok(reply);
            }
            if OutputMessage::parse(&text).is_none() {
                return Err(PssError::Protocol(text.into_owned()));
            }
        }
    }
}

/// The last output sequence number a PSS holds, kept in a small text file (one decimal
/// number; a missing file is 0). Written to a temporary file and renamed, so a crash leaves
/// the old or the new number, never a torn one.
pub struct OutputState {
    path: Option<PathBuf>,
    last_output_sequence: u64,
}

impl OutputState {
    /// A state kept in memory only (a restart starts from 0).
    pub fn in_memory() -> OutputState {
        OutputState {
            path: None,
            last_output_sequence: 0,
        }
    }

    pub fn load(path: &Path) -> Result<OutputState, PssError> {
        let state_error = |message: String| PssError::State {
            path: path.to_owned(),
            message,
        };
        let last_output_sequence = match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| state_error(format!("not a number: {:?}", text.trim())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(state_error(error.to_string())),
        };
        Ok(OutputState {
            path: Some(path.to_owned()),
            last_output_sequence,
        })
    }

    pub fn last_output_sequence(&self) -> u64 {
        self.last_output_sequence
    }

    /// Records that the PSS holds every output message up to `output_sequence`.
    pub fn hold(&mut self, output_sequence: u64) -> Result<(), PssError> {
        if output_sequence <= self.last_output_sequence {
            return Ok(());
        }
        if let Some(path) = &self.path {
            let state_error = |error: std::io::Error| PssError::State {
                path: path.clone(),
                message: error.to_string(),
            };
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, format!("{output_sequence}\n")).map_err(state_error)?;
            std::fs::rename(&temporary, path).map_err(state_error)?;
        }
        self.last_output_sequence = output_sequence;
        Ok(())
    }
}

/// Receives output messages for ever (or until `count_max` new ones were handled): each new
/// one is handed to `handle`, recorded in `state`, then acknowledged; one the PSS already
/// holds (a possible duplicate at or below the state's number) is acknowledged again and
/// skipped. After a connection or session failure it waits `reconnect_delay` and logs in again
/// with the state's number, so the gateway resumes after it.
pub async fn listen(
    config: &PssConfig,
    logical_terminal: &str,
    state: &mut OutputState,
    reconnect_delay: Duration,
    count_max: Option<u64>,
    mut handle: impl FnMut(&OutputMessage),
) -> Result<u64, PssError> {
    let mut handled = 0u64;
    loop {
        let mut session =
            match Session::connect(config, logical_terminal, state.last_output_sequence()).await {
                Ok(session) => session,
                Err(
                    error @ (PssError::Refused(_) | PssError::Setup(_) | PssError::ServerName(_)),
                ) => {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(%error, "pss: connect failed; trying again");
                    tokio::time::sleep(reconnect_delay).await;
                    continue;
                }
            };
        let ended = loop {
            if count_max.is_some_and(|count_max| handled >= count_max) {
                let _ = session.close().await;
                return Ok(handled);
            }
            let output = match session.receive().await {
                Ok(output) => output,
                Err(error) => break error,
            };
            if output.output_sequence > state.last_output_sequence() {
                handle(&output);
                state.hold(output.output_sequence)?;
                handled += 1;
            }
            if let Err(error) = session.acknowledge(output.output_sequence).await {
                break error;
            }
        };
        tracing::warn!(error = %ended, "pss: session ended; reconnecting");
        tokio::time::sleep(reconnect_delay).await;
    }
}

/// The participant of a client certificate file (its subject's OU).
pub fn participant_of_certificate(path: &std::path::Path) -> Result<String, PssError> {
    let certificate = load_certificates(path)?
        .into_iter()
        .next()
        .ok_or_else(|| PssError::Protocol("no certificate".to_owned()))?;
    let subject = crate::pki::subject_of(&certificate).map_err(PssError::Protocol)?;
    subject
        .split(',')
        .find_map(|part| part.strip_prefix("OU="))
        .map(str::to_owned)
        .ok_or_else(|| PssError::Protocol(format!("no OU in {subject}")))
}

/// The logical terminal a participant's PSS uses by default: its id padded with `X` to 12.
pub fn default_logical_terminal(participant: &str) -> String {
    format!("{participant:X<12}")
}
