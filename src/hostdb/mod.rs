//! The host database: PostgreSQL, the system of record. The only module that issues SQL.
//!
//! Architecture invariant: nothing outside `hostdb` builds SQL text or touches a
//! `tokio_postgres::Client`; other modules call typed functions here.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret, check_range};

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
        check_range("hostdb.pool_connections_max", self.pool_connections_max, 1..=1024)?;
        check_range("hostdb.connect_timeout_ms", self.connect_timeout_ms, 1..=600_000)?;
        check_range("hostdb.pool_wait_timeout_ms", self.pool_wait_timeout_ms, 1..=600_000)?;
        check_range("hostdb.statement_timeout_ms", self.statement_timeout_ms, 1..=86_400_000)?;
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The same server, another database (tests create one per test).
    pub fn with_database(&self, database: &str) -> HostDbConfig {
        HostDbConfig {
            database: database.to_owned(),
            ..self.clone()
        }
    }
}
