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

pub mod catalogue;
pub mod cpu;
pub mod metrics;
pub mod ops;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

impl TelemetryConfig {
    pub fn readiness_check_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.readiness_check_timeout_ms)
    }
}

/// Installs the process-wide `tracing` subscriber. Call once, first thing in `main`.
pub fn init_tracing(config: &TelemetryConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("config key `telemetry.log_filter`: `{}`", config.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("install tracing subscriber: {error}"))
}

/// The process-wide Prometheus recorder, installed on first use. Every service in a process
/// (`ccass up` runs them all) shares it, so `/metrics` shows them all.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which ccass never does;
            // then this handle still renders (empty) valid text.
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            self::metrics::describe_all();
            handle
        })
        .clone()
}
