//! Problems, their stable codes, and the answer a CSD sends back for each.
//!
//! Every problem the codec finds carries a [`Code`]. A code is stable (tests and the gateway
//! match on it), has a [`Severity`], and maps to a [`Disposition`]: envelope and syntax problems
//! are answered with a FIN-style NAK error code ([`NakCode`]); business problems are answered with
//! an MT548 rejection carrying an SMPG reason code ([`ReasonCode`]).

use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The message must be rejected.
    Error,
    /// Accepted (a lenient form, documented in the module docs), but worth telling the sender.
    Warning,
}

/// Stable problem codes. The string form (`E204`, `W501`, ...) never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // Envelope.
    /// Input longer than [`super::INPUT_LENGTH_MAX_BYTES`].
    InputTooLong,
    /// Input is not valid UTF-8 (and so not the ASCII the X character set needs).
    Encoding,
    /// A block must start with `{` followed by its identifier and `:`.
    BlockOpen,
    /// A block is not closed by `}` (or block 4 by `-}`).
    BlockUnterminated,
    /// An unknown block identifier, or blocks out of order, or repeated.
    BlockOrder,
    /// Block 1 (basic header) is malformed.
    BasicHeader,
    /// Block 2 (application header) is malformed.
    ApplicationHeader,
    /// A `{tag:value}` item of block 3, 5 or S is malformed.
    TagBlock,
    /// The message has no block 4.
    TextMissing,
    /// Block 1 or 2 is missing and the caller does not accept block-4-only input.
    HeaderMissing,
    /// Something other than whitespace follows the last block.
    TrailingData,
    /// A service message (ACK/NAK) is malformed.
    ServiceMessage,
    /// Block 4 must start with a line break after `{4:`.
    TextStart,
    // Block 4 syntax.
    /// A line starting with `:` does not open a valid `:NNa:` tag, or text precedes the first tag.
    FieldTag,
    /// `16R` opened a sequence that is never closed by `16S`.
    SequenceUnclosed,
    /// `16S` names a different sequence than the `16R` it closes.
    SequenceMismatch,
    /// `16S` with no open sequence.
    SequenceUnopened,
    /// Sequences nested deeper than [`super::SEQUENCE_DEPTH_MAX`].
    SequenceDepth,
    /// A character outside the SWIFT X character set.
    Charset,
    /// Block 4 longer than [`super::TEXT_LENGTH_MAX_CHARS`].
    TextTooLong,
    /// A field that must be generic (`:4!c/[8c]/...`) is not.
    GenericFormat,
    // Schema.
    /// A mandatory sequence is missing.
    SequenceMissing,
    /// A sequence not allowed at this place.
    SequenceNotAllowed,
    /// A sequence repeated more often than allowed.
    SequenceRepeated,
    /// A mandatory field (tag and qualifier) is missing.
    FieldMissing,
    /// A field tag not allowed in this sequence.
    FieldNotAllowed,
    /// A qualifier not allowed for this field in this sequence.
    QualifierNotAllowed,
    /// A format option (the letter of the tag) not allowed for this field and qualifier.
    OptionNotAllowed,
    /// A field repeated more often than allowed.
    FieldRepeated,
    /// The field content does not match its format.
    FieldFormat,
    /// Not a valid calendar date or time.
    InvalidDate,
    /// Not an ISIN (format or check digit).
    InvalidIsin,
    /// A code not in the list allowed for this qualifier.
    InvalidCode,
    /// Not a BIC (`4!a2!a2!c[3!c]`).
    InvalidBic,
    /// A reference that starts or ends with `/` or contains `//`.
    ReferenceFormat,
    // Business rules.
    /// A settlement party the message type requires (DEAG, REAG, PSET) is missing.
    PartyMissing,
    /// A cancellation without a `PREV` link to the instruction it cancels.
    CancelLinkMissing,
    // Warnings.
    /// Lenient CCASS form: a generic field with one slash (`:25D::SETT/PEND`), read as `//`.
    LenientSlash,
    /// No schema for this message type: only generic checks were applied.
    NoSchema,
}

impl Code {
    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InputTooLong => "E100",
            Code::Encoding => "E101",
            Code::BlockOpen => "E102",
            Code::BlockUnterminated => "E103",
            Code::BlockOrder => "E104",
            Code::BasicHeader => "E105",
            Code::ApplicationHeader => "E106",
            Code::TagBlock => "E107",
            Code::TextMissing => "E108",
            Code::HeaderMissing => "E109",
            Code::TrailingData => "E110",
            Code::ServiceMessage => "E111",
            Code::TextStart => "E112",
            Code::FieldTag => "E201",
            Code::SequenceUnclosed => "E202",
            Code::SequenceMismatch => "E203",
            Code::SequenceUnopened => "E204",
            Code::SequenceDepth => "E205",
            Code::Charset => "E206",
            Code::TextTooLong => "E207",
            Code::GenericFormat => "E208",
            Code::SequenceMissing => "E301",
            Code::SequenceNotAllowed => "E302",
            Code::SequenceRepeated => "E303",
            Code::FieldMissing => "E304",
            Code::FieldNotAllowed => "E305",
            Code::QualifierNotAllowed => "E306",
            Code::OptionNotAllowed => "E307",
            Code::FieldRepeated => "E308",
            Code::FieldFormat => "E309",
            Code::InvalidDate => "E310",
            Code::InvalidIsin => "E311",
            Code::InvalidCode => "E312",
            Code::InvalidBic => "E313",
            Code::ReferenceFormat => "E314",
            Code::PartyMissing => "E401",
            Code::CancelLinkMissing => "E402",
            Code::LenientSlash => "W501",
            Code::NoSchema => "W502",
        }
    }

    /// Whether the problem rejects the message.
    pub fn severity(self) -> Severity {
        match self {
            Code::LenientSlash | Code::NoSchema => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// FIN-style NAK error codes (field 405 of a NAK). The families follow FIN: `H` for header
/// errors, `T` for text (block 4) syntax. The numbers are ours where public documentation could
/// not be checked; they are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakCode {
    /// Basic header (block 1) error.
    H01,
    /// Application header (block 2) error.
    H50,
    /// Other envelope format error.
    H98,
    /// Field or sequence not expected, missing, or repeated.
    T13,
    /// Field format error.
    T17,
    /// Slash rule broken in a reference.
    T26,
    /// Invalid BIC.
    T27,
    /// Character outside the X set.
    T32,
    /// Text too long.
    T33,
    /// Invalid date or time.
    T50,
    /// Sequence structure (16R/16S) error.
    T56,
}

impl NakCode {
    /// The code as carried in field 405.
    pub fn as_str(self) -> &'static str {
        match self {
            NakCode::H01 => "H01",
            NakCode::H50 => "H50",
            NakCode::H98 => "H98",
            NakCode::T13 => "T13",
            NakCode::T17 => "T17",
            NakCode::T26 => "T26",
            NakCode::T27 => "T27",
            NakCode::T32 => "T32",
            NakCode::T33 => "T33",
            NakCode::T50 => "T50",
            NakCode::T56 => "T56",
        }
    }
}

/// SMPG reason codes of MT548 field `:24B:` (and the business rejections we send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// Lack of securities.
    Lack,
    /// Insufficient money.
    Mony,
    /// Counterparty instruction missing (unmatched).
    Cmis,
    /// Settlement date invalid or does not match.
    Ddat,
    /// Trade date invalid or does not match.
    Dtrd,
    /// Quantity invalid or does not match.
    Dqua,
    /// Financial instrument (ISIN) unrecognised or does not match.
    Dsec,
    /// Settlement amount invalid or does not match.
    Dmon,
    /// Settlement details (parties) invalid or do not match.
    Ddea,
    /// Place of settlement invalid.
    Dept,
    /// Safekeeping account invalid.
    Safe,
    /// Reference invalid.
    Refe,
    /// Counterparty lacks securities.
    Clac,
    /// Counterparty lacks money.
    Cmon,
    /// Awaiting next settlement cycle.
    Cycl,
    /// Awaiting settlement date.
    Futu,
    /// Duplicate instruction.
    Dupl,
    /// Cancellation requested by the account owner.
    Canc,
    /// See narrative.
    Narr,
    /// Other.
    Othr,
    /// Trade settles in partials / partial settlement.
    Part,
    /// Awaiting money.
    Awmo,
    /// Awaiting securities.
    Awsh,
    /// Blocked.
    Bloc,
    /// Counterparty in receivership / too late / other settlement-cycle codes.
    Late,
    /// No matching required / instruction not yet matched due to unmatched instruction.
    Nmas,
    /// Instruction in repair (incomplete).
    Incs,
    /// Settlement transaction condition invalid.
    Sets,
    /// Transaction type (SETR) invalid.
    Setr,
    /// Place of trade invalid.
    Plce,
    /// Cash account invalid.
    Icag,
    /// Unknown intermediary / instructing party.
    Iexe,
    /// Cancellation accepted / processed (CAND reason).
    Cans,
    /// Cancelled by the system (CAND reason).
    Csub,
    /// Denied: the account servicer's deadline was missed.
    Adea,
    /// Denied: the instruction is already cancelled.
    Dcan,
    /// Denied: the instruction is in the course of settlement.
    Dprg,
    /// Denied: the instruction has already settled (in full or in part).
    Dset,
}

impl ReasonCode {
    const ALL: [ReasonCode; 38] = [
        ReasonCode::Lack,
        ReasonCode::Mony,
        ReasonCode::Cmis,
        ReasonCode::Ddat,
        ReasonCode::Dtrd,
        ReasonCode::Dqua,
        ReasonCode::Dsec,
        ReasonCode::Dmon,
        ReasonCode::Ddea,
        ReasonCode::Dept,
        ReasonCode::Safe,
        ReasonCode::Refe,
        ReasonCode::Clac,
        ReasonCode::Cmon,
        ReasonCode::Cycl,
        ReasonCode::Futu,
        ReasonCode::Dupl,
        ReasonCode::Canc,
        ReasonCode::Narr,
        ReasonCode::Othr,
        ReasonCode::Part,
        ReasonCode::Awmo,
        ReasonCode::Awsh,
        ReasonCode::Bloc,
        ReasonCode::Late,
        ReasonCode::Nmas,
        ReasonCode::Incs,
        ReasonCode::Sets,
        ReasonCode::Setr,
        ReasonCode::Plce,
        ReasonCode::Icag,
        ReasonCode::Iexe,
        ReasonCode::Cans,
        ReasonCode::Csub,
        ReasonCode::Adea,
        ReasonCode::Dcan,
        ReasonCode::Dprg,
        ReasonCode::Dset,
    ];

    /// The four-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Lack => "LACK",
            ReasonCode::Mony => "MONY",
            ReasonCode::Cmis => "CMIS",
            ReasonCode::Ddat => "DDAT",
            ReasonCode::Dtrd => "DTRD",
            ReasonCode::Dqua => "DQUA",
            ReasonCode::Dsec => "DSEC",
            ReasonCode::Dmon => "DMON",
            ReasonCode::Ddea => "DDEA",
            ReasonCode::Dept => "DEPT",
            ReasonCode::Safe => "SAFE",
            ReasonCode::Refe => "REFE",
            ReasonCode::Clac => "CLAC",
            ReasonCode::Cmon => "CMON",
            ReasonCode::Cycl => "CYCL",
            ReasonCode::Futu => "FUTU",
            ReasonCode::Dupl => "DUPL",
            ReasonCode::Canc => "CANC",
            ReasonCode::Narr => "NARR",
            ReasonCode::Othr => "OTHR",
            ReasonCode::Part => "PART",
            ReasonCode::Awmo => "AWMO",
            ReasonCode::Awsh => "AWSH",
            ReasonCode::Bloc => "BLOC",
            ReasonCode::Late => "LATE",
            ReasonCode::Nmas => "NMAS",
            ReasonCode::Incs => "INCS",
            ReasonCode::Sets => "SETS",
            ReasonCode::Setr => "SETR",
            ReasonCode::Plce => "PLCE",
            ReasonCode::Icag => "ICAG",
            ReasonCode::Iexe => "IEXE",
            ReasonCode::Cans => "CANS",
            ReasonCode::Csub => "CSUB",
            ReasonCode::Adea => "ADEA",
            ReasonCode::Dcan => "DCAN",
            ReasonCode::Dprg => "DPRG",
            ReasonCode::Dset => "DSET",
        }
    }

    /// Parse a four-letter code; `None` when it is not in our vocabulary.
    pub fn parse(code: &str) -> Option<ReasonCode> {
        ReasonCode::ALL
            .into_iter()
            .find(|reason| reason.as_str() == code)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a CSD answers for a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Refused at the network layer: NAK with this error code.
    Nak(NakCode),
    /// Accepted by the network but rejected by the business layer: MT548 `IPRC//REJT` with
    /// this reason.
    Reject(ReasonCode),
}

/// One problem found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Stable code.
    pub code: Code,
    /// 1-based line of the problem in the input.
    pub line: u32,
    /// 1-based column (in bytes) of the problem in the input.
    pub column: u32,
    /// Byte offset of the problem in the input.
    pub offset: usize,
    /// Where: `block1`, or a block 4 path such as `SETDET/SETPRTY[2]/95P::DEAG`.
    pub path: String,
    /// Lowercase explanation.
    pub message: String,
    /// What a CSD answers.
    pub disposition: Disposition,
}

impl Problem {
    /// Whether the problem rejects the message.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} {} {}: {}",
            self.line, self.column, self.code, self.path, self.message
        )
    }
}

/// A message refused: every problem found, in input order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message rejected with {} problem(s), first: {}", problems.len(), first(problems))]
pub struct Rejection {
    /// All problems (errors and warnings), sorted by position.
    pub problems: Vec<Problem>,
}

fn first(problems: &[Problem]) -> String {
    problems.first().map(Problem::to_string).unwrap_or_default()
}

impl Rejection {
    /// The first error by position.
    pub fn first_error(&self) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|problem| problem.severity() == Severity::Error)
    }

    /// The answer to send: a NAK with the code of the first network-level error if there is
    /// one (the network refuses before the business layer looks), else a business rejection
    /// with the reason of the first business error. `None` when there is no error.
    pub fn disposition(&self) -> Option<Disposition> {
        let errors = || {
            self.problems
                .iter()
                .filter(|problem| problem.severity() == Severity::Error)
        };
        errors()
            .find(|problem| matches!(problem.disposition, Disposition::Nak(_)))
            .or_else(|| errors().next())
            .map(|problem| problem.disposition)
    }

    /// Every distinct business reason among the errors, in order of first appearance (the
    /// `REAS` sequences of the MT548 rejection).
    pub fn reasons(&self) -> Vec<ReasonCode> {
        let mut reasons = Vec::new();
        for problem in &self.problems {
            if let Disposition::Reject(reason) = problem.disposition
                && problem.severity() == Severity::Error
                && !reasons.contains(&reason)
            {
                reasons.push(reason);
            }
        }
        reasons
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn position(input: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(input.len());
    let before = &input.as_bytes()[..offset];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |index| index + 1);
    let column = offset - line_start + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Fill line and column of `problems` (sorted by offset) in one pass over `input`.
pub(crate) fn fill_positions(input: &str, problems: &mut [Problem]) {
    let bytes = input.as_bytes();
    let mut line: u32 = 1;
    let mut line_start = 0;
    let mut scanned = 0;
    for problem in problems {
        let offset = problem.offset.min(bytes.len());
        if offset < scanned {
            // Not sorted: fall back to a scan from the start.
            (problem.line, problem.column) = position(input, offset);
            continue;
        }
        for index in memchr::memchr_iter(b'\n', &bytes[scanned..offset]) {
            line = line.saturating_add(1);
            line_start = scanned + index + 1;
        }
        scanned = offset;
        problem.line = line;
        problem.column = u32::try_from(offset - line_start + 1).unwrap_or(u32::MAX);
    }
}
