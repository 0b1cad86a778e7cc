//! `ccass fin parse|validate|fmt`: the codec from the command line.
//!
//! The only part of the codec that does I/O (reads files or standard input). JSON goes through
//! small DTOs defined here, so the core types never derive `Serialize`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::parse::{AckStatus, Direction, encoding_problem};
use super::{
    Field, Message, MessageType, ParseOptions, Problem, Seq, Severity, TagValue, check,
    parse_with_problems, to_canonical,
};

/// Read, check and rewrite ISO 15022 (FIN) messages.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FinCommand {
    /// Parse a message and print it as JSON: the blocks, then block 4 as a tree of sequences
    /// and fields (tag, qualifier, data source scheme, value). Exits non-zero on syntax errors.
    Parse {
        /// Message file, or `-` for standard input.
        file: PathBuf,
        /// Message type to assume for block-4-only input (no blocks 1 and 2), e.g. 540.
        #[arg(long)]
        mt: Option<u16>,
    },
    /// Validate messages: prints `FILE: OK` or every problem as `LINE:COL CODE path: message`.
    /// Exits non-zero if any file is invalid.
    Validate {
        /// Message files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Message type to assume for block-4-only input (no blocks 1 and 2), e.g. 548.
        #[arg(long)]
        mt: Option<u16>,
    },
    /// Write the canonical form (CRLF line endings) of a message to standard output.
    Fmt {
        /// Message file, or `-` for standard input.
        file: PathBuf,
        /// Message type to assume for block-4-only input (no blocks 1 and 2).
        #[arg(long)]
        mt: Option<u16>,
    },
}

/// Run one `fin` subcommand, writing its output to `stdout`.
pub fn run(command: &FinCommand, stdout: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        FinCommand::Parse { file, mt } => {
            let bytes = read(file)?;
            let options = options(*mt);
            let Ok(input) = std::str::from_utf8(&bytes) else {
                let problem = utf8_problem(&bytes);
                writeln!(stdout, "{problem}")?;
                return Ok(ExitCode::FAILURE);
            };
            let (message, problems) = parse_with_problems(input, options);
            let dto = MessageDto::new(&message, &problems);
            serde_json::to_writer_pretty(&mut *stdout, &dto).context("write json")?;
            writeln!(stdout)?;
            Ok(exit_code(!has_errors(&problems)))
        }
        FinCommand::Validate { files, mt } => {
            let options = options(*mt);
            let mut all_valid = true;
            for file in files {
                let bytes = read(file)?;
                let name = file.display();
                let problems = match std::str::from_utf8(&bytes) {
                    Ok(input) => check(input, options).problems,
                    Err(_) => vec![utf8_problem(&bytes)],
                };
                let valid = !has_errors(&problems);
                all_valid &= valid;
                if valid {
                    writeln!(stdout, "{name}: OK")?;
                } else {
                    writeln!(stdout, "{name}: {} problem(s)", problems.len())?;
                }
                for problem in &problems {
                    writeln!(stdout, "{problem}")?;
                }
            }
            Ok(exit_code(all_valid))
        }
        FinCommand::Fmt { file, mt } => {
            let bytes = read(file)?;
            let input = std::str::from_utf8(&bytes)
                .map_err(|_| anyhow::anyhow!("{}", utf8_problem(&bytes)))?;
            let (message, problems) = parse_with_problems(input, options(*mt));
            if has_errors(&problems) {
                let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
                anyhow::bail!("cannot format {}:\n{}", file.display(), lines.join("\n"));
            }
            stdout
                .write_all(to_canonical(&message).as_bytes())
                .context("write message")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn options(mt: Option<u16>) -> ParseOptions {
    match mt {
        Some(number) => ParseOptions::text_only(Some(MessageType(number))),
        None => ParseOptions::fin(),
    }
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn has_errors(problems: &[Problem]) -> bool {
    problems
        .iter()
        .any(|problem| problem.severity() == Severity::Error)
}

fn utf8_problem(bytes: &[u8]) -> Problem {
    let valid_up_to = std::str::from_utf8(bytes).map_or_else(|error| error.valid_up_to(), str::len);
    encoding_problem(bytes, valid_up_to)
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("read standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    }
    Ok(bytes)
}

#[derive(Serialize)]
struct MessageDto<'a> {
    message_type: Option<u16>,
    service: Option<ServiceDto<'a>>,
    block1: Option<BasicHeaderDto<'a>>,
    block2: Option<ApplicationHeaderDto<'a>>,
    block3: Option<Vec<TagValueDto<'a>>>,
    block4: Vec<ItemDto<'a>>,
    block5: Option<Vec<TagValueDto<'a>>>,
    block_s: Option<Vec<TagValueDto<'a>>>,
    problems: Vec<ProblemDto>,
}

#[derive(Serialize)]
struct ServiceDto<'a> {
    block1: &'a str,
    status: &'static str,
    error_code: Option<&'a str>,
    items: Vec<TagValueDto<'a>>,
}

#[derive(Serialize)]
struct BasicHeaderDto<'a> {
    application_id: &'a str,
    service_id: &'a str,
    logical_terminal: &'a str,
    session: &'a str,
    sequence: &'a str,
}

#[derive(Serialize)]
struct ApplicationHeaderDto<'a> {
    direction: &'static str,
    message_type: u16,
    receiver: Option<&'a str>,
    priority: Option<&'a str>,
    input_reference: Option<&'a str>,
    raw: &'a str,
}

#[derive(Serialize)]
struct TagValueDto<'a> {
    tag: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ItemDto<'a> {
    Field(FieldDto<'a>),
    Sequence(SequenceDto<'a>),
}

#[derive(Serialize)]
struct FieldDto<'a> {
    tag: &'a str,
    qualifier: Option<&'a str>,
    scheme: Option<&'a str>,
    value: String,
}

#[derive(Serialize)]
struct SequenceDto<'a> {
    sequence: &'a str,
    items: Vec<ItemDto<'a>>,
}

#[derive(Serialize)]
struct ProblemDto {
    line: u32,
    column: u32,
    code: &'static str,
    path: String,
    message: String,
}

fn tag_values<'a>(items: &[TagValue<'a>]) -> Vec<TagValueDto<'a>> {
    items
        .iter()
        .map(|item| TagValueDto {
            tag: item.tag,
            value: item.value,
        })
        .collect()
}

impl<'a> MessageDto<'a> {
    fn new(message: &Message<'a>, problems: &[Problem]) -> MessageDto<'a> {
        let service = message.service.as_ref().map(|service| {
            let (status, error_code) = match service.status {
                AckStatus::Ack => ("ack", None),
                AckStatus::Nak { code } => ("nak", Some(code)),
            };
            ServiceDto {
                block1: service.basic_header.raw,
                status,
                error_code,
                items: tag_values(&service.items),
            }
        });
        let block2 = message.application_header.map(|header| {
            let (direction, receiver, priority, input_reference) = match header.direction {
                Direction::Input {
                    receiver, priority, ..
                } => ("input", receiver, priority, None),
                Direction::Output {
                    input_reference,
                    priority,
                    ..
                } => ("output", None, priority, Some(input_reference)),
            };
            ApplicationHeaderDto {
                direction,
                message_type: header.message_type.0,
                receiver,
                priority,
                input_reference,
                raw: header.raw,
            }
        });
        MessageDto {
            message_type: message.message_type.map(|message_type| message_type.0),
            service,
            block1: message.basic_header.map(|header| BasicHeaderDto {
                application_id: header.application_id,
                service_id: header.service_id,
                logical_terminal: header.logical_terminal,
                session: header.session,
                sequence: header.sequence,
            }),
            block2,
            block3: message.user_header.as_deref().map(tag_values),
            block4: items(message.text.root()),
            block5: message.trailer.as_deref().map(tag_values),
            block_s: message.local_trailer.as_deref().map(tag_values),
            problems: problems
                .iter()
                .map(|problem| ProblemDto {
                    line: problem.line,
                    column: problem.column,
                    code: problem.code.as_str(),
                    path: problem.path.clone(),
                    message: problem.message.clone(),
                })
                .collect(),
        }
    }
}

/// Fields and child sequences of `sequence`, in input order.
fn items<'a>(sequence: Seq<'_, 'a>) -> Vec<ItemDto<'a>> {
    let mut fields = sequence.fields().peekable();
    let mut children = sequence.children().peekable();
    let mut out = Vec::new();
    loop {
        let next_field = fields.peek().map(|field| field.offset);
        let next_child = children.peek().map(|child| child.node().open);
        let child_first = match (next_field, next_child) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(field_offset), Some(open)) => {
                let open_offset = sequence_open_offset(sequence, open);
                open_offset < field_offset
            }
        };
        if child_first {
            if let Some(child) = children.next() {
                out.push(ItemDto::Sequence(SequenceDto {
                    sequence: child.name(),
                    items: items(child),
                }));
            }
        } else if let Some(field) = fields.next() {
            out.push(ItemDto::Field(field_dto(field)));
        }
    }
    out
}

fn sequence_open_offset(sequence: Seq<'_, '_>, open: u32) -> usize {
    sequence
        .text_fields()
        .get(open as usize)
        .map_or(0, |field| field.offset)
}

fn field_dto<'a>(field: &Field<'a>) -> FieldDto<'a> {
    let lines = |value: &str| {
        value
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match field.generic() {
        Some(generic) => FieldDto {
            tag: field.tag,
            qualifier: Some(generic.qualifier),
            scheme: generic.scheme,
            value: lines(generic.value),
        },
        None => FieldDto {
            tag: field.tag,
            qualifier: None,
            scheme: None,
            value: lines(field.value),
        },
    }
}
