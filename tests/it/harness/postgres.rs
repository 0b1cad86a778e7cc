//! A fresh PostgreSQL database per test, on the server that `config/test.toml` (plus
//! `CCASS_` overrides) names.
//!
//! Gate: when the server is unreachable the test prints why and is skipped, unless
//! `CCASS_TEST_SERVICES=1`, in which case it fails. Each database is named after its test,
//! and dropped (best effort, `WITH (FORCE)`) when the [`TestDatabase`] is dropped, also when
//! the test panics.

use std::sync::atomic::{AtomicU32, Ordering};

use ccass::hostdb::{self, HostDbConfig, Pool};

static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestDatabase {
    /// A pool on the test's own database.
    pub pool: Pool,
    /// `[hostdb]` pointing at the test's own database.
    pub config: HostDbConfig,
    pub name: String,
    admin: HostDbConfig,
}

/// The single `count(*)` (or other `int8`) that `sql_text` selects, on a connection of `pool`.
pub async fn count(pool: &Pool, sql_text: &str) -> i64 {
    let client = hostdb::client(pool).await.unwrap();
    client.query_one(sql_text, &[]).await.unwrap().get(0)
}

/// Fails the test unless the whole-database audit (`ccass audit`) finds nothing.
pub async fn assert_audit_clean(pool: &Pool) {
    let violations = hostdb::audit::run(pool).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:?}");
}

/// `[hostdb]` from `config/test.toml` and the process environment.
pub fn test_config() -> HostDbConfig {
    super::test_config().hostdb
}

/// A new, empty database for `test_name`, or `None` (skip) when the server is unreachable
/// and services are not required.
pub async fn empty_database(test_name: &str) -> Option<TestDatabase> {
    let admin = test_config();
    let admin_client = match admin_connect(&admin).await {
        Ok(client) => client,
        Err(error) => {
            super::skip(
                &format!("postgres at {}:{} for {test_name}", admin.host, admin.port),
                error,
            );
            return None;
        }
    };
    let name = database_name(test_name);
    admin_client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|error| panic!("create database {name}: {error}"));
    let config = admin.with_database(&name);
    let pool = hostdb::connect(&config).expect("build pool");
    Some(TestDatabase {
        pool,
        config,
        name,
        admin,
    })
}

/// `ccass_t_<test name>_<pid>_<counter>`: unique per process and call.
fn database_name(test_name: &str) -> String {
    let sanitized: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!(
        "ccass_t_{sanitized}_{}_{}",
        std::process::id(),
        DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDatabase {
    /// A copy of this database as it is now (`CREATE DATABASE … TEMPLATE`): what a restore
    /// of a backup taken now gives (same instance id, same sequences). A template must have
    /// no sessions: this ends this database's open ones first; its pool reconnects on use.
    pub async fn backup_copy(&self, test_name: &str) -> TestDatabase {
        let admin_client = admin_connect(&self.admin).await.expect("admin connection");
        let name = database_name(test_name);
        admin_client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("end sessions of the template");
        admin_client
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
                self.name
            ))
            .await
            .unwrap_or_else(|error| panic!("copy database {} to {name}: {error}", self.name));
        let config = self.admin.with_database(&name);
        let pool = hostdb::connect(&config).expect("build pool");
        TestDatabase {
            pool,
            config,
            name,
            admin: self.admin.clone(),
        }
    }
}

/// A new database for `test_name` with every embedded migration applied.
pub async fn database(test_name: &str) -> Option<TestDatabase> {
    let database = empty_database(test_name).await?;
    hostdb::migrate::run(&database.pool)
        .await
        .unwrap_or_else(|error| panic!("migrate {}: {error}", database.name));
    Some(database)
}

/// A migrated database seeded with the demo reference data (`config/reference/demo.toml`).
pub async fn seeded_database(test_name: &str) -> Option<TestDatabase> {
    let database = database(test_name).await?;
    hostdb::seed::apply_file(
        &database.pool,
        &super::repo_root().join("config/reference/demo.toml"),
    )
    .await
    .unwrap_or_else(|error| panic!("seed {}: {error}", database.name));
    Some(database)
}

async fn admin_connect(admin: &HostDbConfig) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&admin.host)
        .port(admin.port)
        .user(&admin.user)
        .dbname(&admin.database)
        .application_name("ccass-test-harness")
        .connect_timeout(admin.connect_timeout());
    if let Some(password) = &admin.password {
        config.password(password.expose().as_bytes());
    }
    let (client, connection) = tokio::time::timeout(
        admin.connect_timeout(),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("no answer within {} ms", admin.connect_timeout_ms))?
    .map_err(|error| error_with_causes(&error))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `error: cause: cause`: the driver keeps the useful part (`Connection refused`) in the
/// source chain.
fn error_with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.pool.close();
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let client = admin_connect(&admin).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("drop test database {}: {error}", self.name);
        }
    }
}
