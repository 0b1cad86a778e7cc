//! The host database against a real PostgreSQL server: migrations, schema rules, seed,
//! audit, the COPY BINARY journal path and the pool's readiness probe.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ccass::hostdb::audit::{self, Journal, Violation};
use ccass::hostdb::journal::{self, HoldingMovement, HoldingMovementKind};
use ccass::hostdb::migrate::{self, MigrateError, Migration};
use ccass::hostdb::seed::{self, ReferenceData, SeedError};
use ccass::hostdb::{self, HostDbError, Pool, partitions};
use time::macros::date;

use crate::harness::postgres::{self, assert_audit_clean};

const DEMO_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/reference/demo.toml");

/// Every table, index, constraint, trigger, function and view of the public schema, one per
/// line, sorted: equal strings mean equal schemas.
async fn schema_fingerprint(pool: &Pool) -> String {
    let client = hostdb::client(pool)
        .await
        .expect("connect for the schema fingerprint");
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(line, E'\\n' ORDER BY line), '') FROM (
                 SELECT format('relation %s %s', relname, relkind) AS line
                 FROM pg_class WHERE relnamespace = 'public'::regnamespace
                 UNION ALL
                 SELECT format('column %s.%s %s notnull=%s default=%s', c.relname, a.attname,
                               format_type(a.atttypid, a.atttypmod), a.attnotnull,
                               pg_get_expr(d.adbin, d.adrelid))
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
                 UNION ALL
                 SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
                 FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                 UNION ALL
                 SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
                 UNION ALL
                 SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal
                 UNION ALL
                 SELECT format('function %s', pg_get_functiondef(oid))
                 FROM pg_proc WHERE pronamespace = 'public'::regnamespace
                 UNION ALL
                 SELECT format('view %s %s', viewname, definition) FROM pg_views WHERE schemaname = 'public'
             ) AS lines",
            &[],
        )
        .await
        .expect("read the schema fingerprint");
    row.get(0)
}

/// Row counts of every table the seed writes.
async fn row_counts(pool: &Pool) -> Vec<(&'static str, i64)> {
    let client = hostdb::client(pool).await.expect("connect to count rows");
    let mut counts = Vec::new();
    for table in [
        "currencies",
        "participants",
        "stock_accounts",
        "cash_accounts",
        "securities",
        "holding_movements",
        "holdings",
        "cash_movements",
        "cash_balances",
    ] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count rows");
        counts.push((table, row.get::<_, i64>(0)));
    }
    counts
}

/// Runs one statement, classifying a failure like the library does.
async fn execute(pool: &Pool, sql: &str) -> Result<u64, HostDbError> {
    let client = hostdb::client(pool).await?;
    client
        .execute(sql, &[])
        .await
        .map_err(|error| HostDbError::from_postgres(sql.to_owned(), error))
}

#[tokio::test]
async fn migrations_are_idempotent() {
    // Goal: a second run applies nothing and leaves the schema as it was. Method: migrate an
    // empty database twice, comparing reports and catalogue fingerprints.
    let Some(database) = postgres::empty_database("migrations_are_idempotent").await else {
        return;
    };
    let first = migrate::run(&database.pool).await.unwrap();
    let versions: Vec<i32> = first.applied.iter().map(|m| m.version).collect();
    let embedded: Vec<i32> = migrate::embedded().iter().map(|m| m.version).collect();
    assert_eq!(versions, embedded);
    assert_eq!(first.already_applied_count, 0);
    let schema_after_first = schema_fingerprint(&database.pool).await;
    assert!(schema_after_first.contains("relation holding_movements p"));

    let second = migrate::run(&database.pool).await.unwrap();
    assert_eq!(second.applied, vec![]);
    assert_eq!(second.already_applied_count, embedded.len());
    assert_eq!(schema_fingerprint(&database.pool).await, schema_after_first);
}

#[tokio::test]
async fn concurrent_migration_runs_apply_each_migration_once() {
    // Goal: the advisory lock serialises runs. Method: two runs at once on an empty
    // database; together they apply every migration exactly once.
    let Some(database) = postgres::empty_database("concurrent_migration_runs").await else {
        return;
    };
    let (first, second) = tokio::join!(migrate::run(&database.pool), migrate::run(&database.pool));
    let applied_count = first.unwrap().applied.len() + second.unwrap().applied.len();
    assert_eq!(applied_count, migrate::embedded().len());
}

#[tokio::test]
async fn a_failing_migration_leaves_no_trace() {
    // Goal: a migration that fails halfway changes nothing and is named in the error.
    // Method: append a migration that creates a table and then divides by zero.
    let Some(database) = postgres::database("a_failing_migration_leaves_no_trace").await else {
        return;
    };
    let schema_before = schema_fingerprint(&database.pool).await;
    let mut migrations = migrate::embedded();
    migrations.push(Migration {
        version: 9999,
        name: Cow::Borrowed("broken"),
        sql: Cow::Borrowed(
            "CREATE TABLE canary (x integer); ALTER TABLE participants ADD COLUMN y integer; SELECT 1 / 0;",
        ),
    });
    let error = migrate::run_migrations(&database.pool, &migrations)
        .await
        .unwrap_err();
    assert!(
        matches!(error, MigrateError::MigrationFailed { version: 9999, ref name, .. } if name == "broken"),
        "{error}"
    );
    assert!(error.to_string().contains("V9999__broken"), "{error}");
    assert!(error.to_string().contains("division by zero"), "{error}");
    assert_eq!(schema_fingerprint(&database.pool).await, schema_before);

    let client = hostdb::client(&database.pool).await.unwrap();
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM schema_migrations WHERE version = 9999",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0);
}

#[tokio::test]
async fn a_changed_or_unknown_applied_migration_is_an_error() {
    // Goal: the database refuses to drift from the code. Method: change the text of an
    // applied migration; then run with a list that lacks an applied one.
    let Some(database) = postgres::database("a_changed_applied_migration").await else {
        return;
    };
    let mut changed = migrate::embedded();
    changed[0].sql = Cow::Owned(format!("{}\n-- edited after release\n", changed[0].sql));
    let error = migrate::run_migrations(&database.pool, &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(error, MigrateError::ChecksumMismatch { version: 1, .. }),
        "{error}"
    );

    let error = migrate::run_migrations(&database.pool, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            MigrateError::UnknownAppliedMigration { version: 1, .. }
        ),
        "{error}"
    );
    // The lock was released on the error paths: a normal run still works.
    assert_eq!(migrate::run(&database.pool).await.unwrap().applied, vec![]);
}

#[tokio::test]
async fn append_only_tables_refuse_update_and_delete() {
    // Goal: journals, status history, message journal and audit trail cannot be changed.
    // Method: put a row in each, then try UPDATE and DELETE; expect a constraint error.
    let Some(database) = postgres::seeded_database("append_only_tables").await else {
        return;
    };
    for insert in [
        "INSERT INTO message_journal (direction, participant_id, message_type, received_at, text_sha256, fin_text)
         VALUES ('in', 'B01234', '540', now(), sha256('x'::bytea), 'x')",
        "INSERT INTO audit_trail (actor, action, outcome) VALUES ('B01234.alice', 'login', 'allowed')",
        "INSERT INTO instructions (participant_id, sender_reference, message_type, function, direction, payment,
             account_id, counterparty_participant_id, isin, quantity, settlement_date,
             partial_settlement_allowed, status)
         VALUES ('B01234', 'REF1', '542', 'NEWM', 'deliver', 'FOP', 'B01234-01', 'B05678',
                 'GB0005405286', 400, '2026-11-25', false, 'received')",
        "INSERT INTO instruction_status_history (instruction_id, status)
         SELECT instruction_id, 'received' FROM instructions",
    ] {
        assert_eq!(execute(&database.pool, insert).await.unwrap(), 1, "{insert}");
    }
    for table in [
        "holding_movements",
        "cash_movements",
        "message_journal",
        "audit_trail",
        "instruction_status_history",
    ] {
        let column = match table {
            "audit_trail" | "instruction_status_history" => "at",
            _ => "recorded_at",
        };
        for statement in [
            format!("UPDATE {table} SET {column} = now()"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let error = execute(&database.pool, &statement).await.unwrap_err();
            let refused_as_append_only = matches!(
                error,
                HostDbError::Constraint { ref message, .. } if message.contains("append-only")
            );
            // message_journal is referenced by instructions: TRUNCATE stops at the foreign key
            // before the trigger runs.
            let refused_by_reference =
                table == "message_journal" && statement.starts_with("TRUNCATE");
            assert!(
                refused_as_append_only || refused_by_reference,
                "{statement}: {error}"
            );
        }
    }
}

#[tokio::test]
async fn constraint_errors_are_classified_with_their_name() {
    // Goal: callers can branch on a refused write. Method: insert a duplicate participant.
    let Some(database) = postgres::seeded_database("constraint_errors").await else {
        return;
    };
    let error = execute(
        &database.pool,
        "INSERT INTO participants (participant_id, name, participant_type, status, logical_terminal)
         VALUES ('B01234', 'again', 'broker', 'active', 'ZZZZZZZZZZZZ')",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, HostDbError::Constraint { constraint: Some(ref name), .. } if name == "participants_pkey"),
        "{error}"
    );
    let error = execute(&database.pool, "SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert!(matches!(error, HostDbError::Query { .. }), "{error}");
}

#[tokio::test]
async fn seed_is_idempotent() {
    // Goal: seeding twice gives the same rows, and the second report says nothing is new.
    let Some(database) = postgres::database("seed_is_idempotent").await else {
        return;
    };
    let data = seed::load_file(DEMO_FILE.as_ref()).unwrap();
    let first = seed::apply(&database.pool, &data).await.unwrap();
    assert_eq!(first.participants.inserted, data.participants.len() as u64);
    assert_eq!(first.securities.inserted, data.securities.len() as u64);
    assert_eq!(
        first.opening_holdings.written,
        data.opening_holdings.len() as u64
    );
    assert_eq!(first.opening_cash.written, data.opening_cash.len() as u64);
    assert!(!first.is_unchanged());
    let counts_after_first = row_counts(&database.pool).await;

    let second = seed::apply_file(&database.pool, DEMO_FILE.as_ref())
        .await
        .unwrap();
    assert!(second.is_unchanged(), "{second:?}");
    assert_eq!(
        second.participants.unchanged,
        data.participants.len() as u64
    );
    assert_eq!(
        second.opening_holdings.already_present,
        data.opening_holdings.len() as u64
    );
    assert_eq!(row_counts(&database.pool).await, counts_after_first);

    // A changed name is an update, reported as such.
    let mut renamed = data.clone();
    renamed.participants[1].name = "Harbour Securities (Asia) Limited".to_owned();
    let third = seed::apply(&database.pool, &renamed).await.unwrap();
    assert_eq!(third.participants.updated, 1);
    assert_eq!(row_counts(&database.pool).await, counts_after_first);
}

/// Writes `text` to a temporary file and loads it.
fn load_text(text: &str) -> Result<ReferenceData, SeedError> {
    let file = tempfile::NamedTempFile::new().expect("create a temporary file");
    std::fs::write(file.path(), text).expect("write the temporary reference file");
    seed::load_file(file.path())
}

#[tokio::test]
async fn a_bad_reference_file_writes_nothing() {
    // Goal: every kind of bad file is refused with its problem named, and no row changes.
    // Method: edit the demo text one way per case; load it (refused) and apply the parsed
    // data anyway (refused again, before any write); compare row counts.
    let Some(database) = postgres::database("a_bad_reference_file").await else {
        return;
    };
    let demo = std::fs::read_to_string(DEMO_FILE).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "isin check digit",
            demo.replace("GB0005405286", "GB0005405287"),
            "check digit",
        ),
        (
            "duplicate participant",
            demo.replace("id = \"B05678\"\nname", "id = \"B01234\"\nname"),
            "participant B01234 is listed twice",
        ),
        (
            "negative opening",
            demo.replace("quantity = 400000", "quantity = -400000"),
            "is negative",
        ),
        (
            "unknown account",
            demo.replace("account = \"I00456-01\"", "account = \"I00456-09\""),
            "unknown stock account I00456-09",
        ),
        (
            "zero board lot",
            demo.replace("board_lot = 400", "board_lot = 0"),
            "board lot 0",
        ),
        (
            "bad participant id",
            demo.replace("\"C00123\"", "\"c00123\""),
            "participant id `c00123`",
        ),
    ];
    let counts_before = row_counts(&database.pool).await;
    for (case, text, expected) in cases {
        let error = load_text(&text).unwrap_err();
        assert!(
            matches!(error, SeedError::Invalid { .. }),
            "{case}: {error}"
        );
        assert!(error.to_string().contains(expected), "{case}: {error}");
        let data = seed::parse(&text).unwrap();
        let error = seed::apply(&database.pool, &data).await.unwrap_err();
        assert!(
            matches!(error, SeedError::Invalid { .. }),
            "{case}: {error}"
        );
        assert_eq!(row_counts(&database.pool).await, counts_before, "{case}");
    }
    let error = load_text("opening_date = 2026-11-23\n[[participant]]\nid = 5\n").unwrap_err();
    assert!(matches!(error, SeedError::Parse { .. }), "{error}");
}

#[tokio::test]
async fn a_changed_opening_is_refused_and_nothing_is_written() {
    // Goal: an opening is written once; a different value later is an error, not an
    // overwrite, and the rest of that file (a new name) is not applied either.
    let Some(database) = postgres::seeded_database("a_changed_opening").await else {
        return;
    };
    let counts_before = row_counts(&database.pool).await;
    let mut data = seed::load_file(DEMO_FILE.as_ref()).unwrap();
    data.participants[1].name = "Renamed".to_owned();
    data.opening_holdings[0].quantity += 1;
    let error = seed::apply(&database.pool, &data).await.unwrap_err();
    let SeedError::OpeningConflicts { conflicts } = &error else {
        panic!("expected opening conflicts, got {error}");
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].what, "holding B01234-01 GB0005405286");
    assert_eq!(
        (conflicts[0].present, conflicts[0].requested),
        (400_000, 400_001)
    );
    assert_eq!(row_counts(&database.pool).await, counts_before);
    let client = hostdb::client(&database.pool).await.unwrap();
    let name: String = client
        .query_one(
            "SELECT name FROM participants WHERE participant_id = 'B01234'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Harbour Securities Limited");
}

#[tokio::test]
async fn audit_passes_on_the_demo_and_catches_corruption() {
    // Goal: the audit is clean on consistent data and names each kind of damage. Method:
    // seed, audit; then corrupt a stored balance and append a journal row for an unknown
    // account, audit again.
    let Some(database) = postgres::seeded_database("audit").await else {
        return;
    };
    assert_audit_clean(&database.pool).await;

    execute(
        &database.pool,
        "UPDATE holdings SET quantity = quantity + 1 WHERE account_id = 'B01234-01' AND isin = 'GB0005405286'",
    )
    .await
    .unwrap();
    let violations = audit::run(&database.pool).await.unwrap();
    assert!(violations.contains(&Violation::HoldingBalanceMismatch {
        account_id: "B01234-01".to_owned(),
        isin: "GB0005405286".to_owned(),
        stored: 400_001,
        derived: 400_000,
    }));
    assert!(violations.contains(&Violation::SecurityNotConserved {
        isin: "GB0005405286".to_owned(),
        held: 520_001,
        net_entered: 520_000,
    }));
    assert_eq!(violations.len(), 2, "{violations:?}");

    let mut client = hostdb::client(&database.pool).await.unwrap();
    let transaction = client.transaction().await.unwrap();
    journal::append_holding_movements(
        &transaction,
        &[HoldingMovement {
            settlement_date: date!(2026 - 11 - 24),
            settlement_run_id: None,
            from_account_id: None,
            to_account_id: Some("Z99999-01".to_owned()),
            isin: "GB0005405286".to_owned(),
            quantity: 5,
            kind: HoldingMovementKind::Deposit,
            reference: "test".to_owned(),
        }],
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    let violations = audit::run(&database.pool).await.unwrap();
    assert!(violations.contains(&Violation::UnknownAccountInJournal {
        journal: Journal::HoldingMovements,
        account: "Z99999-01".to_owned(),
        row_count: 1,
    }));
    for violation in &violations {
        assert!(!violation.to_string().is_empty());
    }
}

#[tokio::test]
async fn copy_binary_appends_settlement_movements() {
    // Goal: the settlement engine's write path works: COPY BINARY into the partitioned
    // journal plus balance updates in one transaction, audit still clean. Method: create
    // partitions, append 20,000 alternating transfers between two accounts, update the two
    // balances, commit, check counts, partition placement and the audit.
    let Some(database) = postgres::seeded_database("copy_binary_append").await else {
        return;
    };
    let created = partitions::create_monthly(&database.pool, date!(2026 - 11 - 01), 2)
        .await
        .unwrap();
    // The seed already created November for the two journals (its opening month).
    assert_eq!(created, 4);
    assert_eq!(
        partitions::create_monthly(&database.pool, date!(2026 - 11 - 01), 2)
            .await
            .unwrap(),
        0
    );

    let movement_count: usize = 20_000;
    let movements: Vec<HoldingMovement> = (0..movement_count)
        .map(|index| {
            let (from, to) = if index % 2 == 0 {
                ("B01234-01", "B05678-01")
            } else {
                ("B05678-01", "B01234-01")
            };
            HoldingMovement {
                settlement_date: date!(2026 - 11 - 25),
                settlement_run_id: None,
                from_account_id: Some(from.to_owned()),
                to_account_id: Some(to.to_owned()),
                isin: "GB0005405286".to_owned(),
                quantity: 400,
                kind: HoldingMovementKind::Settlement,
                reference: format!("SI{index}"),
            }
        })
        .collect();
    // One extra net transfer so the balances move: 4,000 shares B01234-01 -> B05678-01.
    let mut movements = movements;
    movements.push(HoldingMovement {
        settlement_date: date!(2026 - 12 - 01),
        settlement_run_id: None,
        from_account_id: Some("B01234-01".to_owned()),
        to_account_id: Some("B05678-01".to_owned()),
        isin: "GB0005405286".to_owned(),
        quantity: 4_000,
        kind: HoldingMovementKind::Settlement,
        reference: "SI-net".to_owned(),
    });

    let mut client = hostdb::client(&database.pool).await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let started = Instant::now();
    let written = journal::append_holding_movements(&transaction, &movements)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(written, movements.len() as u64);
    transaction
        .execute(
            "UPDATE holdings SET quantity = quantity - 4000 WHERE account_id = 'B01234-01' AND isin = 'GB0005405286'",
            &[],
        )
        .await
        .unwrap();
    transaction
        .execute(
            "INSERT INTO holdings (account_id, isin, quantity) VALUES ('B05678-01', 'GB0005405286', 4000)",
            &[],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    eprintln!(
        "copy binary: {} rows in {:?} ({:.0} rows/s, debug build)",
        movements.len(),
        elapsed,
        movements.len() as f64 / elapsed.as_secs_f64()
    );

    let client = hostdb::client(&database.pool).await.unwrap();
    let placement: Vec<(String, i64)> = client
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM holding_movements
             WHERE movement_kind = 'settlement' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        placement,
        vec![
            (
                "holding_movements_outside_runs_y2026m11".to_owned(),
                movement_count as i64
            ),
            ("holding_movements_outside_runs_y2026m12".to_owned(), 1),
        ]
    );
    assert_audit_clean(&database.pool).await;

    // A row the journal's CHECKs refuse fails the whole COPY.
    let mut client = hostdb::client(&database.pool).await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let mut bad = movements[0].clone();
    bad.to_account_id = None;
    let error =
        journal::append_holding_movements(&transaction, &[movements[1].clone(), bad.clone()])
            .await
            .unwrap_err();
    assert!(matches!(error, HostDbError::Constraint { .. }), "{error}");
    drop(transaction);

    // A settlement run's rows: a row naming a run without its partition is refused, not
    // stored somewhere unseen (V0021).
    // (The connections above stay taken: shadowed, not dropped. One of the pool's is left.)
    let mut run_row = movements[0].clone();
    run_row.settlement_run_id = Some(7);
    {
        let mut client = hostdb::client(&database.pool).await.unwrap();
        let transaction = client.transaction().await.unwrap();
        let error = journal::append_holding_movements(&transaction, &[run_row.clone()])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no partition"), "{error}");
    }

    // The same rows through a COPY spawned on a connection of its own into the run's table:
    // counted and committed when it finishes, yet outside the journal until attached; a
    // refused row fails it at finish; no rows is no COPY.
    journal::create_run_tables(&database.pool, 7).await.unwrap();
    let run_rows: Vec<HoldingMovement> = (0..1_000)
        .map(|index| HoldingMovement {
            reference: format!("run-SI{index}"),
            ..run_row.clone()
        })
        .collect();
    let spawned: journal::HoldingJournal = run_rows.iter().collect();
    assert_eq!(spawned.len(), 1_000);
    let pending = spawned.spawn_append_to_run(&database.pool, 7);
    assert_eq!(pending.finish().await.unwrap(), 1_000);
    let count = |from: &str| {
        let sql_text = format!("SELECT count(*) FROM {from}");
        let pool = &database.pool;
        async move { postgres::count(pool, &sql_text).await }
    };
    assert_eq!(count("holding_movements_run_7").await, 1_000);
    assert_eq!(
        count("holding_movements WHERE settlement_run_id = 7").await,
        0
    );
    let mut refused = run_rows[0].clone();
    refused.to_account_id = None;
    let refused_journal: journal::HoldingJournal = [&run_rows[1], &refused].into_iter().collect();
    let error = refused_journal
        .spawn_append_to_run(&database.pool, 7)
        .finish()
        .await
        .unwrap_err();
    assert!(matches!(error, HostDbError::Constraint { .. }), "{error}");
    let empty = journal::HoldingJournal::default().spawn_append_to_run(&database.pool, 7);
    assert_eq!(empty.finish().await.unwrap(), 0);
    assert_eq!(count("holding_movements_run_7").await, 1_000);

    // Autovacuum leaves the unattached tables alone (it would hold up the attach, V0022);
    // the attach turns it back on, drops the empty cash table and makes the rows the
    // journal's.
    let autovacuum_off = "pg_class WHERE relname ~ '^(holding|cash)_movements_run_7$'
        AND NOT relispartition AND reloptions @> '{autovacuum_enabled=off}'";
    assert_eq!(count(autovacuum_off).await, 2);
    let attached: i32 = hostdb::client(&database.pool)
        .await
        .unwrap()
        .query_one("SELECT ccass_attach_run_journals(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attached, 1);
    assert_eq!(
        count(
            "pg_class WHERE relname = 'holding_movements_run_7'
               AND relispartition AND reloptions IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count("pg_class WHERE relname = 'cash_movements_run_7'").await,
        0
    );
    assert_eq!(
        count("holding_movements WHERE settlement_run_id = 7").await,
        1_000
    );
}

#[tokio::test]
async fn ping_fails_fast_when_the_server_is_gone_and_recovers() {
    // Goal: the readiness probe answers within its timeout either way, and the pool never
    // hands out a dead connection. Method: ping; kill every server connection of the pool
    // (as a server restart would); ping again. Then a pool on a closed port must fail
    // within the timeout.
    let Some(database) = postgres::database("ping").await else {
        return;
    };
    let timeout = Duration::from_secs(2);
    hostdb::ping(&database.pool, timeout).await.unwrap();

    let admin = hostdb::connect(&postgres::test_config()).unwrap();
    let killer = hostdb::client(&admin).await.unwrap();
    let killed: i64 = killer
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()) AS terminated",
            &[&database.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    hostdb::ping(&database.pool, timeout).await.unwrap();

    let mut gone = database.config.clone();
    gone.port = 1;
    let unreachable = hostdb::connect(&gone).unwrap();
    let started = Instant::now();
    let error = hostdb::ping(&unreachable, timeout).await.unwrap_err();
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert!(error.is_unavailable(), "{error}");

    // And the same pool works once the server is back: point the check at a pool whose
    // server is up to show that a failed ping leaves nothing stuck.
    hostdb::ping(&database.pool, timeout).await.unwrap();
}

#[tokio::test]
async fn connections_carry_the_configured_settings() {
    // Goal: statement_timeout and application_name reach the server.
    let Some(database) = postgres::database("connection_settings").await else {
        return;
    };
    let pool = hostdb::connect_as(&database.config, "ccass-test").unwrap();
    let client = hostdb::client(&pool).await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT setting FROM pg_settings WHERE name = 'statement_timeout'),
                    current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    let (statement_timeout_ms, application_name): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        statement_timeout_ms,
        database.config.statement_timeout_ms.to_string()
    );
    assert_eq!(application_name, "ccass-test");
}
