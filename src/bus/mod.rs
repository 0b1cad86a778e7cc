//! The bus: NATS core request/reply and JetStream streams.
//!
//! Architecture invariant: only `bus` knows subject strings and wire payloads. Subjects are
//! declared once, as data, in `subjects/*.toml` and built in code only through the typed
//! builders in [`subjects`]; a test holds the two against each other.

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
}

impl BusConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_range("bus.connect_timeout_ms", self.connect_timeout_ms, 1..=600_000)?;
        check_range("bus.request_timeout_ms", self.request_timeout_ms, 1..=600_000)?;
        check_range("bus.publish_ack_timeout_ms", self.publish_ack_timeout_ms, 1..=600_000)?;
        check_range("bus.publish_in_flight_max", self.publish_in_flight_max, 1..=1_000_000)?;
        check_range("bus.stream_replicas", self.stream_replicas, 1..=5)?;
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}
