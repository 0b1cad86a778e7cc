//! The bus: NATS core request/reply and JetStream streams.
//!
//! Architecture invariant: only `bus` knows subject strings and wire payloads. Subjects are
//! declared once, as data, in `subjects/*.toml` and built in code only through the typed
//! builders in [`subjects`]; a test holds the two against each other.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, check_range};

/// `[bus]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `nats://host:port`; several servers separated by commas.
    pub url: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub publish_ack_timeout_ms: u64,
    pub publish_in_flight_max: usize,
    /// JetStream replicas per stream: 1 on one server, 3 in a production cluster.
    pub stream_replicas: usize,
    /// Storage limit of each stream of the catalogue, by stream name. JetStream reserves it
    /// up front, so it is sized per deployment (a laptop cannot reserve production sizes).
    pub stream_bytes_max: BTreeMap<String, i64>,
}

impl BusConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_range(
            "bus.connect_timeout_ms",
            self.connect_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "bus.request_timeout_ms",
            self.request_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "bus.publish_ack_timeout_ms",
            self.publish_ack_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "bus.publish_in_flight_max",
            self.publish_in_flight_max,
            1..=1_000_000,
        )?;
        check_range("bus.stream_replicas", self.stream_replicas, 1..=5)?;
        let catalogue = catalogue::Catalogue::embedded().map_err(|error| ConfigError::Key {
            key: "bus".to_owned(),
            message: error.to_string(),
        })?;
        for stream in &catalogue.streams {
            let key = format!("bus.stream_bytes_max.{}", stream.name);
            let Some(bytes_max) = self.stream_bytes_max.get(&stream.name) else {
                return Err(ConfigError::Key {
                    key,
                    message: "missing: every stream of subjects/ needs a storage limit".to_owned(),
                });
            };
            check_range(&key, *bytes_max, 1..=i64::MAX)?;
        }
        if let Some(unknown) = self
            .stream_bytes_max
            .keys()
            .find(|name| !catalogue.streams.iter().any(|s| &s.name == *name))
        {
            return Err(ConfigError::Key {
                key: format!("bus.stream_bytes_max.{unknown}"),
                message: "no such stream in subjects/".to_owned(),
            });
        }
        Ok(())
    }

    /// The storage limit of a stream; `check` made sure every catalogue stream has one.
    pub fn stream_bytes_max(&self, stream: &str) -> Result<i64, BusError> {
        self.stream_bytes_max
            .get(stream)
            .copied()
            .ok_or_else(|| BusError::JetStream {
                operation: format!("size stream {stream}"),
                message: format!("config key `bus.stream_bytes_max.{stream}` is missing"),
            })
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

pub mod auth;
pub mod catalogue;
pub mod inbound;
pub mod init;
pub mod instructions;
pub mod subjects;
pub mod trades;

use crate::telemetry::ops::{Probe, ProbeFuture};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connect to nats at {url}: {message}")]
    Unavailable { url: String, message: String },
    #[error("jetstream {operation}: {message}")]
    JetStream { operation: String, message: String },
    #[error(transparent)]
    Catalogue(#[from] catalogue::CatalogueError),
}

/// Connects to NATS. Fails (does not retry forever) when no server answers within
/// `bus.connect_timeout_ms`, so a process with an unreachable bus exits with a clear error;
/// once connected, the client reconnects by itself and readiness reports the gap.
pub async fn connect(
    config: &BusConfig,
    client_name: &str,
) -> Result<async_nats::Client, BusError> {
    let options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(config.connect_timeout())
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)));
    let connecting = async_nats::connect_with_options(config.url.as_str(), options);
    match tokio::time::timeout(config.connect_timeout(), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(BusError::Unavailable {
            url: config.url.clone(),
            message: error.to_string(),
        }),
        Err(_) => Err(BusError::Unavailable {
            url: config.url.clone(),
            message: format!("no answer within {} ms", config.connect_timeout_ms),
        }),
    }
}

/// Asks JetStream to redeliver `messages` after `delay` (negative acknowledgements with a
/// delay, sent together, not awaited one by one): for messages a worker could not commit
/// for a passing reason, so they come back once the cause is likely gone rather than after
/// the consumer's ack wait. A durable consumer with `max_deliver = -1` never gives up on a
/// message, so a long outage costs redeliveries, never messages. A nak that fails leaves
/// its message to the ack wait (logged at debug: nothing is lost).
pub async fn redeliver_after<M>(messages: &[M], delay: Duration)
where
    M: std::borrow::Borrow<async_nats::jetstream::Message> + Sync,
{
    let naked = futures::future::join_all(messages.iter().map(|message| {
        message
            .borrow()
            .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
    }))
    .await;
    if let Some(Err(error)) = naked.into_iter().find(Result::is_err) {
        tracing::debug!(%error, "nak failed; the message comes back after the ack wait");
    }
}

/// JetStream context with the configured publish-ack timeout.
pub fn jetstream(config: &BusConfig, client: async_nats::Client) -> async_nats::jetstream::Context {
    let mut context = async_nats::jetstream::new(client);
    context.set_timeout(Duration::from_millis(config.publish_ack_timeout_ms));
    context
}

/// Readiness of the NATS connection: connected now and a round trip to the server succeeds.
pub struct NatsProbe(pub async_nats::Client);

impl Probe for NatsProbe {
    fn dependency(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let state = self.0.connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(format!("connection {state}"));
            }
            self.0.flush().await.map_err(|error| error.to_string())
        })
    }
}
