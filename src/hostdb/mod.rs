//! The host database: PostgreSQL, the system of record. The only module that issues SQL.
//!
//! Architecture invariant: nothing outside `hostdb` builds SQL text or touches a
//! `tokio_postgres::Client`; other modules call typed functions here.
//!
//! - [`connect`] / [`ping`]: the pool and the readiness probe. `connect` opens nothing yet;
//!   call `ping` at startup to fail fast when the server is unreachable.
//! - [`HostDbError`]: every failure classified as unavailable / timeout / constraint / query.
//! - [`migrate`]: versioned, checksummed, transactional schema migrations.
//! - [`seed`]: reference data (participants, accounts, securities, openings) from a file.
//! - [`journal`]: COPY BINARY appends to the movement journals.
//! - [`partitions`]: monthly partitions of the journals, created ahead.
//! - [`audit`]: whole-database invariant checks (balances, conservation, references).
//! - [`audit_trail`]: the append-only trail of authorisation decisions, and pending grants.
//! - [`isin`]: ISIN check-digit validation (the schema enforces the same rule).

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret, check_range};

pub mod audit;
pub mod audit_trail;
pub mod cns;
pub mod cns_settlement;
pub(crate) mod copy;
pub mod demo;
pub mod intake;
pub mod journal;
pub mod migrate;
pub mod outbox;
pub mod partitions;
pub mod seed;
pub mod settlement;
pub mod settlement_bench;
pub mod statements;
pub mod terminal;

pub use deadpool_postgres::Pool;

/// `[hostdb]` in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDbConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Optional: loopback development servers use trust authentication.
    /// Set it with `CCASS_HOSTDB__PASSWORD`, never in a committed file.
    pub password: Option<Secret<String>>,
    pub database: String,
    pub pool_connections_max: usize,
    pub connect_timeout_ms: u64,
    pub pool_wait_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl HostDbConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        // A settlement run holds three at once: its transaction and its two journals' COPY
        // (V0021).
        check_range(
            "hostdb.pool_connections_max",
            self.pool_connections_max,
            3..=1024,
        )?;
        check_range(
            "hostdb.connect_timeout_ms",
            self.connect_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "hostdb.pool_wait_timeout_ms",
            self.pool_wait_timeout_ms,
            1..=600_000,
        )?;
        check_range(
            "hostdb.statement_timeout_ms",
            self.statement_timeout_ms,
            1..=86_400_000,
        )?;
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn pool_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_wait_timeout_ms)
    }

    /// The same server, another database (tests create one per test).
    pub fn with_database(&self, database: &str) -> HostDbConfig {
        HostDbConfig {
            database: database.to_owned(),
            ..self.clone()
        }
    }
}

/// `application_name` that [`connect`] reports to the server (`pg_stat_activity`).
pub const DEFAULT_APPLICATION_NAME: &str = "ccass";

/// Why a host database call failed. Callers branch on the variant: `Unavailable` is worth a
/// retry once the server is back, `Constraint` is a refused write, `Query` is a bug or a bad
/// statement.
#[derive(Debug, thiserror::Error)]
pub enum HostDbError {
    /// The server could not be reached, the pool had no connection in time, or the
    /// connection broke.
    #[error("host database unavailable: {context}: {detail}")]
    Unavailable { context: String, detail: String },
    /// The operation did not finish within its time limit.
    #[error("host database timed out after {timeout_ms} ms: {context}")]
    Timeout { context: String, timeout_ms: u128 },
    /// The server refused a write: a CHECK, UNIQUE, FOREIGN KEY or NOT NULL constraint, or an
    /// append-only trigger (SQLSTATE class 23).
    #[error("host database refused {context}: {message}")]
    Constraint {
        context: String,
        /// The constraint's name, when the server reports one.
        constraint: Option<String>,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server sent data this client cannot read (a binary COPY row of another shape).
    #[error("host database sent malformed data: {context}: {message}")]
    MalformedData { context: String, message: String },
    /// Any other server error.
    #[error("host database query failed: {context}: {message}")]
    Query {
        context: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl HostDbError {
    /// Classifies a driver error: server errors by SQLSTATE, everything else (I/O, closed
    /// connection) as unavailable.
    pub fn from_postgres(context: impl Into<String>, error: tokio_postgres::Error) -> HostDbError {
        let context = context.into();
        let Some(db_error) = error.as_db_error() else {
            return HostDbError::Unavailable {
                context,
                detail: error_chain(&error),
            };
        };
        let message = db_error.message().to_owned();
        let sqlstate = db_error.code().code();
        if sqlstate.starts_with("23") {
            HostDbError::Constraint {
                context,
                constraint: db_error.constraint().map(str::to_owned),
                message,
                source: error,
            }
        } else if sqlstate.starts_with("08") || sqlstate.starts_with("57P") {
            // Connection exceptions and admin/crash shutdowns.
            HostDbError::Unavailable {
                context,
                detail: message,
            }
        } else {
            HostDbError::Query {
                context,
                message,
                source: error,
            }
        }
    }

    fn from_pool(
        context: &str,
        error: deadpool_postgres::PoolError,
        timeout: Duration,
    ) -> HostDbError {
        use deadpool_postgres::PoolError;
        match error {
            PoolError::Timeout(_) => HostDbError::Timeout {
                context: context.to_owned(),
                timeout_ms: timeout.as_millis(),
            },
            PoolError::Backend(error) => HostDbError::from_postgres(context, error),
            other => HostDbError::Unavailable {
                context: context.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    /// Whether retrying later (server back, pool drained) may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HostDbError::Unavailable { .. } | HostDbError::Timeout { .. }
        )
    }

    /// Whether the server refused the data itself, so the same write fails again however
    /// often it is retried: a constraint (SQLSTATE class 23), a data exception (class 22:
    /// a value out of range, bytes that are not text) or a program limit (class 54: a key
    /// too long for its index). Workers set such input aside (a rejection, a quarantine)
    /// rather than retry it for ever and block what queues behind it.
    pub fn refuses_the_data(&self) -> bool {
        match self {
            HostDbError::Constraint { .. } => true,
            HostDbError::Query { source, .. } => source
                .code()
                .is_some_and(|code| matches!(code.code().get(..2), Some("22" | "54"))),
            _ => false,
        }
    }
}

/// `text` as PostgreSQL's `text` and `jsonb` can hold it: they take any UTF-8 except U+0000,
/// and refuse the whole statement for one NUL (SQLSTATE 22021). Input from outside (a FIN
/// message, a feed record) is stored with each NUL replaced by U+FFFD, the replacement
/// character; everything else is kept as it came.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// [`storable_text`] for every string and key of a JSON value (for `jsonb` columns).
pub fn storable_json(value: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(fields) => fields
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    fn replaced(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::String(text) => {
                serde_json::Value::String(storable_text(text).into_owned())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(replaced).collect())
            }
            serde_json::Value::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (storable_text(key).into_owned(), replaced(value)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(value) {
        std::borrow::Cow::Owned(replaced(value))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// The error's text with its causes, lowercase-first as the driver writes it.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds a connection pool from `[hostdb]`, reporting `ccass` as the application name.
/// No connection is opened yet: the first [`ping`] or query does that.
pub fn connect(config: &HostDbConfig) -> Result<Pool, HostDbError> {
    connect_as(config, DEFAULT_APPLICATION_NAME)
}

/// Like [`connect`], with the `application_name` each connection reports (a service names
/// itself: `ccass-settlement`).
///
/// Every key is honoured: `connect_timeout_ms` bounds opening a connection (TCP and startup)
/// and recycling it, `pool_wait_timeout_ms` bounds waiting for a free connection,
/// `pool_connections_max` caps the pool, `statement_timeout_ms` is set on every connection
/// at startup. A connection is checked with a round trip before it is handed out again
/// (`RecyclingMethod::Verified`), so a restarted server never yields a dead connection.
pub fn connect_as(config: &HostDbConfig, application_name: &str) -> Result<Pool, HostDbError> {
    let mut pg_config = tokio_postgres::Config::new();
    pg_config
        .host(&config.host)
        .port(config.port)
        .user(&config.user)
        .dbname(&config.database)
        .application_name(application_name)
        .connect_timeout(config.connect_timeout())
        .options(format!(
            "-c statement_timeout={}",
            config.statement_timeout_ms
        ));
    if let Some(password) = &config.password {
        pg_config.password(password.expose().as_bytes());
    }
    let manager = deadpool_postgres::Manager::from_config(
        pg_config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_connections_max)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(config.pool_wait_timeout()))
        .create_timeout(Some(config.connect_timeout()))
        .recycle_timeout(Some(config.connect_timeout()))
        .build()
        .map_err(|error| HostDbError::Unavailable {
            context: format!(
                "build pool for {}:{}/{}",
                config.host, config.port, config.database
            ),
            detail: error.to_string(),
        })
}

/// Takes a connection from the pool, mapping pool failures to [`HostDbError`].
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, HostDbError> {
    let timeouts = pool.timeouts();
    let limit = timeouts.wait.unwrap_or_default() + timeouts.create.unwrap_or_default();
    pool.get()
        .await
        .map_err(|error| HostDbError::from_pool("get a connection from the pool", error, limit))
}

/// Readiness probe: gets a connection and runs `SELECT 1`, all within `timeout`. Fails
/// (within the timeout) while the server is gone and succeeds again once it is back.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), HostDbError> {
    let probe = async {
        let client = client(pool).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|error| HostDbError::from_postgres("ping: select 1", error))?;
        Ok(())
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_elapsed) => Err(HostDbError::Timeout {
            context: "ping".to_owned(),
            timeout_ms: timeout.as_millis(),
        }),
    }
}

/// Readiness of the host database for the ops port. The ops port bounds each probe by its own
/// timeout, so this one uses the pool's connect timeout as an inner bound.
pub struct PostgresProbe {
    pub pool: Pool,
    pub timeout: Duration,
}

impl crate::telemetry::ops::Probe for PostgresProbe {
    fn dependency(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> crate::telemetry::ops::ProbeFuture<'_> {
        Box::pin(async move {
            ping(&self.pool, self.timeout)
                .await
                .map_err(|error| error.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_text_replaces_only_nul() {
        assert!(matches!(
            storable_text("T0001 ÄÖ\t"),
            std::borrow::Cow::Borrowed("T0001 ÄÖ\t")
        ));
        assert_eq!(storable_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn storable_json_replaces_nul_in_strings_and_keys_at_any_depth() {
        let clean = serde_json::json!({"trade_id": "T1", "n": [1, "x"]});
        assert!(matches!(
            storable_json(&clean),
            std::borrow::Cow::Borrowed(_)
        ));
        let dirty = serde_json::json!({"trade_id": "T\u{0}1", "k\u{0}": [1, {"x": "\u{0}"}]});
        assert_eq!(
            storable_json(&dirty).into_owned(),
            serde_json::json!({"trade_id": "T\u{FFFD}1", "k\u{FFFD}": [1, {"x": "\u{FFFD}"}]})
        );
    }
}
