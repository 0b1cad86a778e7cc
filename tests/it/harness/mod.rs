//! Test harness: real servers, never mocks.
//!
//! - [`dates`]: settlement and trade dates relative to today (tests that depend on the clock).
//! - [`nats`]: a private nats-server with JetStream on a free loopback port and a temporary store,
//!   stoppable and restartable on the same port (fault tests).
//! - [`postgres`]: a fresh, migrated database per test on the project's PostgreSQL
//!   (`scripts/services up`), dropped afterwards.
//! - [`ldap`]: a private slapd loaded from the LDAP fixture on a free loopback port, writable,
//!   stoppable and restartable on the same port and data (fault tests).
//! - [`proxy`]: a loopback TCP proxy that can cut and restore a connection path, to make a
//!   shared server "go away" for one test only.
//!
//! Gate: tests that need servers run when they are reachable. With `CCASS_TEST_SERVICES=1`
//! (set by `scripts/test` and CI) an unreachable server is a failure; without it the test
//! prints why and returns.

pub mod balances;
pub mod dates;
pub mod ldap;
pub mod nats;
pub mod postgres;

pub mod proxy;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test configuration (`config/base.toml` + `config/test.toml` + `CCASS_*` overrides from
/// this process's environment, read, never written).
pub fn test_config() -> ccass::config::Config {
    ccass::config::load(&repo_root().join("config"), "test", std::env::vars())
        .expect("load test config")
}

/// Whether missing servers must fail the test rather than skip it.
pub fn services_required() -> bool {
    std::env::var("CCASS_TEST_SERVICES").is_ok_and(|value| value == "1")
}

/// Says why a test skips; panics instead when services are required.
pub fn skip(what: &str, error: impl std::fmt::Display) {
    if services_required() {
        panic!("{what} is required (CCASS_TEST_SERVICES=1) but unreachable: {error}");
    }
    eprintln!(
        "skipping: {what} unreachable ({error}); run scripts/services up, or set CCASS_TEST_SERVICES=1 to fail instead"
    );
}

/// The project's var dir (`.ccass`, where `scripts/services` installs and links binaries).
pub fn var_dir() -> PathBuf {
    std::env::var_os("CCASS_VAR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".ccass"))
}
