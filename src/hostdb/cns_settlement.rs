//! SQL of CNS settlement: the CNS phases inside a Batch Settlement Run's transaction, and the
//! day-end of a settlement date (carry forward, money settlement) in its own transaction.
//!
//! Guarantees:
//! - The run's phases use the run's transaction ([`RunTransaction`]): due positions and
//!   obligations are loaded `FOR UPDATE`, and their new `settled_quantity`/`status`, the
//!   `cns_position_settlements` rows (COPY BINARY), the journals and the outbox rows commit or
//!   vanish together with the rest of the run.
//! - [`DayEnd::begin`] waits for the run leader's lock (no run is under way while the day
//!   ends) and returns `None` when the date's day-end was already recorded; everything it
//!   writes commits with its `cns_day_ends` row.

use time::Date;
use tokio_postgres::types::Type;

use super::journal::{self, CashMovement, CopyIn};
use super::settlement::{CashRow, OutboxRow, RunTransaction};
use super::{HostDbError, Pool};

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HostDbError {
    move |error| HostDbError::from_postgres(context, error)
}

/// The CCP: its participant id and the stock account CNS settles against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ccp {
    pub participant_id: String,
    pub account_id: String,
}

/// Which positions to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `net_quantity < 0`: the participant delivers to the CCP.
    Short,
    /// `net_quantity > 0`: the participant receives from the CCP.
    Long,
}

/// A stock position due for settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePosition {
    pub settlement_date: Date,
    pub participant_id: String,
    pub isin: String,
    pub net_quantity: i64,
    pub settled_quantity: i64,
    pub board_lot: i64,
    pub obligation_count: i32,
    /// The participant's settlement account (`None`: it has no active house or client
    /// account, so the position cannot settle).
    pub account_id: Option<String>,
}

/// An isolated trade side due for settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueIsolated {
    pub market: String,
    pub trade_date: Date,
    pub trade_id: String,
    pub side: String,
    pub participant_id: String,
    pub settlement_date: Date,
    pub isin: String,
    pub quantity: i64,
    pub currency_code: String,
    pub amount_minor: i64,
    pub account_id: Option<String>,
}

/// What a run moved for one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionSettlement {
    pub settlement_date: Date,
    pub participant_id: String,
    pub isin: String,
    pub direction: Direction,
    pub account_id: String,
    pub quantity: i64,
    /// `partially_settled` or `settled`.
    pub status: &'static str,
}

/// Receipts of the CCP for one security and settlement date so far: units shorts delivered
/// and units already handed to longs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipts {
    pub settlement_date: Date,
    pub isin: String,
    pub delivered_by_shorts: i64,
    pub handed_to_longs: i64,
}

/// The participant's settlement account: its first active house account, else its first
/// active client account.
const SETTLEMENT_ACCOUNT: &str = "
    LEFT JOIN LATERAL (
        SELECT a.account_id FROM stock_accounts a
        WHERE a.participant_id = p.participant_id AND a.status = 'active'
          AND a.account_kind IN ('house', 'client')
        ORDER BY a.account_kind <> 'house', a.account_id
        LIMIT 1) acct ON true";

impl RunTransaction<'_> {
    /// The CCP (the participant of type `ccp`) and its active `ccp` stock account.
    pub async fn cns_ccp(&self) -> Result<Option<Ccp>, HostDbError> {
        let row = self
            .transaction
            .query_opt(
                "SELECT p.participant_id, a.account_id
                 FROM participants p
                 JOIN stock_accounts a ON a.participant_id = p.participant_id
                 WHERE p.participant_type = 'ccp' AND a.account_kind = 'ccp'
                   AND a.status = 'active'
                 ORDER BY p.participant_id, a.account_id LIMIT 1",
                &[],
            )
            .await
            .map_err(db("find the ccp account"))?;
        Ok(row.map(|row| Ccp {
            participant_id: row.get(0),
            account_id: row.get(1),
        }))
    }

    /// Positions of settlement dates up to `settlement_date` still due in `direction`,
    /// oldest date first, then participant and security; locked until the run ends.
    pub async fn cns_due_positions(
        &self,
        settlement_date: Date,
        direction: Direction,
    ) -> Result<Vec<DuePosition>, HostDbError> {
        let sign = match direction {
            Direction::Short => "p.net_quantity < 0",
            Direction::Long => "p.net_quantity > 0",
        };
        let sql = format!(
            "SELECT p.settlement_date, p.participant_id, p.isin, p.net_quantity,
                    p.settled_quantity, s.board_lot::int8, acct.account_id,
                    p.obligation_count
             FROM cns_stock_positions p
             JOIN securities s ON s.isin = p.isin
             {SETTLEMENT_ACCOUNT}
             WHERE p.settlement_date <= $1 AND p.status IN ('final', 'partially_settled')
               AND {sign}
             ORDER BY p.settlement_date, p.participant_id, p.isin
             FOR UPDATE OF p"
        );
        let rows = self
            .transaction
            .query(&sql, &[&settlement_date])
            .await
            .map_err(db("load due cns positions"))?;
        Ok(rows
            .iter()
            .map(|row| DuePosition {
                settlement_date: row.get(0),
                participant_id: row.get(1),
                isin: row.get(2),
                net_quantity: row.get(3),
                settled_quantity: row.get(4),
                board_lot: row.get(5),
                account_id: row.get(6),
                obligation_count: row.get(7),
            })
            .collect())
    }

    /// Isolated trade sides (`sell` or `buy`) due up to `settlement_date`, locked.
    pub async fn cns_due_isolated(
        &self,
        settlement_date: Date,
        side: &str,
    ) -> Result<Vec<DueIsolated>, HostDbError> {
        let sql = format!(
            "SELECT p.market, p.trade_date, p.trade_id, p.side, p.participant_id,
                    p.settlement_date, p.isin, p.quantity, p.currency_code, p.amount_minor,
                    acct.account_id
             FROM cns_isolated_obligations p
             {SETTLEMENT_ACCOUNT}
             WHERE p.settlement_date <= $1 AND p.status IN ('final', 'partially_settled')
               AND p.side = $2
             ORDER BY p.settlement_date, p.trade_date, p.trade_id
             FOR UPDATE OF p"
        );
        let rows = self
            .transaction
            .query(&sql, &[&settlement_date, &side])
            .await
            .map_err(db("load due isolated obligations"))?;
        Ok(rows
            .iter()
            .map(|row| DueIsolated {
                market: row.get(0),
                trade_date: row.get(1),
                trade_id: row.get(2),
                side: row.get(3),
                participant_id: row.get(4),
                settlement_date: row.get(5),
                isin: row.get(6),
                quantity: row.get(7),
                currency_code: row.get(8),
                amount_minor: row.get(9),
                account_id: row.get(10),
            })
            .collect())
    }

    /// The CCP's receipts so far for each (settlement date, isin) key.
    pub async fn cns_receipts(
        &self,
        dates: &[Date],
        isins: &[&str],
    ) -> Result<Vec<Receipts>, HostDbError> {
        let rows = self
            .transaction
            .query(
                "SELECT p.settlement_date, p.isin,
                        coalesce(sum(p.settled_quantity) FILTER (WHERE p.net_quantity < 0), 0)::int8,
                        coalesce(sum(p.settled_quantity) FILTER (WHERE p.net_quantity > 0), 0)::int8
                 FROM cns_stock_positions p
                 JOIN (SELECT DISTINCT * FROM unnest($1::date[], $2::text[])) AS k(settlement_date, isin)
                   ON k.settlement_date = p.settlement_date AND k.isin = p.isin
                 GROUP BY 1, 2",
                &[&dates, &isins],
            )
            .await
            .map_err(db("read cns receipts"))?;
        Ok(rows
            .iter()
            .map(|row| Receipts {
                settlement_date: row.get(0),
                isin: row.get(1),
                delivered_by_shorts: row.get(2),
                handed_to_longs: row.get(3),
            })
            .collect())
    }

    /// Records what this run settled of each position: the positions' settled quantity and
    /// status (set-based), and one `cns_position_settlements` row each (COPY BINARY).
    pub async fn cns_record_settlements(
        &self,
        settlements: &[PositionSettlement],
    ) -> Result<(), HostDbError> {
        if settlements.is_empty() {
            return Ok(());
        }
        let dates: Vec<Date> = settlements.iter().map(|s| s.settlement_date).collect();
        let participants: Vec<&str> = settlements
            .iter()
            .map(|s| s.participant_id.as_str())
            .collect();
        let isins: Vec<&str> = settlements.iter().map(|s| s.isin.as_str()).collect();
        let quantities: Vec<i64> = settlements.iter().map(|s| s.quantity).collect();
        let statuses: Vec<&str> = settlements.iter().map(|s| s.status).collect();
        self.transaction
            .execute(
                "UPDATE cns_stock_positions p
                 SET settled_quantity = p.settled_quantity + d.quantity, status = d.status,
                     updated_at = now()
                 FROM unnest($1::date[], $2::text[], $3::text[], $4::int8[], $5::text[])
                     AS d(settlement_date, participant_id, isin, quantity, status)
                 WHERE p.settlement_date = d.settlement_date
                   AND p.participant_id = d.participant_id AND p.isin = d.isin",
                &[&dates, &participants, &isins, &quantities, &statuses],
            )
            .await
            .map_err(db("record settled cns positions"))?;
        let mut copy = CopyIn::start(
            &self.transaction,
            "copy cns position settlements",
            "COPY cns_position_settlements (settlement_run_id, settlement_date, participant_id,
                 isin, direction, account_id, quantity) FROM STDIN BINARY",
            &[
                Type::INT8,
                Type::DATE,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ],
        )
        .await?;
        for settlement in settlements {
            let direction = match settlement.direction {
                Direction::Short => "deliver",
                Direction::Long => "receive",
            };
            copy.write(&[
                &self.settlement_run_id,
                &settlement.settlement_date,
                &settlement.participant_id,
                &settlement.isin,
                &direction,
                &settlement.account_id,
                &settlement.quantity,
            ])
            .await?;
        }
        copy.finish().await?;
        Ok(())
    }

    /// Cash balances for the CNS phases, locked (see [`lock_cash`]).
    pub async fn cns_lock_cash(
        &self,
        participant_ids: &[&str],
        currency_codes: &[&str],
    ) -> Result<Vec<CashRow>, HostDbError> {
        lock_cash(&self.transaction, participant_ids, currency_codes).await
    }

    /// Marks isolated trade sides settled (they settle whole).
    pub async fn cns_record_isolated(&self, settled: &[&DueIsolated]) -> Result<(), HostDbError> {
        if settled.is_empty() {
            return Ok(());
        }
        let markets: Vec<&str> = settled.iter().map(|s| s.market.as_str()).collect();
        let dates: Vec<Date> = settled.iter().map(|s| s.trade_date).collect();
        let ids: Vec<&str> = settled.iter().map(|s| s.trade_id.as_str()).collect();
        let sides: Vec<&str> = settled.iter().map(|s| s.side.as_str()).collect();
        self.transaction
            .execute(
                "UPDATE cns_isolated_obligations o
                 SET settled_quantity = o.quantity, status = 'settled', updated_at = now()
                 FROM unnest($1::text[], $2::date[], $3::text[], $4::text[])
                     AS d(market, trade_date, trade_id, side)
                 WHERE o.market = d.market AND o.trade_date = d.trade_date
                   AND o.trade_id = d.trade_id AND o.side = d.side",
                &[&markets, &dates, &ids, &sides],
            )
            .await
            .map_err(db("record settled isolated obligations"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Day-end

/// A money position due at day-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMoney {
    pub participant_id: String,
    pub currency_code: String,
    pub net_amount_minor: i64,
    pub settled_amount_minor: i64,
}

/// What a day-end did (its `cns_day_ends` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayEndTotals {
    pub carried_stock_position_count: i64,
    pub money_positions_settled_count: i64,
    pub money_positions_unpaid_count: i64,
}

/// A stored position that a day-end changed, for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneySettled {
    pub participant_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
}

/// The day-end transaction of one settlement date.
pub struct DayEnd<'c> {
    transaction: deadpool_postgres::Transaction<'c>,
    settlement_date: Date,
}

impl<'c> DayEnd<'c> {
    /// Begins the day-end of `settlement_date`, waiting for the run leader lock
    /// `leader_lock_key`; `None` when it already happened.
    pub async fn begin(
        client: &'c mut deadpool_postgres::Client,
        leader_lock_key: i64,
        settlement_date: Date,
    ) -> Result<Option<DayEnd<'c>>, HostDbError> {
        let transaction = client.transaction().await.map_err(db("begin day-end"))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&leader_lock_key])
            .await
            .map_err(db("wait for the settlement run leader lock"))?;
        let done = transaction
            .query_opt(
                "SELECT 1 FROM cns_day_ends WHERE settlement_date = $1",
                &[&settlement_date],
            )
            .await
            .map_err(db("read day-end"))?
            .is_some();
        if done {
            return Ok(None);
        }
        Ok(Some(DayEnd {
            transaction,
            settlement_date,
        }))
    }

    /// Carries every unsettled stock position of the date into `next_date`: the row becomes
    /// `carried_forward` and its remainder (signed) is added to the next date's position of
    /// the same participant and security. Returns how many positions were carried.
    pub async fn carry_forward(&self, next_date: Date) -> Result<i64, HostDbError> {
        let row = self
            .transaction
            .query_one(
                "WITH carried AS (
                     UPDATE cns_stock_positions
                     SET status = 'carried_forward', updated_at = now()
                     WHERE settlement_date = $1 AND status IN ('final', 'partially_settled')
                       AND net_quantity <> 0
                     RETURNING participant_id, isin,
                               CASE WHEN net_quantity < 0
                                    THEN settled_quantity - abs(net_quantity)
                                    ELSE abs(net_quantity) - settled_quantity END AS remainder
                 ), added AS (
                     INSERT INTO cns_stock_positions AS p (settlement_date, participant_id, isin,
                         net_quantity, obligation_count, carried_in_quantity, carried_in_count,
                         status)
                     SELECT $2, participant_id, isin, remainder, 1, remainder, 1,
                            CASE WHEN EXISTS (SELECT 1 FROM cns_cutoffs WHERE settlement_date = $2)
                                 THEN 'final' ELSE 'provisional' END
                     FROM carried
                     ORDER BY participant_id, isin
                     ON CONFLICT (settlement_date, participant_id, isin) DO UPDATE SET
                         net_quantity = p.net_quantity + EXCLUDED.net_quantity,
                         obligation_count = p.obligation_count + 1,
                         carried_in_quantity = p.carried_in_quantity + EXCLUDED.carried_in_quantity,
                         carried_in_count = p.carried_in_count + 1,
                         updated_at = now()
                     RETURNING 1
                 )
                 SELECT count(*) FROM added",
                &[&self.settlement_date, &next_date],
            )
            .await
            .map_err(db("carry cns positions forward"))?;
        Ok(row.get(0))
    }

    /// Money positions of the date not settled yet, locked.
    pub async fn due_money(&self) -> Result<Vec<DueMoney>, HostDbError> {
        let rows = self
            .transaction
            .query(
                "SELECT participant_id, currency_code, net_amount_minor, settled_amount_minor
                 FROM cns_money_positions
                 WHERE settlement_date = $1 AND status IN ('final', 'partially_settled')
                   AND net_amount_minor <> 0
                 ORDER BY participant_id, currency_code
                 FOR UPDATE",
                &[&self.settlement_date],
            )
            .await
            .map_err(db("load due money positions"))?;
        Ok(rows
            .iter()
            .map(|row| DueMoney {
                participant_id: row.get(0),
                currency_code: row.get(1),
                net_amount_minor: row.get(2),
                settled_amount_minor: row.get(3),
            })
            .collect())
    }

    /// Cash balances of the (participant, currency) keys, locked (see [`lock_cash`]).
    pub async fn lock_cash_balances(
        &self,
        participant_ids: &[&str],
        currency_codes: &[&str],
    ) -> Result<Vec<CashRow>, HostDbError> {
        lock_cash(&self.transaction, participant_ids, currency_codes).await
    }

    /// Appends the money settlement journal (COPY BINARY), applies the cash deltas and marks
    /// the settled money positions.
    pub async fn settle_money(
        &self,
        movements: &[CashMovement],
        cash_deltas: &[(String, String, i64)],
        settled: &[MoneySettled],
    ) -> Result<(), HostDbError> {
        journal::append_cash_movements(&self.transaction, movements).await?;
        super::settlement::apply_cash_deltas(&self.transaction, cash_deltas).await?;
        let participants: Vec<&str> = settled.iter().map(|s| s.participant_id.as_str()).collect();
        let currencies: Vec<&str> = settled.iter().map(|s| s.currency_code.as_str()).collect();
        let amounts: Vec<i64> = settled.iter().map(|s| s.amount_minor).collect();
        self.transaction
            .execute(
                "UPDATE cns_money_positions m
                 SET settled_amount_minor = m.settled_amount_minor + d.amount,
                     status = CASE WHEN m.settled_amount_minor + d.amount = abs(m.net_amount_minor)
                                   THEN 'settled' ELSE 'partially_settled' END,
                     updated_at = now()
                 FROM unnest($2::text[], $3::text[], $4::int8[]) AS d(participant_id, currency_code, amount)
                 WHERE m.settlement_date = $1 AND m.participant_id = d.participant_id
                   AND m.currency_code = d.currency_code",
                &[&self.settlement_date, &participants, &currencies, &amounts],
            )
            .await
            .map_err(db("mark money positions settled"))?;
        Ok(())
    }

    /// Appends outbox rows with COPY BINARY.
    pub async fn append_outbox(&self, rows: &[OutboxRow]) -> Result<u64, HostDbError> {
        append_outbox(&self.transaction, rows).await
    }

    /// Records the day-end and commits everything.
    pub async fn commit(self, next_date: Date, totals: &DayEndTotals) -> Result<(), HostDbError> {
        self.transaction
            .execute(
                "INSERT INTO cns_day_ends (settlement_date, carried_to,
                     carried_stock_position_count, money_positions_settled_count,
                     money_positions_unpaid_count)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &self.settlement_date,
                    &next_date,
                    &totals.carried_stock_position_count,
                    &totals.money_positions_settled_count,
                    &totals.money_positions_unpaid_count,
                ],
            )
            .await
            .map_err(db("record day-end"))?;
        self.transaction
            .commit()
            .await
            .map_err(db("commit day-end"))
    }
}

/// The cash balances of the (participant, currency) keys that have a cash account, locked
/// until the transaction ends. An account without a balance row (never paid anything) gets
/// one of 0 first, so every key with an account comes back; keys without one are absent.
pub async fn lock_cash(
    transaction: &tokio_postgres::Transaction<'_>,
    participant_ids: &[&str],
    currency_codes: &[&str],
) -> Result<Vec<CashRow>, HostDbError> {
    transaction
        .execute(
            "INSERT INTO cash_balances (participant_id, currency_code, account_kind, amount_minor)
             SELECT DISTINCT a.participant_id, a.currency_code, a.account_kind, 0::int8
             FROM cash_accounts a
             JOIN unnest($1::text[], $2::text[]) AS k(participant_id, currency_code)
               ON a.participant_id = k.participant_id AND a.currency_code = k.currency_code
             ORDER BY 1, 2
             ON CONFLICT (participant_id, currency_code) DO NOTHING",
            &[&participant_ids, &currency_codes],
        )
        .await
        .map_err(db("open cash balances"))?;
    super::settlement::lock_cash_rows(transaction, participant_ids, currency_codes).await
}

/// Appends outbox rows with one COPY BINARY in `transaction`.
pub async fn append_outbox(
    transaction: &tokio_postgres::Transaction<'_>,
    rows: &[OutboxRow],
) -> Result<u64, HostDbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut copy = CopyIn::start(
        transaction,
        "copy cns outbox rows",
        "COPY outbox (subject, dedupe_id, payload) FROM STDIN BINARY",
        &[Type::TEXT, Type::TEXT, Type::BYTEA],
    )
    .await?;
    for row in rows {
        copy.write(&[&row.subject, &row.dedupe_id, &row.payload])
            .await?;
    }
    copy.finish().await
}

/// Whether the day-end of `settlement_date` happened.
pub async fn day_end_done(pool: &Pool, settlement_date: Date) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM cns_day_ends WHERE settlement_date = $1)",
            &[&settlement_date],
        )
        .await
        .map_err(db("read day-end"))?;
    Ok(row.get(0))
}

/// Each participant's settlement account (first active house account, else client account).
pub async fn settlement_accounts(
    pool: &Pool,
) -> Result<std::collections::HashMap<String, String>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            "SELECT DISTINCT ON (participant_id) participant_id, account_id
             FROM stock_accounts
             WHERE status = 'active' AND account_kind IN ('house', 'client')
             ORDER BY participant_id, account_kind <> 'house', account_id",
            &[],
        )
        .await
        .map_err(db("read settlement accounts"))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Decimal places of each currency's minor unit.
pub async fn currency_minor_units(
    pool: &Pool,
) -> Result<std::collections::HashMap<String, u32>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query("SELECT currency_code, minor_units FROM currencies", &[])
        .await
        .map_err(db("read currencies"))?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), u32::from(row.get::<_, i16>(1).unsigned_abs())))
        .collect())
}

/// Inserts outbox rows whose dedupe id is not there yet (one statement, once); returns how
/// many were added.
pub async fn insert_outbox_once(pool: &Pool, rows: &[OutboxRow]) -> Result<u64, HostDbError> {
    let client = super::client(pool).await?;
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.dedupe_id.as_str()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    client
        .execute(
            "INSERT INTO outbox (subject, dedupe_id, payload)
             SELECT subject, dedupe_id, payload
             FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY
                 AS r(subject, dedupe_id, payload, n)
             ORDER BY n
             ON CONFLICT (dedupe_id) DO NOTHING",
            &[&subjects, &ids, &payloads],
        )
        .await
        .map_err(db("queue outbox rows once"))
}

/// Whether the netting of `settlement_date` was closed by its cut-off.
pub async fn cutoff_done(pool: &Pool, settlement_date: Date) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM cns_cutoffs WHERE settlement_date = $1)",
            &[&settlement_date],
        )
        .await
        .map_err(db("read cut-off"))?;
    Ok(row.get(0))
}
