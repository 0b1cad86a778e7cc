//! The writer: a [`Message`] back to text, always with CRLF line endings.
//!
//! Values are written verbatim except for their line endings, so `write(parse(x)) == x` for any
//! `x` already in canonical (CRLF) form.

use super::parse::{Message, TagValue};
use super::text::Text;

/// Append the canonical form of `message` to `out`.
pub fn write(message: &Message<'_>, out: &mut String) {
    if let Some(service) = &message.service {
        out.push_str("{1:");
        out.push_str(service.basic_header.raw);
        out.push_str("}{4:");
        write_items(&service.items, out);
        out.push('}');
    }
    if let Some(header) = &message.basic_header {
        out.push_str("{1:");
        out.push_str(header.raw);
        out.push('}');
    }
    if let Some(header) = &message.application_header {
        out.push_str("{2:");
        out.push_str(header.raw);
        out.push('}');
    }
    if let Some(items) = &message.user_header {
        out.push_str("{3:");
        write_items(items, out);
        out.push('}');
    }
    out.push_str("{4:\r\n");
    write_text(&message.text, out);
    out.push_str("-}");
    if let Some(items) = &message.trailer {
        out.push_str("{5:");
        write_items(items, out);
        out.push('}');
    }
    if let Some(items) = &message.local_trailer {
        out.push_str("{S:");
        write_items(items, out);
        out.push('}');
    }
    push_crlf(message.trailing, out);
}

/// The canonical form of `message` as a new string.
pub fn to_canonical(message: &Message<'_>) -> String {
    let mut out = String::with_capacity(message.input().len() + 64);
    write(message, &mut out);
    out
}

/// Append block 4 fields (without `{4:` and `-}`), one per line, CRLF-terminated.
pub fn write_text(text: &Text<'_>, out: &mut String) {
    for field in text.fields() {
        out.push(':');
        out.push_str(field.tag);
        out.push(':');
        push_crlf(field.value, out);
        out.push_str("\r\n");
    }
}

fn write_items(items: &[TagValue<'_>], out: &mut String) {
    for item in items {
        out.push('{');
        out.push_str(item.tag);
        out.push(':');
        out.push_str(item.value);
        out.push('}');
    }
}

/// Append `value` with every line ending (LF or CRLF) written as CRLF.
pub(crate) fn push_crlf(value: &str, out: &mut String) {
    if !value.as_bytes().contains(&b'\n') {
        out.push_str(value);
        return;
    }
    let mut lines = value.split('\n');
    if let Some(line) = lines.next() {
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
    }
    for line in lines {
        out.push_str("\r\n");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
    }
}

/// `input` with every line ending written as CRLF (what `fmt` produces from canonical input).
pub fn normalise_line_endings(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / 16);
    push_crlf(input, &mut out);
    out
}
