//! Typed field values: dates, date-times, exact decimals (`15d` with decimal comma and `N`
//! sign), ISIN with check digit, BIC, quantities, amounts, party identifiers, 23G function and
//! subfunction, 28E paging.
//!
//! Every parser returns `None` (or a typed error) on bad input; none of them panics.

use rust_decimal::Decimal;
use time::{Date, Month, PrimitiveDateTime, Time};

use super::text::{Field, parse_generic};

/// `YYYYMMDD` as a calendar date.
pub fn parse_date(value: &str) -> Option<Date> {
    let bytes = value.as_bytes();
    if bytes.len() != 8 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year = digits(&bytes[..4]) as i32;
    let month = Month::try_from(digits(&bytes[4..6]) as u8).ok()?;
    let day = digits(&bytes[6..8]) as u8;
    Date::from_calendar_date(year, month, day).ok()
}

/// `HHMMSS` as a time of day.
pub fn parse_time(value: &str) -> Option<Time> {
    let bytes = value.as_bytes();
    if bytes.len() != 6 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Time::from_hms(
        digits(&bytes[..2]) as u8,
        digits(&bytes[2..4]) as u8,
        digits(&bytes[4..6]) as u8,
    )
    .ok()
}

/// `YYYYMMDDHHMMSS` as a date-time.
pub fn parse_date_time(value: &str) -> Option<PrimitiveDateTime> {
    if value.len() != 14 {
        return None;
    }
    let date = parse_date(value.get(..8)?)?;
    let time = parse_time(value.get(8..)?)?;
    Some(PrimitiveDateTime::new(date, time))
}

fn digits(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0, |total, byte| total * 10 + u32::from(byte - b'0'))
}

/// Most characters of a `15d` decimal, comma included.
pub const DECIMAL_LENGTH_MAX_CHARS: usize = 15;

/// A `15d` decimal: digits with one mandatory decimal comma, at least one digit before it.
pub fn parse_decimal(value: &str) -> Option<Decimal> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > DECIMAL_LENGTH_MAX_CHARS {
        return None;
    }
    let comma = bytes.iter().position(|&byte| byte == b',')?;
    if comma == 0 {
        return None;
    }
    let mut mantissa: i64 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if index == comma {
            continue;
        }
        if !byte.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa * 10 + i64::from(byte - b'0');
    }
    let scale = (bytes.len() - comma - 1) as u32;
    Some(Decimal::new(mantissa, scale))
}

/// `[N]15d`: a decimal with an optional `N` (negative) sign.
pub fn parse_signed_decimal(value: &str) -> Option<Decimal> {
    match value.strip_prefix('N') {
        Some(rest) => parse_decimal(rest).map(|decimal| -decimal),
        None => parse_decimal(value),
    }
}

/// Write a decimal in SWIFT form: decimal comma, always present, `N` for negatives.
pub fn format_decimal(value: Decimal, out: &mut String) {
    use std::fmt::Write;
    let normalised = value.normalize();
    if normalised.is_sign_negative() && !normalised.is_zero() {
        out.push('N');
    }
    let text = normalised.abs().to_string();
    match text.split_once('.') {
        Some((integer, fraction)) => {
            let _ = write!(out, "{integer},{fraction}");
        }
        None => {
            let _ = write!(out, "{text},");
        }
    }
}

// ISINs are shared with reference data (`hostdb::seed`), so they live in `crate::ids`.
pub use crate::ids::{Isin, IsinError, isin_check_digit};

/// Whether `value` is a BIC: `4!a2!a2!c[3!c]`.
pub fn is_bic(value: &str) -> bool {
    let bytes = value.as_bytes();
    (bytes.len() == 8 || bytes.len() == 11)
        && bytes[..6].iter().all(u8::is_ascii_uppercase)
        && bytes[6..]
            .iter()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
}

/// Kind of a quantity (`36B`, `93B`): `UNIT`, `FAMT`, `AMOR`...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityKind {
    /// Number of units.
    Unit,
    /// Face amount.
    FaceAmount,
    /// Amortised value.
    AmortisedValue,
}

impl QuantityKind {
    /// The 4-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantityKind::Unit => "UNIT",
            QuantityKind::FaceAmount => "FAMT",
            QuantityKind::AmortisedValue => "AMOR",
        }
    }

    fn parse(code: &str) -> Option<QuantityKind> {
        match code {
            "UNIT" => Some(QuantityKind::Unit),
            "FAMT" => Some(QuantityKind::FaceAmount),
            "AMOR" => Some(QuantityKind::AmortisedValue),
            _ => None,
        }
    }
}

/// A quantity of financial instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    /// Units, face amount or amortised value.
    pub kind: QuantityKind,
    /// Exact value (negative with the `N` sign, allowed in `93B` balances).
    pub value: Decimal,
}

/// `4!c/[N]15d` after the qualifier: `UNIT/1000,00`, `FAMT/N990692,`.
pub fn parse_quantity(value: &str) -> Option<Quantity> {
    let (kind, number) = value.split_once('/')?;
    Some(Quantity {
        kind: QuantityKind::parse(kind)?,
        value: parse_signed_decimal(number)?,
    })
}

/// An amount of money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    /// ISO 4217 currency, 3 letters.
    pub currency: [u8; 3],
    /// Exact value, negative with the `N` sign.
    pub value: Decimal,
}

impl Amount {
    /// The currency as text.
    pub fn currency(&self) -> &str {
        std::str::from_utf8(&self.currency).unwrap_or("")
    }
}

/// `[N]3!a15d`: `EUR123456,50`, `NUSD1,`.
pub fn parse_amount(value: &str) -> Option<Amount> {
    let (negative, rest) = match value.strip_prefix('N') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let currency = rest.get(..3)?;
    if !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    let number = parse_decimal(rest.get(3..)?)?;
    let mut code = [0u8; 3];
    code.copy_from_slice(currency.as_bytes());
    Some(Amount {
        currency: code,
        value: if negative { -number } else { number },
    })
}

/// A party identifier (`95a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartyId<'a> {
    /// `95P`: a BIC.
    Bic(&'a str),
    /// `95Q`: name and address (lines kept verbatim).
    NameAndAddress(&'a str),
    /// `95R`: a proprietary code under a data source scheme (e.g. a CCASS participant id).
    Proprietary {
        /// Data source scheme.
        scheme: &'a str,
        /// Identifier.
        id: &'a str,
    },
    /// `95C`: a country code.
    Country(&'a str),
    /// `95S`: alternate identification (scheme and id kept together).
    Alternate(&'a str),
}

/// The party of a `95a` field, by option.
pub fn parse_party<'a>(field: &Field<'a>) -> Option<PartyId<'a>> {
    let generic = parse_generic(field.value)?;
    match field.option() {
        "P" if is_bic(generic.value) => Some(PartyId::Bic(generic.value)),
        "Q" => Some(PartyId::NameAndAddress(generic.value)),
        "R" => Some(PartyId::Proprietary {
            scheme: generic.scheme?,
            id: generic.value,
        }),
        "C" => Some(PartyId::Country(generic.value)),
        "S" => Some(PartyId::Alternate(generic.value)),
        _ => None,
    }
}

/// Function of the message (`23G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionCode {
    /// New message.
    Newm,
    /// Cancellation.
    Canc,
    /// Status of an instruction (MT548).
    Inst,
    /// Status of a cancellation request (MT548).
    Cast,
    /// Replacement.
    Repl,
    /// Repeat.
    Repe,
    /// Reminder.
    Rmdr,
    /// Preliminary advice (MT548).
    Prec,
}

/// Subfunction of `23G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subfunction {
    /// Copy duplicate.
    Codu,
    /// Copy.
    Copy,
    /// Duplicate.
    Dupl,
    /// Recovery.
    Reco,
}

/// A parsed `23G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Function {
    /// Function.
    pub code: FunctionCode,
    /// Subfunction, when present.
    pub subfunction: Option<Subfunction>,
}

impl FunctionCode {
    /// The 4-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionCode::Newm => "NEWM",
            FunctionCode::Canc => "CANC",
            FunctionCode::Inst => "INST",
            FunctionCode::Cast => "CAST",
            FunctionCode::Repl => "REPL",
            FunctionCode::Repe => "REPE",
            FunctionCode::Rmdr => "RMDR",
            FunctionCode::Prec => "PREC",
        }
    }
}

impl Subfunction {
    /// The 4-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Subfunction::Codu => "CODU",
            Subfunction::Copy => "COPY",
            Subfunction::Dupl => "DUPL",
            Subfunction::Reco => "RECO",
        }
    }
}

/// `4!c[/4!c]`.
pub fn parse_function(value: &str) -> Option<Function> {
    let (function, subfunction) = match value.split_once('/') {
        Some((function, subfunction)) => (function, Some(subfunction)),
        None => (value, None),
    };
    let code = match function {
        "NEWM" => FunctionCode::Newm,
        "CANC" => FunctionCode::Canc,
        "INST" => FunctionCode::Inst,
        "CAST" => FunctionCode::Cast,
        "REPL" => FunctionCode::Repl,
        "REPE" => FunctionCode::Repe,
        "RMDR" => FunctionCode::Rmdr,
        "PREC" => FunctionCode::Prec,
        _ => return None,
    };
    let subfunction = match subfunction {
        None => None,
        Some("CODU") => Some(Subfunction::Codu),
        Some("COPY") => Some(Subfunction::Copy),
        Some("DUPL") => Some(Subfunction::Dupl),
        Some("RECO") => Some(Subfunction::Reco),
        Some(_) => return None,
    };
    Some(Function { code, subfunction })
}

/// Continuation indicator of `28E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Continuation {
    /// The only page.
    Only,
    /// More pages follow.
    More,
    /// The last page.
    Last,
}

/// `28E`: page number and continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    /// Page number (1-based).
    pub number: u32,
    /// Whether more pages follow.
    pub continuation: Continuation,
}

/// `5n/4!c`: `00001/ONLY`.
pub fn parse_page(value: &str) -> Option<Page> {
    let (number, indicator) = value.split_once('/')?;
    if number.is_empty() || number.len() > 5 || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let continuation = match indicator {
        "ONLY" => Continuation::Only,
        "MORE" => Continuation::More,
        "LAST" => Continuation::Last,
        _ => return None,
    };
    Some(Page {
        number: number.parse().ok()?,
        continuation,
    })
}

impl Continuation {
    /// The 4-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Continuation::Only => "ONLY",
            Continuation::More => "MORE",
            Continuation::Last => "LAST",
        }
    }
}

/// A date (`98A`) or a date-time (`98C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateOrDateTime {
    /// `98A`.
    Date(Date),
    /// `98C`.
    DateTime(PrimitiveDateTime),
}

impl DateOrDateTime {
    /// The calendar date.
    pub fn date(&self) -> Date {
        match self {
            DateOrDateTime::Date(date) => *date,
            DateOrDateTime::DateTime(date_time) => date_time.date(),
        }
    }
}

/// A `98A` or `98C` field's value.
pub fn parse_date_field(field: &Field<'_>) -> Option<DateOrDateTime> {
    let generic = parse_generic(field.value)?;
    match field.option() {
        "A" => parse_date(generic.value).map(DateOrDateTime::Date),
        "C" => parse_date_time(generic.value).map(DateOrDateTime::DateTime),
        _ => None,
    }
}

/// Whether every byte is in the SWIFT X character set (line breaks allowed).
pub fn is_x_charset(value: &str) -> bool {
    first_non_x(value).is_none()
}

/// Offset of the first byte outside the X character set.
pub fn first_non_x(value: &str) -> Option<usize> {
    // Chunks without a branch per byte; the exact position only when a chunk fails.
    const CHUNK_BYTES: usize = 16;
    let bytes = value.as_bytes();
    let mut chunks = bytes.chunks_exact(CHUNK_BYTES);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let all_x = chunk.iter().fold(true, |all, &byte| all & is_x_byte(byte));
        if !all_x {
            return chunk
                .iter()
                .position(|&byte| !is_x_byte(byte))
                .map(|index| offset + index);
        }
        offset += CHUNK_BYTES;
    }
    chunks
        .remainder()
        .iter()
        .position(|&byte| !is_x_byte(byte))
        .map(|index| offset + index)
}

fn is_x_byte(byte: u8) -> bool {
    X_CHARSET[usize::from(byte)]
}

/// Lookup table of the SWIFT X character set (plus CR and LF).
static X_CHARSET: [bool; 256] = {
    let mut table = [false; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        table[index] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'/' | b'-'
                    | b'?'
                    | b':'
                    | b'('
                    | b')'
                    | b'.'
                    | b','
                    | b'\''
                    | b'+'
                    | b' '
                    | b'\r'
                    | b'\n'
            );
        index += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_use_a_comma_and_an_n_sign() {
        assert_eq!(parse_decimal("1,"), Some(Decimal::ONE));
        assert_eq!(parse_decimal("0,5"), Some(Decimal::new(5, 1)));
        assert_eq!(
            parse_decimal("123456,78"),
            Some(Decimal::new(12_345_678, 2))
        );
        assert_eq!(
            parse_signed_decimal("N990692,"),
            Some(Decimal::from(-990_692))
        );
        for bad in [
            "",
            ",5",
            "1.5",
            "15",
            "1,2,3",
            "1234567890123456,",
            "N",
            "-1,",
        ] {
            assert_eq!(parse_signed_decimal(bad), None, "{bad}");
        }
        for value in [
            Decimal::ONE,
            Decimal::new(-5, 1),
            Decimal::new(31_000_000, 0),
        ] {
            let mut text = String::new();
            format_decimal(value, &mut text);
            assert_eq!(parse_signed_decimal(&text), Some(value), "{text}");
        }
    }

    #[test]
    fn isins_have_a_luhn_check_digit() {
        for valid in [
            "US0378331005",
            "DE0001141828",
            "GB0007192106",
            "CH0011075394",
        ] {
            assert!(Isin::parse(valid).is_ok(), "{valid}");
        }
        assert_eq!(
            Isin::parse("US0378331004"),
            Err(IsinError::CheckDigit {
                expected: 5,
                found: 4
            })
        );
        assert_eq!(Isin::parse("A1234567890"), Err(IsinError::Format));
        assert!(
            !Isin::parse_unchecked("US0378331004")
                .map_or(true, |isin| isin.has_valid_check_digit())
        );
    }

    #[test]
    fn dates_must_exist_on_the_calendar() {
        assert!(parse_date("20240229").is_some());
        assert!(parse_date("20230229").is_none());
        assert!(parse_date("20150230").is_none());
        assert!(parse_date("2024022").is_none());
        assert!(parse_date_time("20211216144402").is_some());
        assert!(parse_date_time("20211216246000").is_none());
    }

    #[test]
    fn codes_parse_into_their_parts() {
        assert!(is_bic("CCASHKHH") && is_bic("CCASHKHHXXX") && !is_bic("FOOEITM0X"));
        let function = parse_function("NEWM/COPY");
        assert_eq!(
            function,
            Some(Function {
                code: FunctionCode::Newm,
                subfunction: Some(Subfunction::Copy)
            })
        );
        assert_eq!(
            parse_page("00001/ONLY"),
            Some(Page {
                number: 1,
                continuation: Continuation::Only
            })
        );
        assert_eq!(parse_page("REAS/PAGE/00001/ONLY"), None);
        let amount = parse_amount("NEUR1234,5");
        assert_eq!(
            amount.map(|amount| amount.value),
            Some(Decimal::new(-12_345, 1))
        );
        assert!(
            is_x_charset("ABC abc 0-9/?:().,'+\r\n") && !is_x_charset("a=b") && !is_x_charset("{")
        );
    }
}
