//! Validation: network-style rules per message type plus a few business rules.
//!
//! One walk over the sequence tree against the message type's schema ([`super::schema`]), one
//! walk over the fields for formats, the X character set, dates and ISINs. Every problem is
//! collected; nothing stops early. No allocation happens unless a problem is found.

use super::error::{Code, Disposition, NakCode, Problem, ReasonCode, Severity, fill_positions};
use super::fields::{
    Isin, IsinError, first_non_x, is_bic, parse_amount, parse_date, parse_date_time,
    parse_function, parse_page, parse_quantity, parse_signed_decimal,
};
use super::parse::{Message, ParseOptions, parse_with_problems};
use super::schema::{self, FieldSpec, MANY, SeqSpec};
use super::text::{Field, Seq, Text, parse_generic, same};
use super::{PROBLEMS_MAX, ReasonCode as Reason, TEXT_LENGTH_MAX_CHARS};

/// Most field specs a sequence spec may have (the counters live on the stack).
const SPECS_PER_SEQUENCE_MAX: usize = 32;

/// Parse and validate in one go.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The (best-effort) message.
    pub message: Message<'a>,
    /// Every problem, syntax and validation, errors and warnings, sorted by position.
    pub problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    /// No error-severity problem.
    pub fn is_valid(&self) -> bool {
        !self
            .problems
            .iter()
            .any(|problem| problem.severity() == Severity::Error)
    }

    /// The message if valid, else every problem.
    pub fn into_result(self) -> Result<Message<'a>, super::Rejection> {
        if self.is_valid() {
            Ok(self.message)
        } else {
            Err(super::Rejection {
                problems: self.problems,
            })
        }
    }
}

/// Parse, then validate (when block 4 could be tokenised), collecting every problem.
pub fn check(input: &str, options: ParseOptions) -> Report<'_> {
    let (message, mut problems) = parse_with_problems(input, options);
    let envelope_failed = problems.iter().any(|problem| {
        matches!(
            problem.code,
            Code::InputTooLong | Code::TextMissing | Code::BlockOrder
        )
    });
    if !envelope_failed {
        problems.extend(validate(&message));
        problems.sort_by_key(|problem| problem.offset);
    }
    Report { message, problems }
}

/// Validate a parsed message against the rules of its type. Returns every problem found,
/// sorted by position (empty when valid).
pub fn validate(message: &Message<'_>) -> Vec<Problem> {
    let mut validator = Validator {
        input: message.input(),
        text: &message.text,
        problems: Vec::new(),
    };
    validator.text_length();
    for field in message.text.fields() {
        validator.field_format(field);
    }
    let message_type = message.message_type.map(|message_type| message_type.0);
    match message_type.and_then(schema::for_message_type) {
        Some(specs) => {
            let root = message.text.root();
            for field in root.fields() {
                validator.field_problem(
                    field,
                    Code::FieldNotAllowed,
                    format!("field {} outside any sequence", field.tag),
                );
            }
            validator.children(root, specs);
            if let Some(message_type) = message_type {
                validator.business_rules(message_type, root);
            }
        }
        None => {
            let offset = message.text.offset();
            let name = message_type.map_or("unknown".to_owned(), |number| format!("MT{number}"));
            validator.problem(
                Code::NoSchema,
                offset,
                "block4".to_owned(),
                format!("no schema for {name}: generic checks only"),
                Disposition::Nak(NakCode::H98),
            );
        }
    }
    validator.problems.sort_by_key(|problem| problem.offset);
    fill_positions(message.input(), &mut validator.problems);
    validator.problems
}

struct Validator<'m, 'a> {
    input: &'a str,
    text: &'m Text<'a>,
    problems: Vec<Problem>,
}

fn disposition(code: Code) -> Disposition {
    match code {
        Code::InvalidIsin => Disposition::Reject(ReasonCode::Dsec),
        Code::CancelLinkMissing => Disposition::Reject(ReasonCode::Refe),
        Code::PartyMissing => Disposition::Reject(ReasonCode::Ddea),
        Code::Charset => Disposition::Nak(NakCode::T32),
        Code::TextTooLong => Disposition::Nak(NakCode::T33),
        Code::InvalidDate => Disposition::Nak(NakCode::T50),
        Code::InvalidBic => Disposition::Nak(NakCode::T27),
        Code::ReferenceFormat => Disposition::Nak(NakCode::T26),
        Code::SequenceMissing | Code::SequenceNotAllowed | Code::SequenceRepeated => {
            Disposition::Nak(NakCode::T56)
        }
        Code::FieldFormat | Code::GenericFormat | Code::InvalidCode | Code::LenientSlash => {
            Disposition::Nak(NakCode::T17)
        }
        _ => Disposition::Nak(NakCode::T13),
    }
}

impl<'m, 'a> Validator<'m, 'a> {
    fn problem(
        &mut self,
        code: Code,
        offset: usize,
        path: String,
        message: String,
        disposition: Disposition,
    ) {
        if self.problems.len() >= PROBLEMS_MAX {
            return;
        }
        // Line and column are filled in one pass at the end (fill_positions).
        self.problems.push(Problem {
            code,
            line: 0,
            column: 0,
            offset,
            path,
            message,
            disposition,
        });
    }

    fn field_problem(&mut self, field: &Field<'_>, code: Code, message: String) {
        self.field_problem_at(field, 0, code, message);
    }

    /// A problem `delta` bytes into the field's value (0: at the field's tag).
    fn field_problem_at(&mut self, field: &Field<'_>, delta: usize, code: Code, message: String) {
        let offset = if delta == 0 {
            field.offset
        } else {
            value_offset(self.input, field) + delta
        };
        let path = self.text.field_path(field);
        self.problem(code, offset, path, message, disposition(code));
    }

    fn text_length(&mut self) {
        let start = self.text.offset();
        let end = start + self.text.length_bytes();
        let Some(body) = self.input.get(start..end) else {
            return;
        };
        // FIN counts the canonical (CRLF) text, at most twice the bytes (every byte a bare LF).
        if body.len() * 2 <= TEXT_LENGTH_MAX_CHARS {
            return;
        }
        let bytes = body.as_bytes();
        let bare_lf = memchr::memchr_iter(b'\n', bytes)
            .filter(|&index| index == 0 || bytes[index - 1] != b'\r')
            .count();
        let length_chars = bytes.len() + bare_lf;
        if length_chars > TEXT_LENGTH_MAX_CHARS {
            self.problem(
                Code::TextTooLong,
                start,
                "block4".to_owned(),
                format!("text is {length_chars} characters, more than {TEXT_LENGTH_MAX_CHARS}"),
                disposition(Code::TextTooLong),
            );
        }
    }

    fn children(&mut self, parent: Seq<'m, 'a>, specs: &'static [SeqSpec]) {
        let mut counts = [0u8; SPECS_PER_SEQUENCE_MAX];
        for child in parent.children() {
            let Some(index) = specs.iter().position(|spec| same(spec.name, child.name())) else {
                let open = self.text.fields()[child.node().open as usize];
                self.field_problem(
                    &open,
                    Code::SequenceNotAllowed,
                    format!("sequence {} not allowed here", child.name()),
                );
                continue;
            };
            let spec = &specs[index];
            let count = &mut counts[index.min(SPECS_PER_SEQUENCE_MAX - 1)];
            *count = count.saturating_add(1);
            if spec.max != MANY && *count > spec.max {
                let open = self.text.fields()[child.node().open as usize];
                self.field_problem(
                    &open,
                    Code::SequenceRepeated,
                    format!(
                        "sequence {} repeated more than {} time(s)",
                        spec.name, spec.max
                    ),
                );
            }
            if !spec.open {
                self.sequence(child, spec);
            }
        }
        for (index, spec) in specs.iter().enumerate() {
            if counts[index.min(SPECS_PER_SEQUENCE_MAX - 1)] < spec.min {
                let (offset, path) = self.end_of(parent);
                let path = if path.is_empty() {
                    spec.name.to_owned()
                } else {
                    format!("{path}/{}", spec.name)
                };
                self.problem(
                    Code::SequenceMissing,
                    offset,
                    path,
                    format!("mandatory sequence {} is missing", spec.name),
                    disposition(Code::SequenceMissing),
                );
            }
        }
    }

    /// Offset and path where a missing item of `sequence` is reported: its `16S` (or `16R`).
    fn end_of(&self, sequence: Seq<'m, 'a>) -> (usize, String) {
        let node = sequence.node();
        let fields = self.text.fields();
        let offset = fields
            .get(node.close as usize)
            .or_else(|| fields.get(node.open as usize))
            .map_or(self.text.offset(), |field| field.offset);
        (offset, sequence.path())
    }

    fn sequence(&mut self, sequence: Seq<'m, 'a>, spec: &'static SeqSpec) {
        let mut counts = [0u8; SPECS_PER_SEQUENCE_MAX];
        for field in sequence.fields() {
            let qualifier = field.qualifier();
            let number = field.number();

            let matched = spec.fields.iter().position(|field_spec| {
                same(field_spec.number, number)
                    && (field_spec.qualifiers.is_empty()
                        || qualifier.is_some_and(|qualifier| {
                            field_spec
                                .qualifiers
                                .iter()
                                .any(|allowed| same(allowed, qualifier))
                        }))
            });
            let Some(index) = matched else {
                if spec
                    .fields
                    .iter()
                    .any(|field_spec| same(field_spec.number, number))
                {
                    self.field_problem(
                        field,
                        Code::QualifierNotAllowed,
                        format!(
                            "qualifier {} not allowed for field {number} in {}",
                            qualifier.unwrap_or("(none)"),
                            spec.name
                        ),
                    );
                } else {
                    self.field_problem(
                        field,
                        Code::FieldNotAllowed,
                        format!("field {} not allowed in {}", field.tag, spec.name),
                    );
                }
                continue;
            };
            let field_spec: &FieldSpec = &spec.fields[index];
            let option_allowed = match field.option().as_bytes() {
                [letter] => field_spec.options.as_bytes().contains(letter),
                _ => false,
            };
            if !option_allowed {
                self.field_problem(
                    field,
                    Code::OptionNotAllowed,
                    format!(
                        "option {} not allowed for field {number}, expected one of {}",
                        field.option(),
                        field_spec.options
                    ),
                );
            }
            let count = &mut counts[index.min(SPECS_PER_SEQUENCE_MAX - 1)];
            *count = count.saturating_add(1);
            if field_spec.max != MANY && *count > field_spec.max {
                self.field_problem(
                    field,
                    Code::FieldRepeated,
                    format!(
                        "field {} repeated more than {} time(s)",
                        field.tag, field_spec.max
                    ),
                );
            }
        }
        for (index, field_spec) in spec.fields.iter().enumerate() {
            if counts[index.min(SPECS_PER_SEQUENCE_MAX - 1)] < field_spec.min {
                let (offset, path) = self.end_of(sequence);
                let what = match field_spec.qualifiers {
                    [] => format!("{}a", field_spec.number),
                    [qualifier] => format!("{}a::{qualifier}", field_spec.number),
                    qualifiers => format!("{}a::{}", field_spec.number, qualifiers.join("|")),
                };
                self.problem(
                    Code::FieldMissing,
                    offset,
                    format!("{path}/{what}"),
                    format!("mandatory field {what} is missing from {}", spec.name),
                    disposition(Code::FieldMissing),
                );
            }
        }
        self.children(sequence, spec.children);
    }

    fn field_format(&mut self, field: &Field<'a>) {
        if let Some(index) = first_non_x(field.value) {
            let byte = field.value.as_bytes()[index];
            let shown = if byte.is_ascii_graphic() {
                format!("'{}'", byte as char)
            } else {
                format!("byte 0x{byte:02x}")
            };
            self.field_problem_at(
                field,
                index.max(1),
                Code::Charset,
                format!("{shown} is outside the x character set"),
            );
        }
        let tag = field.tag;
        let tag_key = field.tag_key();
        // Non-generic fields first.
        match &tag_key {
            b"16R" | b"16S" => {
                if field.value.is_empty() || field.value.len() > 16 || field.value.contains('\n') {
                    self.field_problem(
                        field,
                        Code::FieldFormat,
                        "sequence name must be 1 to 16 characters".to_owned(),
                    );
                }
                return;
            }
            b"23G" => {
                if parse_function(field.value).is_none() {
                    self.field_problem(
                        field,
                        Code::FieldFormat,
                        format!("'{}' is not a function[/subfunction]", field.value),
                    );
                }
                return;
            }
            b"28E" => {
                if parse_page(field.value).is_none() {
                    self.field_problem(
                        field,
                        Code::FieldFormat,
                        format!(
                            "'{}' is not page/indicator (5n/4!c)",
                            first_line(field.value)
                        ),
                    );
                }
                return;
            }
            b"35B" => {
                self.instrument(field);
                return;
            }
            _ => {}
        }
        let Some(generic) = parse_generic(field.value) else {
            if is_generic_tag(tag) {
                self.field_problem(
                    field,
                    Code::GenericFormat,
                    format!("field {tag} must be ':qualifier/[scheme]/value'"),
                );
            }
            return;
        };
        if generic.one_slash {
            self.field_problem(
                field,
                Code::LenientSlash,
                format!(
                    "':{}/{}' read as ':{}//{}'",
                    generic.qualifier,
                    first_line(generic.value),
                    generic.qualifier,
                    first_line(generic.value)
                ),
            );
        }
        let value = generic.value;
        let ok = match &tag_key {
            b"98A" => self.date(field, value, parse_date(value).is_some(), 8),
            b"98C" => self.date(field, value, parse_date_time(value).is_some(), 14),
            b"98B" | b"22F" | b"22H" | b"25D" | b"24B" | b"12A" => {
                is_code(value) || (&tag_key == b"12A" && value.len() <= 30)
            }
            b"69A" => match value.split_once('/') {
                Some((from, to)) => self.date(
                    field,
                    value,
                    parse_date(from).is_some() && parse_date(to).is_some(),
                    17,
                ),
                None => false,
            },
            b"20C" => self.reference(field, value),
            b"13A" => value.len() == 3 && value.bytes().all(|byte| byte.is_ascii_alphanumeric()),
            b"36B" | b"93B" => parse_quantity(value).is_some(),
            b"19A" | b"19B" => parse_amount(value).is_some(),
            b"90A" => value.split_once('/').is_some_and(|(kind, number)| {
                is_code(kind) && parse_signed_decimal(number).is_some()
            }),
            b"90B" => value
                .split_once('/')
                .is_some_and(|(kind, amount)| is_code(kind) && parse_amount(amount).is_some()),
            b"92A" => parse_signed_decimal(value).is_some(),
            b"97A" | b"97E" => !value.is_empty() && value.len() <= 35 && !value.contains('\n'),
            b"97B" => value.split_once('/').is_some_and(|(kind, account)| {
                is_code(kind) && !account.is_empty() && account.len() <= 35
            }),
            b"95P" => self.bic(field, value),
            b"95R" => generic.scheme.is_some() && !value.is_empty() && value.len() <= 34,
            b"95Q" | b"70C" | b"70D" | b"70E" => {
                let (lines, longest) = line_shape(value);
                lines <= 10 && longest <= 35
            }
            b"94F" => value
                .split_once('/')
                .is_some_and(|(kind, bic)| is_code(kind) && is_bic(bic)),
            b"11A" => value.len() == 3 && value.bytes().all(|byte| byte.is_ascii_uppercase()),
            b"17B" => matches!(value.as_bytes(), b"Y" | b"N"),
            b"99A" => {
                let digits = value.strip_prefix('N').unwrap_or(value);
                digits.len() == 3 && digits.bytes().all(|byte| byte.is_ascii_digit())
            }
            _ => true,
        };
        if !ok {
            self.field_problem(
                field,
                Code::FieldFormat,
                format!("'{}' is not a valid {tag} value", first_line(value)),
            );
        }
        match &tag_key {
            b"25D" if generic.scheme.is_none() => self.status_code(field, generic.qualifier, value),
            b"24B"
                if generic.scheme.is_none()
                    && schema::REASON_QUALIFIERS.contains(&generic.qualifier)
                    && Reason::parse(value).is_none()
                    && is_code(value) =>
            {
                self.field_problem(
                    field,
                    Code::InvalidCode,
                    format!("'{value}' is not a known reason code"),
                );
            }
            _ => {}
        }
    }

    /// Report a bad date (returns true so the generic format error is not reported twice).
    fn date(&mut self, field: &Field<'_>, value: &str, valid: bool, length: usize) -> bool {
        if !valid {
            let digits = value.len() == length
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || byte == b'/');
            if digits {
                self.field_problem(
                    field,
                    Code::InvalidDate,
                    format!("'{value}' is not a valid calendar date"),
                );
                return true;
            }
            return false;
        }
        true
    }

    fn reference(&mut self, field: &Field<'_>, value: &str) -> bool {
        if value.is_empty() || value.len() > 16 || value.contains('\n') {
            return false;
        }
        if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
            self.field_problem(
                field,
                Code::ReferenceFormat,
                "a reference must not start or end with '/' nor contain '//'".to_owned(),
            );
        }
        true
    }

    fn bic(&mut self, field: &Field<'_>, value: &str) -> bool {
        if !is_bic(value) {
            self.field_problem(field, Code::InvalidBic, format!("'{value}' is not a bic"));
        }
        true
    }

    fn status_code(&mut self, field: &Field<'_>, qualifier: &str, code: &str) {
        let allowed: &[&str] = match qualifier {
            "IPRC" => &[
                "PACK", "REJT", "CAND", "CANP", "CPRC", "PPRC", "REPR", "EXCH", "TREA", "NMAT",
            ],
            "MTCH" => &["MACH", "NMAT", "NMAS"],
            "SETT" => &["PEND", "PENF"],
            "CPRC" => &["CAND", "CANP", "DEND", "REPR", "PACK", "REJT"],
            _ => return,
        };
        if !allowed.contains(&code) {
            self.field_problem(
                field,
                Code::InvalidCode,
                format!(
                    "'{code}' is not a status of {qualifier} (expected {})",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn instrument(&mut self, field: &Field<'_>) {
        let first = first_line(field.value);
        let (lines, longest) = line_shape(field.value);
        let isin_line = first.starts_with("ISIN");
        if lines > 5 || (!isin_line && lines > 4) || longest > 35 {
            self.field_problem(
                field,
                Code::FieldFormat,
                "35B is [ISIN1!e12!c] then at most 4 lines of 35 characters".to_owned(),
            );
        }
        if let Some(rest) = first.strip_prefix("ISIN") {
            let candidate = rest.strip_prefix(' ').unwrap_or(rest);
            match Isin::parse(candidate) {
                Ok(_) => {}
                Err(IsinError::Format) => self.field_problem_at(
                    field,
                    5,
                    Code::InvalidIsin,
                    format!(
                        "'{candidate}' is not an isin (2 letters, 9 alphanumerics, check digit)"
                    ),
                ),
                Err(error @ IsinError::CheckDigit { .. }) => {
                    self.field_problem_at(field, 16, Code::InvalidIsin, error.to_string());
                }
            }
        }
    }

    fn business_rules(&mut self, message_type: u16, root: Seq<'m, 'a>) {
        let Some(general) = root.sequence("GENL") else {
            return;
        };
        let function = general
            .field_by_number("23")
            .and_then(|field| parse_function(field.value));
        if let (Some(function), Some(field)) = (function, general.field_by_number("23")) {
            let previous = general
                .sequences("LINK")
                .any(|link| link.field("20", "PREV").is_some());
            if function.code == super::fields::FunctionCode::Canc && !previous {
                self.field_problem(
                    field,
                    Code::CancelLinkMissing,
                    "a cancellation must link the instruction it cancels with 20C::PREV".to_owned(),
                );
            }
        }
        if !(540..=547).contains(&message_type) {
            return;
        }
        let Some(details) = root.sequence("SETDET") else {
            return;
        };
        let has_party = |qualifier: &str| {
            details
                .sequences("SETPRTY")
                .any(|party| party.field("95", qualifier).is_some())
        };
        let receive = matches!(message_type, 540 | 541 | 544 | 545);
        let counterparty = if receive { "DEAG" } else { "REAG" };
        for (qualifier, reason) in [(counterparty, ReasonCode::Ddea), ("PSET", ReasonCode::Dept)] {
            if !has_party(qualifier) {
                let (offset, path) = self.end_of(details);
                self.problem(
                    Code::PartyMissing,
                    offset,
                    format!("{path}/SETPRTY/95a::{qualifier}"),
                    format!("MT{message_type} needs a {qualifier} party"),
                    Disposition::Reject(reason),
                );
            }
        }
        if matches!(message_type, 541 | 543) {
            let amount = details
                .sequences("AMT")
                .any(|amount| amount.field("19", "SETT").is_some());
            if !amount {
                let (offset, path) = self.end_of(details);
                self.problem(
                    Code::FieldMissing,
                    offset,
                    format!("{path}/AMT/19A::SETT"),
                    format!("MT{message_type} (against payment) needs a settlement amount"),
                    Disposition::Reject(ReasonCode::Dmon),
                );
            }
        }
    }
}

fn value_offset(input: &str, field: &Field<'_>) -> usize {
    let base = input.as_ptr() as usize;
    let value = field.value.as_ptr() as usize;
    if value >= base && value <= base + input.len() {
        value - base
    } else {
        field.offset
    }
}

fn first_line(value: &str) -> &str {
    let line = match memchr::memchr(b'\n', value.as_bytes()) {
        Some(index) => &value[..index],
        None => value,
    };
    line.strip_suffix('\r').unwrap_or(line)
}

/// Number of lines and length of the longest line (without its line ending).
fn line_shape(value: &str) -> (usize, usize) {
    let mut lines = 0;
    let mut longest = 0;
    for line in value.as_bytes().split(|&byte| byte == b'\n') {
        lines += 1;
        let length = line.len() - usize::from(line.last() == Some(&b'\r'));
        longest = longest.max(length);
    }
    (lines, longest)
}

/// `4!c`: four upper-case letters or digits.
fn is_code(value: &str) -> bool {
    value.len() == 4
        && value
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
}

/// Tags whose value must be generic in categories 5 (the ones we meet).
fn is_generic_tag(tag: &str) -> bool {
    matches!(
        tag.get(..2),
        Some(
            "11" | "12"
                | "13"
                | "17"
                | "19"
                | "20"
                | "22"
                | "24"
                | "25"
                | "36"
                | "69"
                | "70"
                | "90"
                | "92"
                | "93"
                | "94"
                | "95"
                | "97"
                | "98"
                | "99"
        )
    )
}
