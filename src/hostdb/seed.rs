//! Reference data from a file (`config/reference/*.toml`): currencies, participants, stock
//! and cash accounts, securities, opening holdings and opening cash.
//!
//! Guarantees:
//! - [`load_file`] parses and validates before anything touches the database, and reports
//!   every problem it finds at once ([`SeedError::Invalid`]). A file is self-contained:
//!   its accounts, securities and openings may refer only to what the same file lists.
//! - [`apply`] validates again and writes everything in ONE transaction, serialised by an
//!   advisory lock: any error writes nothing.
//! - Idempotent: reference rows are upserted only where they differ, so a second run with
//!   the same file changes nothing and its report says so ([`SeedReport::is_unchanged`]).
//!   Rows the file does not list are left alone: a seed never deletes reference data.
//! - Openings are written once, as journal rows of kind `opening` plus balance rows. An
//!   opening already present with the same value is skipped; with a different value it is
//!   an error ([`SeedError::OpeningConflicts`]), never a silent overwrite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::Deserialize;
use time::Date;

use super::journal::{
    CashMovement, CashMovementKind, HoldingMovement, HoldingMovementKind, append_cash_movements,
    append_holding_movements,
};
use super::{HostDbError, Pool};
use crate::ids::Isin;

/// Advisory lock key serialising seed runs ("ccassref" in ASCII).
const SEED_LOCK_KEY: i64 = 0x6363_6173_7372_6566;
/// `reference` of the journal rows that openings write.
pub const OPENING_REFERENCE: &str = "seed:opening";

/// The whole reference file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceData {
    /// Settlement date of the opening journal rows: a TOML date (`opening_date = 2026-11-24`).
    #[serde(deserialize_with = "deserialize_toml_date")]
    pub opening_date: Date,
    #[serde(default, rename = "currency")]
    pub currencies: Vec<CurrencyRecord>,
    #[serde(default, rename = "participant")]
    pub participants: Vec<ParticipantRecord>,
    #[serde(default, rename = "stock_account")]
    pub stock_accounts: Vec<StockAccountRecord>,
    #[serde(default, rename = "cash_account")]
    pub cash_accounts: Vec<CashAccountRecord>,
    #[serde(default, rename = "security")]
    pub securities: Vec<SecurityRecord>,
    #[serde(default, rename = "opening_holding")]
    pub opening_holdings: Vec<OpeningHoldingRecord>,
    #[serde(default, rename = "opening_cash")]
    pub opening_cash: Vec<OpeningCashRecord>,
}

/// A TOML local date (no time, no offset) as a [`Date`].
fn deserialize_toml_date<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Date, D::Error> {
    use serde::de::Error;
    let value = toml::value::Datetime::deserialize(deserializer)?;
    match (value.date, value.time, value.offset) {
        (Some(date), None, None) => {
            let month = time::Month::try_from(date.month).map_err(D::Error::custom)?;
            Date::from_calendar_date(i32::from(date.year), month, date.day)
                .map_err(D::Error::custom)
        }
        _ => Err(D::Error::custom(format!(
            "`{value}` is not a date such as 2026-11-24"
        ))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyRecord {
    pub code: String,
    pub name: String,
    pub minor_units: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantType {
    Ccp,
    Broker,
    Custodian,
    Investor,
    StockPledgee,
}

impl ParticipantType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantType::Ccp => "ccp",
            ParticipantType::Broker => "broker",
            ParticipantType::Custodian => "custodian",
            ParticipantType::Investor => "investor",
            ParticipantType::StockPledgee => "stock_pledgee",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    Active,
    Suspended,
    Terminated,
}

impl ParticipantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantStatus::Active => "active",
            ParticipantStatus::Suspended => "suspended",
            ParticipantStatus::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub participant_type: ParticipantType,
    pub status: ParticipantStatus,
    /// 12-character FIN logical-terminal address.
    pub logical_terminal: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockAccountKind {
    House,
    Client,
    Ccp,
    Pledge,
}

impl StockAccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StockAccountKind::House => "house",
            StockAccountKind::Client => "client",
            StockAccountKind::Ccp => "ccp",
            StockAccountKind::Pledge => "pledge",
        }
    }
}

/// Status of a stock or cash account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAccountRecord {
    /// `B01234-01`: the owner's id, a dash, two digits.
    pub id: String,
    pub participant: String,
    pub kind: StockAccountKind,
    pub status: AccountStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CashAccountKind {
    Participant,
    /// The CCP's settlement account: the only balance allowed to go negative.
    CcpSettlement,
}

impl CashAccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CashAccountKind::Participant => "participant",
            CashAccountKind::CcpSettlement => "ccp_settlement",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CashAccountRecord {
    pub participant: String,
    pub currency: String,
    pub kind: CashAccountKind,
    pub designated_bank: String,
    pub status: AccountStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityStatus {
    Active,
    Suspended,
    Delisted,
}

impl SecurityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityStatus::Active => "active",
            SecurityStatus::Suspended => "suspended",
            SecurityStatus::Delisted => "delisted",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityRecord {
    pub isin: String,
    /// Five-digit local stock code (`00005`).
    pub stock_code: String,
    pub name: String,
    pub currency: String,
    pub board_lot: i64,
    pub status: SecurityStatus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningHoldingRecord {
    pub account: String,
    pub isin: String,
    /// Whole units (shares).
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningCashRecord {
    pub participant: String,
    pub currency: String,
    /// In major units as a decimal string (`"1000000.00"`), at most the currency's minor
    /// units of decimals.
    pub amount: Decimal,
}

/// One problem in a reference file. Validation collects all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedProblem {
    BadCurrencyCode {
        code: String,
    },
    BadMinorUnits {
        currency: String,
        minor_units: i64,
    },
    DuplicateCurrency {
        code: String,
    },
    BadParticipantId {
        id: String,
    },
    BadLogicalTerminal {
        participant: String,
        logical_terminal: String,
    },
    DuplicateParticipant {
        id: String,
    },
    DuplicateLogicalTerminal {
        logical_terminal: String,
    },
    EmptyName {
        what: &'static str,
        id: String,
    },
    BadAccountId {
        account: String,
    },
    AccountOwnerMismatch {
        account: String,
        participant: String,
    },
    DuplicateStockAccount {
        account: String,
    },
    DuplicateCashAccount {
        participant: String,
        currency: String,
    },
    EmptyDesignatedBank {
        participant: String,
        currency: String,
    },
    BadIsin {
        problem: String,
    },
    DuplicateSecurity {
        isin: String,
    },
    BadStockCode {
        isin: String,
        stock_code: String,
    },
    DuplicateStockCode {
        stock_code: String,
    },
    NonPositiveBoardLot {
        isin: String,
        board_lot: i64,
    },
    UnknownParticipant {
        referenced_by: String,
        participant: String,
    },
    UnknownCurrency {
        referenced_by: String,
        currency: String,
    },
    UnknownStockAccount {
        referenced_by: String,
        account: String,
    },
    UnknownSecurity {
        referenced_by: String,
        isin: String,
    },
    UnknownCashAccount {
        participant: String,
        currency: String,
    },
    NegativeOpening {
        what: String,
        value: String,
    },
    ZeroOpening {
        what: String,
    },
    DuplicateOpening {
        what: String,
    },
    TooManyDecimals {
        what: String,
        amount: String,
        minor_units: i64,
    },
    AmountOutOfRange {
        what: String,
        amount: String,
    },
}

impl fmt::Display for SeedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SeedProblem::*;
        match self {
            BadCurrencyCode { code } => {
                write!(f, "currency code `{code}` is not three upper-case letters")
            }
            BadMinorUnits {
                currency,
                minor_units,
            } => {
                write!(
                    f,
                    "currency {currency}: minor_units {minor_units} is out of range 0..=4"
                )
            }
            DuplicateCurrency { code } => write!(f, "currency {code} is listed twice"),
            BadParticipantId { id } => write!(
                f,
                "participant id `{id}` is not an upper-case letter followed by five upper-case letters or digits"
            ),
            BadLogicalTerminal {
                participant,
                logical_terminal,
            } => write!(
                f,
                "participant {participant}: logical terminal `{logical_terminal}` is not 6 letters then 6 letters or digits"
            ),
            DuplicateParticipant { id } => write!(f, "participant {id} is listed twice"),
            DuplicateLogicalTerminal { logical_terminal } => {
                write!(
                    f,
                    "logical terminal {logical_terminal} is used by two participants"
                )
            }
            EmptyName { what, id } => write!(f, "{what} {id}: name is empty"),
            BadAccountId { account } => {
                write!(
                    f,
                    "stock account id `{account}` is not a participant id, a dash and two digits"
                )
            }
            AccountOwnerMismatch {
                account,
                participant,
            } => write!(
                f,
                "stock account {account} is listed under participant {participant}, but its id names another"
            ),
            DuplicateStockAccount { account } => {
                write!(f, "stock account {account} is listed twice")
            }
            DuplicateCashAccount {
                participant,
                currency,
            } => {
                write!(f, "cash account {participant} {currency} is listed twice")
            }
            EmptyDesignatedBank {
                participant,
                currency,
            } => {
                write!(
                    f,
                    "cash account {participant} {currency}: designated bank is empty"
                )
            }
            BadIsin { problem } => f.write_str(problem),
            DuplicateSecurity { isin } => write!(f, "security {isin} is listed twice"),
            BadStockCode { isin, stock_code } => {
                write!(
                    f,
                    "security {isin}: stock code `{stock_code}` is not five digits"
                )
            }
            DuplicateStockCode { stock_code } => {
                write!(f, "stock code {stock_code} is used by two securities")
            }
            NonPositiveBoardLot { isin, board_lot } => {
                write!(
                    f,
                    "security {isin}: board lot {board_lot} is not greater than zero"
                )
            }
            UnknownParticipant {
                referenced_by,
                participant,
            } => {
                write!(
                    f,
                    "{referenced_by} refers to unknown participant {participant}"
                )
            }
            UnknownCurrency {
                referenced_by,
                currency,
            } => {
                write!(f, "{referenced_by} refers to unknown currency {currency}")
            }
            UnknownStockAccount {
                referenced_by,
                account,
            } => {
                write!(
                    f,
                    "{referenced_by} refers to unknown stock account {account}"
                )
            }
            UnknownSecurity {
                referenced_by,
                isin,
            } => {
                write!(f, "{referenced_by} refers to unknown security {isin}")
            }
            UnknownCashAccount {
                participant,
                currency,
            } => write!(
                f,
                "opening cash for {participant} {currency} has no cash account {participant} {currency}"
            ),
            NegativeOpening { what, value } => {
                write!(f, "{what}: opening balance {value} is negative")
            }
            ZeroOpening { what } => write!(f, "{what}: opening balance is zero (leave it out)"),
            DuplicateOpening { what } => write!(f, "{what}: opening balance is listed twice"),
            TooManyDecimals {
                what,
                amount,
                minor_units,
            } => write!(
                f,
                "{what}: amount {amount} has more decimals than the currency's {minor_units}"
            ),
            AmountOutOfRange { what, amount } => {
                write!(f, "{what}: amount {amount} is out of range")
            }
        }
    }
}

/// An opening in the database that differs from the file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningConflict {
    /// `holding B01234-01 HK0005000010` or `cash B01234 HKD`.
    pub what: String,
    pub present: i64,
    pub requested: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("read reference file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse reference file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("reference data has {} problem(s): {}", problems.len(), join(problems))]
    Invalid { problems: Vec<SeedProblem> },
    #[error(
        "reference data has {} opening(s) that differ from those already written (nothing changed): {}",
        conflicts.len(),
        conflicts.iter().map(|c| format!("{}: present {}, file {}", c.what, c.present, c.requested)).collect::<Vec<_>>().join("; ")
    )]
    OpeningConflicts { conflicts: Vec<OpeningConflict> },
    #[error("apply reference data (nothing changed): {0}")]
    Db(#[from] HostDbError),
}

fn join(problems: &[SeedProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rows of one reference table that a run inserted, updated or found unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChanges {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// Openings that a run wrote or found already present (with the same value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpeningChanges {
    pub written: u64,
    pub already_present: u64,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub currencies: TableChanges,
    pub participants: TableChanges,
    pub stock_accounts: TableChanges,
    pub cash_accounts: TableChanges,
    pub securities: TableChanges,
    pub opening_holdings: OpeningChanges,
    pub opening_cash: OpeningChanges,
}

impl SeedReport {
    /// True when the run found everything already in place.
    pub fn is_unchanged(&self) -> bool {
        let tables = [
            self.currencies,
            self.participants,
            self.stock_accounts,
            self.cash_accounts,
            self.securities,
        ];
        tables.iter().all(|t| t.inserted == 0 && t.updated == 0)
            && self.opening_holdings.written == 0
            && self.opening_cash.written == 0
    }
}

/// Reads, parses and validates a reference file.
pub fn load_file(path: &Path) -> Result<ReferenceData, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
        path: path.to_owned(),
        source,
    })?;
    let data = parse(&text).map_err(|message| SeedError::Parse {
        path: path.to_owned(),
        message,
    })?;
    let problems = validate(&data);
    if problems.is_empty() {
        Ok(data)
    } else {
        Err(SeedError::Invalid { problems })
    }
}

/// Parses reference data from TOML text, naming the key path of a problem.
pub fn parse(text: &str) -> Result<ReferenceData, String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| error.to_string())?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        format!("{path}: {}", error.into_inner().message().trim_end())
    })
}

fn participant_id_is_valid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 6
        && bytes[0].is_ascii_uppercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn logical_terminal_is_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 12
        && bytes[..6].iter().all(u8::is_ascii_uppercase)
        && bytes[6..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn stock_account_id_is_valid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 9
        && participant_id_is_valid(&id[..6])
        && bytes[6] == b'-'
        && bytes[7..].iter().all(u8::is_ascii_digit)
}

/// `amount` in minor units, or `None` when it has more decimals than `minor_units` or does
/// not fit an i64.
fn to_minor_units(amount: Decimal, minor_units: i64) -> Option<i64> {
    let minor_units = u32::try_from(minor_units).ok()?;
    let scaled = amount.checked_mul(Decimal::from(10_i64.checked_pow(minor_units)?))?;
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled.trunc()).ok()
}

/// Every problem in `data`, in file order; empty when it is good to apply.
pub fn validate(data: &ReferenceData) -> Vec<SeedProblem> {
    use SeedProblem::*;
    let mut problems = Vec::new();

    let mut currencies: HashMap<&str, i64> = HashMap::new();
    for currency in &data.currencies {
        let code = currency.code.as_str();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            problems.push(BadCurrencyCode {
                code: code.to_owned(),
            });
        }
        if !(0..=4).contains(&currency.minor_units) {
            problems.push(BadMinorUnits {
                currency: code.to_owned(),
                minor_units: currency.minor_units,
            });
        }
        if currency.name.trim().is_empty() {
            problems.push(EmptyName {
                what: "currency",
                id: code.to_owned(),
            });
        }
        if currencies.insert(code, currency.minor_units).is_some() {
            problems.push(DuplicateCurrency {
                code: code.to_owned(),
            });
        }
    }

    let mut participants: HashSet<&str> = HashSet::new();
    let mut logical_terminals: HashSet<&str> = HashSet::new();
    for participant in &data.participants {
        let id = participant.id.as_str();
        if !participant_id_is_valid(id) {
            problems.push(BadParticipantId { id: id.to_owned() });
        }
        if participant.name.trim().is_empty() {
            problems.push(EmptyName {
                what: "participant",
                id: id.to_owned(),
            });
        }
        if !logical_terminal_is_valid(&participant.logical_terminal) {
            problems.push(BadLogicalTerminal {
                participant: id.to_owned(),
                logical_terminal: participant.logical_terminal.clone(),
            });
        }
        if !participants.insert(id) {
            problems.push(DuplicateParticipant { id: id.to_owned() });
        }
        if !logical_terminals.insert(&participant.logical_terminal) {
            problems.push(DuplicateLogicalTerminal {
                logical_terminal: participant.logical_terminal.clone(),
            });
        }
    }

    let mut stock_accounts: HashSet<&str> = HashSet::new();
    for account in &data.stock_accounts {
        let id = account.id.as_str();
        if !stock_account_id_is_valid(id) {
            problems.push(BadAccountId {
                account: id.to_owned(),
            });
        } else if id[..6] != account.participant {
            problems.push(AccountOwnerMismatch {
                account: id.to_owned(),
                participant: account.participant.clone(),
            });
        }
        if !participants.contains(account.participant.as_str()) {
            problems.push(UnknownParticipant {
                referenced_by: format!("stock account {id}"),
                participant: account.participant.clone(),
            });
        }
        if !stock_accounts.insert(id) {
            problems.push(DuplicateStockAccount {
                account: id.to_owned(),
            });
        }
    }

    let mut cash_accounts: HashSet<(&str, &str)> = HashSet::new();
    for account in &data.cash_accounts {
        let (participant, currency) = (account.participant.as_str(), account.currency.as_str());
        let referenced_by = format!("cash account {participant} {currency}");
        if !participants.contains(participant) {
            problems.push(UnknownParticipant {
                referenced_by: referenced_by.clone(),
                participant: participant.to_owned(),
            });
        }
        if !currencies.contains_key(currency) {
            problems.push(UnknownCurrency {
                referenced_by,
                currency: currency.to_owned(),
            });
        }
        if account.designated_bank.trim().is_empty() {
            problems.push(EmptyDesignatedBank {
                participant: participant.to_owned(),
                currency: currency.to_owned(),
            });
        }
        if !cash_accounts.insert((participant, currency)) {
            problems.push(DuplicateCashAccount {
                participant: participant.to_owned(),
                currency: currency.to_owned(),
            });
        }
    }

    let mut securities: HashSet<&str> = HashSet::new();
    let mut stock_codes: HashSet<&str> = HashSet::new();
    for security in &data.securities {
        let isin = security.isin.as_str();
        if let Err(error) = Isin::parse(isin) {
            problems.push(BadIsin {
                problem: format!("security `{isin}`: {error}"),
            });
        }
        if security.stock_code.len() != 5
            || !security.stock_code.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push(BadStockCode {
                isin: isin.to_owned(),
                stock_code: security.stock_code.clone(),
            });
        }
        if security.name.trim().is_empty() {
            problems.push(EmptyName {
                what: "security",
                id: isin.to_owned(),
            });
        }
        if !currencies.contains_key(security.currency.as_str()) {
            problems.push(UnknownCurrency {
                referenced_by: format!("security {isin}"),
                currency: security.currency.clone(),
            });
        }
        if security.board_lot <= 0 || security.board_lot > i64::from(i32::MAX) {
            problems.push(NonPositiveBoardLot {
                isin: isin.to_owned(),
                board_lot: security.board_lot,
            });
        }
        if !securities.insert(isin) {
            problems.push(DuplicateSecurity {
                isin: isin.to_owned(),
            });
        }
        if !stock_codes.insert(&security.stock_code) {
            problems.push(DuplicateStockCode {
                stock_code: security.stock_code.clone(),
            });
        }
    }

    let mut opening_holdings: HashSet<(&str, &str)> = HashSet::new();
    for opening in &data.opening_holdings {
        let what = format!("opening holding {} {}", opening.account, opening.isin);
        if !stock_accounts.contains(opening.account.as_str()) {
            problems.push(UnknownStockAccount {
                referenced_by: what.clone(),
                account: opening.account.clone(),
            });
        }
        if !securities.contains(opening.isin.as_str()) {
            problems.push(UnknownSecurity {
                referenced_by: what.clone(),
                isin: opening.isin.clone(),
            });
        }
        if opening.quantity < 0 {
            problems.push(NegativeOpening {
                what: what.clone(),
                value: opening.quantity.to_string(),
            });
        } else if opening.quantity == 0 {
            problems.push(ZeroOpening { what: what.clone() });
        }
        if !opening_holdings.insert((&opening.account, &opening.isin)) {
            problems.push(DuplicateOpening { what });
        }
    }

    let mut opening_cash: HashSet<(&str, &str)> = HashSet::new();
    for opening in &data.opening_cash {
        let what = format!("opening cash {} {}", opening.participant, opening.currency);
        let key = (opening.participant.as_str(), opening.currency.as_str());
        if !cash_accounts.contains(&key) {
            problems.push(UnknownCashAccount {
                participant: opening.participant.clone(),
                currency: opening.currency.clone(),
            });
        }
        if opening.amount.is_sign_negative() && !opening.amount.is_zero() {
            problems.push(NegativeOpening {
                what: what.clone(),
                value: opening.amount.to_string(),
            });
        } else if opening.amount.is_zero() {
            problems.push(ZeroOpening { what: what.clone() });
        } else if let Some(&minor_units) = currencies.get(opening.currency.as_str())
            && (0..=4).contains(&minor_units)
        {
            let rescaled = opening.amount.normalize();
            if rescaled.scale() > minor_units.unsigned_abs() as u32 {
                problems.push(TooManyDecimals {
                    what: what.clone(),
                    amount: opening.amount.to_string(),
                    minor_units,
                });
            } else if to_minor_units(opening.amount, minor_units).is_none() {
                problems.push(AmountOutOfRange {
                    what: what.clone(),
                    amount: opening.amount.to_string(),
                });
            }
        }
        if !opening_cash.insert(key) {
            problems.push(DuplicateOpening { what });
        }
    }

    problems
}

/// Upserts one reference row; `None` when the row was already identical.
async fn upsert(
    transaction: &deadpool_postgres::Transaction<'_>,
    context: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    changes: &mut TableChanges,
) -> Result<(), HostDbError> {
    let row = transaction
        .query_opt(sql, params)
        .await
        .map_err(|error| HostDbError::from_postgres(context, error))?;
    match row {
        None => changes.unchanged += 1,
        Some(row) if row.get::<_, bool>(0) => changes.inserted += 1,
        Some(_) => changes.updated += 1,
    }
    Ok(())
}

/// Validates `data` and writes it in one transaction (see the module guarantees).
pub async fn apply(pool: &Pool, data: &ReferenceData) -> Result<SeedReport, SeedError> {
    let problems = validate(data);
    if !problems.is_empty() {
        return Err(SeedError::Invalid { problems });
    }
    let db = |context: &'static str| move |error| HostDbError::from_postgres(context, error);
    let mut client = super::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(db("begin seed transaction"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SEED_LOCK_KEY])
        .await
        .map_err(db("take the seed advisory lock"))?;

    let mut report = SeedReport::default();
    // `xmax = 0` is true for a freshly inserted row, false for an updated one; the WHERE on
    // DO UPDATE makes an identical row return nothing.
    for currency in &data.currencies {
        let minor_units = i16::try_from(currency.minor_units).unwrap_or(i16::MAX);
        upsert(
            &transaction,
            "upsert currency",
            "INSERT INTO currencies (currency_code, name, minor_units) VALUES ($1, $2, $3)
             ON CONFLICT (currency_code) DO UPDATE SET name = excluded.name, minor_units = excluded.minor_units
             WHERE (currencies.name, currencies.minor_units) IS DISTINCT FROM (excluded.name, excluded.minor_units)
             RETURNING xmax = 0",
            &[&currency.code, &currency.name, &minor_units],
            &mut report.currencies,
        )
        .await?;
    }
    for participant in &data.participants {
        upsert(
            &transaction,
            "upsert participant",
            "INSERT INTO participants (participant_id, name, participant_type, status, logical_terminal)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (participant_id) DO UPDATE SET name = excluded.name,
                 participant_type = excluded.participant_type, status = excluded.status,
                 logical_terminal = excluded.logical_terminal
             WHERE (participants.name, participants.participant_type, participants.status, participants.logical_terminal)
                 IS DISTINCT FROM (excluded.name, excluded.participant_type, excluded.status, excluded.logical_terminal)
             RETURNING xmax = 0",
            &[
                &participant.id,
                &participant.name,
                &participant.participant_type.as_str(),
                &participant.status.as_str(),
                &participant.logical_terminal,
            ],
            &mut report.participants,
        )
        .await?;
    }
    for account in &data.stock_accounts {
        upsert(
            &transaction,
            "upsert stock account",
            "INSERT INTO stock_accounts (account_id, participant_id, account_kind, status) VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id) DO UPDATE SET account_kind = excluded.account_kind, status = excluded.status
             WHERE (stock_accounts.account_kind, stock_accounts.status) IS DISTINCT FROM (excluded.account_kind, excluded.status)
             RETURNING xmax = 0",
            &[&account.id, &account.participant, &account.kind.as_str(), &account.status.as_str()],
            &mut report.stock_accounts,
        )
        .await?;
    }
    for account in &data.cash_accounts {
        upsert(
            &transaction,
            "upsert cash account",
            "INSERT INTO cash_accounts (participant_id, currency_code, account_kind, designated_bank, status)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (participant_id, currency_code) DO UPDATE SET account_kind = excluded.account_kind,
                 designated_bank = excluded.designated_bank, status = excluded.status
             WHERE (cash_accounts.account_kind, cash_accounts.designated_bank, cash_accounts.status)
                 IS DISTINCT FROM (excluded.account_kind, excluded.designated_bank, excluded.status)
             RETURNING xmax = 0",
            &[
                &account.participant,
                &account.currency,
                &account.kind.as_str(),
                &account.designated_bank,
                &account.status.as_str(),
            ],
            &mut report.cash_accounts,
        )
        .await?;
    }
    for security in &data.securities {
        // Validated to lie in 1..=i32::MAX.
        let board_lot = i32::try_from(security.board_lot).unwrap_or(i32::MAX);
        upsert(
            &transaction,
            "upsert security",
            "INSERT INTO securities (isin, stock_code, name, currency_code, board_lot, status)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (isin) DO UPDATE SET stock_code = excluded.stock_code, name = excluded.name,
                 currency_code = excluded.currency_code, board_lot = excluded.board_lot, status = excluded.status
             WHERE (securities.stock_code, securities.name, securities.currency_code, securities.board_lot, securities.status)
                 IS DISTINCT FROM (excluded.stock_code, excluded.name, excluded.currency_code, excluded.board_lot, excluded.status)
             RETURNING xmax = 0",
            &[
                &security.isin,
                &security.stock_code,
                &security.name,
                &security.currency,
                &board_lot,
                &security.status.as_str(),
            ],
            &mut report.securities,
        )
        .await?;
    }

    let mut conflicts = Vec::new();
    let holding_movements = plan_opening_holdings(
        &transaction,
        data,
        &mut report.opening_holdings,
        &mut conflicts,
    )
    .await?;
    let cash_movements =
        plan_opening_cash(&transaction, data, &mut report.opening_cash, &mut conflicts).await?;
    if !conflicts.is_empty() {
        // Dropping the transaction rolls it back: nothing was written.
        return Err(SeedError::OpeningConflicts { conflicts });
    }

    // Openings go to their month's partition, not the DEFAULT one (which would then block
    // creating that month later).
    for table in ["holding_movements", "cash_movements"] {
        transaction
            .execute(
                "SELECT ccass_create_monthly_partitions($1::text::regclass, $2, 1)",
                &[&table, &data.opening_date],
            )
            .await
            .map_err(db("create the opening month's journal partitions"))?;
    }
    append_holding_movements(&transaction, &holding_movements).await?;
    for movement in &holding_movements {
        transaction
            .execute(
                "INSERT INTO holdings (account_id, isin, quantity) VALUES ($1, $2, $3)
                 ON CONFLICT (account_id, isin) DO UPDATE
                 SET quantity = holdings.quantity + excluded.quantity, updated_at = now()",
                &[&movement.to_account_id, &movement.isin, &movement.quantity],
            )
            .await
            .map_err(db("add opening holding to holdings"))?;
    }
    append_cash_movements(&transaction, &cash_movements).await?;
    for movement in &cash_movements {
        transaction
            .execute(
                "INSERT INTO cash_balances (participant_id, currency_code, account_kind, amount_minor)
                 SELECT participant_id, currency_code, account_kind, $3 FROM cash_accounts
                 WHERE participant_id = $1 AND currency_code = $2
                 ON CONFLICT (participant_id, currency_code) DO UPDATE
                 SET amount_minor = cash_balances.amount_minor + excluded.amount_minor, updated_at = now()",
                &[&movement.to_participant_id, &movement.currency_code, &movement.amount_minor],
            )
            .await
            .map_err(db("add opening cash to cash_balances"))?;
    }
    transaction
        .commit()
        .await
        .map_err(db("commit seed transaction"))?;
    Ok(report)
}

/// Loads, validates and applies a reference file: what `ccass seed --file F` does.
pub async fn apply_file(pool: &Pool, path: &Path) -> Result<SeedReport, SeedError> {
    let data = load_file(path)?;
    apply(pool, &data).await
}

/// Opening journal rows still to write; counts those already present, collects conflicts.
async fn plan_opening_holdings(
    transaction: &deadpool_postgres::Transaction<'_>,
    data: &ReferenceData,
    changes: &mut OpeningChanges,
    conflicts: &mut Vec<OpeningConflict>,
) -> Result<Vec<HoldingMovement>, HostDbError> {
    // One scan of the (unindexed) journal for all openings.
    let rows = transaction
        .query(
            "SELECT to_account_id, isin, sum(quantity)::bigint FROM holding_movements
             WHERE movement_kind = 'opening' GROUP BY to_account_id, isin",
            &[],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read opening holdings", error))?;
    let present: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    let mut movements = Vec::new();
    for opening in &data.opening_holdings {
        match present.get(&(opening.account.clone(), opening.isin.clone())) {
            Some(&quantity) if quantity == opening.quantity => changes.already_present += 1,
            Some(&quantity) => conflicts.push(OpeningConflict {
                what: format!("holding {} {}", opening.account, opening.isin),
                present: quantity,
                requested: opening.quantity,
            }),
            None => {
                changes.written += 1;
                movements.push(HoldingMovement {
                    settlement_date: data.opening_date,
                    settlement_run_id: None,
                    from_account_id: None,
                    to_account_id: Some(opening.account.clone()),
                    isin: opening.isin.clone(),
                    quantity: opening.quantity,
                    kind: HoldingMovementKind::Opening,
                    reference: OPENING_REFERENCE.to_owned(),
                });
            }
        }
    }
    Ok(movements)
}

async fn plan_opening_cash(
    transaction: &deadpool_postgres::Transaction<'_>,
    data: &ReferenceData,
    changes: &mut OpeningChanges,
    conflicts: &mut Vec<OpeningConflict>,
) -> Result<Vec<CashMovement>, HostDbError> {
    let rows = transaction
        .query(
            "SELECT to_participant_id, currency_code, sum(amount_minor)::bigint FROM cash_movements
             WHERE movement_kind = 'opening' GROUP BY to_participant_id, currency_code",
            &[],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read opening cash", error))?;
    let present: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    let minor_units: HashMap<&str, i64> = data
        .currencies
        .iter()
        .map(|c| (c.code.as_str(), c.minor_units))
        .collect();
    let mut movements = Vec::new();
    for opening in &data.opening_cash {
        // Validated: the currency is listed and the amount converts exactly.
        let amount_minor = minor_units
            .get(opening.currency.as_str())
            .and_then(|&units| to_minor_units(opening.amount, units))
            .unwrap_or_default();
        match present.get(&(opening.participant.clone(), opening.currency.clone())) {
            Some(&present_minor) if present_minor == amount_minor => changes.already_present += 1,
            Some(&present_minor) => conflicts.push(OpeningConflict {
                what: format!("cash {} {}", opening.participant, opening.currency),
                present: present_minor,
                requested: amount_minor,
            }),
            None => {
                changes.written += 1;
                movements.push(CashMovement {
                    settlement_date: data.opening_date,
                    settlement_run_id: None,
                    from_participant_id: None,
                    to_participant_id: Some(opening.participant.clone()),
                    currency_code: opening.currency.clone(),
                    amount_minor,
                    kind: CashMovementKind::Opening,
                    reference: OPENING_REFERENCE.to_owned(),
                });
            }
        }
    }
    Ok(movements)
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = [
            ("currencies", self.currencies),
            ("participants", self.participants),
            ("stock accounts", self.stock_accounts),
            ("cash accounts", self.cash_accounts),
            ("securities", self.securities),
        ];
        for (name, changes) in tables {
            writeln!(
                f,
                "{name}: {} inserted, {} updated, {} unchanged",
                changes.inserted, changes.updated, changes.unchanged
            )?;
        }
        for (name, changes) in [
            ("opening holdings", self.opening_holdings),
            ("opening cash", self.opening_cash),
        ] {
            writeln!(
                f,
                "{name}: {} written, {} already present",
                changes.written, changes.already_present
            )?;
        }
        if self.is_unchanged() {
            write!(f, "seed: nothing new")
        } else {
            write!(f, "seed: applied")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../config/reference/demo.toml");

    fn demo() -> ReferenceData {
        parse(DEMO).unwrap()
    }

    /// Problems after `edit` is applied to the demo data.
    fn problems_after(edit: impl FnOnce(&mut ReferenceData)) -> Vec<SeedProblem> {
        let mut data = demo();
        edit(&mut data);
        validate(&data)
    }

    #[test]
    fn the_demo_file_is_valid() {
        // Goal: the shipped demo data passes every check, and covers what the brief lists.
        let data = demo();
        assert_eq!(validate(&data), vec![]);
        let ids: Vec<&str> = data.participants.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["HKSCC0", "B01234", "B05678", "C00123", "I00456"]);
        assert!(data.securities.len() >= 10);
        assert_eq!(data.opening_date, time::macros::date!(2026 - 11 - 23));
    }

    #[test]
    fn a_wrong_isin_check_digit_is_named() {
        let problems = problems_after(|d| d.securities[0].isin = "GB0005405287".to_owned());
        assert!(problems.iter().any(|p| matches!(p, SeedProblem::BadIsin { problem } if problem.contains("GB0005405287"))), "{problems:?}");
        // The openings of the old ISIN now refer to an unknown security: reported too.
        assert!(problems.iter().any(
            |p| matches!(p, SeedProblem::UnknownSecurity { isin, .. } if isin == "GB0005405286")
        ));
    }

    #[test]
    fn duplicates_are_named() {
        let problems = problems_after(|d| {
            let participant = d.participants[1].clone();
            d.participants.push(participant);
            let account = d.stock_accounts[1].clone();
            d.stock_accounts.push(account);
            let mut security = d.securities[1].clone();
            security.isin = "US0378331005".to_owned();
            d.securities.push(security);
        });
        assert!(problems.contains(&SeedProblem::DuplicateParticipant {
            id: "B01234".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::DuplicateLogicalTerminal {
            logical_terminal: "HBSLHKHHAXXX".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::DuplicateStockAccount {
            account: "B01234-01".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::DuplicateStockCode {
            stock_code: "00002".to_owned()
        }));
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn negative_and_zero_openings_are_refused() {
        let problems = problems_after(|d| {
            d.opening_holdings[0].quantity = -1;
            d.opening_holdings[1].quantity = 0;
            d.opening_cash[0].amount = Decimal::new(-100, 2);
        });
        assert_eq!(
            problems,
            vec![
                SeedProblem::NegativeOpening {
                    what: "opening holding B01234-01 GB0005405286".to_owned(),
                    value: "-1".to_owned()
                },
                SeedProblem::ZeroOpening {
                    what: "opening holding B01234-02 KYG875721634".to_owned()
                },
                SeedProblem::NegativeOpening {
                    what: "opening cash B01234 HKD".to_owned(),
                    value: "-1.00".to_owned()
                },
            ]
        );
    }

    #[test]
    fn unknown_references_are_named() {
        let problems = problems_after(|d| {
            d.stock_accounts[1].participant = "B09999".to_owned();
            d.securities[0].currency = "EUR".to_owned();
            d.opening_holdings[0].account = "B01234-09".to_owned();
            d.opening_cash[0].currency = "JPY".to_owned();
        });
        assert!(problems.contains(&SeedProblem::UnknownParticipant {
            referenced_by: "stock account B01234-01".to_owned(),
            participant: "B09999".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::AccountOwnerMismatch {
            account: "B01234-01".to_owned(),
            participant: "B09999".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::UnknownCurrency {
            referenced_by: "security GB0005405286".to_owned(),
            currency: "EUR".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::UnknownStockAccount {
            referenced_by: "opening holding B01234-09 GB0005405286".to_owned(),
            account: "B01234-09".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::UnknownCashAccount {
            participant: "B01234".to_owned(),
            currency: "JPY".to_owned()
        }));
    }

    #[test]
    fn bad_formats_and_values_are_named() {
        let problems = problems_after(|d| {
            d.participants[1].id = "b1234".to_owned();
            d.participants[2].logical_terminal = "SHORT".to_owned();
            d.stock_accounts[3].id = "B05678-1".to_owned();
            d.securities[1].board_lot = 0;
            d.securities[2].stock_code = "3".to_owned();
            d.currencies[0].minor_units = 7;
            d.opening_cash[1].amount = Decimal::new(1005, 3);
        });
        assert!(problems.contains(&SeedProblem::BadParticipantId {
            id: "b1234".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::BadLogicalTerminal {
            participant: "B05678".to_owned(),
            logical_terminal: "SHORT".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::BadAccountId {
            account: "B05678-1".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::NonPositiveBoardLot {
            isin: "HK0002007356".to_owned(),
            board_lot: 0
        }));
        assert!(problems.contains(&SeedProblem::BadStockCode {
            isin: "HK0003000038".to_owned(),
            stock_code: "3".to_owned()
        }));
        assert!(problems.contains(&SeedProblem::BadMinorUnits {
            currency: "HKD".to_owned(),
            minor_units: 7
        }));
        assert!(problems.contains(&SeedProblem::TooManyDecimals {
            what: "opening cash B01234 USD".to_owned(),
            amount: "1.005".to_owned(),
            minor_units: 2
        }));
    }

    #[test]
    fn parse_errors_name_the_key() {
        let text = DEMO.replacen("type = \"ccp\"", "type = \"bank\"", 1);
        let message = parse(&text).unwrap_err();
        assert!(message.starts_with("participant[0].type"), "{message}");
        let message = parse("opening_date = \"yesterday\"\n").unwrap_err();
        assert!(message.starts_with("opening_date"), "{message}");
    }

    #[test]
    fn minor_units_conversion_is_exact() {
        assert_eq!(
            to_minor_units(Decimal::new(150_000_050, 2), 2),
            Some(150_000_050)
        );
        assert_eq!(to_minor_units(Decimal::new(12, 0), 2), Some(1200));
        assert_eq!(to_minor_units(Decimal::new(1005, 3), 2), None);
        assert_eq!(to_minor_units(Decimal::MAX, 2), None);
    }
}
