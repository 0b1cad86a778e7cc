//! SQL of `ccass bench settlement`: load a generated day of matched pairs fast (COPY BINARY),
//! copy the loaded database (`CREATE DATABASE … TEMPLATE`), and the two SQL baselines the
//! engine is measured against: one transaction per pair, and the best set-based SQL.
//!
//! Never used by the running system; the benchmark owns its databases.

use time::Date;
use tokio_postgres::types::Type;

use super::journal::{
    self, CashMovement, CashMovementKind, CopyIn, HoldingMovement, HoldingMovementKind,
};
use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl Fn(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// One generated matched pair, in indexes into [`BenchDay`]'s participants and securities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPair {
    pub deliverer: u32,
    pub receiver: u32,
    pub security: u32,
    pub quantity: i64,
    /// `Some` for DvP (HKD minor units).
    pub amount_minor: Option<i64>,
    pub partial_allowed: bool,
}

/// A generated day: reference ids, opening balances and matched pairs. Every participant has
/// one house account `{participant}-01` and one HKD cash account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchDay {
    pub settlement_date: Date,
    pub participants: Vec<String>,
    pub isins: Vec<String>,
    /// (participant index, security index, quantity) with quantity > 0.
    pub holdings: Vec<(u32, u32, i64)>,
    /// Opening HKD balance per participant (same order as `participants`).
    pub cash_minor: Vec<i64>,
    pub pairs: Vec<BenchPair>,
}

fn account(participant: &str) -> String {
    format!("{participant}-01")
}

/// Status of a prior day's settled instructions as the system leaves them: a run appends a
/// settled marker, then the sweep after it moves the pair's instructions to `settled`
/// (V0016; the history's runs are recorded as swept).
const HISTORY_STATUS: &str = "settled";

/// Loads `day` into a migrated database that already holds its participants and securities:
/// accounts, opening balances with their journal rows, instructions (status `matched`) and
/// their matches, all by COPY BINARY in one transaction; then `ANALYZE`.
///
/// Before the day, `settled_days` prior settlement dates (calendar days back) of the same
/// pairs, settled in full by one completed run each: their instructions (older ids, status
/// [`HISTORY_STATUS`]), matches, run records and complete settled markers, the history a
/// run finds in production. Only what the run's load reads: no journals for them (the
/// benchmark's database is never audited).
pub async fn load_day(pool: &Pool, day: &BenchDay, settled_days: usize) -> Result<(), HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client.transaction().await.map_err(db("begin bench load"))?;
    // The generated day is consistent by construction: skip the per-row foreign-key
    // triggers while loading it (the benchmark's own database; needs a superuser).
    transaction
        .batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(db("skip foreign-key triggers for the bench load"))?;
    let accounts: Vec<String> = day.participants.iter().map(|p| account(p)).collect();
    transaction
        .execute(
            "INSERT INTO stock_accounts (account_id, participant_id, account_kind, status)
             SELECT a, p, 'house', 'active' FROM unnest($1::text[], $2::text[]) AS u(a, p)",
            &[&accounts, &day.participants],
        )
        .await
        .map_err(db("insert bench stock accounts"))?;
    transaction
        .execute(
            "INSERT INTO cash_accounts (participant_id, currency_code, account_kind,
                 designated_bank, status)
             SELECT p, 'HKD', 'participant', 'BENCH BANK', 'active' FROM unnest($1::text[]) AS p",
            &[&day.participants],
        )
        .await
        .map_err(db("insert bench cash accounts"))?;
    transaction
        .execute(
            "INSERT INTO cash_balances (participant_id, currency_code, account_kind, amount_minor)
             SELECT p, 'HKD', 'participant', a FROM unnest($1::text[], $2::int8[]) AS u(p, a)",
            &[&day.participants, &day.cash_minor],
        )
        .await
        .map_err(db("insert bench cash balances"))?;
    let mut copy = CopyIn::start(
        &transaction,
        "copy bench holdings",
        "COPY holdings (account_id, isin, quantity) FROM STDIN BINARY",
        &[Type::TEXT, Type::TEXT, Type::INT8],
    )
    .await?;
    for (participant, security, quantity) in &day.holdings {
        copy.write(&[
            &accounts[*participant as usize],
            &day.isins[*security as usize],
            quantity,
        ])
        .await?;
    }
    copy.finish().await?;
    let openings: Vec<HoldingMovement> = day
        .holdings
        .iter()
        .map(|(participant, security, quantity)| HoldingMovement {
            settlement_date: day.settlement_date,
            settlement_run_id: None,
            from_account_id: None,
            to_account_id: Some(accounts[*participant as usize].clone()),
            isin: day.isins[*security as usize].clone(),
            quantity: *quantity,
            kind: HoldingMovementKind::Opening,
            reference: "bench:opening".to_owned(),
        })
        .collect();
    journal::append_holding_movements(&transaction, &openings).await?;
    let cash_openings: Vec<CashMovement> = day
        .participants
        .iter()
        .zip(&day.cash_minor)
        .filter(|(_, amount)| **amount > 0)
        .map(|(participant, amount)| CashMovement {
            settlement_date: day.settlement_date,
            settlement_run_id: None,
            from_participant_id: None,
            to_participant_id: Some(participant.clone()),
            currency_code: "HKD".to_owned(),
            amount_minor: *amount,
            kind: CashMovementKind::Opening,
            reference: "bench:opening".to_owned(),
        })
        .collect();
    journal::append_cash_movements(&transaction, &cash_openings).await?;

    let mut copy = CopyIn::start(
        &transaction,
        "copy bench instructions",
        "COPY instructions (instruction_id, participant_id, sender_reference, message_type,
             function, direction, payment, account_id, counterparty_participant_id,
             counterparty_account_id, isin, quantity, settlement_date, currency_code,
             amount_minor, partial_settlement_allowed, status) FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::DATE,
            Type::TEXT,
            Type::INT8,
            Type::BOOL,
            Type::TEXT,
        ],
    )
    .await?;
    let currency: Option<&str> = Some("HKD");
    let pair_count = day.pairs.len() as i64;
    // Day `settled_days` is the day to settle; 0.. are the prior days, oldest first.
    let day_date = |day_index: usize| {
        day.settlement_date
            .checked_sub(time::Duration::days((settled_days - day_index) as i64))
            .unwrap_or(day.settlement_date)
    };
    for day_index in 0..=settled_days {
        let settlement_date = day_date(day_index);
        let status = if day_index == settled_days {
            "matched"
        } else {
            HISTORY_STATUS
        };
        for (index, pair) in day.pairs.iter().enumerate() {
            let number = day_index as i64 * pair_count + index as i64 + 1;
            let dvp = pair.amount_minor.is_some();
            let payment = if dvp { "DVP" } else { "FOP" };
            let deliverer = &day.participants[pair.deliverer as usize];
            let receiver = &day.participants[pair.receiver as usize];
            let isin = &day.isins[pair.security as usize];
            let sides = [
                (
                    2 * number - 1,
                    pair.deliverer,
                    deliverer,
                    receiver,
                    format!("BD{number}"),
                    if dvp { "543" } else { "542" },
                    "deliver",
                ),
                (
                    2 * number,
                    pair.receiver,
                    receiver,
                    deliverer,
                    format!("BR{number}"),
                    if dvp { "541" } else { "540" },
                    "receive",
                ),
            ];
            for (id, own_index, own, other, reference, message_type, direction) in &sides {
                copy.write(&[
                    id,
                    own,
                    reference,
                    message_type,
                    &"NEWM",
                    direction,
                    &payment,
                    &accounts[*own_index as usize],
                    other,
                    &account(other),
                    isin,
                    &pair.quantity,
                    &settlement_date,
                    &currency.filter(|_| dvp),
                    &pair.amount_minor,
                    &pair.partial_allowed,
                    &status,
                ])
                .await?;
            }
        }
    }
    copy.finish().await?;
    let mut copy = CopyIn::start(
        &transaction,
        "copy bench matches",
        "COPY instruction_matches (match_id, delivering_instruction_id,
             receiving_instruction_id) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::INT8],
    )
    .await?;
    for number in 1..=(settled_days as i64 + 1) * pair_count {
        copy.write(&[&number, &(2 * number - 1), &(2 * number)])
            .await?;
    }
    copy.finish().await?;
    if settled_days > 0 {
        let dates: Vec<Date> = (0..settled_days).map(day_date).collect();
        let run_ids: Vec<i64> = transaction
            .query(
                "INSERT INTO settlement_runs (settlement_date, run_number, scheduled_at,
                     started_at, finished_at, status, leader, instructions_settled_count,
                     swept_at)
                 SELECT d, 1, now(), now(), now(), 'completed', 'bench:history', $2, now()
                 FROM unnest($1::date[]) WITH ORDINALITY AS u(d, n) ORDER BY n
                 RETURNING settlement_run_id",
                &[&dates, &(2 * pair_count)],
            )
            .await
            .map_err(db("insert bench history runs"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut copy = CopyIn::start(
            &transaction,
            "copy bench history markers",
            "COPY instruction_settlements (match_id, settlement_run_id,
                 delivering_instruction_id, receiving_instruction_id, quantity, amount_minor,
                 complete) FROM STDIN BINARY",
            &[
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::BOOL,
            ],
        )
        .await?;
        for (day_index, run_id) in run_ids.iter().enumerate() {
            for (index, pair) in day.pairs.iter().enumerate() {
                let number = day_index as i64 * pair_count + index as i64 + 1;
                copy.write(&[
                    &number,
                    run_id,
                    &(2 * number - 1),
                    &(2 * number),
                    &pair.quantity,
                    &pair.amount_minor,
                    &true,
                ])
                .await?;
            }
        }
        copy.finish().await?;
    }
    transaction
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('instructions', 'instruction_id'),
                 (SELECT coalesce(max(instruction_id), 0) + 1 FROM instructions), false);
             SELECT setval(pg_get_serial_sequence('instruction_matches', 'match_id'),
                 (SELECT coalesce(max(match_id), 0) + 1 FROM instruction_matches), false);",
        )
        .await
        .map_err(db("advance bench identities"))?;
    transaction
        .commit()
        .await
        .map_err(db("commit bench load"))?;
    client
        .batch_execute("VACUUM ANALYZE")
        .await
        .map_err(db("analyze bench database"))
}

/// Creates database `name` as a copy of `template` (which must have no connections).
pub async fn copy_database(admin: &Pool, template: &str, name: &str) -> Result<(), HostDbError> {
    let client = super::client(admin).await?;
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(name)
        ))
        .await
        .map_err(db("drop bench copy"))?;
    client
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote(name),
            quote(template)
        ))
        .await
        .map_err(db("copy bench database"))
}

/// `CHECKPOINT`: writes back every dirty page now, so the next timed phase does not pay for
/// what the setup wrote (a day's load and three copies of it). Needs a superuser (or, from
/// PostgreSQL 15, the `pg_checkpoint` role).
pub async fn checkpoint(admin: &Pool) -> Result<(), HostDbError> {
    let client = super::client(admin).await?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(db("checkpoint before a timed phase"))
}

/// Baseline (a): one transaction per pair, in settlement order, for at most `limit` pairs:
/// lock the deliverer's holding and the payer's cash, settle in full when both cover it
/// (single pass, no chains), write both balances, the journals, the marker, the run's two
/// confirmations, commit. Returns (pairs tried, pairs settled).
pub async fn settle_one_transaction_each(
    pool: &Pool,
    settlement_date: Date,
    limit: i64,
) -> Result<(usize, usize), HostDbError> {
    let mut client = super::client(pool).await?;
    let run_id: i64 = client
        .query_one(
            "INSERT INTO settlement_runs (settlement_date, run_number, scheduled_at, started_at,
                 status, leader)
             VALUES ($1, 1, now(), now(), 'completed', 'bench:each')
             RETURNING settlement_run_id",
            &[&settlement_date],
        )
        .await
        .map_err(db("record bench run"))?
        .get(0);
    client
        .execute("SELECT ccass_create_run_journals($1, true)", &[&run_id])
        .await
        .map_err(db("create bench run journal partitions"))?;
    let due = client
        .query(
            "SELECT m.match_id, d.instruction_id, r.instruction_id, d.account_id, r.account_id,
                    d.participant_id, r.participant_id, d.isin, d.quantity, d.amount_minor
             FROM instruction_matches m
             JOIN instructions d ON d.instruction_id = m.delivering_instruction_id
             JOIN instructions r ON r.instruction_id = m.receiving_instruction_id
             WHERE d.settlement_date <= $1
             ORDER BY d.settlement_date, m.match_id LIMIT $2",
            &[&settlement_date, &limit],
        )
        .await
        .map_err(db("load bench due pairs"))?;
    let mut settled = 0;
    for row in &due {
        let match_id: i64 = row.get(0);
        let delivering: i64 = row.get(1);
        let receiving: i64 = row.get(2);
        let from_account: &str = row.get(3);
        let to_account: &str = row.get(4);
        let from_participant: &str = row.get(5);
        let to_participant: &str = row.get(6);
        let isin: &str = row.get(7);
        let quantity: i64 = row.get(8);
        let amount: Option<i64> = row.get(9);
        let transaction = client.transaction().await.map_err(db("begin bench pair"))?;
        let stock: i64 = transaction
            .query_opt(
                "SELECT quantity FROM holdings WHERE account_id = $1 AND isin = $2 FOR UPDATE",
                &[&from_account, &isin],
            )
            .await
            .map_err(db("lock bench holding"))?
            .map_or(0, |row| row.get(0));
        let money_ok = match amount {
            None => true,
            Some(amount) => {
                let cash: i64 = transaction
                    .query_opt(
                        "SELECT amount_minor FROM cash_balances
                         WHERE participant_id = $1 AND currency_code = 'HKD' FOR UPDATE",
                        &[&to_participant],
                    )
                    .await
                    .map_err(db("lock bench cash"))?
                    .map_or(0, |row| row.get(0));
                cash >= amount
            }
        };
        if stock < quantity || !money_ok {
            transaction.rollback().await.map_err(db("end bench pair"))?;
            continue;
        }
        let reference = format!("match:{match_id}");
        transaction
            .execute(
                "UPDATE holdings SET quantity = quantity - $3, updated_at = now()
                 WHERE account_id = $1 AND isin = $2",
                &[&from_account, &isin, &quantity],
            )
            .await
            .map_err(db("debit bench holding"))?;
        transaction
            .execute(
                "INSERT INTO holdings (account_id, isin, quantity) VALUES ($1, $2, $3)
                 ON CONFLICT (account_id, isin)
                 DO UPDATE SET quantity = holdings.quantity + $3, updated_at = now()",
                &[&to_account, &isin, &quantity],
            )
            .await
            .map_err(db("credit bench holding"))?;
        transaction
            .execute(
                "INSERT INTO holding_movements (settlement_date, settlement_run_id,
                     from_account_id, to_account_id, isin, quantity, movement_kind, reference)
                 VALUES ($1, $2, $3, $4, $5, $6, 'settlement', $7)",
                &[
                    &settlement_date,
                    &run_id,
                    &from_account,
                    &to_account,
                    &isin,
                    &quantity,
                    &reference,
                ],
            )
            .await
            .map_err(db("journal bench holding"))?;
        if let Some(amount) = amount {
            transaction
                .execute(
                    "UPDATE cash_balances SET amount_minor = amount_minor +
                         CASE WHEN participant_id = $1 THEN -$3::int8 ELSE $3::int8 END,
                         updated_at = now()
                     WHERE participant_id IN ($1, $2) AND currency_code = 'HKD'",
                    &[&to_participant, &from_participant, &amount],
                )
                .await
                .map_err(db("move bench cash"))?;
            transaction
                .execute(
                    "INSERT INTO cash_movements (settlement_date, settlement_run_id,
                         from_participant_id, to_participant_id, currency_code, amount_minor,
                         movement_kind, reference)
                     VALUES ($1, $2, $3, $4, 'HKD', $5, 'dvp', $6)",
                    &[
                        &settlement_date,
                        &run_id,
                        &to_participant,
                        &from_participant,
                        &amount,
                        &reference,
                    ],
                )
                .await
                .map_err(db("journal bench cash"))?;
        }
        transaction
            .execute(
                "INSERT INTO instruction_settlements (match_id, settlement_run_id,
                     delivering_instruction_id, receiving_instruction_id, quantity, amount_minor,
                     complete)
                 VALUES ($1, $2, $3, $4, $5, $6, true)",
                &[
                    &match_id,
                    &run_id,
                    &delivering,
                    &receiving,
                    &quantity,
                    &amount,
                ],
            )
            .await
            .map_err(db("mark bench pair"))?;
        transaction
            .execute(
                "INSERT INTO outbox (subject, dedupe_id, payload)
                 VALUES ('ccass.v1.outbound.' || $1, 'bsr:' || $3 || ':' || $4, $6),
                        ('ccass.v1.outbound.' || $2, 'bsr:' || $3 || ':' || $5, $6)",
                &[
                    &from_participant,
                    &to_participant,
                    &run_id.to_string(),
                    &delivering.to_string(),
                    &receiving.to_string(),
                    &reference.as_bytes(),
                ],
            )
            .await
            .map_err(db("queue bench confirmations"))?;
        transaction
            .commit()
            .await
            .map_err(db("commit bench pair"))?;
        settled += 1;
    }
    Ok((due.len(), settled))
}

/// Baseline (b): the best set-based SQL, one transaction: the due pairs into a temporary
/// table; a single pass that settles, in settlement order, each pair whose deliverer's stock
/// and payer's money cover it and every earlier pair drawing on the same balances (running
/// sums; receipts in the run are not used, so no balance goes negative); then journals,
/// markers and the confirmations due (as the engine: one compact row per participant holding
/// each side's instruction, quantity and amount, for the relay to expand) by `INSERT …
/// SELECT`, and each balance table by one `UPDATE …
/// FROM` aggregated deltas (plus an insert of receivers' new holdings). Returns pairs settled.
pub async fn settle_set_based(pool: &Pool, settlement_date: Date) -> Result<i64, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client.transaction().await.map_err(db("begin set-based"))?;
    let run_id: i64 = transaction
        .query_one(
            "INSERT INTO settlement_runs (settlement_date, run_number, scheduled_at, started_at,
                 status, leader)
             VALUES ($1, 1, now(), now(), 'running', 'bench:set')
             RETURNING settlement_run_id",
            &[&settlement_date],
        )
        .await
        .map_err(db("record set-based run"))?
        .get(0);
    transaction
        .execute("SELECT ccass_create_run_journals($1, true)", &[&run_id])
        .await
        .map_err(db("create set-based run journal partitions"))?;
    transaction
        .execute(
            "CREATE TEMP TABLE settled ON COMMIT DROP AS
             WITH due AS (
                 SELECT m.match_id, d.instruction_id AS delivering,
                        r.instruction_id AS receiving, d.settlement_date,
                        d.account_id AS from_account, r.account_id AS to_account,
                        d.participant_id AS from_participant, r.participant_id AS to_participant,
                        d.isin, d.quantity, d.amount_minor
                 FROM instruction_matches m
                 JOIN instructions d ON d.instruction_id = m.delivering_instruction_id
                 JOIN instructions r ON r.instruction_id = m.receiving_instruction_id
                 WHERE d.status = 'matched' AND r.status = 'matched'
                   AND d.settlement_date <= $1 AND r.settlement_date <= $1
                   AND NOT m.on_hold AND NOT m.excluded_from_runs
                   AND NOT EXISTS (SELECT 1 FROM instruction_settlements s
                                   WHERE s.match_id = m.match_id AND s.complete)
             ), running AS (
                 SELECT due.*,
                        sum(quantity) OVER (PARTITION BY from_account, isin
                            ORDER BY settlement_date, match_id) AS stock_needed,
                        sum(coalesce(amount_minor, 0)) OVER (PARTITION BY to_participant
                            ORDER BY settlement_date, match_id) AS money_needed
                 FROM due
             )
             SELECT running.* FROM running
             LEFT JOIN holdings h ON h.account_id = from_account AND h.isin = running.isin
             LEFT JOIN cash_balances c
                    ON c.participant_id = to_participant AND c.currency_code = 'HKD'
             WHERE stock_needed <= coalesce(h.quantity, 0)
               AND (running.amount_minor IS NULL
                    OR money_needed <= coalesce(c.amount_minor, 0))",
            &[&settlement_date],
        )
        .await
        .map_err(db("set-based settle pass"))?;
    transaction
        .batch_execute(&format!(
            "INSERT INTO holding_movements (settlement_date, settlement_run_id, from_account_id,
                 to_account_id, isin, quantity, movement_kind, reference)
             SELECT settlement_date, {run_id}, from_account, to_account, isin, quantity,
                 'settlement', 'match:' || match_id FROM settled;
             INSERT INTO cash_movements (settlement_date, settlement_run_id,
                 from_participant_id, to_participant_id, currency_code, amount_minor,
                 movement_kind, reference)
             SELECT settlement_date, {run_id}, to_participant, from_participant, 'HKD',
                 amount_minor, 'dvp', 'match:' || match_id
             FROM settled WHERE amount_minor IS NOT NULL;
             INSERT INTO instruction_settlements (match_id, settlement_run_id,
                 delivering_instruction_id, receiving_instruction_id, quantity, amount_minor,
                 complete)
             SELECT match_id, {run_id}, delivering, receiving, quantity, amount_minor, true
             FROM settled;
             INSERT INTO outbox (subject, dedupe_id, payload)
             SELECT 'ccass.v1.outbound.' || participant,
                    'bsr-confirmations:{run_id}:' || participant || ':0',
                    string_agg(int8send(instruction_id) || int8send(quantity)
                               || int8send(coalesce(amount_minor, 0)), ''::bytea)
             FROM settled,
                  LATERAL (VALUES (from_participant, delivering),
                                  (to_participant, receiving))
                      AS side(participant, instruction_id)
             GROUP BY participant;
             WITH delta AS (
                 SELECT account_id, isin, sum(change) AS change FROM (
                     SELECT from_account AS account_id, isin, -quantity AS change FROM settled
                     UNION ALL
                     SELECT to_account, isin, quantity FROM settled) legs
                 GROUP BY account_id, isin
             ), updated AS (
                 UPDATE holdings h SET quantity = h.quantity + delta.change, updated_at = now()
                 FROM delta WHERE h.account_id = delta.account_id AND h.isin = delta.isin
                 RETURNING h.account_id, h.isin
             )
             INSERT INTO holdings (account_id, isin, quantity)
             SELECT delta.account_id, delta.isin, delta.change FROM delta
             WHERE NOT EXISTS (SELECT 1 FROM updated u
                               WHERE u.account_id = delta.account_id AND u.isin = delta.isin);
             UPDATE cash_balances c SET amount_minor = c.amount_minor + delta.change,
                 updated_at = now()
             FROM (SELECT participant_id, sum(change) AS change FROM (
                       SELECT to_participant AS participant_id, -amount_minor AS change
                       FROM settled WHERE amount_minor IS NOT NULL
                       UNION ALL
                       SELECT from_participant, amount_minor
                       FROM settled WHERE amount_minor IS NOT NULL) legs
                   GROUP BY participant_id) delta
             WHERE c.participant_id = delta.participant_id AND c.currency_code = 'HKD';
             UPDATE settlement_runs SET status = 'completed', finished_at = clock_timestamp()
             WHERE settlement_run_id = {run_id};"
        ))
        .await
        .map_err(db("set-based writes"))?;
    let settled: i64 = transaction
        .query_one("SELECT count(*) FROM settled", &[])
        .await
        .map_err(db("count set-based settled"))?
        .get(0);
    transaction.commit().await.map_err(db("commit set-based"))?;
    Ok(settled)
}
