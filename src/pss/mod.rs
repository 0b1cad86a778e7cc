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

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt as _, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::gateway::protocol::{self, FrameError, LOGIN_OK, Reply};
use crate::gateway::{GatewayError, crypto_provider, load_certificates, load_key};

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
}

/// A logged-in session.
pub struct Session {
    reader: ReadHalf<TlsStream<TcpStream>>,
    writer: BufWriter<WriteHalf<TlsStream<TcpStream>>>,
    next_input_sequence: u64,
    frame_bytes_max: usize,
    in_flight_max: usize,
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

    /// The next ACK or NAK.
    pub async fn reply(&mut self) -> Result<Reply, PssError> {
        read_reply(&mut self.reader, self.frame_bytes_max).await
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

    /// Closes the session cleanly.
    pub async fn close(mut self) -> Result<(), PssError> {
        self.writer.shutdown().await?;
        Ok(())
    }
}

async fn read_reply(
    reader: &mut ReadHalf<TlsStream<TcpStream>>,
    frame_bytes_max: usize,
) -> Result<Reply, PssError> {
    let frame = protocol::read_frame(reader, frame_bytes_max)
        .await?
        .ok_or(PssError::Closed)?;
    let text = String::from_utf8_lossy(&frame);
    Reply::parse(&text).ok_or_else(|| PssError::Protocol(text.into_owned()))
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
