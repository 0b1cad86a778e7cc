//! The ops port: `/metrics` (Prometheus text), `/healthz` (the process is alive and serving) and
//! `/readyz` (every dependency this process uses answers now).
//!
//! Readiness runs each [`Probe`] on request, concurrently, each bounded by
//! `telemetry.readiness_check_timeout_ms`, so `/readyz` turns unready as soon as Postgres or NATS
//! goes away and ready again when it returns, with no background state to go stale.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use super::metrics::{DEPENDENCY_UP, READINESS_CHECK_SECONDS, READINESS_CHECKS_TOTAL};

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency whose reachability decides readiness (Postgres, NATS, LDAP).
/// Implemented by the module that owns the connection: `hostdb`, `bus`, `auth`.
pub trait Probe: Send + Sync {
    /// A short, fixed name used as a metric label: `postgres`, `nats`, `ldap`.
    fn dependency(&self) -> &'static str;
    /// Succeeds when the dependency answers now. The caller bounds it by a timeout.
    fn check(&self) -> ProbeFuture<'_>;
}

#[derive(Clone)]
pub struct OpsState {
    metrics: PrometheusHandle,
    probes: Arc<Vec<Box<dyn Probe>>>,
    check_timeout: Duration,
}

impl OpsState {
    pub fn new(
        metrics: PrometheusHandle,
        probes: Vec<Box<dyn Probe>>,
        check_timeout: Duration,
    ) -> Self {
        OpsState {
            metrics,
            probes: Arc::new(probes),
            check_timeout,
        }
    }

    /// Runs every probe concurrently; returns `(dependency, Ok | Err(reason))` in probe order.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let checks = self.probes.iter().map(|probe| async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(self.check_timeout, probe.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err(format!(
                    "no answer within {} ms",
                    self.check_timeout.as_millis()
                )),
            };
            let dependency = probe.dependency();
            let label = match &outcome {
                Ok(()) => "ok",
                Err(_) if started.elapsed() >= self.check_timeout => "timed_out",
                Err(_) => "failed",
            };
            metrics::counter!(READINESS_CHECKS_TOTAL, "dependency" => dependency, "outcome" => label)
                .increment(1);
            metrics::histogram!(READINESS_CHECK_SECONDS, "dependency" => dependency)
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!(DEPENDENCY_UP, "dependency" => dependency)
                .set(if outcome.is_ok() { 1.0 } else { 0.0 });
            (dependency, outcome)
        });
        futures::future::join_all(checks).await
    }
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the ops port until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: OpsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let results = state.readiness().await;
    let ready = results.iter().all(|(_, outcome)| outcome.is_ok());
    let mut body = String::from(if ready { "ready\n" } else { "unready\n" });
    for (dependency, outcome) in &results {
        match outcome {
            Ok(()) => body.push_str(&format!("{dependency} ok\n")),
            Err(reason) => body.push_str(&format!("{dependency} down: {reason}\n")),
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}
