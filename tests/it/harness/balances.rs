//! Matched SI pairs and balance reads shared by the settlement, CNS and statement tests.

use ccass::hostdb::settlement::{NewInstruction, NewMatchedPair};
use ccass::hostdb::{self, Pool};
use time::Date;

/// A matched pair: `from` account delivers `quantity` of `isin` to `to` account on
/// `settlement_date`; against `payment` HKD minor units when given. References are
/// `D<reference>` and `R<reference>`.
#[allow(clippy::too_many_arguments)]
pub fn matched_pair(
    reference: &str,
    from: &str,
    to: &str,
    isin: &str,
    quantity: i64,
    settlement_date: Date,
    payment: Option<i64>,
    partial: bool,
) -> NewMatchedPair {
    let side = |own: &str, other: &str, prefix: &str| NewInstruction {
        participant_id: own[..6].to_owned(),
        sender_reference: format!("{prefix}{reference}"),
        account_id: own.to_owned(),
        counterparty_participant_id: other[..6].to_owned(),
        counterparty_account_id: other.to_owned(),
        isin: isin.to_owned(),
        quantity,
        settlement_date,
        payment: payment.map(|amount| ("HKD".to_owned(), amount)),
        partial_settlement_allowed: partial,
    };
    NewMatchedPair {
        deliver: side(from, to, "D"),
        receive: side(to, from, "R"),
    }
}

/// The stored holding of `isin` in `account` (0 when there is no row).
pub async fn holding(pool: &Pool, account: &str, isin: &str) -> i64 {
    let client = hostdb::client(pool).await.unwrap();
    client
        .query_opt(
            "SELECT quantity FROM holdings WHERE account_id = $1 AND isin = $2",
            &[&account, &isin],
        )
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}

/// The stored HKD cash balance of `participant` (0 when there is no row).
pub async fn cash(pool: &Pool, participant: &str) -> i64 {
    let client = hostdb::client(pool).await.unwrap();
    client
        .query_opt(
            "SELECT amount_minor FROM cash_balances
             WHERE participant_id = $1 AND currency_code = 'HKD'",
            &[&participant],
        )
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}
