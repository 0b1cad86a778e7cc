//! Versioned schema migrations: SQL files `migrations/V<version>__<name>.sql` embedded in the
//! binary and applied in version order.
//!
//! Guarantees:
//! - Each migration runs in its own transaction together with its `schema_migrations` row
//!   (version, name, sha256 checksum, applied_at), so a failing migration leaves the schema
//!   exactly as it was (PostgreSQL DDL is transactional) and the error names the migration.
//!   A migration therefore must not use statements that refuse to run in a transaction
//!   (`CREATE INDEX CONCURRENTLY`, `VACUUM`).
//! - Runs are serialised across processes by a session advisory lock, taken before anything
//!   is read and released on every path.
//! - Idempotent: a second run applies nothing.
//! - An applied migration whose text changed, or an applied version this binary does not know
//!   (the database is newer than the code), is an error and nothing is applied.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{HostDbError, Pool};

/// Advisory lock key serialising migration runs ("ccassmig" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6363_6173_736d_6967;

/// One schema migration.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i32,
    pub name: Cow<'static, str>,
    pub sql: Cow<'static, str>,
}

impl Migration {
    /// Hex sha256 of the SQL text, stored when applied and compared on every later run.
    pub fn checksum(&self) -> String {
        hex_sha256(self.sql.as_bytes())
    }
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The migrations shipped with this binary, in version order. Versions may have gaps (a
/// version reserved by work not merged yet): a version added later below an applied one is
/// simply pending and is applied by the next run.
pub fn embedded() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            name: Cow::Borrowed("first_schema"),
            sql: Cow::Borrowed(include_str!("migrations/V0001__first_schema.sql")),
        },
        Migration {
            version: 2,
            name: Cow::Borrowed("auth"),
            sql: Cow::Borrowed(include_str!("migrations/V0002__auth.sql")),
        },
        Migration {
            version: 3,
            name: Cow::Borrowed("cns"),
            sql: Cow::Borrowed(include_str!("migrations/V0003__cns.sql")),
        },
        Migration {
            version: 4,
            name: Cow::Borrowed("instruction_matches"),
            sql: Cow::Borrowed(include_str!("migrations/V0004__instruction_matches.sql")),
        },
        Migration {
            version: 5,
            name: Cow::Borrowed("settlement_runs"),
            sql: Cow::Borrowed(include_str!("migrations/V0005__settlement_runs.sql")),
        },
        Migration {
            version: 6,
            name: Cow::Borrowed("intake"),
            sql: Cow::Borrowed(include_str!("migrations/V0006__intake.sql")),
        },
        Migration {
            version: 8,
            name: Cow::Borrowed("cns_settlement"),
            sql: Cow::Borrowed(include_str!("migrations/V0008__cns_settlement.sql")),
        },
        Migration {
            version: 9,
            name: Cow::Borrowed("terminal"),
            sql: Cow::Borrowed(include_str!("migrations/V0009__terminal.sql")),
        },
        Migration {
            version: 10,
            name: Cow::Borrowed("compact_run_confirmations"),
            sql: Cow::Borrowed(include_str!(
                "migrations/V0010__compact_run_confirmations.sql"
            )),
        },
        Migration {
            version: 11,
            name: Cow::Borrowed("cns_position_deltas"),
            sql: Cow::Borrowed(include_str!("migrations/V0011__cns_position_deltas.sql")),
        },
        Migration {
            version: 12,
            name: Cow::Borrowed("system_identity"),
            sql: Cow::Borrowed(include_str!("migrations/V0012__system_identity.sql")),
        },
        Migration {
            version: 13,
            name: Cow::Borrowed("settlement_write_path"),
            sql: Cow::Borrowed(include_str!("migrations/V0013__settlement_write_path.sql")),
        },
        Migration {
            version: 14,
            name: Cow::Borrowed("cns_trade_id_claims"),
            sql: Cow::Borrowed(include_str!("migrations/V0014__cns_trade_id_claims.sql")),
        },
        Migration {
            version: 15,
            name: Cow::Borrowed("run_balances"),
            sql: Cow::Borrowed(include_str!("migrations/V0015__run_balances.sql")),
        },
        Migration {
            version: 16,
            name: Cow::Borrowed("open_pairs"),
            sql: Cow::Borrowed(include_str!("migrations/V0016__open_pairs.sql")),
        },
        Migration {
            version: 17,
            name: Cow::Borrowed("cns_trade_sets"),
            sql: Cow::Borrowed(include_str!("migrations/V0017__cns_trade_sets.sql")),
        },
        Migration {
            version: 18,
            name: Cow::Borrowed("beyond_calendar"),
            sql: Cow::Borrowed(include_str!("migrations/V0018__beyond_calendar.sql")),
        },
        Migration {
            version: 19,
            name: Cow::Borrowed("outbox_incarnations"),
            sql: Cow::Borrowed(include_str!("migrations/V0019__outbox_incarnations.sql")),
        },
        Migration {
            version: 20,
            name: Cow::Borrowed("cns_quarantined_batches"),
            sql: Cow::Borrowed(include_str!(
                "migrations/V0020__cns_quarantined_batches.sql"
            )),
        },
        Migration {
            version: 21,
            name: Cow::Borrowed("run_journal_partitions"),
            sql: Cow::Borrowed(include_str!("migrations/V0021__run_journal_partitions.sql")),
        },
        Migration {
            version: 22,
            name: Cow::Borrowed("run_journals_outside_autovacuum"),
            sql: Cow::Borrowed(include_str!(
                "migrations/V0022__run_journals_outside_autovacuum.sql"
            )),
        },
    ]
}

/// A migration this run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Applied by this run, in order; empty when the schema was already current.
    pub applied: Vec<AppliedMigration>,
    /// Versions that were already applied before this run.
    pub already_applied_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration list is not strictly increasing at version {version}")]
    UnorderedMigrations { version: i32 },
    #[error("migration V{version:04}__{name} failed, schema left as before: {source}")]
    MigrationFailed {
        version: i32,
        name: String,
        #[source]
        source: HostDbError,
    },
    #[error(
        "migration V{version:04}__{name} was changed after it was applied (checksum {applied_checksum} in the database, {code_checksum} in the code)"
    )]
    ChecksumMismatch {
        version: i32,
        name: String,
        applied_checksum: String,
        code_checksum: String,
    },
    #[error(
        "database has migration V{version:04}__{name} applied, which this binary does not know (is the code older than the database?)"
    )]
    UnknownAppliedMigration { version: i32, name: String },
    #[error(transparent)]
    Db(#[from] HostDbError),
}

/// Applies every pending embedded migration.
pub async fn run(pool: &Pool) -> Result<MigrationReport, MigrateError> {
    run_migrations(pool, &embedded()).await
}

/// Applies every pending migration of `migrations` (tests inject extra ones here).
pub async fn run_migrations(
    pool: &Pool,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    for pair in migrations.windows(2) {
        if pair[1].version <= pair[0].version {
            return Err(MigrateError::UnorderedMigrations {
                version: pair[1].version,
            });
        }
    }
    let mut client = super::client(pool).await?;
    let db = |context: &str| {
        let context = context.to_owned();
        move |error| HostDbError::from_postgres(context, error)
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db("take the migration advisory lock"))?;
    let result = apply_pending(&mut client, migrations).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    if unlocked.is_err() {
        // Never return a connection that may still hold the lock to the pool: closing the
        // session releases it.
        drop(deadpool_postgres::Object::take(client));
    }
    let report = result?;
    unlocked.map_err(db("release the migration advisory lock"))?;
    Ok(report)
}

async fn apply_pending(
    client: &mut deadpool_postgres::Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    let db = |context: &str| {
        let context = context.to_owned();
        move |error| HostDbError::from_postgres(context, error)
    };
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 checksum_sha256 text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(db("create schema_migrations"))?;
    let rows = client
        .query(
            "SELECT version, name, checksum_sha256 FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(db("read schema_migrations"))?;
    let mut applied: BTreeMap<i32, (String, String)> = BTreeMap::new();
    for row in rows {
        applied.insert(row.get(0), (row.get(1), row.get(2)));
    }

    let known: BTreeMap<i32, &Migration> = migrations.iter().map(|m| (m.version, m)).collect();
    for (version, (name, applied_checksum)) in &applied {
        let Some(migration) = known.get(version) else {
            return Err(MigrateError::UnknownAppliedMigration {
                version: *version,
                name: name.clone(),
            });
        };
        let code_checksum = migration.checksum();
        if *applied_checksum != code_checksum {
            return Err(MigrateError::ChecksumMismatch {
                version: *version,
                name: name.clone(),
                applied_checksum: applied_checksum.clone(),
                code_checksum,
            });
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied_count: applied.len(),
    };
    for migration in migrations {
        if applied.contains_key(&migration.version) {
            continue;
        }
        let failed = |source: HostDbError| MigrateError::MigrationFailed {
            version: migration.version,
            name: migration.name.to_string(),
            source,
        };
        let transaction = client
            .transaction()
            .await
            .map_err(|error| failed(HostDbError::from_postgres("begin", error)))?;
        transaction
            .batch_execute(&migration.sql)
            .await
            .map_err(|error| failed(HostDbError::from_postgres("execute", error)))?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name, checksum_sha256) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name.as_ref(), &migration.checksum()],
            )
            .await
            .map_err(|error| failed(HostDbError::from_postgres("record in schema_migrations", error)))?;
        transaction
            .commit()
            .await
            .map_err(|error| failed(HostDbError::from_postgres("commit", error)))?;
        tracing::info!(version = migration.version, name = %migration.name, "migration applied");
        report.applied.push(AppliedMigration {
            version: migration.version,
            name: migration.name.to_string(),
        });
    }
    Ok(report)
}

/// The embedded migrations this database lacks, as `V0001__first_schema`; reads only.
/// `ccass up` refuses to start while any is pending.
pub async fn pending(pool: &Pool) -> Result<Vec<String>, HostDbError> {
    let client = super::client(pool).await?;
    let db = |context: &'static str| move |error| HostDbError::from_postgres(context, error);
    let table_exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(db("look for schema_migrations"))?
        .get(0);
    let applied: Vec<i32> = if table_exists {
        client
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(db("read schema_migrations"))?
            .iter()
            .map(|row| row.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(embedded()
        .into_iter()
        .filter(|migration| !applied.contains(&migration.version))
        .map(|migration| format!("V{:04}__{}", migration.version, migration.name))
        .collect())
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.applied.is_empty() {
            return write!(
                f,
                "migrate: up to date ({} migration(s) already applied)",
                self.already_applied_count
            );
        }
        for migration in &self.applied {
            writeln!(f, "applied V{:04}__{}", migration.version, migration.name)?;
        }
        write!(
            f,
            "migrate: {} applied, {} already applied",
            self.applied.len(),
            self.already_applied_count
        )
    }
}
