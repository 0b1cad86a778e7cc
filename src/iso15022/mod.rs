//! ISO 15022 codec: FIN envelope, block 4 sequences, typed settlement messages, validation.
//!
//! # Design
//!
//! A sans-I/O layer in the spirit of rust-postgres' protocol crate: `&str` in, borrowed
//! [`Message`] out; [`write()`] back to canonical text; no tokio, NATS, SQL or filesystem here
//! (only [`cli`] touches files).
//!
//! * [`parse()`] tokenises the envelope (blocks 1, 2, 3, 4, 5, S, a leading ACK/NAK service
//!   message, trailing whitespace) and block 4 into a flat list of borrowed [`Field`]s plus a
//!   flat `16R`/`16S` sequence tree ([`Text`]): two allocations per message. Continuation lines
//!   are kept verbatim; only a colon at the start of a line opens a tag. CRLF, LF and mixed line
//!   endings are accepted; [`write()`] always emits CRLF.
//! * [`validate()`] applies the network-style rules of the message type's schema (mandatory
//!   sequences and fields, qualifiers and options per sequence, repetition, field formats, the
//!   X character set, the 10,000-character text limit, ISIN check digits, calendar dates) plus a
//!   few business rules, and reports *every* problem with line, column, path and a stable
//!   [`Code`]. Each problem maps to a [`Disposition`]: a NAK error code for envelope and syntax
//!   problems, an MT548 [`ReasonCode`] for business rejections.
//! * [`views`] gives typed, borrowed answers to the questions settlement asks (who delivers to
//!   whom, which ISIN, how many, when, for how much, which reference) for MT540–547, MT548 and
//!   MT535–537; [`fields`] holds the typed field values (dates, decimals, ISIN, BIC, parties).
//! * [`build`] produces owned, canonical messages (MT540–548, MT535–537) and checks its own
//!   output with [`validate()`] before handing it out.
//!
//! # Lenient forms (decided here)
//!
//! * `:25D::SETT/PEND` (one slash, printed in the HKEX CCASS/3 PSS specification example) is read
//!   as `:25D::SETT//PEND` and reported as warning [`Code::LenientSlash`]; the message stays
//!   valid. Any generic field gets the same treatment.
//! * `:28E::REAS/PAGE/00001/ONLY` in the same example is *not* accepted: 28E is `5n/4!c` with no
//!   qualifier and has no place in a REAS sequence. It is rejected (`E309`, `E305`).
//! * Block-4-only input (`{4:...-}` without blocks 1 and 2) is accepted only when the caller says
//!   so ([`ParseOptions::text_only`]), with the message type given by the caller.
//! * Message types without a schema here (MT564, MT566, ...) get the generic checks only and a
//!   [`Code::NoSchema`] warning.
//! * A wrong ISIN check digit (common in published examples) is a business rejection
//!   ([`Code::InvalidIsin`] → MT548 `REJT` with `DSEC`), not a syntax error: such messages still
//!   parse, round-trip and answer their typed views. A date such as `11111111` is a valid
//!   calendar date and passes; plausibility against the settlement calendar is the settlement
//!   engine's job.
//!
//! The expected outcome of every public sample is listed in `tests/it/codec.rs`.
//!
//! # What is not checked (yet)
//!
//! Field order inside a sequence; the sub-sequences marked open in the schemas (REPO, OTHRPRTY,
//! ADDINFO, FIA, BREAK, CSHPRTY, MT536/537 detail sequences, PENA); consistency of a `24B`
//! reason qualifier with its `25D` status; network rules that span sequences beyond the
//! settlement-party, cancellation-link and against-payment-amount rules.
//!
//! # Limits
//!
//! [`INPUT_LENGTH_MAX_BYTES`] bounds what the parser looks at; [`TEXT_LENGTH_MAX_CHARS`] is the
//! FIN text limit checked by validation; [`SEQUENCE_DEPTH_MAX`] bounds nesting;
//! [`PROBLEMS_MAX`] bounds the problems collected from one message.
//!
//! # Robustness
//!
//! Property tests (`tests/it/codec.rs`) check that parse ∘ write is the identity on generated
//! valid messages of each type and that arbitrary bytes never panic. A cargo-fuzz target lives
//! in `fuzz/`; a smoke run (stable toolchain, `RUSTC_BOOTSTRAP=1` lets cargo-fuzz use the
//! sanitizer flags it needs):
//!
//! ```text
//! cargo install cargo-fuzz
//! cd fuzz && mkdir -p corpus/parse && cp ../tests/data/samples/*.fin corpus/parse/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run parse corpus/parse -- -max_total_time=60
//! ```
//!
//! # Performance
//!
//! `cargo bench --bench iso15022` measures parse, parse+validate and write of the MT540, MT548
//! and 40 KB MT537 samples (messages/s and MB/s) and prints a summary beside an allocating
//! baseline parser measured in the same run.

pub mod build;
pub mod cli;
mod error;
pub mod fields;
mod parse;
mod schema;
mod text;
mod validate;
pub mod views;
mod write;

pub use error::{Code, Disposition, NakCode, Problem, ReasonCode, Rejection, Severity};
pub use parse::{
    AckStatus, ApplicationHeader, BasicHeader, Direction, Message, ParseOptions, ServiceMessage,
    TagValue, parse, parse_bytes, parse_with_problems,
};
pub use text::{Field, Generic, Seq, SequenceNode, Text};
pub use validate::{Report, check, validate};
pub use write::{normalise_line_endings, to_canonical, write, write_text};

/// The parser refuses input longer than this (a FIN message is at most about 10 KB of text;
/// statements with many pages stay far below).
pub const INPUT_LENGTH_MAX_BYTES: usize = 1 << 20;
/// FIN limit on block 4 text, in characters.
pub const TEXT_LENGTH_MAX_CHARS: usize = 10_000;
/// Deepest `16R` nesting accepted.
pub const SEQUENCE_DEPTH_MAX: usize = 16;
/// Most problems reported by one parse or one validation (the first ones by position are kept):
/// bounds the work a hostile message can cause on the error path.
pub const PROBLEMS_MAX: usize = 1_000;
/// Most `{tag:value}` items read in one block 3, 5 or S.
pub const TAG_BLOCK_ITEMS_MAX: usize = 64;

/// A FIN message type, e.g. 540.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageType(pub u16);

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MT{}", self.0)
    }
}
