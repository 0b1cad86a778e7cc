//! Typed, borrowed views: the questions settlement asks of a message.
//!
//! * [`SettlementInstruction`] (MT540–543, and the confirmations MT544–547): who delivers to
//!   whom, which ISIN, how many, when, for how much, which reference and links.
//! * [`StatusAdvice`] (MT548): statuses (`25D`) with their reasons (`24B`) and the transaction.
//! * [`Statement`] (MT535–537): paging (`28E`), account, holdings and transactions.
//!
//! Views read a message that has been validated; on a message that has not, they still never
//! panic: a missing or unreadable mandatory item is a [`ViewError`].

use time::Date;

use super::MessageType;
use super::error::ReasonCode;
use super::fields::{
    Amount, DateOrDateTime, Function, Isin, Page, PartyId, Quantity, parse_amount, parse_date,
    parse_date_field, parse_function, parse_page, parse_party, parse_quantity,
};
use super::parse::Message;
use super::text::{Field, Seq};

/// Why a view could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The message is of another type.
    #[error("message type {found:?} is not one of {expected}")]
    WrongType {
        /// What the view reads.
        expected: &'static str,
        /// What the message is.
        found: Option<MessageType>,
    },
    /// A mandatory item is missing.
    #[error("{what} is missing")]
    Missing {
        /// Path of the missing item.
        what: &'static str,
    },
    /// A mandatory item cannot be read.
    #[error("{what} is not valid: '{value}'")]
    Invalid {
        /// Path of the item.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// Receive or deliver, from the instructing party's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementDirection {
    /// MT540/541/544/545: the instructing party receives securities.
    Receive,
    /// MT542/543/546/547: the instructing party delivers securities.
    Deliver,
}

/// Free of payment or against payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentType {
    /// MT540/542/544/546.
    Free,
    /// MT541/543/545/547.
    AgainstPayment,
}

/// A settlement party (`SETPRTY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party<'a> {
    /// Role: `DEAG`, `REAG`, `SELL`, `BUYR`, `PSET`, ...
    pub role: &'a str,
    /// Identifier.
    pub id: PartyId<'a>,
    /// `97a::SAFE` of that party, when given.
    pub safekeeping_account: Option<&'a str>,
}

/// A link (`LINK/20C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linkage<'a> {
    /// `PREV`, `RELA`, `COMM`, `POOL`, ...
    pub qualifier: &'a str,
    /// The linked reference.
    pub reference: &'a str,
}

/// The financial instrument (`35B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instrument<'a> {
    /// ISIN when the field starts with a well-formed `ISIN` (the check digit is not verified
    /// here: see [`Isin::has_valid_check_digit`]; validation rejects a wrong one).
    pub isin: Option<Isin>,
    /// Raw value (description lines kept verbatim).
    pub raw: &'a str,
}

/// MT540–547 as settlement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementInstruction<'a> {
    /// 540..=547.
    pub message_type: MessageType,
    /// MT544–547 (a confirmation of settlement), not an instruction.
    pub confirmation: bool,
    /// Receive or deliver.
    pub direction: SettlementDirection,
    /// Free or against payment.
    pub payment: PaymentType,
    /// `GENL/20C::SEME`.
    pub reference: &'a str,
    /// `GENL/23G`.
    pub function: Function,
    /// `GENL/LINK/20C` in order.
    pub links: Vec<Linkage<'a>>,
    /// `TRADDET/98a::TRAD`.
    pub trade_date: Option<DateOrDateTime>,
    /// `TRADDET/98a::SETT` (instructions) or `::ESET` (confirmations: effective settlement).
    pub settlement_date: DateOrDateTime,
    /// `TRADDET/35B`.
    pub instrument: Instrument<'a>,
    /// `FIAC/36B::SETT` (or `::ESTT`).
    pub quantity: Quantity,
    /// `FIAC/97a::SAFE`: the instructing party's safekeeping account.
    pub account: &'a str,
    /// `SETDET/22F::SETR`.
    pub transaction_type: Option<&'a str>,
    /// `SETDET/SETPRTY` in order.
    pub parties: Vec<Party<'a>>,
    /// `SETDET/AMT/19A::SETT` (or `::ESTT`).
    pub settlement_amount: Option<Amount>,
}

impl<'a> SettlementInstruction<'a> {
    /// Read MT540–547.
    pub fn from_message(message: &Message<'a>) -> Result<SettlementInstruction<'a>, ViewError> {
        let message_type = message
            .message_type
            .filter(|message_type| (540..=547).contains(&message_type.0))
            .ok_or(ViewError::WrongType {
                expected: "MT540-547",
                found: message.message_type,
            })?;
        let confirmation = message_type.0 >= 544;
        let direction = if matches!(message_type.0, 540 | 541 | 544 | 545) {
            SettlementDirection::Receive
        } else {
            SettlementDirection::Deliver
        };
        let payment = if message_type.0 % 2 == 0 {
            PaymentType::Free
        } else {
            PaymentType::AgainstPayment
        };
        let root = message.text.root();
        let (reference, function, links) = general(root)?;
        let trade = root
            .sequence("TRADDET")
            .ok_or(ViewError::Missing { what: "TRADDET" })?;
        let (date_qualifier, date_what, quantity_qualifier) = if confirmation {
            ("ESET", "TRADDET/98a::ESET", "ESTT")
        } else {
            ("SETT", "TRADDET/98a::SETT", "SETT")
        };
        let settlement_date = date(trade, date_qualifier, date_what)?
            .ok_or(ViewError::Missing { what: date_what })?;
        let trade_date = date(trade, "TRAD", "TRADDET/98a::TRAD")?;
        let instrument = instrument(trade)?;
        let account_block = root
            .sequence("FIAC")
            .ok_or(ViewError::Missing { what: "FIAC" })?;
        let quantity_field = account_block
            .field("36", quantity_qualifier)
            .ok_or(ViewError::Missing { what: "FIAC/36B" })?;
        let quantity = generic_value(quantity_field)
            .and_then(parse_quantity)
            .ok_or_else(|| invalid("FIAC/36B", quantity_field))?;
        let account = account_block
            .field("97", "SAFE")
            .and_then(generic_value)
            .ok_or(ViewError::Missing {
                what: "FIAC/97a::SAFE",
            })?;
        let details = root
            .sequence("SETDET")
            .ok_or(ViewError::Missing { what: "SETDET" })?;
        let transaction_type = details.field("22", "SETR").and_then(generic_value);
        let mut parties = Vec::new();
        for party in details.sequences("SETPRTY") {
            let Some(field) = party.field_by_number("95") else {
                continue;
            };
            let id = parse_party(field).ok_or_else(|| invalid("SETDET/SETPRTY/95a", field))?;
            parties.push(Party {
                role: field.qualifier().unwrap_or(""),
                id,
                safekeeping_account: party.field("97", "SAFE").and_then(generic_value),
            });
        }
        let amount_qualifier = if confirmation { "ESTT" } else { "SETT" };
        let mut settlement_amount = None;
        for amount in details.sequences("AMT") {
            if let Some(field) = amount.field("19", amount_qualifier) {
                settlement_amount = Some(
                    generic_value(field)
                        .and_then(parse_amount)
                        .ok_or_else(|| invalid("SETDET/AMT/19A", field))?,
                );
                break;
            }
        }
        Ok(SettlementInstruction {
            message_type,
            confirmation,
            direction,
            payment,
            reference,
            function,
            links,
            trade_date,
            settlement_date,
            instrument,
            quantity,
            account,
            transaction_type,
            parties,
            settlement_amount,
        })
    }

    /// The party with this role.
    pub fn party(&self, role: &str) -> Option<&Party<'a>> {
        self.parties.iter().find(|party| party.role == role)
    }

    /// Delivering agent (`DEAG`): who delivers the securities.
    pub fn delivering_agent(&self) -> Option<&Party<'a>> {
        self.party("DEAG")
    }

    /// Receiving agent (`REAG`): who receives the securities.
    pub fn receiving_agent(&self) -> Option<&Party<'a>> {
        self.party("REAG")
    }

    /// Place of settlement (`PSET`).
    pub fn place_of_settlement(&self) -> Option<&Party<'a>> {
        self.party("PSET")
    }

    /// The reference of the linked message with this qualifier.
    pub fn link(&self, qualifier: &str) -> Option<&'a str> {
        self.links
            .iter()
            .find(|link| link.qualifier == qualifier)
            .map(|link| link.reference)
    }

    /// `LINK/20C::PREV`: the instruction a cancellation cancels.
    pub fn previous_reference(&self) -> Option<&'a str> {
        self.link("PREV")
    }

    /// `LINK/20C::RELA`: the related message (a confirmation's instruction).
    pub fn related_reference(&self) -> Option<&'a str> {
        self.link("RELA")
    }
}

/// Qualifier of a status (`25D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusQualifier {
    /// Instruction processing (PACK, REJT, ...).
    Iprc,
    /// Matching (MACH, NMAT).
    Mtch,
    /// Settlement (PEND, PENF).
    Sett,
    /// Cancellation processing (CAND, CANP, DEND).
    Cprc,
    /// Another qualifier, kept as written.
    Other,
}

/// Status code of `25D` in the SMPG vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// IPRC: acknowledged, accepted.
    Pack,
    /// IPRC: rejected.
    Rejt,
    /// MTCH: matched.
    Mach,
    /// MTCH: unmatched.
    Nmat,
    /// SETT: pending.
    Pend,
    /// SETT: failing (pending past the settlement date).
    Penf,
    /// CPRC (or IPRC): cancelled.
    Cand,
    /// CPRC (or IPRC): cancellation pending.
    Canp,
    /// CPRC: cancellation denied.
    Dend,
    /// Another code (or a proprietary one), kept as written in [`Status::code`].
    Other,
}

impl StatusCode {
    /// Read a 4-letter status code.
    pub fn parse(code: &str) -> StatusCode {
        match code {
            "PACK" => StatusCode::Pack,
            "REJT" => StatusCode::Rejt,
            "MACH" => StatusCode::Mach,
            "NMAT" => StatusCode::Nmat,
            "PEND" => StatusCode::Pend,
            "PENF" => StatusCode::Penf,
            "CAND" => StatusCode::Cand,
            "CANP" => StatusCode::Canp,
            "DEND" => StatusCode::Dend,
            _ => StatusCode::Other,
        }
    }
}

/// One `STAT` sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    /// Typed qualifier.
    pub qualifier: StatusQualifier,
    /// The qualifier as written.
    pub qualifier_code: &'a str,
    /// Data source scheme (proprietary status), when present.
    pub scheme: Option<&'a str>,
    /// Typed status code (`Other` for proprietary or unlisted codes).
    pub status: StatusCode,
    /// Status code as written: `PACK`, `REJT`, `MACH`, `NMAT`, `PEND`, `PENF`, `CAND`...
    pub code: &'a str,
    /// `REAS` sequences in order.
    pub reasons: Vec<Reason<'a>>,
}

/// One `REAS` sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason<'a> {
    /// `24B` qualifier (`PEND`, `NMAT`, `REJT`, ...).
    pub qualifier: &'a str,
    /// SMPG code, when the reason is one we know and not proprietary.
    pub code: Option<ReasonCode>,
    /// The code as written.
    pub code_text: &'a str,
    /// Data source scheme, when proprietary.
    pub scheme: Option<&'a str>,
    /// `70D::REAS` narrative.
    pub narrative: Option<&'a str>,
}

/// `SETTRAN` of an MT548: the transaction the status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTransaction<'a> {
    /// `35B`.
    pub instrument: Instrument<'a>,
    /// `36B::SETT`.
    pub quantity: Option<Quantity>,
    /// `97a::SAFE`.
    pub account: Option<&'a str>,
    /// `98a::SETT`.
    pub settlement_date: Option<DateOrDateTime>,
    /// `19A::SETT`.
    pub settlement_amount: Option<Amount>,
}

/// MT548.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAdvice<'a> {
    /// `GENL/20C::SEME`.
    pub reference: &'a str,
    /// `GENL/23G`: INST (status of an instruction) or CAST (of a cancellation request).
    pub function: Function,
    /// `GENL/LINK/20C`.
    pub links: Vec<Linkage<'a>>,
    /// `GENL/STAT` in order.
    pub statuses: Vec<Status<'a>>,
    /// `SETTRAN`, when present.
    pub transaction: Option<StatusTransaction<'a>>,
}

impl<'a> StatusAdvice<'a> {
    /// Read an MT548.
    pub fn from_message(message: &Message<'a>) -> Result<StatusAdvice<'a>, ViewError> {
        if message.message_type != Some(MessageType(548)) {
            return Err(ViewError::WrongType {
                expected: "MT548",
                found: message.message_type,
            });
        }
        let root = message.text.root();
        let (reference, function, links) = general(root)?;
        let genl = root
            .sequence("GENL")
            .ok_or(ViewError::Missing { what: "GENL" })?;
        let mut statuses = Vec::new();
        for stat in genl.sequences("STAT") {
            let field = stat.field_by_number("25").ok_or(ViewError::Missing {
                what: "GENL/STAT/25D",
            })?;
            let generic = field
                .generic()
                .ok_or_else(|| invalid("GENL/STAT/25D", field))?;
            let qualifier = match generic.qualifier {
                "IPRC" => StatusQualifier::Iprc,
                "MTCH" => StatusQualifier::Mtch,
                "SETT" => StatusQualifier::Sett,
                "CPRC" => StatusQualifier::Cprc,
                _ => StatusQualifier::Other,
            };
            let mut reasons = Vec::new();
            for reas in stat.sequences("REAS") {
                let Some(field) = reas.field_by_number("24") else {
                    continue;
                };
                let generic = field.generic().ok_or_else(|| invalid("REAS/24B", field))?;
                reasons.push(Reason {
                    qualifier: generic.qualifier,
                    code: generic
                        .scheme
                        .is_none()
                        .then(|| ReasonCode::parse(generic.value))
                        .flatten(),
                    code_text: generic.value,
                    scheme: generic.scheme,
                    narrative: reas.field("70", "REAS").and_then(generic_value),
                });
            }
            statuses.push(Status {
                qualifier,
                qualifier_code: generic.qualifier,
                scheme: generic.scheme,
                status: if generic.scheme.is_none() {
                    StatusCode::parse(generic.value)
                } else {
                    StatusCode::Other
                },
                code: generic.value,
                reasons,
            });
        }
        let transaction = match root.sequence("SETTRAN") {
            Some(settran) => Some(StatusTransaction {
                instrument: instrument(settran)?,
                quantity: settran
                    .field("36", "SETT")
                    .and_then(generic_value)
                    .and_then(parse_quantity),
                account: settran.field("97", "SAFE").and_then(generic_value),
                settlement_date: date(settran, "SETT", "SETTRAN/98a::SETT")?,
                settlement_amount: settran
                    .field("19", "SETT")
                    .and_then(generic_value)
                    .and_then(parse_amount),
            }),
            None => None,
        };
        Ok(StatusAdvice {
            reference,
            function,
            links,
            statuses,
            transaction,
        })
    }

    /// The status with this qualifier, e.g. `MTCH`.
    pub fn status(&self, qualifier: StatusQualifier) -> Option<&Status<'a>> {
        self.statuses
            .iter()
            .find(|status| status.qualifier == qualifier)
    }

    /// `LINK/20C::RELA`: the instruction this status is about.
    pub fn related_reference(&self) -> Option<&'a str> {
        self.links
            .iter()
            .find(|link| link.qualifier == "RELA")
            .map(|link| link.reference)
    }
}

/// A holding in an MT535 (`SUBSAFE/FIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding<'a> {
    /// Safekeeping account of the enclosing `SUBSAFE`, else the statement's.
    pub account: &'a str,
    /// `35B`.
    pub instrument: Instrument<'a>,
    /// `93B::AGGR`.
    pub aggregate: Option<Quantity>,
    /// `93B::AVAI`.
    pub available: Option<Quantity>,
}

/// A transaction line of an MT536/537 (`TRAN`, `TRANS`, `TRANSDET` sequences, wherever they
/// nest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementTransaction<'a> {
    /// `20C` (RELA, ACOW...), first found.
    pub reference: Option<&'a str>,
    /// `35B` of the enclosing `FIN`, or of the transaction.
    pub instrument: Option<Instrument<'a>>,
    /// `36B` (PSTA, SETT...), first found.
    pub quantity: Option<Quantity>,
    /// `98a::ESET` or `::SETT`.
    pub settlement_date: Option<DateOrDateTime>,
}

/// MT535, MT536 or MT537.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// 535, 536 or 537.
    pub message_type: MessageType,
    /// `GENL/28E`: page and continuation.
    pub page: Page,
    /// `GENL/20C::SEME`.
    pub reference: &'a str,
    /// `GENL/23G`.
    pub function: Function,
    /// `GENL/98a::STAT`.
    pub statement_date: Option<DateOrDateTime>,
    /// `GENL/69a::STAT`: the period covered.
    pub period: Option<(Date, Date)>,
    /// `GENL/97a::SAFE`.
    pub account: &'a str,
    /// `GENL/17B::ACTI`: whether there is activity to report.
    pub activity: bool,
    /// MT535 holdings.
    pub holdings: Vec<Holding<'a>>,
    /// MT536/537 transactions.
    pub transactions: Vec<StatementTransaction<'a>>,
}

impl<'a> Statement<'a> {
    /// Read an MT535, MT536 or MT537.
    pub fn from_message(message: &Message<'a>) -> Result<Statement<'a>, ViewError> {
        let message_type = message
            .message_type
            .filter(|message_type| (535..=537).contains(&message_type.0))
            .ok_or(ViewError::WrongType {
                expected: "MT535-537",
                found: message.message_type,
            })?;
        let root = message.text.root();
        let (reference, function, _) = general(root)?;
        let genl = root
            .sequence("GENL")
            .ok_or(ViewError::Missing { what: "GENL" })?;
        let page_field = genl
            .field_by_number("28")
            .ok_or(ViewError::Missing { what: "GENL/28E" })?;
        let page = parse_page(page_field.value).ok_or_else(|| invalid("GENL/28E", page_field))?;
        let statement_date = date(genl, "STAT", "GENL/98a::STAT")?;
        let period = match genl.field("69", "STAT") {
            Some(field) => {
                let value = generic_value(field).unwrap_or("");
                let dates = value
                    .split_once('/')
                    .and_then(|(from, to)| Some((parse_date(from)?, parse_date(to)?)));
                Some(dates.ok_or_else(|| invalid("GENL/69A::STAT", field))?)
            }
            None => None,
        };
        let account =
            genl.field("97", "SAFE")
                .and_then(generic_value)
                .ok_or(ViewError::Missing {
                    what: "GENL/97a::SAFE",
                })?;
        let activity = genl.field("17", "ACTI").and_then(generic_value) == Some("Y");
        let mut holdings = Vec::new();
        let mut transactions = Vec::new();
        for subsafe in root.sequences("SUBSAFE") {
            let sub_account = subsafe
                .field("97", "SAFE")
                .and_then(generic_value)
                .unwrap_or(account);
            for fin in subsafe.sequences("FIN") {
                let fin_instrument = instrument(fin).ok();
                if message_type.0 == 535 {
                    holdings.push(Holding {
                        account: sub_account,
                        instrument: fin_instrument.ok_or(ViewError::Missing {
                            what: "SUBSAFE/FIN/35B",
                        })?,
                        aggregate: quantity(fin, "93", "AGGR"),
                        available: quantity(fin, "93", "AVAI"),
                    });
                } else {
                    collect_transactions(fin, fin_instrument, &mut transactions);
                }
            }
        }
        if message_type.0 == 537 {
            collect_transactions(root, None, &mut transactions);
        }
        Ok(Statement {
            message_type,
            page,
            reference,
            function,
            statement_date,
            period,
            account,
            activity,
            holdings,
            transactions,
        })
    }
}

fn collect_transactions<'a>(
    sequence: Seq<'_, 'a>,
    inherited: Option<Instrument<'a>>,
    out: &mut Vec<StatementTransaction<'a>>,
) {
    for child in sequence.children() {
        if matches!(child.name(), "TRAN" | "TRANS") {
            let instrument = deep(child, |field| field.number() == "35")
                .and_then(|field| instrument_of(field).ok())
                .or(inherited);
            out.push(StatementTransaction {
                reference: deep(child, |field| field.number() == "20").and_then(generic_value),
                instrument,
                quantity: deep(child, |field| field.number() == "36")
                    .and_then(generic_value)
                    .and_then(parse_quantity),
                settlement_date: deep(child, |field| {
                    field.number() == "98" && matches!(field.qualifier(), Some("ESET" | "SETT"))
                })
                .and_then(parse_date_field),
            });
        } else {
            collect_transactions(child, inherited, out);
        }
    }
}

/// First field matching `predicate` in `sequence` or its descendants (depth first).
fn deep<'t, 'a>(
    sequence: Seq<'t, 'a>,
    predicate: impl Fn(&Field<'a>) -> bool + Copy,
) -> Option<&'t Field<'a>> {
    sequence
        .fields()
        .find(|field| predicate(field))
        .or_else(|| sequence.children().find_map(|child| deep(child, predicate)))
}

type General<'a> = (&'a str, Function, Vec<Linkage<'a>>);

fn general<'a>(root: Seq<'_, 'a>) -> Result<General<'a>, ViewError> {
    let genl = root
        .sequence("GENL")
        .ok_or(ViewError::Missing { what: "GENL" })?;
    let reference = genl
        .field("20", "SEME")
        .and_then(generic_value)
        .ok_or(ViewError::Missing {
            what: "GENL/20C::SEME",
        })?;
    let function_field = genl
        .field_by_number("23")
        .ok_or(ViewError::Missing { what: "GENL/23G" })?;
    let function =
        parse_function(function_field.value).ok_or_else(|| invalid("GENL/23G", function_field))?;
    let mut links = Vec::new();
    for link in genl.sequences("LINK") {
        if let Some(generic) = link.field_by_number("20").and_then(Field::generic) {
            links.push(Linkage {
                qualifier: generic.qualifier,
                reference: generic.value,
            });
        }
    }
    Ok((reference, function, links))
}

fn generic_value<'a>(field: &Field<'a>) -> Option<&'a str> {
    field.generic().map(|generic| generic.value)
}

fn invalid(what: &'static str, field: &Field<'_>) -> ViewError {
    ViewError::Invalid {
        what,
        value: field.value.to_owned(),
    }
}

fn date(
    sequence: Seq<'_, '_>,
    qualifier: &str,
    what: &'static str,
) -> Result<Option<DateOrDateTime>, ViewError> {
    match sequence.field("98", qualifier) {
        Some(field) => parse_date_field(field)
            .map(Some)
            .ok_or_else(|| invalid(what, field)),
        None => Ok(None),
    }
}

fn quantity(sequence: Seq<'_, '_>, number: &str, qualifier: &str) -> Option<Quantity> {
    sequence
        .field(number, qualifier)
        .and_then(generic_value)
        .and_then(parse_quantity)
}

fn instrument<'a>(sequence: Seq<'_, 'a>) -> Result<Instrument<'a>, ViewError> {
    let field = sequence
        .field_by_number("35")
        .ok_or(ViewError::Missing { what: "35B" })?;
    instrument_of(field)
}

fn instrument_of<'a>(field: &Field<'a>) -> Result<Instrument<'a>, ViewError> {
    let first = field.lines().next().unwrap_or("");
    // A malformed ISIN reads as none (validation reports it); the raw value stays available.
    let isin = first
        .strip_prefix("ISIN ")
        .and_then(|code| Isin::parse_unchecked(code).ok());
    Ok(Instrument {
        isin,
        raw: field.value,
    })
}
