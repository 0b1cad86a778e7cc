//! Builders: owned, canonical (CRLF) messages for the settlement workers (MT544–548,
//! MT535–537) and the terminal (MT540–543).
//!
//! [`TextBuilder`] writes block 4 field by field with typed values (dates, decimals with a
//! decimal comma and `N` sign, parties). The message builders ([`settlement_instruction`],
//! [`status_advice`], [`statement`]) fill in the mandatory structure of their type, wrap it in
//! an [`Envelope`] (or none, for block-4-only output), and validate their own output with
//! [`super::check`]: a builder never hands out a message our validator would reject.

use time::{Date, PrimitiveDateTime};

use super::error::{ReasonCode, Rejection};
use super::fields::{Amount, Function, Isin, Page, PartyId, Quantity, format_decimal};
use super::parse::ParseOptions;
use super::views::{Linkage, Party};
use super::{MessageType, check};

/// Why a builder refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The envelope addresses are malformed.
    #[error("invalid envelope: {0}")]
    Envelope(&'static str),
    /// The message type is not one this builder makes.
    #[error("builder does not make {0}")]
    MessageType(MessageType),
    /// The built message does not validate (the spec was inconsistent).
    #[error("built message does not validate: {0}")]
    Invalid(Rejection),
    /// A value carried a line break followed by `:` or `-}`, which would read back as extra
    /// fields or the end of the text.
    #[error("a value would be read back as {found} fields instead of {written}")]
    FieldInjection {
        /// Fields the builder wrote.
        written: usize,
        /// Fields the parser found.
        found: usize,
    },
}

/// Blocks 1 and 2 of an input message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'s> {
    /// Sender logical terminal, 12 characters (BIC8 + terminal code + branch).
    pub sender: &'s str,
    /// Receiver address, 12 characters.
    pub receiver: &'s str,
    /// Session number, at most 4 digits.
    pub session: u16,
    /// Input sequence number, at most 6 digits.
    pub sequence: u32,
}

/// Writes block 4 text: one field per line, CRLF.
#[derive(Debug, Clone, Default)]
pub struct TextBuilder {
    out: String,
    /// Fields written, checked against what the parser reads back.
    field_count: usize,
}

impl TextBuilder {
    /// An empty block 4.
    pub fn new() -> TextBuilder {
        TextBuilder {
            out: String::with_capacity(512),
            field_count: 0,
        }
    }

    /// `:16R:name`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        self.field("16R", name)
    }

    /// `:16S:name`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        self.field("16S", name)
    }

    /// `:tag:value` with the value written as given (lines separated by CRLF or LF).
    pub fn field(&mut self, tag: &str, value: &str) -> &mut Self {
        self.field_count += 1;
        self.out.push(':');
        self.out.push_str(tag);
        self.out.push(':');
        super::write::push_crlf(value, &mut self.out);
        self.out.push_str("\r\n");
        self
    }

    fn open_generic(&mut self, tag: &str, qualifier: &str, scheme: Option<&str>) {
        self.field_count += 1;
        self.out.push(':');
        self.out.push_str(tag);
        self.out.push_str("::");
        self.out.push_str(qualifier);
        self.out.push('/');
        if let Some(scheme) = scheme {
            self.out.push_str(scheme);
        }
        self.out.push('/');
    }

    /// `:tag::QUAL//value` (or `:tag::QUAL/SCHEME/value`).
    pub fn generic(
        &mut self,
        tag: &str,
        qualifier: &str,
        scheme: Option<&str>,
        value: &str,
    ) -> &mut Self {
        self.open_generic(tag, qualifier, scheme);
        super::write::push_crlf(value, &mut self.out);
        self.out.push_str("\r\n");
        self
    }

    /// `:98A::QUAL//YYYYMMDD`.
    pub fn date(&mut self, qualifier: &str, date: Date) -> &mut Self {
        self.open_generic("98A", qualifier, None);
        push_date(date, &mut self.out);
        self.out.push_str("\r\n");
        self
    }

    /// `:98C::QUAL//YYYYMMDDHHMMSS`.
    pub fn date_time(&mut self, qualifier: &str, date_time: PrimitiveDateTime) -> &mut Self {
        use std::fmt::Write;
        self.open_generic("98C", qualifier, None);
        push_date(date_time.date(), &mut self.out);
        let _ = write!(
            self.out,
            "{:02}{:02}{:02}",
            date_time.hour(),
            date_time.minute(),
            date_time.second()
        );
        self.out.push_str("\r\n");
        self
    }

    /// `:tag::QUAL//UNIT/1000,` (36B, 93B).
    pub fn quantity(&mut self, tag: &str, qualifier: &str, quantity: Quantity) -> &mut Self {
        self.open_generic(tag, qualifier, None);
        self.out.push_str(quantity.kind.as_str());
        self.out.push('/');
        format_decimal(quantity.value, &mut self.out);
        self.out.push_str("\r\n");
        self
    }

    /// `:19A::QUAL//[N]EUR1234,5`.
    pub fn amount(&mut self, qualifier: &str, amount: Amount) -> &mut Self {
        self.open_generic("19A", qualifier, None);
        if amount.value.is_sign_negative() && !amount.value.is_zero() {
            self.out.push('N');
        }
        self.out.push_str(amount.currency());
        format_decimal(amount.value.abs(), &mut self.out);
        self.out.push_str("\r\n");
        self
    }

    /// `:95a::ROLE...` by the kind of identifier.
    pub fn party(&mut self, role: &str, id: PartyId<'_>) -> &mut Self {
        match id {
            PartyId::Bic(bic) => self.generic("95P", role, None, bic),
            PartyId::NameAndAddress(name) => self.generic("95Q", role, None, name),
            PartyId::Proprietary { scheme, id } => self.generic("95R", role, Some(scheme), id),
            PartyId::Country(country) => self.generic("95C", role, None, country),
            PartyId::Alternate(value) => self.generic("95S", role, None, value),
        }
    }

    /// `:23G:FUNC[/SUBF]`.
    pub fn function(&mut self, function: Function) -> &mut Self {
        let mut value = String::from(function.code.as_str());
        if let Some(subfunction) = function.subfunction {
            value.push('/');
            value.push_str(subfunction.as_str());
        }
        self.field("23G", &value)
    }

    /// `:35B:ISIN xxx` and optional description lines.
    pub fn instrument(&mut self, isin: Isin, description: Option<&str>) -> &mut Self {
        let mut value = format!("ISIN {isin}");
        if let Some(description) = description {
            value.push('\n');
            value.push_str(description);
        }
        self.field("35B", &value)
    }

    /// The block 4 text written so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// Wrap in blocks 1 and 2 (or `{4:` alone) and validate.
    pub fn finish(
        &self,
        envelope: Option<&Envelope<'_>>,
        message_type: MessageType,
    ) -> Result<String, BuildError> {
        use std::fmt::Write;
        let mut message = String::with_capacity(self.out.len() + 64);
        if let Some(envelope) = envelope {
            let address_ok = |address: &str| {
                address.len() == 12 && address.bytes().all(|byte| byte.is_ascii_alphanumeric())
            };
            if !address_ok(envelope.sender) {
                return Err(BuildError::Envelope("sender must be 12 letters or digits"));
            }
            if !address_ok(envelope.receiver) {
                return Err(BuildError::Envelope(
                    "receiver must be 12 letters or digits",
                ));
            }
            if envelope.session > 9999 || envelope.sequence > 999_999 {
                return Err(BuildError::Envelope(
                    "session has at most 4 digits and sequence at most 6",
                ));
            }
            let _ = write!(
                message,
                "{{1:F01{}{:04}{:06}}}{{2:I{:03}{}N}}",
                envelope.sender,
                envelope.session,
                envelope.sequence,
                message_type.0,
                envelope.receiver
            );
        }
        message.push_str("{4:\r\n");
        message.push_str(&self.out);
        message.push_str("-}");
        let options = if envelope.is_some() {
            ParseOptions::fin()
        } else {
            ParseOptions::text_only(Some(message_type))
        };
        let parsed = check(&message, options)
            .into_result()
            .map_err(BuildError::Invalid)?;
        let found = parsed.text.fields().len();
        if found != self.field_count {
            return Err(BuildError::FieldInjection {
                written: self.field_count,
                found,
            });
        }
        Ok(message)
    }
}

fn push_date(date: Date, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
}

/// What an MT540–547 says.
#[derive(Debug, Clone, Copy)]
pub struct SettlementInstructionSpec<'s> {
    /// 540..=547 (544–547 get the `ESET`/`ESTT` qualifiers of confirmations).
    pub message_type: MessageType,
    /// `23G`.
    pub function: Function,
    /// `20C::SEME`, at most 16 characters.
    pub reference: &'s str,
    /// `LINK` sequences (a cancellation needs `PREV`, a confirmation `RELA`).
    pub links: &'s [Linkage<'s>],
    /// `98C::PREP`.
    pub prepared: Option<PrimitiveDateTime>,
    /// `98A::TRAD`.
    pub trade_date: Option<Date>,
    /// `98A::SETT` (or `::ESET`).
    pub settlement_date: Date,
    /// `35B`.
    pub isin: Isin,
    /// Description lines of `35B`.
    pub description: Option<&'s str>,
    /// `36B::SETT` (or `::ESTT`).
    pub quantity: Quantity,
    /// `97A::SAFE`.
    pub account: &'s str,
    /// `22F::SETR`, e.g. `TRAD`.
    pub transaction_type: &'s str,
    /// `SETPRTY` sequences (DEAG or REAG, and PSET, are required).
    pub parties: &'s [Party<'s>],
    /// `19A::SETT` (or `::ESTT`), required against payment.
    pub settlement_amount: Option<Amount>,
}

/// Build an MT540–547.
pub fn settlement_instruction(
    envelope: Option<&Envelope<'_>>,
    spec: &SettlementInstructionSpec<'_>,
) -> Result<String, BuildError> {
    if !(540..=547).contains(&spec.message_type.0) {
        return Err(BuildError::MessageType(spec.message_type));
    }
    let confirmation = spec.message_type.0 >= 544;
    let (date_qualifier, quantity_qualifier) = if confirmation {
        ("ESET", "ESTT")
    } else {
        ("SETT", "SETT")
    };
    let mut text = TextBuilder::new();
    general(
        &mut text,
        spec.reference,
        spec.function,
        spec.prepared,
        spec.links,
    );
    text.end("GENL");
    text.start("TRADDET");
    text.date(date_qualifier, spec.settlement_date);
    if let Some(trade_date) = spec.trade_date {
        text.date("TRAD", trade_date);
    }
    text.instrument(spec.isin, spec.description);
    text.end("TRADDET");
    text.start("FIAC");
    text.quantity("36B", quantity_qualifier, spec.quantity);
    text.generic("97A", "SAFE", None, spec.account);
    text.end("FIAC");
    text.start("SETDET");
    text.generic("22F", "SETR", None, spec.transaction_type);
    for party in spec.parties {
        text.start("SETPRTY");
        text.party(party.role, party.id);
        if let Some(account) = party.safekeeping_account {
            text.generic("97A", "SAFE", None, account);
        }
        text.end("SETPRTY");
    }
    if let Some(amount) = spec.settlement_amount {
        text.start("AMT");
        text.amount(quantity_qualifier, amount);
        text.end("AMT");
    }
    text.end("SETDET");
    text.finish(envelope, spec.message_type)
}

/// `GENL` up to its `LINK`s (the caller closes it, MT548 adds `STAT` first).
fn general(
    text: &mut TextBuilder,
    reference: &str,
    function: Function,
    prepared: Option<PrimitiveDateTime>,
    links: &[Linkage<'_>],
) {
    text.start("GENL");
    text.generic("20C", "SEME", None, reference);
    text.function(function);
    if let Some(prepared) = prepared {
        text.date_time("PREP", prepared);
    }
    for link in links {
        text.start("LINK");
        text.generic("20C", link.qualifier, None, link.reference);
        text.end("LINK");
    }
}

/// One reason of a status.
#[derive(Debug, Clone, Copy)]
pub struct ReasonSpec<'s> {
    /// `24B` qualifier: `PEND`, `PENF`, `NMAT`, `REJT`, `CAND`, `CANP`, `DEND`...
    pub qualifier: &'s str,
    /// SMPG reason code.
    pub code: ReasonCode,
    /// `70D::REAS` narrative (at most 6 lines of 35 characters).
    pub narrative: Option<&'s str>,
}

/// One status of an MT548.
#[derive(Debug, Clone, Copy)]
pub struct StatusSpec<'s> {
    /// `25D` qualifier: `IPRC`, `MTCH`, `SETT`, `CPRC`...
    pub qualifier: &'s str,
    /// Status code: `PACK`, `REJT`, `MACH`, `NMAT`, `PEND`, `PENF`, `CAND`, `CANP`, `DEND`...
    pub code: &'s str,
    /// Reasons.
    pub reasons: &'s [ReasonSpec<'s>],
}

/// `SETTRAN` of an MT548.
#[derive(Debug, Clone, Copy)]
pub struct StatusTransactionSpec<'s> {
    /// `35B`.
    pub isin: Isin,
    /// `36B::SETT`.
    pub quantity: Quantity,
    /// `97A::SAFE`.
    pub account: &'s str,
    /// `22F::SETR`.
    pub transaction_type: &'s str,
    /// `22H::REDE`: `RECE` or `DELI`.
    pub receive_deliver: &'s str,
    /// `22H::PAYM`: `APMT` or `FREE`.
    pub payment: &'s str,
    /// `98A::SETT`.
    pub settlement_date: Date,
    /// `19A::SETT`.
    pub settlement_amount: Option<Amount>,
}

/// What an MT548 says.
#[derive(Debug, Clone, Copy)]
pub struct StatusAdviceSpec<'s> {
    /// `20C::SEME`.
    pub reference: &'s str,
    /// `23G`: `INST` or `CAST`.
    pub function: Function,
    /// `98C::PREP`.
    pub prepared: Option<PrimitiveDateTime>,
    /// `LINK/20C::RELA`: the instruction's reference.
    pub related_reference: &'s str,
    /// `STAT` sequences (at least one).
    pub statuses: &'s [StatusSpec<'s>],
    /// `SETTRAN`.
    pub transaction: Option<StatusTransactionSpec<'s>>,
}

/// Build an MT548.
pub fn status_advice(
    envelope: Option<&Envelope<'_>>,
    spec: &StatusAdviceSpec<'_>,
) -> Result<String, BuildError> {
    let mut text = TextBuilder::new();
    let link = [Linkage {
        qualifier: "RELA",
        reference: spec.related_reference,
    }];
    general(
        &mut text,
        spec.reference,
        spec.function,
        spec.prepared,
        &link,
    );
    for status in spec.statuses {
        text.start("STAT");
        text.generic("25D", status.qualifier, None, status.code);
        for reason in status.reasons {
            text.start("REAS");
            text.generic("24B", reason.qualifier, None, reason.code.as_str());
            if let Some(narrative) = reason.narrative {
                text.generic("70D", "REAS", None, narrative);
            }
            text.end("REAS");
        }
        text.end("STAT");
    }
    text.end("GENL");
    if let Some(transaction) = spec.transaction {
        text.start("SETTRAN");
        text.instrument(transaction.isin, None);
        text.quantity("36B", "SETT", transaction.quantity);
        if let Some(amount) = transaction.settlement_amount {
            text.amount("SETT", amount);
        }
        text.generic("97A", "SAFE", None, transaction.account);
        text.generic("22F", "SETR", None, transaction.transaction_type);
        text.generic("22H", "REDE", None, transaction.receive_deliver);
        text.generic("22H", "PAYM", None, transaction.payment);
        text.date("SETT", transaction.settlement_date);
        text.end("SETTRAN");
    }
    text.finish(envelope, MessageType(548))
}

/// A holding line of an MT535.
#[derive(Debug, Clone, Copy)]
pub struct HoldingSpec<'s> {
    /// `35B`.
    pub isin: Isin,
    /// Description lines of `35B`.
    pub description: Option<&'s str>,
    /// `93B::AGGR`.
    pub aggregate: Quantity,
    /// `93B::AVAI`.
    pub available: Option<Quantity>,
}

/// A transaction line of an MT536 (settled) or MT537 (pending).
#[derive(Debug, Clone, Copy)]
pub struct TransactionSpec<'s> {
    /// `LINK/20C::RELA`: the instruction's reference.
    pub related_reference: &'s str,
    /// `35B`.
    pub isin: Isin,
    /// `36B::PSTA` (536, posted) or `::SETT` (537, pending).
    pub quantity: Quantity,
    /// `22H::REDE`: `RECE` or `DELI`.
    pub receive_deliver: &'s str,
    /// `22H::PAYM`: `APMT` or `FREE`.
    pub payment: &'s str,
    /// `98A::ESET` (536) or `::SETT` (537).
    pub settlement_date: Date,
}

/// What an MT535, MT536 or MT537 says.
#[derive(Debug, Clone, Copy)]
pub struct StatementSpec<'s> {
    /// 535, 536 or 537.
    pub message_type: MessageType,
    /// `28E`.
    pub page: Page,
    /// `20C::SEME`.
    pub reference: &'s str,
    /// `23G`.
    pub function: Function,
    /// `98A::STAT` (535, 537) or the period `69A::STAT` from..to (536: from = to = this date
    /// unless `period` is given).
    pub statement_date: Date,
    /// `69A::STAT` period of an MT536.
    pub period: Option<(Date, Date)>,
    /// `22F::SFRE`: `DAIL`, `WEEK`, `MNTH`, `ADHO`, `INDA`...
    pub frequency: &'s str,
    /// `22F::CODE`: `COMP` (complete) or `DELT` (delta).
    pub update_type: &'s str,
    /// `97A::SAFE`.
    pub account: &'s str,
    /// MT535 holdings.
    pub holdings: &'s [HoldingSpec<'s>],
    /// MT536/537 transactions.
    pub transactions: &'s [TransactionSpec<'s>],
}

/// Build an MT535, MT536 or MT537.
pub fn statement(
    envelope: Option<&Envelope<'_>>,
    spec: &StatementSpec<'_>,
) -> Result<String, BuildError> {
    use std::fmt::Write;
    let message_type = spec.message_type.0;
    if !(535..=537).contains(&message_type) {
        return Err(BuildError::MessageType(spec.message_type));
    }
    let activity = match message_type {
        535 => !spec.holdings.is_empty(),
        _ => !spec.transactions.is_empty(),
    };
    let mut text = TextBuilder::new();
    text.start("GENL");
    let mut page = String::new();
    let _ = write!(
        page,
        "{:05}/{}",
        spec.page.number,
        spec.page.continuation.as_str()
    );
    text.field("28E", &page);
    text.generic("20C", "SEME", None, spec.reference);
    text.function(spec.function);
    match message_type {
        536 => {
            let (from, to) = spec
                .period
                .unwrap_or((spec.statement_date, spec.statement_date));
            let mut period = String::new();
            push_date(from, &mut period);
            period.push('/');
            push_date(to, &mut period);
            text.generic("69A", "STAT", None, &period);
        }
        _ => {
            text.date("STAT", spec.statement_date);
        }
    }
    if message_type == 537 {
        text.generic("22H", "STST", None, "TRAN");
    }
    text.generic("22F", "SFRE", None, spec.frequency);
    text.generic("22F", "CODE", None, spec.update_type);
    if message_type == 535 {
        text.generic("22F", "STTY", None, "CUST");
        text.generic("22F", "STBA", None, "SETT");
    }
    text.generic("97A", "SAFE", None, spec.account);
    text.generic("17B", "ACTI", None, if activity { "Y" } else { "N" });
    if message_type != 537 {
        text.generic("17B", "CONS", None, "N");
    }
    text.end("GENL");
    match message_type {
        535 if activity => {
            text.start("SUBSAFE");
            for holding in spec.holdings {
                holding_entry(&mut text, holding);
            }
            text.end("SUBSAFE");
        }
        536 if activity => {
            text.start("SUBSAFE");
            for transaction in spec.transactions {
                posted_entry(&mut text, transaction);
            }
            text.end("SUBSAFE");
        }
        537 => {
            for transaction in spec.transactions {
                pending_entry(&mut text, transaction);
            }
        }
        _ => {}
    }
    text.finish(envelope, spec.message_type)
}

/// `SUBSAFE/FIN` of an MT535.
fn holding_entry(text: &mut TextBuilder, holding: &HoldingSpec<'_>) {
    text.start("FIN");
    text.instrument(holding.isin, holding.description);
    text.quantity("93B", "AGGR", holding.aggregate);
    if let Some(available) = holding.available {
        text.quantity("93B", "AVAI", available);
    }
    text.end("FIN");
}

/// `SUBSAFE/FIN` with one `TRAN` of an MT536.
fn posted_entry(text: &mut TextBuilder, transaction: &TransactionSpec<'_>) {
    text.start("FIN");
    text.instrument(transaction.isin, None);
    text.start("TRAN");
    text.start("LINK");
    text.generic("20C", "RELA", None, transaction.related_reference);
    text.end("LINK");
    text.start("TRANSDET");
    text.quantity("36B", "PSTA", transaction.quantity);
    text.generic("22F", "TRAN", None, "SETT");
    text.generic("22H", "REDE", None, transaction.receive_deliver);
    text.generic("22H", "PAYM", None, transaction.payment);
    text.date("ESET", transaction.settlement_date);
    text.end("TRANSDET");
    text.end("TRAN");
    text.end("FIN");
}

/// `TRANS` of an MT537.
fn pending_entry(text: &mut TextBuilder, transaction: &TransactionSpec<'_>) {
    text.start("TRANS");
    text.start("LINK");
    text.generic("20C", "RELA", None, transaction.related_reference);
    text.end("LINK");
    text.start("TRANSDET");
    text.instrument(transaction.isin, None);
    text.quantity("36B", "SETT", transaction.quantity);
    text.generic("22H", "REDE", None, transaction.receive_deliver);
    text.generic("22H", "PAYM", None, transaction.payment);
    text.date("SETT", transaction.settlement_date);
    text.end("TRANSDET");
    text.end("TRANS");
}

/// One entry of a statement, for sizing pages.
#[derive(Debug, Clone, Copy)]
pub enum StatementEntry<'s> {
    /// An MT535 holding.
    Holding(&'s HoldingSpec<'s>),
    /// An MT536 (`posted`) or MT537 transaction.
    Transaction {
        /// MT536 when true, MT537 otherwise.
        posted: bool,
        /// The line.
        spec: &'s TransactionSpec<'s>,
    },
}

/// Characters `entry` adds to a statement's text ([`statement`] writes exactly this): a
/// page's size is its entries' sizes plus a fixed part, so pages can be packed before they
/// are built.
pub fn statement_entry_chars(entry: StatementEntry<'_>) -> usize {
    let mut text = TextBuilder::new();
    match entry {
        StatementEntry::Holding(holding) => holding_entry(&mut text, holding),
        StatementEntry::Transaction { posted: true, spec } => posted_entry(&mut text, spec),
        StatementEntry::Transaction {
            posted: false,
            spec,
        } => pending_entry(&mut text, spec),
    }
    text.as_str().len()
}

/// What an MT549 (request for a statement) asks.
#[derive(Debug, Clone, Copy)]
pub struct StatementRequestSpec<'s> {
    /// `20C::SEME`.
    pub reference: &'s str,
    /// `13A::REQU`: the message type wanted (535, 536 or 537).
    pub requested: MessageType,
    /// `98A::STAT`.
    pub statement_date: Date,
    /// `97A::SAFE`.
    pub account: &'s str,
}

/// Build an MT549.
pub fn statement_request(
    envelope: Option<&Envelope<'_>>,
    spec: &StatementRequestSpec<'_>,
) -> Result<String, BuildError> {
    let mut text = TextBuilder::new();
    text.start("GENL");
    text.generic("20C", "SEME", None, spec.reference);
    text.field("23G", "NEWM");
    text.date("STAT", spec.statement_date);
    text.generic("13A", "REQU", None, &format!("{:03}", spec.requested.0));
    text.generic("97A", "SAFE", None, spec.account);
    text.end("GENL");
    text.finish(envelope, MessageType(549))
}
