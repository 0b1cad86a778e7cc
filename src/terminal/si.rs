//! SI input at the terminal: the form's fields, their validation (the same rules answer the
//! browser's validate-as-you-type requests and the final submit), and the MT540–543 the form
//! becomes, built by the codec's builders so it is exactly what a PSS would send.
//! Pure: no I/O.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::ids::ParticipantId;
use crate::iso15022::MessageType;
use crate::iso15022::build::{self, Envelope, SettlementInstructionSpec};
use crate::iso15022::fields::{
    Amount, Function, FunctionCode, Isin, PartyId, Quantity, QuantityKind,
};
use crate::iso15022::views::{Linkage, Party};

/// The SI form as the browser posts it (every field text; validation reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiForm {
    /// `deliver` or `receive`.
    pub direction: String,
    /// `FOP` or `DVP`.
    pub payment: String,
    pub reference: String,
    pub account: String,
    pub counterparty: String,
    pub counterparty_account: String,
    pub isin: String,
    pub quantity: String,
    pub settlement_date: String,
    pub trade_date: String,
    pub currency: String,
    pub amount: String,
}

/// A valid SI, ready to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiInput {
    pub deliver: bool,
    pub reference: String,
    pub account: String,
    pub counterparty: String,
    pub counterparty_account: Option<String>,
    pub isin: String,
    pub quantity: i64,
    pub settlement_date: Date,
    pub trade_date: Option<Date>,
    /// Currency and amount (major units) for DVP.
    pub payment: Option<(String, Decimal)>,
}

impl SiInput {
    /// 540 receive free, 541 receive against payment, 542 deliver free, 543 deliver against
    /// payment.
    pub fn message_type(&self) -> u16 {
        match (self.deliver, self.payment.is_some()) {
            (false, false) => 540,
            (false, true) => 541,
            (true, false) => 542,
            (true, true) => 543,
        }
    }
}

/// Field name → what is wrong with it.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Limits the form is checked against (from config and the user's rights).
#[derive(Debug, Clone, PartialEq)]
pub struct SiLimits {
    pub quantity_max: i64,
    /// The user's SI input limit per currency (value of one instruction, major units).
    pub input_limits: BTreeMap<String, Decimal>,
}

/// Sender's reference characters (SWIFT x set without line breaks), 1 to 16.
pub fn valid_reference(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 16
        && !text.starts_with('/')
        && !text.ends_with('/')
        && !text.contains("//")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/?:().,'+ -".contains(&b))
}

fn valid_account_of(account: &str, participant: &str) -> bool {
    account.len() == 9
        && account.starts_with(participant)
        && account.as_bytes()[6] == b'-'
        && account[7..].bytes().all(|b| b.is_ascii_digit())
}

fn parse_date(text: &str) -> Option<Date> {
    Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}

/// Checks every field; all problems at once, each with its field.
pub fn validate(
    form: &SiForm,
    participant: &str,
    limits: &SiLimits,
) -> Result<SiInput, FieldErrors> {
    let mut errors = FieldErrors::new();
    let deliver = match form.direction.as_str() {
        "deliver" => true,
        "receive" => false,
        _ => {
            errors.insert("direction", "choose deliver or receive".to_owned());
            false
        }
    };
    let dvp = match form.payment.as_str() {
        "DVP" => true,
        "FOP" => false,
        _ => {
            errors.insert("payment", "choose DVP or FOP".to_owned());
            false
        }
    };
    let reference = form.reference.trim().to_owned();
    if !valid_reference(&reference) {
        errors.insert(
            "reference",
            "1 to 16 letters, digits or / ? : ( ) . , ' + - and spaces, not starting or ending with /"
                .to_owned(),
        );
    }
    let account = form.account.trim().to_ascii_uppercase();
    if !valid_account_of(&account, participant) {
        errors.insert(
            "account",
            format!("an account of {participant}, such as {participant}-01"),
        );
    }
    let counterparty = form.counterparty.trim().to_ascii_uppercase();
    match ParticipantId::parse(&counterparty) {
        Err(_) => {
            errors.insert(
                "counterparty",
                "a participant id: a letter and five letters or digits, such as B05678".to_owned(),
            );
        }
        Ok(_) if counterparty == participant => {
            errors.insert(
                "counterparty",
                "the counterparty must be another participant".to_owned(),
            );
        }
        Ok(_) => {}
    }
    let counterparty_account = form.counterparty_account.trim().to_ascii_uppercase();
    let counterparty_account = if counterparty_account.is_empty() {
        None
    } else {
        if !valid_account_of(&counterparty_account, &counterparty) {
            errors.insert(
                "counterparty_account",
                "empty, or an account of the counterparty such as B05678-01".to_owned(),
            );
        }
        Some(counterparty_account)
    };
    let isin = form.isin.trim().to_ascii_uppercase();
    if Isin::parse(&isin).is_err() {
        errors.insert(
            "isin",
            "an ISIN: 12 characters with a valid check digit, such as HK0388045442".to_owned(),
        );
    }
    let quantity = match form.quantity.trim().replace(',', "").parse::<i64>() {
        Ok(quantity) if quantity > 0 && quantity <= limits.quantity_max => quantity,
        _ => {
            errors.insert(
                "quantity",
                format!("a whole number of shares from 1 to {}", limits.quantity_max),
            );
            0
        }
    };
    let settlement_date = parse_date(form.settlement_date.trim());
    if settlement_date.is_none() {
        errors.insert("settlement_date", "a date such as 2026-11-26".to_owned());
    }
    let trade_date = match form.trade_date.trim() {
        "" => None,
        text => match parse_date(text) {
            Some(date) => Some(date),
            None => {
                errors.insert(
                    "trade_date",
                    "empty, or a date such as 2026-11-24".to_owned(),
                );
                None
            }
        },
    };
    if let (Some(trade), Some(settlement)) = (trade_date, settlement_date)
        && trade > settlement
    {
        errors.insert(
            "trade_date",
            "the trade date is after the settlement date".to_owned(),
        );
    }
    let payment = if dvp {
        let currency = form.currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.insert("currency", "a currency code such as HKD".to_owned());
        }
        let amount = match form.amount.trim().replace(',', "").parse::<Decimal>() {
            Ok(amount) if amount > Decimal::ZERO && amount.scale() <= 2 => Some(amount),
            _ => {
                errors.insert(
                    "amount",
                    "an amount above zero with at most two decimals, such as 41250.00".to_owned(),
                );
                None
            }
        };
        if let Some(amount) = amount {
            match limits.input_limits.get(&currency) {
                Some(limit) if amount > *limit => {
                    errors.insert(
                        "amount",
                        format!("above your input limit of {currency} {limit}"),
                    );
                }
                _ => {}
            }
        }
        amount.map(|amount| (currency, amount))
    } else {
        None
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(settlement_date), true) = (settlement_date, errors.is_empty()) else {
        return Err(errors);
    };
    Ok(SiInput {
        deliver,
        reference,
        account,
        counterparty,
        counterparty_account,
        isin,
        quantity,
        settlement_date,
        trade_date,
        payment,
    })
}

/// Addresses of the built message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses<'a> {
    /// The participant's logical terminal (block 1).
    pub sender: &'a str,
    /// The clearing house's logical terminal (block 2).
    pub receiver: &'a str,
    /// `PSET` BIC.
    pub place_of_settlement: &'a str,
}

/// Why the SI could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiBuildError {
    #[error("{0}")]
    Build(#[from] build::BuildError),
    #[error("bad field: {0}")]
    Field(String),
}

/// The MT540–543 (NEWM) for `input`, or its cancellation (CANC with `PREV` = `cancels`)
/// under the new reference `input.reference`.
pub fn build_message(
    input: &SiInput,
    addresses: &Addresses<'_>,
    cancels: Option<&str>,
) -> Result<String, SiBuildError> {
    let role = if input.deliver { "REAG" } else { "DEAG" };
    let parties = [
        Party {
            role,
            id: PartyId::Proprietary {
                scheme: "CCASS",
                id: &input.counterparty,
            },
            safekeeping_account: input.counterparty_account.as_deref(),
        },
        Party {
            role: "PSET",
            id: PartyId::Bic(addresses.place_of_settlement),
            safekeeping_account: None,
        },
    ];
    let links = cancels.map(|reference| {
        [Linkage {
            qualifier: "PREV",
            reference,
        }]
    });
    let isin = Isin::parse(&input.isin).map_err(|error| SiBuildError::Field(error.to_string()))?;
    let settlement_amount = match &input.payment {
        Some((currency, value)) => {
            let bytes = currency.as_bytes();
            let [a, b, c] = bytes else {
                return Err(SiBuildError::Field(format!("currency {currency}")));
            };
            Some(Amount {
                currency: [*a, *b, *c],
                value: *value,
            })
        }
        None => None,
    };
    let spec = SettlementInstructionSpec {
        message_type: MessageType(input.message_type()),
        function: Function {
            code: if cancels.is_some() {
                FunctionCode::Canc
            } else {
                FunctionCode::Newm
            },
            subfunction: None,
        },
        reference: &input.reference,
        links: links.as_ref().map_or(&[], |links| links.as_slice()),
        prepared: None,
        trade_date: input.trade_date,
        settlement_date: input.settlement_date,
        isin,
        description: None,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::from(input.quantity),
        },
        account: &input.account,
        transaction_type: "TRAD",
        parties: &parties,
        settlement_amount,
    };
    let envelope = Envelope {
        sender: addresses.sender,
        receiver: addresses.receiver,
        session: 0,
        sequence: 0,
    };
    Ok(build::settlement_instruction(Some(&envelope), &spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso15022::views::SettlementInstruction;
    use crate::iso15022::{self, ParseOptions};

    fn limits() -> SiLimits {
        SiLimits {
            quantity_max: 1_000_000,
            input_limits: [("HKD".to_owned(), Decimal::new(10_000_000, 0))].into(),
        }
    }

    fn form() -> SiForm {
        SiForm {
            direction: "deliver".into(),
            payment: "DVP".into(),
            reference: "T0001".into(),
            account: "B01234-01".into(),
            counterparty: "b05678".into(),
            counterparty_account: String::new(),
            isin: "HK0388045442".into(),
            quantity: "1,000".into(),
            settlement_date: "2026-11-26".into(),
            trade_date: "2026-11-24".into(),
            currency: "HKD".into(),
            amount: "412500.00".into(),
        }
    }

    #[test]
    fn a_valid_form_becomes_the_mt543_a_pss_would_send() {
        // Goal: the terminal's message parses and validates as FIN and says what the form said.
        let input = validate(&form(), "B01234", &limits()).unwrap();
        assert_eq!(input.message_type(), 543);
        let text = build_message(
            &input,
            &Addresses {
                sender: "HBSLHKHHAXXX",
                receiver: "HKSCHKHHAXXX",
                place_of_settlement: "CCASHKHH",
            },
            None,
        )
        .unwrap();
        let message = iso15022::check(&text, ParseOptions::fin())
            .into_result()
            .unwrap();
        let view = SettlementInstruction::from_message(&message).unwrap();
        assert_eq!(view.account, "B01234-01");
        assert!(text.contains(":20C::SEME//T0001"), "{text}");
        assert!(text.contains(":95R::REAG/CCASS/B05678"), "{text}");
        assert!(text.contains(":19A::SETT//HKD412500,"), "{text}");
        assert!(text.contains(":36B::SETT//UNIT/1000,"), "{text}");
        let cancel = build_message(
            &SiInput {
                reference: "C0001".into(),
                ..input
            },
            &Addresses {
                sender: "HBSLHKHHAXXX",
                receiver: "HKSCHKHHAXXX",
                place_of_settlement: "CCASHKHH",
            },
            Some("T0001"),
        )
        .unwrap();
        assert!(
            cancel.contains(":23G:CANC") && cancel.contains(":20C::PREV//T0001"),
            "{cancel}"
        );
    }

    #[test]
    fn every_bad_field_is_named_with_its_rule() {
        // Goal: one submit reports every invalid field, each with a message saying what fits.
        let bad = SiForm {
            direction: "sideways".into(),
            payment: "DVP".into(),
            reference: "bad//ref".into(),
            account: "B05678-01".into(),
            counterparty: "B01234".into(),
            counterparty_account: "X".into(),
            isin: "HK0388045443".into(),
            quantity: "-5".into(),
            settlement_date: "26/11/2026".into(),
            trade_date: "yesterday".into(),
            currency: "hk".into(),
            amount: "1.001".into(),
        };
        let errors = validate(&bad, "B01234", &limits()).unwrap_err();
        for field in [
            "direction",
            "reference",
            "account",
            "counterparty",
            "counterparty_account",
            "isin",
            "quantity",
            "settlement_date",
            "trade_date",
            "currency",
            "amount",
        ] {
            assert!(
                errors.contains_key(field),
                "{field} not reported: {errors:?}"
            );
        }
    }

    #[test]
    fn the_input_limit_is_enforced_per_currency() {
        let mut over = form();
        over.amount = "10000000.01".into();
        let errors = validate(&over, "B01234", &limits()).unwrap_err();
        assert!(errors["amount"].contains("input limit"), "{errors:?}");
        let mut fop = form();
        fop.payment = "FOP".into();
        fop.amount = "anything".into();
        assert_eq!(
            validate(&fop, "B01234", &limits()).unwrap().message_type(),
            542
        );
    }
}
