//! Telemetry: tracing, Prometheus metrics and the ops port (`/metrics`, `/healthz`, `/readyz`).

use serde::Deserialize;

/// `[telemetry]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter directives, e.g. `info,ccass=debug`.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (port 0 picks a free port).
    pub ops_listen_addr: std::net::SocketAddr,
    pub readiness_check_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
