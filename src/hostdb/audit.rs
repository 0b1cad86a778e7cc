//! Whole-database audit: the invariants of DESIGN.md section 3 checked in SQL over every row.
//!
//! Guarantees: read-only (one REPEATABLE READ, READ ONLY transaction, so every check sees the
//! same snapshot); returns every violation found, empty when the database is consistent.
//! Checks:
//! - the stored balance (`holdings`, `cash_balances`) equals the balance the journal implies;
//! - no holding is negative, and no cash balance except the CCP settlement account's;
//! - per security, the sum of all holdings equals openings + deposits − withdrawals;
//! - per currency, the sum of all cash balances equals openings + deposits − withdrawals;
//! - every journal row names known accounts, securities and currencies;
//! - settlement (`instruction_settlements`): every settled marker's two instructions have
//!   their confirmation in the outbox: an entry with the marker's quantity in a compact row of
//!   the run (V0010; the relay expands it into MT544–547 with dedupe id
//!   `bsr:{run}:{instruction}:{type}`), or such a message as a plain row (runs before V0010);
//!   every compact row decodes; no pair has two markers of one run;
//!   a pair never settles more than its quantity, and is complete exactly when it settled all;
//!   a settled pair's instructions are in state `matched`, or `settled` once the pair is
//!   complete (the sweep after each run, V0016; an instruction is in exactly one state: the
//!   stored status, refined to settled by its markers until the sweep), and its match row
//!   names them; an instruction in state `settled` has a match with a complete marker.
//! - CNS: per security and settlement date the participants' stock positions sum to zero,
//!   and per currency and date their money positions; a position's settled quantity never
//!   exceeds its net quantity and equals the sum of its `cns_position_settlements`; per
//!   security and date longs never received more than shorts delivered to the CCP; every
//!   isolated obligation names a known participant, security and currency (no foreign keys
//!   since V0017).
//!
//! Full scans of the journals: an operator command (`ccass audit`), not a hot-path check.

use std::fmt;

use super::{HostDbError, Pool};

/// Which journal a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    HoldingMovements,
    CashMovements,
}

impl fmt::Display for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Journal::HoldingMovements => "holding_movements",
            Journal::CashMovements => "cash_movements",
        })
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `holdings` disagrees with the journal (a missing row counts as 0).
    HoldingBalanceMismatch {
        account_id: String,
        isin: String,
        stored: i64,
        derived: i64,
    },
    /// `cash_balances` disagrees with the journal.
    CashBalanceMismatch {
        participant_id: String,
        currency_code: String,
        stored: i64,
        derived: i64,
    },
    NegativeHolding {
        account_id: String,
        isin: String,
        quantity: i64,
    },
    /// A negative cash balance outside the CCP settlement account.
    NegativeCashBalance {
        participant_id: String,
        currency_code: String,
        amount_minor: i64,
    },
    /// All holdings of a security do not add up to what entered minus what left.
    SecurityNotConserved {
        isin: String,
        held: i64,
        net_entered: i64,
    },
    /// All cash balances of a currency do not add up to what was paid in minus paid out.
    CurrencyNotConserved {
        currency_code: String,
        held_minor: i64,
        net_paid_in_minor: i64,
    },
    /// Journal rows naming an account (stock account or `participant currency` cash account)
    /// that does not exist.
    UnknownAccountInJournal {
        journal: Journal,
        account: String,
        row_count: i64,
    },
    UnknownSecurityInJournal {
        isin: String,
        row_count: i64,
    },
    /// Isolated CNS obligations naming a participant, security or currency that does not
    /// exist (their foreign keys were dropped in V0017: capture validates, the audit checks).
    UnknownReferenceInIsolatedObligations {
        /// `participant_id`, `isin` or `currency_code`.
        column: String,
        value: String,
        row_count: i64,
    },
    UnknownCurrencyInJournal {
        currency_code: String,
        row_count: i64,
    },
    /// A settled instruction without its confirmation in the outbox.
    SettledWithoutConfirmation {
        settlement_run_id: i64,
        instruction_id: i64,
    },
    /// A pair with more than one marker of the same run.
    DuplicateSettledMarker {
        match_id: i64,
        settlement_run_id: i64,
        count: i64,
    },
    /// A compact outbox row (V0010) whose payload does not decode.
    UndecodableOutboxRow {
        dedupe_id: String,
        error: String,
    },
    /// A pair's markers settle more than its quantity, or `complete` disagrees with the sum.
    SettledQuantityWrong {
        match_id: i64,
        settled: i64,
        instructed: i64,
        complete: bool,
    },
    /// A marker's instructions are neither `matched` nor (pair complete) `settled`, or its
    /// match row names others.
    SettledInstructionState {
        match_id: i64,
        detail: String,
    },
    /// CNS positions of a settlement date and security (stock) or currency (money) do not
    /// sum to zero against the CCP.
    CnsPositionsNotBalanced {
        settlement_date: String,
        key: String,
        sum: i64,
    },
    /// A CNS stock position settled more than its net quantity, or its settled quantity
    /// disagrees with its settlement rows.
    CnsSettledQuantityWrong {
        settlement_date: String,
        participant_id: String,
        isin: String,
        net: i64,
        settled: i64,
        recorded: i64,
    },
    /// Longs of a security and date received more from the CCP than shorts delivered.
    CnsLongsExceedReceipts {
        settlement_date: String,
        isin: String,
        delivered: i64,
        received: i64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            HoldingBalanceMismatch {
                account_id,
                isin,
                stored,
                derived,
            } => write!(
                f,
                "holding {account_id} {isin}: stored {stored}, journal says {derived}"
            ),
            CashBalanceMismatch {
                participant_id,
                currency_code,
                stored,
                derived,
            } => write!(
                f,
                "cash {participant_id} {currency_code}: stored {stored}, journal says {derived} (minor units)"
            ),
            NegativeHolding {
                account_id,
                isin,
                quantity,
            } => {
                write!(f, "holding {account_id} {isin} is negative: {quantity}")
            }
            NegativeCashBalance {
                participant_id,
                currency_code,
                amount_minor,
            } => write!(
                f,
                "cash {participant_id} {currency_code} is negative: {amount_minor} (minor units)"
            ),
            SecurityNotConserved {
                isin,
                held,
                net_entered,
            } => write!(
                f,
                "security {isin}: accounts hold {held} in total, but openings + deposits - withdrawals = {net_entered}"
            ),
            CurrencyNotConserved {
                currency_code,
                held_minor,
                net_paid_in_minor,
            } => write!(
                f,
                "currency {currency_code}: balances total {held_minor}, but openings + deposits - withdrawals = {net_paid_in_minor} (minor units)"
            ),
            UnknownAccountInJournal {
                journal,
                account,
                row_count,
            } => {
                write!(
                    f,
                    "{journal}: {row_count} row(s) name unknown account {account}"
                )
            }
            UnknownSecurityInJournal { isin, row_count } => {
                write!(
                    f,
                    "holding_movements: {row_count} row(s) name unknown security {isin}"
                )
            }
            UnknownReferenceInIsolatedObligations {
                column,
                value,
                row_count,
            } => write!(
                f,
                "cns_isolated_obligations: {row_count} row(s) name unknown {column} {value}"
            ),
            UnknownCurrencyInJournal {
                currency_code,
                row_count,
            } => {
                write!(
                    f,
                    "cash_movements: {row_count} row(s) name unknown currency {currency_code}"
                )
            }
            SettledWithoutConfirmation {
                settlement_run_id,
                instruction_id,
            } => write!(
                f,
                "instruction {instruction_id} settled in run {settlement_run_id} has no confirmation in the outbox"
            ),
            DuplicateSettledMarker {
                match_id,
                settlement_run_id,
                count,
            } => write!(
                f,
                "match {match_id}: {count} settled markers of run {settlement_run_id}"
            ),
            UndecodableOutboxRow { dedupe_id, error } => {
                write!(f, "outbox row {dedupe_id}: {error}")
            }
            SettledQuantityWrong {
                match_id,
                settled,
                instructed,
                complete,
            } => write!(
                f,
                "match {match_id}: settled {settled} of {instructed} but marked complete = {complete}"
            ),
            CnsPositionsNotBalanced {
                settlement_date,
                key,
                sum,
            } => write!(
                f,
                "cns positions of {settlement_date} {key} sum to {sum}, not zero"
            ),
            CnsSettledQuantityWrong {
                settlement_date,
                participant_id,
                isin,
                net,
                settled,
                recorded,
            } => write!(
                f,
                "cns position {settlement_date} {participant_id} {isin}: settled {settled} of net {net}, settlement rows say {recorded}"
            ),
            CnsLongsExceedReceipts {
                settlement_date,
                isin,
                delivered,
                received,
            } => write!(
                f,
                "cns {settlement_date} {isin}: longs received {received} but shorts delivered {delivered}"
            ),
            SettledInstructionState { match_id, detail } => {
                write!(f, "match {match_id} settled: {detail}")
            }
        }
    }
}

const HOLDING_BALANCE_MISMATCH: &str = "
    SELECT coalesce(s.account_id, d.account_id), coalesce(s.isin, d.isin),
           coalesce(s.quantity, 0), coalesce(d.quantity, 0)
    FROM holdings s
    FULL JOIN holding_balances_derived d ON d.account_id = s.account_id AND d.isin = s.isin
    WHERE coalesce(s.quantity, 0) <> coalesce(d.quantity, 0)
    ORDER BY 1, 2";

const CASH_BALANCE_MISMATCH: &str = "
    SELECT coalesce(s.participant_id, d.participant_id), coalesce(s.currency_code, d.currency_code),
           coalesce(s.amount_minor, 0), coalesce(d.amount_minor, 0)
    FROM cash_balances s
    FULL JOIN cash_balances_derived d
        ON d.participant_id = s.participant_id AND d.currency_code = s.currency_code
    WHERE coalesce(s.amount_minor, 0) <> coalesce(d.amount_minor, 0)
    ORDER BY 1, 2";

// The CHECK constraints already forbid these; the audit does not trust that they were never
// dropped or bypassed.
const NEGATIVE_HOLDINGS: &str =
    "SELECT account_id, isin, quantity FROM holdings WHERE quantity < 0 ORDER BY 1, 2";
const NEGATIVE_CASH: &str = "
    SELECT b.participant_id, b.currency_code, b.amount_minor
    FROM cash_balances b
    LEFT JOIN cash_accounts a USING (participant_id, currency_code)
    WHERE b.amount_minor < 0 AND a.account_kind IS DISTINCT FROM 'ccp_settlement'
    ORDER BY 1, 2";

const SECURITY_CONSERVATION: &str = "
    WITH held AS (
        SELECT isin, sum(quantity)::bigint AS quantity FROM holdings GROUP BY isin
    ), entered AS (
        SELECT isin,
               sum(CASE WHEN from_account_id IS NULL THEN quantity ELSE 0 END)::bigint
             - sum(CASE WHEN to_account_id IS NULL THEN quantity ELSE 0 END)::bigint AS quantity
        FROM holding_movements GROUP BY isin
    )
    SELECT coalesce(h.isin, e.isin), coalesce(h.quantity, 0), coalesce(e.quantity, 0)
    FROM held h FULL JOIN entered e ON e.isin = h.isin
    WHERE coalesce(h.quantity, 0) <> coalesce(e.quantity, 0)
    ORDER BY 1";

const CURRENCY_CONSERVATION: &str = "
    WITH held AS (
        SELECT currency_code, sum(amount_minor)::bigint AS amount FROM cash_balances GROUP BY currency_code
    ), paid_in AS (
        SELECT currency_code,
               sum(CASE WHEN from_participant_id IS NULL THEN amount_minor ELSE 0 END)::bigint
             - sum(CASE WHEN to_participant_id IS NULL THEN amount_minor ELSE 0 END)::bigint AS amount
        FROM cash_movements GROUP BY currency_code
    )
    SELECT coalesce(h.currency_code, p.currency_code), coalesce(h.amount, 0), coalesce(p.amount, 0)
    FROM held h FULL JOIN paid_in p ON p.currency_code = h.currency_code
    WHERE coalesce(h.amount, 0) <> coalesce(p.amount, 0)
    ORDER BY 1";

const UNKNOWN_STOCK_ACCOUNTS: &str = "
    SELECT legs.account_id, count(*)
    FROM (SELECT from_account_id AS account_id FROM holding_movements WHERE from_account_id IS NOT NULL
          UNION ALL
          SELECT to_account_id FROM holding_movements WHERE to_account_id IS NOT NULL) AS legs
    WHERE NOT EXISTS (SELECT 1 FROM stock_accounts a WHERE a.account_id = legs.account_id)
    GROUP BY legs.account_id ORDER BY 1";

const UNKNOWN_CASH_ACCOUNTS: &str = "
    SELECT legs.participant_id || ' ' || legs.currency_code, count(*)
    FROM (SELECT from_participant_id AS participant_id, currency_code FROM cash_movements
          WHERE from_participant_id IS NOT NULL
          UNION ALL
          SELECT to_participant_id, currency_code FROM cash_movements
          WHERE to_participant_id IS NOT NULL) AS legs
    WHERE NOT EXISTS (SELECT 1 FROM cash_accounts a
                      WHERE a.participant_id = legs.participant_id AND a.currency_code = legs.currency_code)
    GROUP BY 1 ORDER BY 1";

const UNKNOWN_SECURITIES: &str = "
    SELECT m.isin, count(*) FROM holding_movements m
    WHERE NOT EXISTS (SELECT 1 FROM securities s WHERE s.isin = m.isin)
    GROUP BY m.isin ORDER BY 1";

const UNKNOWN_CURRENCIES: &str = "
    SELECT m.currency_code, count(*) FROM cash_movements m
    WHERE NOT EXISTS (SELECT 1 FROM currencies c WHERE c.currency_code = m.currency_code)
    GROUP BY m.currency_code ORDER BY 1";

const UNKNOWN_ISOLATED_REFERENCES: &str = "
    SELECT 'participant_id', o.participant_id, count(*) FROM cns_isolated_obligations o
    WHERE NOT EXISTS (SELECT 1 FROM participants p WHERE p.participant_id = o.participant_id)
    GROUP BY 2
    UNION ALL
    SELECT 'isin', o.isin, count(*) FROM cns_isolated_obligations o
    WHERE NOT EXISTS (SELECT 1 FROM securities s WHERE s.isin = o.isin)
    GROUP BY 2
    UNION ALL
    SELECT 'currency_code', o.currency_code, count(*) FROM cns_isolated_obligations o
    WHERE NOT EXISTS (SELECT 1 FROM currencies c WHERE c.currency_code = o.currency_code)
    GROUP BY 2
    ORDER BY 1, 2";

/// Of the settled sides (run, instruction) given, those without a plain confirmation row
/// (runs before V0010 wrote one FIN text per row).
const WITHOUT_PLAIN_CONFIRMATION: &str = "
    SELECT c.run, c.instruction_id
    FROM unnest($1::int8[], $2::int8[]) AS c(run, instruction_id)
    -- = ANY (ARRAY[...]) probes outbox's unique index; an IN (subquery) here was planned as
    -- a scan of the outbox per settled side (over a minute for 20 k rows).
    WHERE NOT EXISTS (
        SELECT 1 FROM outbox o
        WHERE o.dedupe_id = ANY (ARRAY[
            'bsr:' || c.run || ':' || c.instruction_id || ':544',
            'bsr:' || c.run || ':' || c.instruction_id || ':545',
            'bsr:' || c.run || ':' || c.instruction_id || ':546',
            'bsr:' || c.run || ':' || c.instruction_id || ':547']))
    ORDER BY 1, 2 LIMIT 1000";

/// Every settled side (marker run, instruction, quantity) without its confirmation: in a
/// compact row of its run (V0010, the side with the marker's quantity) or a plain row.
async fn settled_without_confirmation(
    transaction: &tokio_postgres::Transaction<'_>,
    violations: &mut Vec<Violation>,
) -> Result<(), HostDbError> {
    let mut confirmed: std::collections::HashMap<(i64, i64), i64> =
        std::collections::HashMap::new();
    for (dedupe_id, batch) in super::outbox::confirmation_batches(transaction, None).await? {
        match batch {
            Ok(batch) => {
                for entry in batch.entries.iter().filter(|e| e.settled_quantity > 0) {
                    confirmed.insert(
                        (batch.settlement_run_id, entry.instruction_id),
                        entry.settled_quantity,
                    );
                }
            }
            Err(error) => violations.push(Violation::UndecodableOutboxRow {
                dedupe_id,
                error: error.to_string(),
            }),
        }
    }
    let markers = transaction
        .query(
            "SELECT settlement_run_id, delivering_instruction_id, receiving_instruction_id,
                    quantity
             FROM instruction_settlements",
            &[],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("audit: settled markers", error))?;
    let (mut runs, mut instructions) = (Vec::new(), Vec::new());
    for marker in &markers {
        let run: i64 = marker.get(0);
        let quantity: i64 = marker.get(3);
        for instruction_id in [marker.get::<_, i64>(1), marker.get(2)] {
            if confirmed.get(&(run, instruction_id)) != Some(&quantity) {
                runs.push(run);
                instructions.push(instruction_id);
            }
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    for row in transaction
        .query(WITHOUT_PLAIN_CONFIRMATION, &[&runs, &instructions])
        .await
        .map_err(|error| HostDbError::from_postgres("audit: settled without confirmation", error))?
    {
        violations.push(Violation::SettledWithoutConfirmation {
            settlement_run_id: row.get(0),
            instruction_id: row.get(1),
        });
    }
    Ok(())
}

/// No pair has two markers of one run (V0013 dropped the key that refused them).
const DUPLICATE_SETTLED_MARKERS: &str = "
    SELECT match_id, settlement_run_id, count(*) FROM instruction_settlements
    GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 1000";

const SETTLED_QUANTITY_WRONG: &str = "
    SELECT s.match_id, sum(s.quantity)::int8, max(d.quantity), bool_or(s.complete)
    FROM instruction_settlements s
    LEFT JOIN instructions d ON d.instruction_id = s.delivering_instruction_id
    GROUP BY s.match_id
    HAVING max(d.quantity) IS NULL OR sum(s.quantity) > max(d.quantity)
        OR bool_or(s.complete) <> (sum(s.quantity) = max(d.quantity))
    ORDER BY 1 LIMIT 1000";

/// Per settled pair: its match row names its instructions, and each is `matched`, or
/// `settled` when the pair is complete. Then every `settled` instruction's pair is complete
/// (match id 0 when it has no match at all).
const SETTLED_INSTRUCTION_STATE: &str = "
    WITH pairs AS (
        SELECT match_id, min(delivering_instruction_id) AS delivering,
               max(delivering_instruction_id) AS delivering_last,
               min(receiving_instruction_id) AS receiving,
               max(receiving_instruction_id) AS receiving_last, bool_or(complete) AS complete
        FROM instruction_settlements GROUP BY match_id
    ), sides AS (
        SELECT p.match_id, p.complete, i.instruction_id, i.status
        FROM pairs p
        CROSS JOIN LATERAL (VALUES (p.delivering), (p.receiving)) AS side(instruction_id)
        LEFT JOIN instructions i ON i.instruction_id = side.instruction_id
    )
    SELECT match_id, detail FROM (
        SELECT p.match_id, 'its match row names other instructions' AS detail
        FROM pairs p LEFT JOIN instruction_matches m ON m.match_id = p.match_id
        WHERE m.match_id IS NULL OR p.delivering <> p.delivering_last
           OR p.receiving <> p.receiving_last
           OR m.delivering_instruction_id <> p.delivering
           OR m.receiving_instruction_id <> p.receiving
        UNION ALL
        SELECT match_id, 'instruction ' || instruction_id || ' has status '
                         || coalesce(status, 'none') || ' in a pair '
                         || CASE WHEN complete THEN 'settled in full' ELSE 'settled in part' END
        FROM sides
        WHERE status IS NULL OR NOT (status = 'matched' OR (status = 'settled' AND complete))
        UNION ALL
        SELECT coalesce(m.match_id, 0), 'instruction ' || i.instruction_id
                  || ' has status settled without a complete settled marker'
        FROM instructions i
        LEFT JOIN (SELECT match_id, delivering_instruction_id FROM instruction_matches
                   UNION ALL
                   SELECT match_id, receiving_instruction_id FROM instruction_matches)
               AS m(match_id, instruction_id) ON m.instruction_id = i.instruction_id
        LEFT JOIN (SELECT DISTINCT match_id FROM instruction_settlements WHERE complete) c
               ON c.match_id = m.match_id
        WHERE i.status = 'settled' AND c.match_id IS NULL
    ) AS v ORDER BY 1, 2 LIMIT 1000";

const CNS_POSITIONS_NOT_BALANCED: &str = "
    SELECT settlement_date::text, isin, sum(net_quantity)::int8 FROM cns_stock_positions
    GROUP BY settlement_date, isin HAVING sum(net_quantity) <> 0
    UNION ALL
    SELECT settlement_date::text, currency_code, sum(net_amount_minor)::int8 FROM cns_money_positions
    GROUP BY settlement_date, currency_code HAVING sum(net_amount_minor) <> 0
    ORDER BY 1, 2";

const CNS_SETTLED_QUANTITY_WRONG: &str = "
    SELECT p.settlement_date::text, p.participant_id, p.isin, p.net_quantity, p.settled_quantity,
           coalesce(s.quantity, 0)::int8
    FROM cns_stock_positions p
    LEFT JOIN (SELECT settlement_date, participant_id, isin, sum(quantity) AS quantity
               FROM cns_position_settlements GROUP BY 1, 2, 3) s
      ON s.settlement_date = p.settlement_date AND s.participant_id = p.participant_id
     AND s.isin = p.isin
    WHERE p.settled_quantity > abs(p.net_quantity) OR p.settled_quantity < 0
       OR p.settled_quantity <> coalesce(s.quantity, 0)
    ORDER BY 1, 2, 3";

const CNS_LONGS_EXCEED_RECEIPTS: &str = "
    SELECT settlement_date::text, isin,
           coalesce(sum(quantity) FILTER (WHERE direction = 'deliver'), 0)::int8,
           coalesce(sum(quantity) FILTER (WHERE direction = 'receive'), 0)::int8
    FROM cns_position_settlements GROUP BY settlement_date, isin
    HAVING coalesce(sum(quantity) FILTER (WHERE direction = 'receive'), 0)
         > coalesce(sum(quantity) FILTER (WHERE direction = 'deliver'), 0)
    ORDER BY 1, 2";

/// Runs every check and returns all violations (empty: consistent).
pub async fn run(pool: &Pool) -> Result<Vec<Violation>, HostDbError> {
    let mut client = super::client(pool).await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|error| HostDbError::from_postgres("begin audit transaction", error))?;
    let query = |context: &'static str, sql: &'static str| {
        let transaction = &transaction;
        async move {
            transaction
                .query(sql, &[])
                .await
                .map_err(|error| HostDbError::from_postgres(format!("audit: {context}"), error))
        }
    };
    let mut violations = Vec::new();
    for row in query("holding balances vs journal", HOLDING_BALANCE_MISMATCH).await? {
        violations.push(Violation::HoldingBalanceMismatch {
            account_id: row.get(0),
            isin: row.get(1),
            stored: row.get(2),
            derived: row.get(3),
        });
    }
    for row in query("cash balances vs journal", CASH_BALANCE_MISMATCH).await? {
        violations.push(Violation::CashBalanceMismatch {
            participant_id: row.get(0),
            currency_code: row.get(1),
            stored: row.get(2),
            derived: row.get(3),
        });
    }
    for row in query("negative holdings", NEGATIVE_HOLDINGS).await? {
        violations.push(Violation::NegativeHolding {
            account_id: row.get(0),
            isin: row.get(1),
            quantity: row.get(2),
        });
    }
    for row in query("negative cash balances", NEGATIVE_CASH).await? {
        violations.push(Violation::NegativeCashBalance {
            participant_id: row.get(0),
            currency_code: row.get(1),
            amount_minor: row.get(2),
        });
    }
    for row in query("security conservation", SECURITY_CONSERVATION).await? {
        violations.push(Violation::SecurityNotConserved {
            isin: row.get(0),
            held: row.get(1),
            net_entered: row.get(2),
        });
    }
    for row in query("currency conservation", CURRENCY_CONSERVATION).await? {
        violations.push(Violation::CurrencyNotConserved {
            currency_code: row.get(0),
            held_minor: row.get(1),
            net_paid_in_minor: row.get(2),
        });
    }
    for row in query("unknown stock accounts in journal", UNKNOWN_STOCK_ACCOUNTS).await? {
        violations.push(Violation::UnknownAccountInJournal {
            journal: Journal::HoldingMovements,
            account: row.get(0),
            row_count: row.get(1),
        });
    }
    for row in query("unknown cash accounts in journal", UNKNOWN_CASH_ACCOUNTS).await? {
        violations.push(Violation::UnknownAccountInJournal {
            journal: Journal::CashMovements,
            account: row.get(0),
            row_count: row.get(1),
        });
    }
    for row in query("unknown securities in journal", UNKNOWN_SECURITIES).await? {
        violations.push(Violation::UnknownSecurityInJournal {
            isin: row.get(0),
            row_count: row.get(1),
        });
    }
    for row in query(
        "unknown references in isolated obligations",
        UNKNOWN_ISOLATED_REFERENCES,
    )
    .await?
    {
        violations.push(Violation::UnknownReferenceInIsolatedObligations {
            column: row.get(0),
            value: row.get(1),
            row_count: row.get(2),
        });
    }
    for row in query("unknown currencies in journal", UNKNOWN_CURRENCIES).await? {
        violations.push(Violation::UnknownCurrencyInJournal {
            currency_code: row.get(0),
            row_count: row.get(1),
        });
    }
    settled_without_confirmation(&transaction, &mut violations).await?;
    for row in query("duplicate settled markers", DUPLICATE_SETTLED_MARKERS).await? {
        violations.push(Violation::DuplicateSettledMarker {
            match_id: row.get(0),
            settlement_run_id: row.get(1),
            count: row.get(2),
        });
    }
    for row in query("settled quantities", SETTLED_QUANTITY_WRONG).await? {
        violations.push(Violation::SettledQuantityWrong {
            match_id: row.get(0),
            settled: row.get(1),
            instructed: row.get::<_, Option<i64>>(2).unwrap_or(0),
            complete: row.get(3),
        });
    }
    for row in query("settled instruction states", SETTLED_INSTRUCTION_STATE).await? {
        violations.push(Violation::SettledInstructionState {
            match_id: row.get(0),
            detail: row.get(1),
        });
    }
    for row in query("cns positions balanced", CNS_POSITIONS_NOT_BALANCED).await? {
        violations.push(Violation::CnsPositionsNotBalanced {
            settlement_date: row.get(0),
            key: row.get(1),
            sum: row.get(2),
        });
    }
    for row in query("cns settled quantities", CNS_SETTLED_QUANTITY_WRONG).await? {
        violations.push(Violation::CnsSettledQuantityWrong {
            settlement_date: row.get(0),
            participant_id: row.get(1),
            isin: row.get(2),
            net: row.get(3),
            settled: row.get(4),
            recorded: row.get(5),
        });
    }
    for row in query("cns longs within receipts", CNS_LONGS_EXCEED_RECEIPTS).await? {
        violations.push(Violation::CnsLongsExceedReceipts {
            settlement_date: row.get(0),
            isin: row.get(1),
            delivered: row.get(2),
            received: row.get(3),
        });
    }
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("end audit transaction", error))?;
    Ok(violations)
}
