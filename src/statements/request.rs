//! MT549 (request for a statement) from a PSS, answered through the outbox.
//!
//! The request arrives on `ccass.v1.inbound.{participant}.mt549` like any inbound message;
//! the intake worker that fetched it journals it in its batch transaction (a redelivery is
//! found journalled and changes nothing) and calls [`answer`] in that same transaction, so the
//! statement pages and the acknowledgement of the request commit together. A request the
//! participant may not have (bad message, an account that is not its own, a type other than
//! 535/536/537) gets an MT548 `REJT` with a reason instead.

use time::Date;

use super::{Kind, RenderOptions, StatementError, StatementsConfig};
use crate::iso15022::{self, ParseOptions, ReasonCode};

/// What an MT549 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GENL/20C::SEME`.
    pub reference: String,
    /// `GENL/13A::REQU`.
    pub kind: Kind,
    /// `GENL/98A::STAT`.
    pub date: Date,
    /// `GENL/97A::SAFE`.
    pub account: String,
}

/// Why a request is refused: the MT548 reason and a narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: ReasonCode,
    pub detail: String,
}

fn refused(reason: ReasonCode, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// Reads an MT549 (validated by the codec first).
pub fn parse(text: &str) -> Result<Request, Refused> {
    let report = iso15022::check(text, ParseOptions::fin());
    if let Some(problem) = report
        .problems
        .iter()
        .find(|problem| problem.severity() == iso15022::Severity::Error)
    {
        return Err(refused(ReasonCode::Narr, problem.to_string()));
    }
    let genl = report
        .message
        .text
        .root()
        .sequence("GENL")
        .ok_or_else(|| refused(ReasonCode::Narr, "GENL missing"))?;
    let value = |number: &str, qualifier: &str| {
        genl.field(number, qualifier)
            .and_then(|field| field.generic())
            .map(|generic| generic.value.to_owned())
    };
    let reference = value("20", "SEME").ok_or_else(|| refused(ReasonCode::Refe, "SEME missing"))?;
    let requested = value("13", "REQU").unwrap_or_default();
    let kind = requested
        .parse::<u16>()
        .ok()
        .and_then(Kind::from_message_type)
        .ok_or_else(|| {
            refused(
                ReasonCode::Narr,
                format!("13A::REQU {requested}: only 535, 536, 537"),
            )
        })?;
    let date = value("98", "STAT")
        .as_deref()
        .and_then(iso15022::fields::parse_date)
        .ok_or_else(|| refused(ReasonCode::Narr, "98A::STAT date required"))?;
    let account = value("97", "SAFE").ok_or_else(|| refused(ReasonCode::Safe, "SAFE missing"))?;
    Ok(Request {
        reference,
        kind,
        date,
        account,
    })
}

/// Answers the MT549 `text` of `participant` (journalled as `message_id`) inside
/// `transaction`: its statement pages go to the outbox. `Ok(Err(_))`: refused, for the caller
/// to report with an MT548; `Err(_)`: the transaction failed.
pub async fn answer(
    transaction: &tokio_postgres::Transaction<'_>,
    config: &StatementsConfig,
    own_terminal: &str,
    participant: &str,
    message_id: i64,
    text: &str,
) -> Result<Result<u64, Refused>, StatementError> {
    let request = match parse(text) {
        Ok(request) => request,
        Err(refusal) => {
            ::metrics::counter!(super::metrics::REQUESTS_TOTAL, "outcome" => "refused")
                .increment(1);
            return Ok(Err(refusal));
        }
    };
    let (receiver, data) = super::load(transaction, participant, request.date).await?;
    if !data.accounts.contains(&request.account) {
        ::metrics::counter!(super::metrics::REQUESTS_TOTAL, "outcome" => "refused").increment(1);
        return Ok(Err(refused(
            ReasonCode::Safe,
            format!("account {} is not yours", request.account),
        )));
    }
    let prefix = format!("R{}", base36(message_id));
    let options = RenderOptions {
        sender: own_terminal,
        receiver: &receiver,
        reference_prefix: &prefix,
        frequency: "ADHO",
        limits: config.limits(),
    };
    let pages = super::render_pages(
        request.kind,
        request.date,
        &data,
        Some(&request.account),
        &options,
    )?;
    let queued = super::enqueue(transaction, participant, &pages).await?;
    ::metrics::counter!(super::metrics::REQUESTS_TOTAL, "outcome" => "answered").increment(1);
    ::metrics::counter!(super::metrics::PAGES_QUEUED_TOTAL, "trigger" => "request")
        .increment(queued);
    Ok(Ok(queued))
}

/// `n` in base 36, upper case.
fn base36(mut n: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if n <= 0 {
        return "0".to_owned();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::iso15022::MessageType;
    use crate::iso15022::build::{self, Envelope, StatementRequestSpec};

    fn request(requested: u16) -> String {
        build::statement_request(
            Some(&Envelope {
                sender: "BROKHKH0AXXX",
                receiver: "CCASHKH0AXXX",
                session: 1,
                sequence: 1,
            }),
            &StatementRequestSpec {
                reference: "REQ1",
                requested: MessageType(requested),
                statement_date: date!(2026 - 11 - 24),
                account: "B01234-01",
            },
        )
        .unwrap()
    }

    #[test]
    fn reads_a_request_and_refuses_other_types() {
        assert_eq!(
            parse(&request(535)).unwrap(),
            Request {
                reference: "REQ1".into(),
                kind: Kind::Holdings,
                date: date!(2026 - 11 - 24),
                account: "B01234-01".into(),
            }
        );
        assert_eq!(parse(&request(548)).unwrap_err().reason, ReasonCode::Narr);
        assert_eq!(
            parse("{1:F01BROKHKH0AXXX0001000001}{2:I549CCASHKH0AXXXN}{4:\r\n:16R:GENL\r\n-}")
                .unwrap_err()
                .reason,
            ReasonCode::Narr
        );
    }

    #[test]
    fn base36_is_short() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "Z");
        assert_eq!(base36(36), "10");
        assert!(base36(i64::MAX).len() <= 13);
    }
}
