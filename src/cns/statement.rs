//! Clearing statements: each participant's CNS positions of a settlement date as FIN.
//!
//! Message type: **MT537** (statement of pending transactions), the ISO 15022 statement that
//! lists what is due to settle, which is what a clearing statement is: one `TRANS` sequence
//! per net stock position against the CCP (`35B` ISIN, `36B::SETT` the net quantity,
//! `22H::REDE` `RECE` for a long and `DELI` for a short, `22H::PAYM//FREE`: CNS stock settles
//! free of payment, `98A::SETT` the settlement date, `LINK/20C::RELA` `CNS-` + ISIN).
//! MT537 has no field for a net money amount, so money positions, the obligation (trade side)
//! count and whether the statement is provisional or final are stated in `ADDINFO/70E::ADTX`
//! on the last page (lines such as `MONEY HKD PAY 333400,00`). `GENL/20C::SEME` is
//! `CSP`/`CSF` (provisional/final) + `YYMMDD` + participant; `22F::SFRE//DAIL`,
//! `22F::CODE//COMP`, `97A::SAFE` the participant's settlement account.
//! Long statements are paged (`28E`), `cns.statement_positions_per_page_max` positions a page.
//!
//! Delivery: the provisional statement on trade day (`cns.provisional_statement_time`, the
//! positions as netted so far), the final one the next morning (`cns.final_statement_time`,
//! after the cut-off), each to the participant's `ccass.v1.outbound.{participant}` through
//! the outbox (dedupe id `cns-statement:{P|F}:{date}:{participant}:{page}`, inserted once);
//! and on demand with `ccass cns statement --participant P --date D [--final]`.

use rust_decimal::Decimal;
use time::Date;

use super::format_date;
use crate::bus::subjects;
use crate::hostdb::cns::PositionRow;
use crate::hostdb::settlement::OutboxRow;
use crate::hostdb::{self, HostDbError, Pool};
use crate::ids::{Isin, ParticipantId};
use crate::iso15022::MessageType;
use crate::iso15022::build::{BuildError, TextBuilder};
use crate::iso15022::fields::{Continuation, Function, FunctionCode, Quantity, QuantityKind};

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("build clearing statement of {participant}: {source}")]
    Build {
        participant: String,
        source: BuildError,
    },
    #[error("bad reference data in a position of {participant}: {detail}")]
    Reference { participant: String, detail: String },
    #[error(transparent)]
    Db(#[from] HostDbError),
}

/// What one participant's statement says.
#[derive(Clone, Copy)]
pub struct StatementInput<'a> {
    pub participant_id: &'a str,
    /// `97A::SAFE` (the settlement account, or the participant id without one).
    pub account: &'a str,
    pub settlement_date: Date,
    pub is_final: bool,
    /// Stock (`isin` set) and money (`currency_code` set) positions of the participant.
    pub positions: &'a [PositionRow],
    /// Decimal places of each currency's minor unit.
    pub minor_units: &'a dyn Fn(&str) -> u32,
    pub positions_per_page_max: usize,
}

/// The statement's pages (MT537 text, each validated by the builder).
pub fn build(input: &StatementInput<'_>) -> Result<Vec<String>, StatementError> {
    let participant = input.participant_id.to_owned();
    let stock: Vec<&PositionRow> = input
        .positions
        .iter()
        .filter(|p| p.isin.is_some() && p.net != 0)
        .collect();
    let money: Vec<&PositionRow> = input
        .positions
        .iter()
        .filter(|p| p.currency_code.is_some())
        .collect();
    let per_page = input.positions_per_page_max.max(1);
    let pages: Vec<&[&PositionRow]> = if stock.is_empty() {
        vec![&[]]
    } else {
        stock.chunks(per_page).collect()
    };
    let date = input.settlement_date;
    let reference = format!(
        "CS{}{:02}{:02}{:02}{}",
        if input.is_final { 'F' } else { 'P' },
        date.year() % 100,
        u8::from(date.month()),
        date.day(),
        input.participant_id
    );
    let obligations: i64 = input
        .positions
        .iter()
        .filter(|p| p.isin.is_some())
        .map(|p| i64::from(p.obligation_count))
        .sum();
    let page_count = pages.len();
    let mut texts = Vec::with_capacity(page_count);
    for (index, page) in pages.iter().enumerate() {
        let continuation = match (page_count, index + 1 == page_count) {
            (1, _) => Continuation::Only,
            (_, true) => Continuation::Last,
            _ => Continuation::More,
        };
        let mut text = TextBuilder::new();
        text.start("GENL");
        text.field(
            "28E",
            &format!("{:05}/{}", index + 1, continuation.as_str()),
        );
        text.generic("20C", "SEME", None, &reference);
        text.function(Function {
            code: FunctionCode::Newm,
            subfunction: None,
        });
        text.date("STAT", date);
        text.generic("22H", "STST", None, "TRAN");
        text.generic("22F", "SFRE", None, "DAIL");
        text.generic("22F", "CODE", None, "COMP");
        text.generic("97A", "SAFE", None, input.account);
        text.generic(
            "17B",
            "ACTI",
            None,
            if page.is_empty() && money.is_empty() {
                "N"
            } else {
                "Y"
            },
        );
        text.end("GENL");
        for position in page.iter() {
            let isin_text = position.isin.as_deref().unwrap_or_default();
            let isin = Isin::parse(isin_text).map_err(|error| StatementError::Reference {
                participant: participant.clone(),
                detail: format!("isin {isin_text}: {error}"),
            })?;
            text.start("TRANS");
            text.start("LINK");
            text.generic("20C", "RELA", None, &format!("CNS-{isin_text}"));
            text.end("LINK");
            text.start("TRANSDET");
            text.instrument(isin, None);
            text.quantity(
                "36B",
                "SETT",
                Quantity {
                    kind: QuantityKind::Unit,
                    value: Decimal::from(position.net.abs()),
                },
            );
            text.generic(
                "22H",
                "REDE",
                None,
                if position.net > 0 { "RECE" } else { "DELI" },
            );
            text.generic("22H", "PAYM", None, "FREE");
            text.date("SETT", date);
            text.end("TRANSDET");
            text.end("TRANS");
        }
        if index + 1 == page_count {
            let mut lines = vec![
                format!(
                    "CNS {} CLEARING STATEMENT",
                    if input.is_final {
                        "FINAL"
                    } else {
                        "PROVISIONAL"
                    }
                ),
                format!("OBLIGATIONS {obligations}"),
            ];
            for position in money.iter().take(8) {
                let currency = position.currency_code.as_deref().unwrap_or_default();
                let amount = Decimal::new(position.net.abs(), (input.minor_units)(currency));
                lines.push(format!(
                    "MONEY {currency} {} {}",
                    if position.net >= 0 { "RECEIVE" } else { "PAY" },
                    amount.to_string().replace('.', ",")
                ));
            }
            text.start("ADDINFO");
            text.generic("70E", "ADTX", None, &lines.join("\n"));
            text.end("ADDINFO");
        }
        texts.push(text.finish(None, MessageType(537)).map_err(|source| {
            StatementError::Build {
                participant: participant.clone(),
                source,
            }
        })?);
    }
    Ok(texts)
}

/// Every participant's statement of `settlement_date` as outbox rows.
pub async fn outbox_rows(
    pool: &Pool,
    settlement_date: Date,
    is_final: bool,
    positions_per_page_max: usize,
) -> Result<Vec<OutboxRow>, StatementError> {
    let rows = super::positions::positions(pool, None, settlement_date).await?;
    let accounts = hostdb::cns_settlement::settlement_accounts(pool).await?;
    let minor = hostdb::cns_settlement::currency_minor_units(pool).await?;
    let minor_units = |code: &str| minor.get(code).copied().unwrap_or(2);
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let participant_id = rows[start].participant_id.clone();
        let end = rows[start..]
            .iter()
            .position(|row| row.participant_id != participant_id)
            .map_or(rows.len(), |offset| start + offset);
        let account = accounts
            .get(&participant_id)
            .map_or(participant_id.as_str(), String::as_str);
        let pages = build(&StatementInput {
            participant_id: &participant_id,
            account,
            settlement_date,
            is_final,
            positions: &rows[start..end],
            minor_units: &minor_units,
            positions_per_page_max,
        })?;
        let participant =
            ParticipantId::parse(&participant_id).map_err(|error| StatementError::Reference {
                participant: participant_id.clone(),
                detail: error.to_string(),
            })?;
        let subject = subjects::outbound(&participant).as_str().to_owned();
        for (page, text) in pages.into_iter().enumerate() {
            out.push(OutboxRow {
                subject: subject.clone(),
                dedupe_id: format!(
                    "cns-statement:{}:{}:{participant_id}:{}",
                    if is_final { 'F' } else { 'P' },
                    format_date(settlement_date),
                    page + 1
                ),
                payload: text.into_bytes(),
            });
        }
        start = end;
    }
    Ok(out)
}

/// Queues every participant's statement of `settlement_date` in the outbox, once (a
/// statement already queued is left alone). Returns the rows added.
pub async fn queue(
    pool: &Pool,
    settlement_date: Date,
    is_final: bool,
    positions_per_page_max: usize,
) -> Result<u64, StatementError> {
    let rows = outbox_rows(pool, settlement_date, is_final, positions_per_page_max).await?;
    Ok(hostdb::cns_settlement::insert_outbox_once(pool, &rows).await?)
}

/// One participant's statement now (`ccass cns statement`).
pub async fn for_participant(
    pool: &Pool,
    participant: &ParticipantId,
    settlement_date: Date,
    is_final: bool,
    positions_per_page_max: usize,
) -> Result<Vec<String>, StatementError> {
    let rows = super::positions::positions(pool, Some(participant), settlement_date).await?;
    let accounts = hostdb::cns_settlement::settlement_accounts(pool).await?;
    let minor = hostdb::cns_settlement::currency_minor_units(pool).await?;
    let minor_units = |code: &str| minor.get(code).copied().unwrap_or(2);
    build(&StatementInput {
        participant_id: participant.as_str(),
        account: accounts
            .get(participant.as_str())
            .map_or(participant.as_str(), String::as_str),
        settlement_date,
        is_final,
        positions: &rows,
        minor_units: &minor_units,
        positions_per_page_max,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::iso15022::{self, ParseOptions, parse, views::Statement};

    fn row(isin: Option<&str>, currency: Option<&str>, net: i64) -> PositionRow {
        PositionRow {
            settlement_date: date!(2026 - 11 - 26),
            participant_id: "B01234".to_owned(),
            isin: isin.map(str::to_owned),
            currency_code: currency.map(str::to_owned),
            net,
            settled: 0,
            obligation_count: 2,
            status: "final".to_owned(),
        }
    }

    #[test]
    fn a_statement_is_a_valid_mt537_whose_numbers_are_the_positions() {
        let positions = [
            row(Some("HK0000069689"), None, 333_400),
            row(Some("KYG875721634"), None, -1_000),
            row(None, Some("HKD"), -33_340_000),
        ];
        let pages = build(&StatementInput {
            participant_id: "B01234",
            account: "B01234-01",
            settlement_date: date!(2026 - 11 - 26),
            is_final: true,
            positions: &positions,
            minor_units: &|_| 2,
            positions_per_page_max: 40,
        })
        .unwrap();
        assert_eq!(pages.len(), 1);
        iso15022::check(&pages[0], ParseOptions::text_only(Some(MessageType(537))))
            .into_result()
            .unwrap();
        let message = parse(&pages[0], ParseOptions::text_only(Some(MessageType(537)))).unwrap();
        let statement = Statement::from_message(&message).unwrap();
        assert_eq!(statement.reference, "CSF261126B01234");
        assert_eq!(statement.account, "B01234-01");
        let quantities: Vec<(String, Decimal)> = statement
            .transactions
            .iter()
            .map(|t| {
                (
                    t.instrument.unwrap().isin.unwrap().to_string(),
                    t.quantity.unwrap().value,
                )
            })
            .collect();
        assert_eq!(
            quantities,
            vec![
                ("HK0000069689".to_owned(), Decimal::from(333_400)),
                ("KYG875721634".to_owned(), Decimal::from(1_000)),
            ]
        );
        assert!(pages[0].contains(":22H::REDE//DELI"));
        assert!(pages[0].contains("MONEY HKD PAY 333400,00"));
        assert!(pages[0].contains("CNS FINAL CLEARING STATEMENT"));
    }

    #[test]
    fn long_statements_are_paged() {
        let positions = [
            row(Some("HK0000069689"), None, 200),
            row(Some("KYG875721634"), None, 100),
            row(Some("HK0388045442"), None, -100),
        ];
        let pages = build(&StatementInput {
            participant_id: "B01234",
            account: "B01234-01",
            settlement_date: date!(2026 - 11 - 26),
            is_final: false,
            positions: &positions,
            minor_units: &|_| 2,
            positions_per_page_max: 2,
        })
        .unwrap();
        assert_eq!(pages.len(), 2);
        assert!(pages[0].contains(":28E:00001/MORE"));
        assert!(pages[1].contains(":28E:00002/LAST"));
        assert!(pages[1].contains("CNS PROVISIONAL CLEARING STATEMENT"));
    }
}
