//! The envelope and block 4 tokeniser: `&str` in, borrowed [`Message`] and problems out.
//!
//! The parser never stops at the first problem: it records it and resynchronises (at the next
//! block, the next line, the next `16S`), so one pass reports everything it can.

use super::error::{
    Code, Disposition, NakCode, Problem, Rejection, Severity, fill_positions, position,
};
use super::text::{Field, NONE, ROOT, SequenceNode, Text, same};
use super::{
    INPUT_LENGTH_MAX_BYTES, MessageType, PROBLEMS_MAX, SEQUENCE_DEPTH_MAX, TAG_BLOCK_ITEMS_MAX,
};

/// What the caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept a message with block 4 but no block 1/2 (documents often print only block 4).
    pub allow_text_only: bool,
    /// The message type to assume when block 2 is absent.
    pub message_type: Option<MessageType>,
}

impl ParseOptions {
    /// A full FIN message: blocks 1, 2 and 4 are required.
    pub fn fin() -> ParseOptions {
        ParseOptions {
            allow_text_only: false,
            message_type: None,
        }
    }

    /// Block-4-only input is accepted, read as `message_type` when it has no block 2.
    pub fn text_only(message_type: Option<MessageType>) -> ParseOptions {
        ParseOptions {
            allow_text_only: true,
            message_type,
        }
    }
}

/// One `{tag:value}` item of block 3, 5 or S (or of a service message's block 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagValue<'a> {
    /// Tag, e.g. `108` or `CHK`.
    pub tag: &'a str,
    /// Value, possibly empty.
    pub value: &'a str,
}

/// Block 1: `F01BANKBEBBAXXX0000000000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicHeader<'a> {
    /// The block content as received.
    pub raw: &'a str,
    /// `F` (FIN), `A` (GPA) or `L` (login).
    pub application_id: &'a str,
    /// `01` user message, `21` ACK/NAK.
    pub service_id: &'a str,
    /// 12-character logical terminal address.
    pub logical_terminal: &'a str,
    /// 4-digit session number.
    pub session: &'a str,
    /// 6-digit sequence number.
    pub sequence: &'a str,
}

/// Direction-specific part of block 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction<'a> {
    /// `I540BANKDEFFXXXXN[monitoring][obsolescence]`: every part after the type may be absent.
    Input {
        /// 12-character receiver address.
        receiver: Option<&'a str>,
        /// `S`, `N` or `U`.
        priority: Option<&'a str>,
        /// Delivery monitoring `1`, `2` or `3`.
        monitoring: Option<&'a str>,
        /// Obsolescence period, 3 digits.
        obsolescence: Option<&'a str>,
    },
    /// `O540` + input time + MIR + output date and time + priority.
    Output {
        /// HHMM.
        input_time: &'a str,
        /// Message input reference: date, LT, session, sequence (28 characters).
        input_reference: &'a str,
        /// YYMMDD.
        output_date: &'a str,
        /// HHMM.
        output_time: &'a str,
        /// Priority, when present.
        priority: Option<&'a str>,
    },
}

/// Block 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplicationHeader<'a> {
    /// The block content as received.
    pub raw: &'a str,
    /// Message type, e.g. 540.
    pub message_type: MessageType,
    /// Input or output form.
    pub direction: Direction<'a>,
}

/// ACK or NAK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus<'a> {
    /// `451:0`.
    Ack,
    /// `451:1` with the `405` error code.
    Nak {
        /// Error code from field 405 (empty when absent).
        code: &'a str,
    },
}

/// A service message (`{1:F21...}{4:{177:...}{451:0|1}{405:...}}`) carried in front of the
/// message it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMessage<'a> {
    /// Its block 1 (service id 21).
    pub basic_header: BasicHeader<'a>,
    /// Its block 4 items (177 date-time, 451 accepted/rejected, 405 error code...).
    pub items: Vec<TagValue<'a>>,
    /// ACK or NAK.
    pub status: AckStatus<'a>,
}

/// A parsed message, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The ACK/NAK in front of the message, if any.
    pub service: Option<ServiceMessage<'a>>,
    /// Block 1.
    pub basic_header: Option<BasicHeader<'a>>,
    /// Block 2.
    pub application_header: Option<ApplicationHeader<'a>>,
    /// Block 3 items.
    pub user_header: Option<Vec<TagValue<'a>>>,
    /// Block 4.
    pub text: Text<'a>,
    /// Block 5 items.
    pub trailer: Option<Vec<TagValue<'a>>>,
    /// Local block S items.
    pub local_trailer: Option<Vec<TagValue<'a>>>,
    /// Whitespace after the last block (kept so `fmt` is the identity on canonical input).
    pub trailing: &'a str,
    /// From block 2, or from [`ParseOptions::message_type`].
    pub message_type: Option<MessageType>,
    pub(crate) input: &'a str,
}

impl<'a> Message<'a> {
    /// The input this message borrows from.
    pub fn input(&self) -> &'a str {
        self.input
    }
}

/// Parse a message; `Err` when any error-severity syntax problem was found. Warnings are
/// dropped here: use [`parse_with_problems`] or [`super::check`] to see them.
pub fn parse(input: &str, options: ParseOptions) -> Result<Message<'_>, Rejection> {
    let (message, problems) = parse_with_problems(input, options);
    if problems
        .iter()
        .any(|problem| problem.severity() == Severity::Error)
    {
        return Err(Rejection { problems });
    }
    Ok(message)
}

/// Parse bytes: checks UTF-8 first.
pub fn parse_bytes(input: &[u8], options: ParseOptions) -> Result<Message<'_>, Rejection> {
    match std::str::from_utf8(input) {
        Ok(text) => parse(text, options),
        Err(error) => Err(Rejection {
            problems: vec![encoding_problem(input, error.valid_up_to())],
        }),
    }
}

pub(crate) fn encoding_problem(input: &[u8], offset: usize) -> Problem {
    let valid = std::str::from_utf8(&input[..offset]).unwrap_or("");
    let (line, column) = position(valid, offset);
    Problem {
        code: Code::Encoding,
        line,
        column,
        offset,
        path: "input".to_owned(),
        message: "input is not valid utf-8".to_owned(),
        disposition: Disposition::Nak(NakCode::T32),
    }
}

/// Best-effort parse: always a message (possibly empty), plus every syntax problem found.
pub fn parse_with_problems(input: &str, options: ParseOptions) -> (Message<'_>, Vec<Problem>) {
    let mut parser = Parser {
        input,
        bytes: input.as_bytes(),
        pos: 0,
        problems: Vec::new(),
    };
    let mut message = Message {
        service: None,
        basic_header: None,
        application_header: None,
        user_header: None,
        text: Text::default(),
        trailer: None,
        local_trailer: None,
        trailing: "",
        message_type: None,
        input,
    };
    if input.len() > INPUT_LENGTH_MAX_BYTES {
        parser.problem(
            Code::InputTooLong,
            0,
            "input",
            format!("input longer than {INPUT_LENGTH_MAX_BYTES} bytes"),
        );
        fill_positions(input, &mut parser.problems);
        return (message, parser.problems);
    }
    parser.message(&mut message, options);
    parser.problems.sort_by_key(|problem| problem.offset);
    fill_positions(input, &mut parser.problems);
    message.message_type = message
        .application_header
        .map(|header| header.message_type)
        .or(options.message_type);
    (message, parser.problems)
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
    problems: Vec<Problem>,
}

fn envelope_disposition(code: Code) -> Disposition {
    match code {
        Code::BasicHeader => Disposition::Nak(NakCode::H01),
        Code::ApplicationHeader => Disposition::Nak(NakCode::H50),
        Code::FieldTag => Disposition::Nak(NakCode::T13),
        Code::SequenceUnclosed
        | Code::SequenceMismatch
        | Code::SequenceUnopened
        | Code::SequenceDepth => Disposition::Nak(NakCode::T56),
        _ => Disposition::Nak(NakCode::H98),
    }
}

impl<'a> Parser<'a> {
    fn problem(&mut self, code: Code, offset: usize, path: &str, message: String) {
        if self.problems.len() >= PROBLEMS_MAX {
            return;
        }
        // Line and column are filled in one pass at the end (fill_positions).
        self.problems.push(Problem {
            code,
            line: 0,
            column: 0,
            offset,
            path: path.to_owned(),
            message,
            disposition: envelope_disposition(code),
        });
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn starts_with(&self, prefix: &str) -> bool {
        self.bytes[self.pos..].starts_with(prefix.as_bytes())
    }

    fn message(&mut self, message: &mut Message<'a>, options: ParseOptions) {
        // Block order: 1, 2, 3, 4, 5, S; a service message (block 1 with service id 21 and a
        // block 4 of items) may come first.
        let mut last_rank = 0u8;
        let mut text_seen = false;
        if self.peek() != Some(b'{') {
            self.problem(
                Code::BlockOpen,
                self.pos,
                "input",
                "expected '{' opening a block".to_owned(),
            );
            // Resynchronise: read what follows as block 4 so its problems are reported too.
            if self.starts_with("4:") {
                self.pos += 2;
                if self.starts_with("\r\n") {
                    self.pos += 2;
                } else if self.starts_with("\n") {
                    self.pos += 1;
                }
            }
            self.text_body(message, self.pos);
            text_seen = true;
            last_rank = 4;
        }
        while self.peek() == Some(b'{') {
            let block_start = self.pos;
            let Some(colon) = self.bytes[self.pos + 1..]
                .iter()
                .take(4)
                .position(|&byte| byte == b':')
            else {
                self.problem(
                    Code::BlockOpen,
                    block_start,
                    "input",
                    "expected a block identifier and ':' after '{'".to_owned(),
                );
                return;
            };
            let id = &self.input[self.pos + 1..self.pos + 1 + colon];
            self.pos += colon + 2;
            let rank = match id {
                "1" => 1,
                "2" => 2,
                "3" => 3,
                "4" => 4,
                "5" => 5,
                "S" => 6,
                _ => 0,
            };
            if rank == 0 || rank <= last_rank {
                self.problem(
                    Code::BlockOrder,
                    block_start,
                    "input",
                    format!("unexpected block '{id}' here"),
                );
                return;
            }
            last_rank = rank;
            match rank {
                1 => {
                    let Some(raw) = self.simple_block(block_start, "block1") else {
                        return;
                    };
                    let header = self.basic_header(raw, block_start + 3);
                    if header.service_id.as_bytes() == *b"21" && message.service.is_none() {
                        self.service_message(message, header);
                        last_rank = 0;
                        continue;
                    }
                    message.basic_header = Some(header);
                }
                2 => {
                    let Some(raw) = self.simple_block(block_start, "block2") else {
                        return;
                    };
                    message.application_header = self.application_header(raw, block_start + 3);
                }
                3 => message.user_header = self.tag_block(block_start, "block3"),
                4 => {
                    text_seen = true;
                    match self.peek() {
                        Some(b'\n') => self.pos += 1,
                        Some(b'\r') if self.bytes.get(self.pos + 1) == Some(&b'\n') => {
                            self.pos += 2;
                        }
                        _ => self.problem(
                            Code::TextStart,
                            self.pos,
                            "block4",
                            "expected a line break after '{4:'".to_owned(),
                        ),
                    }
                    self.text_body(message, self.pos);
                }
                5 => message.trailer = self.tag_block(block_start, "block5"),
                _ => message.local_trailer = self.tag_block(block_start, "blockS"),
            }
        }
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            message.trailing = rest;
        } else {
            let offset = self.input.len() - trimmed.len();
            self.problem(
                Code::TrailingData,
                offset,
                "input",
                "unexpected data after the last block".to_owned(),
            );
        }
        if !text_seen {
            self.problem(
                Code::TextMissing,
                self.pos.min(self.input.len()),
                "block4",
                "message has no block 4".to_owned(),
            );
        }
        if !options.allow_text_only {
            if message.basic_header.is_none() {
                self.problem(
                    Code::HeaderMissing,
                    0,
                    "block1",
                    "message has no block 1".to_owned(),
                );
            } else if message.application_header.is_none() {
                self.problem(
                    Code::HeaderMissing,
                    0,
                    "block2",
                    "message has no block 2".to_owned(),
                );
            }
        }
    }

    /// Content of a block without nested braces, up to its `}`.
    fn simple_block(&mut self, block_start: usize, path: &str) -> Option<&'a str> {
        let start = self.pos;
        let end = self.bytes[start..]
            .iter()
            .position(|&byte| byte == b'}' || byte == b'{');
        match end {
            Some(length) if self.bytes[start + length] == b'}' => {
                self.pos = start + length + 1;
                Some(&self.input[start..start + length])
            }
            _ => {
                self.problem(
                    Code::BlockUnterminated,
                    block_start,
                    path,
                    "block not closed by '}'".to_owned(),
                );
                None
            }
        }
    }

    /// `{tag:value}...}`: the items of block 3, 5, S or a service message's block 4.
    fn tag_block(&mut self, block_start: usize, path: &str) -> Option<Vec<TagValue<'a>>> {
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Some(items);
                }
                Some(b'{') if items.len() < TAG_BLOCK_ITEMS_MAX => {
                    let item_start = self.pos;
                    let rest = &self.bytes[item_start + 1..];
                    let colon = rest.iter().position(|&byte| !byte.is_ascii_alphanumeric());
                    let Some(colon) = colon.filter(|&index| rest[index] == b':' && index > 0)
                    else {
                        self.problem(
                            Code::TagBlock,
                            item_start,
                            path,
                            "expected '{tag:value}'".to_owned(),
                        );
                        return None;
                    };
                    let value_start = item_start + 1 + colon + 1;
                    let Some(length) = self.bytes[value_start..]
                        .iter()
                        .position(|&byte| byte == b'}' || byte == b'{')
                        .filter(|&length| self.bytes[value_start + length] == b'}')
                    else {
                        self.problem(
                            Code::BlockUnterminated,
                            item_start,
                            path,
                            "item not closed by '}'".to_owned(),
                        );
                        return None;
                    };
                    items.push(TagValue {
                        tag: &self.input[item_start + 1..item_start + 1 + colon],
                        value: &self.input[value_start..value_start + length],
                    });
                    self.pos = value_start + length + 1;
                }
                _ => {
                    self.problem(
                        Code::BlockUnterminated,
                        block_start,
                        path,
                        "block not closed by '}'".to_owned(),
                    );
                    return None;
                }
            }
        }
    }

    fn basic_header(&mut self, raw: &'a str, offset: usize) -> BasicHeader<'a> {
        let part = |range: std::ops::Range<usize>| raw.get(range).unwrap_or("");
        let header = BasicHeader {
            raw,
            application_id: part(0..1),
            service_id: part(1..3),
            logical_terminal: part(3..15),
            session: part(15..19),
            sequence: part(19..25),
        };
        let well_formed = raw.len() == 25
            && matches!(header.application_id.as_bytes(), b"F" | b"A" | b"L")
            && header.service_id.bytes().all(|byte| byte.is_ascii_digit())
            && header
                .logical_terminal
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric())
            && header.session.bytes().all(|byte| byte.is_ascii_digit())
            && header.sequence.bytes().all(|byte| byte.is_ascii_digit());
        if !well_formed {
            self.problem(
                Code::BasicHeader,
                offset,
                "block1",
                "expected application id, service id, 12-character address, 4-digit session and 6-digit sequence".to_owned(),
            );
        }
        header
    }

    fn application_header(&mut self, raw: &'a str, offset: usize) -> Option<ApplicationHeader<'a>> {
        let message_type = raw
            .get(1..4)
            .and_then(|digits| digits.parse::<u16>().ok())
            .filter(|_| raw.as_bytes()[1..4].iter().all(u8::is_ascii_digit))
            .map(MessageType);
        let direction = match (raw.as_bytes().first(), message_type) {
            (Some(b'I'), Some(_)) => input_direction(&raw[4..]),
            (Some(b'O'), Some(_)) => output_direction(&raw[4..]),
            _ => None,
        };
        match (message_type, direction) {
            (Some(message_type), Some(direction)) => Some(ApplicationHeader {
                raw,
                message_type,
                direction,
            }),
            _ => {
                self.problem(
                    Code::ApplicationHeader,
                    offset,
                    "block2",
                    "expected 'I' or 'O', a 3-digit message type and the parts of that form"
                        .to_owned(),
                );
                None
            }
        }
    }

    fn service_message(&mut self, message: &mut Message<'a>, basic_header: BasicHeader<'a>) {
        let block_start = self.pos;
        if !self.starts_with("{4:{") {
            self.problem(
                Code::ServiceMessage,
                block_start,
                "service",
                "expected '{4:{' after a service message's block 1".to_owned(),
            );
            return;
        }
        self.pos += 3;
        let Some(items) = self.tag_block(block_start, "service/block4") else {
            return;
        };
        let status_value = items
            .iter()
            .find(|item| item.tag == "451")
            .map(|item| item.value);
        let status = match status_value {
            Some("0") => AckStatus::Ack,
            Some("1") => AckStatus::Nak {
                code: items
                    .iter()
                    .find(|item| item.tag == "405")
                    .map_or("", |item| item.value),
            },
            _ => {
                self.problem(
                    Code::ServiceMessage,
                    block_start,
                    "service/block4",
                    "expected field 451 with 0 (ack) or 1 (nak)".to_owned(),
                );
                return;
            }
        };
        message.service = Some(ServiceMessage {
            basic_header,
            items,
            status,
        });
    }

    /// Block 4 lines from `start` up to the `-}` line (or the end of input).
    fn text_body(&mut self, message: &mut Message<'a>, start: usize) {
        let text = &mut message.text;
        text.offset = start;
        // Sized from the input so the vectors rarely grow: a field line is rarely under 16 bytes.
        let remaining_bytes = self.bytes.len().saturating_sub(start);
        text.fields.reserve(remaining_bytes / 16 + 4);
        text.sequences.reserve(remaining_bytes / 64 + 2);
        text.sequences.push(SequenceNode {
            name: "",
            parent: NONE,
            open: 0,
            close: NONE,
            depth: 0,
        });
        let bytes = self.bytes;
        let mut current = ROOT;
        let mut line_start = start;
        let mut open_field: Option<usize> = None; // index of the field taking continuation lines
        let mut orphan_reported = false;
        loop {
            if line_start >= bytes.len() {
                self.problem(
                    Code::BlockUnterminated,
                    bytes.len(),
                    "block4",
                    "block 4 not closed by a '-}' line".to_owned(),
                );
                self.pos = bytes.len();
                break;
            }
            let newline =
                memchr::memchr(b'\n', &bytes[line_start..]).map(|length| line_start + length);
            let line_end = newline.unwrap_or(bytes.len());
            let content_end = if line_end > line_start && bytes[line_end - 1] == b'\r' {
                line_end - 1
            } else {
                line_end
            };
            let next_line = newline.map_or(bytes.len(), |index| index + 1);
            let first = bytes[line_start];
            if first == b'-' && bytes.get(line_start + 1) == Some(&b'}') {
                text.length_bytes = line_start - start;
                self.pos = line_start + 2;
                break;
            }
            if first == b':' {
                match tag_length(&bytes[line_start + 1..content_end]) {
                    Some(length) => {
                        let tag = &self.input[line_start + 1..line_start + 1 + length];
                        let value_start = line_start + length + 2;
                        let value = &self.input[value_start..content_end];
                        let index = text.fields.len();
                        let mut sequence = current;
                        if same(tag, "16R") {
                            let depth = text.sequences[current as usize].depth + 1;
                            if depth as usize > SEQUENCE_DEPTH_MAX {
                                self.problem(
                                    Code::SequenceDepth,
                                    line_start,
                                    "block4",
                                    format!("sequences nested deeper than {SEQUENCE_DEPTH_MAX}"),
                                );
                            } else {
                                text.sequences.push(SequenceNode {
                                    name: value,
                                    parent: current,
                                    open: index as u32,
                                    close: NONE,
                                    depth,
                                });
                                current = (text.sequences.len() - 1) as u32;
                                sequence = current;
                            }
                        } else if same(tag, "16S") {
                            if current == ROOT {
                                self.problem(
                                    Code::SequenceUnopened,
                                    line_start,
                                    &format!("16S:{value}"),
                                    format!("'16S:{value}' closes no open sequence"),
                                );
                                sequence = NONE;
                            } else {
                                let node = &mut text.sequences[current as usize];
                                if !same(node.name, value) {
                                    let expected = node.name;
                                    self.problem(
                                        Code::SequenceMismatch,
                                        line_start,
                                        &format!("16S:{value}"),
                                        format!("'16S:{value}' closes '16R:{expected}'"),
                                    );
                                }
                                let node = &mut text.sequences[current as usize];
                                node.close = index as u32;
                                sequence = current;
                                current = node.parent;
                            }
                        }
                        text.fields.push(Field {
                            tag,
                            value,
                            offset: line_start,
                            sequence,
                        });
                        open_field = Some(index);
                    }
                    None => {
                        self.problem(
                            Code::FieldTag,
                            line_start,
                            "block4",
                            "expected a ':NNa:' field tag".to_owned(),
                        );
                        open_field = None;
                        orphan_reported = true;
                    }
                }
            } else {
                match open_field {
                    Some(index) => {
                        let field = &mut text.fields[index];
                        let value_start =
                            field.value.as_ptr() as usize - self.input.as_ptr() as usize;
                        field.value = &self.input[value_start..content_end];
                    }
                    None if !orphan_reported => {
                        self.problem(
                            Code::FieldTag,
                            line_start,
                            "block4",
                            "text outside any field".to_owned(),
                        );
                        orphan_reported = true;
                    }
                    None => {}
                }
            }
            line_start = next_line;
        }
        let field_count = text.fields.len() as u32;
        for node in text.sequences.iter_mut().skip(1) {
            if node.close == NONE {
                node.close = field_count;
                let offset = text.fields[node.open as usize].offset;
                let name = node.name;
                self.problem(
                    Code::SequenceUnclosed,
                    offset,
                    &format!("16R:{name}"),
                    format!("'16R:{name}' is never closed by '16S:{name}'"),
                );
            }
        }
        text.sequences[ROOT as usize].close = field_count;
    }
}

/// Length of `NNa` in `NNa:rest` (two digits, an optional upper-case letter, a colon).
fn tag_length(line: &[u8]) -> Option<usize> {
    match line {
        [first, second, b':', ..] if first.is_ascii_digit() && second.is_ascii_digit() => Some(2),
        [first, second, letter, b':', ..]
            if first.is_ascii_digit() && second.is_ascii_digit() && letter.is_ascii_uppercase() =>
        {
            Some(3)
        }
        _ => None,
    }
}

fn input_direction(rest: &str) -> Option<Direction<'_>> {
    // receiver(12) priority(1) monitoring(1) obsolescence(3); every part may be absent, and a
    // lone priority (`I564N`) is accepted.
    if !rest.is_ascii() {
        return None;
    }
    let (receiver, rest) = if rest.len() >= 12 {
        (Some(&rest[..12]), &rest[12..])
    } else {
        (None, rest)
    };
    let (priority, rest) = split_optional(rest, 1);
    let (monitoring, rest) = split_optional(rest, 1);
    let (obsolescence, rest) = split_optional(rest, 3);
    let valid = rest.is_empty()
        && receiver.is_none_or(|address| address.bytes().all(|byte| byte.is_ascii_alphanumeric()))
        && priority.is_none_or(|value| matches!(value.as_bytes(), b"S" | b"N" | b"U"))
        && monitoring.is_none_or(|value| matches!(value.as_bytes(), b"1" | b"2" | b"3"))
        && obsolescence.is_none_or(|value| {
            value.len() == 3 && value.bytes().all(|byte| byte.is_ascii_digit())
        });
    valid.then_some(Direction::Input {
        receiver,
        priority,
        monitoring,
        obsolescence,
    })
}

fn split_optional(rest: &str, length: usize) -> (Option<&str>, &str) {
    if rest.is_empty() {
        (None, rest)
    } else if rest.len() >= length {
        (Some(&rest[..length]), &rest[length..])
    } else {
        (Some(rest), "")
    }
}

fn output_direction(rest: &str) -> Option<Direction<'_>> {
    // input time(4) MIR(28) output date(6) output time(4) [priority(1)]
    if !(42..=43).contains(&rest.len()) || !rest.is_ascii() {
        return None;
    }
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let direction = Direction::Output {
        input_time: &rest[..4],
        input_reference: &rest[4..32],
        output_date: &rest[32..38],
        output_time: &rest[38..42],
        priority: rest.get(42..43),
    };
    (digits(&rest[..4]) && digits(&rest[4..10]) && digits(&rest[32..42])).then_some(direction)
}
