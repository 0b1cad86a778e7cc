//! The session protocol on the TLS stream, shared by the gateway and the PSS library.
//!
//! Every frame is a 6-digit ASCII decimal byte length followed by that many bytes of text, so
//! `openssl s_client` can act as a PSS (`000031LOGIN B01234XXXXXX 0000000000`).
//!
//! 1. The PSS logs in: `LOGIN <logical terminal> <last output sequence>`. The logical terminal
//!    is 12 letters or digits and starts with the certificate's participant id
//!    (`B01234XXXXXX`). The gateway answers `LOGIN OK <logical terminal>` or
//!    `LOGIN REFUSED <reason>` and closes.
//! 2. Every later frame from the PSS is one FIN message. Its input sequence number is its
//!    position in the session (1, 2, 3...). The gateway answers each, in input order, with a
//!    FIN service message carrying that number in block 1's session and sequence fields (ten
//!    digits): ACK `{1:F21<LT><ISN:010>}{4:{177:<YYMMDDHHMM>}{451:0}}`, NAK
//!    `{1:F21<LT><ISN:010>}{4:{177:<YYMMDDHHMM>}{451:1}{405:<code>}}{S:{REA:<reason>}}`.
//! 3. Outbound: the gateway writes the participant's messages (stream OUTBOUND) to the session
//!    in order, each a FIN message whose block 1 session and sequence fields (ten digits) hold
//!    its output sequence number: `{1:F01<LT><OSN:010>}{2:...}{4:...-}`. The output sequence
//!    number is the message's OUTBOUND stream sequence: it only grows and is the same
//!    whenever the message is sent again, but it is not contiguous (other participants' messages
//!    take numbers in between). A message sent again because an earlier copy may have reached
//!    the PSS carries the possible duplicate trailer `{5:{PDE:}}`.
//! 4. The PSS acknowledges output messages with the same ACK service message the gateway uses,
//!    carrying the output sequence number: `{1:F21<LT><OSN:010>}{4:{177:<YYMMDDHHMM>}{451:0}}`
//!    ([`Reply::encode`]). An acknowledgement covers every output message up to that number.
//!    Service messages (`{1:F21`) from the PSS take no input sequence number.
//!
//! NAK codes: the codec's FIN codes ([`crate::iso15022::NakCode`]: H01, H50, H98, T13...)
//! and the gateway's own ([`GatewayNak`]): G01 duplicate reference, G02 sender is not the
//! certificate's participant, G03 bus unavailable (message not stored, send again), G04 frame
//! refused (bad prefix or oversized; the gateway then closes the session), G05 the
//! certificate's user may not input instructions (`si.input`) for the account, G06
//! authorisation unavailable (the auth service did not answer: nothing stored, send again).

use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Digits of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 6;
/// Logical terminal address length.
pub const LOGICAL_TERMINAL_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("length prefix is not 6 ascii digits: {0:?}")]
    BadPrefix(String),
    #[error("frame of {length_bytes} bytes is over the limit of {limit_bytes}")]
    TooLarge {
        length_bytes: usize,
        limit_bytes: usize,
    },
    #[error("connection closed inside a frame")]
    Truncated,
    #[error("read frame: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame; `Ok(None)` at a clean end of stream (between frames).
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = reader.read(&mut prefix[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += read;
        if !prefix[..filled].iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadPrefix(
                String::from_utf8_lossy(&prefix[..filled]).into_owned(),
            ));
        }
    }
    let length_bytes = parse_length(&prefix);
    if length_bytes > frame_bytes_max {
        return Err(FrameError::TooLarge {
            length_bytes,
            limit_bytes: frame_bytes_max,
        });
    }
    let mut frame = vec![0u8; length_bytes];
    reader.read_exact(&mut frame).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(error)
        }
    })?;
    Ok(Some(frame))
}

fn parse_length(prefix: &[u8; LENGTH_PREFIX_BYTES]) -> usize {
    prefix
        .iter()
        .fold(0, |length, digit| length * 10 + usize::from(digit - b'0'))
}

/// The frame for `text`: prefix and text. Fails for text of a million bytes or more.
pub fn encode_frame(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + text.len());
    append_frame(&mut frame, text)?;
    Ok(frame)
}

/// Appends the frame for `text` to `buffer`. Fails for text of a million bytes or more.
pub fn append_frame(buffer: &mut Vec<u8>, text: &[u8]) -> std::io::Result<()> {
    if text.len() > 999_999 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes does not fit 6 digits", text.len()),
        ));
    }
    let mut prefix = [b'0'; LENGTH_PREFIX_BYTES];
    let mut rest = text.len();
    for digit in prefix.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buffer.extend_from_slice(&prefix);
    buffer.extend_from_slice(text);
    Ok(())
}

/// Bytes of room made in a [`FrameReader`]'s buffer before a read: several frames' worth, so
/// one read takes whatever the stream has ready.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads frames through a buffer of its own (at most a frame plus [`READ_CHUNK_BYTES`]), so
/// [`FrameReader::next_frame`] is cancellation safe: bytes read stay buffered, and a session
/// can wait for its next frame beside other events in one task. A frame is a slice of the
/// buffer, not a copy.
pub struct FrameReader<R> {
    reader: R,
    buffer: bytes::BytesMut,
    frame_bytes_max: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, frame_bytes_max: usize) -> FrameReader<R> {
        FrameReader {
            reader,
            buffer: bytes::BytesMut::new(),
            frame_bytes_max,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between frames). Errors as
    /// [`read_frame`]'s.
    pub async fn next_frame(&mut self) -> Result<Option<bytes::Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            self.buffer.reserve(READ_CHUNK_BYTES);
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// A whole frame already in the buffer, if any, taken out of it.
    fn buffered_frame(&mut self) -> Result<Option<bytes::Bytes>, FrameError> {
        let seen = self.buffer.len().min(LENGTH_PREFIX_BYTES);
        if !self.buffer[..seen].iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadPrefix(
                String::from_utf8_lossy(&self.buffer[..seen]).into_owned(),
            ));
        }
        let Ok(prefix) = <[u8; LENGTH_PREFIX_BYTES]>::try_from(&self.buffer[..seen]) else {
            return Ok(None);
        };
        let length_bytes = parse_length(&prefix);
        if length_bytes > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                length_bytes,
                limit_bytes: self.frame_bytes_max,
            });
        }
        let frame_end = LENGTH_PREFIX_BYTES + length_bytes;
        if self.buffer.len() < frame_end {
            self.buffer.reserve(frame_end - self.buffer.len());
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(frame_end).freeze();
        Ok(Some(frame.split_off(LENGTH_PREFIX_BYTES)))
    }
}

/// Writes one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    text: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&encode_frame(text)?).await
}

/// The login frame's content.
pub fn login(logical_terminal: &str, last_output_sequence: u64) -> String {
    format!("LOGIN {logical_terminal} {last_output_sequence:010}")
}

/// A login as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub logical_terminal: String,
    pub last_output_sequence: u64,
}

/// Parses and checks a login frame against the certificate's participant.
pub fn parse_login(frame: &[u8], participant: &str) -> Result<Login, String> {
    let text = std::str::from_utf8(frame).map_err(|_| "login is not utf-8".to_owned())?;
    let mut words = text.trim_end().split(' ');
    if words.next() != Some("LOGIN") {
        return Err("expected LOGIN <logical terminal> <last output sequence>".to_owned());
    }
    let logical_terminal = words.next().unwrap_or_default();
    check_logical_terminal(logical_terminal, participant)?;
    let last_output_sequence = words
        .next()
        .and_then(|word| word.parse::<u64>().ok())
        .ok_or_else(|| "last output sequence is not a number".to_owned())?;
    if words.next().is_some() {
        return Err("login has extra words".to_owned());
    }
    Ok(Login {
        logical_terminal: logical_terminal.to_owned(),
        last_output_sequence,
    })
}

/// A logical terminal belongs to a participant when it is 12 letters or digits starting with
/// the participant id.
pub fn check_logical_terminal(logical_terminal: &str, participant: &str) -> Result<(), String> {
    if logical_terminal.len() != LOGICAL_TERMINAL_CHARS
        || !logical_terminal
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric())
    {
        return Err(format!(
            "logical terminal {logical_terminal:?} is not 12 letters or digits"
        ));
    }
    if !logical_terminal.starts_with(participant) {
        return Err(format!(
            "logical terminal {logical_terminal} is not participant {participant}'s"
        ));
    }
    Ok(())
}

pub const LOGIN_OK: &str = "LOGIN OK";
pub const LOGIN_REFUSED: &str = "LOGIN REFUSED";

/// The gateway's own NAK codes (beside the codec's FIN codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayNak {
    /// The sender's reference was stored within INBOUND's duplicate window (an older copy is
    /// refused by intake, MT548 REJT/DUPL).
    Duplicate,
    /// Block 1's logical terminal is not the certificate's participant's.
    ForeignSender,
    /// JetStream did not store the message: send it again.
    BusUnavailable,
    /// Bad length prefix or oversized frame: the session closes after this NAK.
    FrameRefused,
    /// The certificate's user may not input instructions for the account (`si.input`).
    NotAuthorised,
    /// The auth service did not decide (down, timed out): not stored, send again.
    AuthorisationUnavailable,
}

impl GatewayNak {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayNak::Duplicate => "G01",
            GatewayNak::ForeignSender => "G02",
            GatewayNak::BusUnavailable => "G03",
            GatewayNak::FrameRefused => "G04",
            GatewayNak::NotAuthorised => "G05",
            GatewayNak::AuthorisationUnavailable => "G06",
        }
    }
}

/// The answer to one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub input_sequence: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Nak { code: String, reason: String },
}

impl Reply {
    /// The service message text.
    pub fn encode(&self, logical_terminal: &str) -> String {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:02}{:02}{:02}{:02}{:02}",
            now.year() % 100,
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute()
        );
        let header = format!(
            "{{1:F21{logical_terminal}{:010}}}{{4:{{177:{stamp}}}",
            self.input_sequence % 10_000_000_000
        );
        match &self.outcome {
            Outcome::Ack => format!("{header}{{451:0}}}}"),
            Outcome::Nak { code, reason } => {
                let reason: String = reason
                    .chars()
                    .map(|c| if matches!(c, '{' | '}') { ' ' } else { c })
                    .take(200)
                    .collect();
                format!("{header}{{451:1}}{{405:{code}}}}}{{S:{{REA:{reason}}}}}")
            }
        }
    }

    /// Parses a service message produced by [`Reply::encode`].
    pub fn parse(text: &str) -> Option<Reply> {
        let rest = text.strip_prefix("{1:F21")?;
        let digits = rest.get(LOGICAL_TERMINAL_CHARS..LOGICAL_TERMINAL_CHARS + 10)?;
        let input_sequence = digits.parse().ok()?;
        let between = |open: &str| -> Option<&str> {
            let start = text.find(open)? + open.len();
            let end = text[start..].find('}')? + start;
            Some(&text[start..end])
        };
        let outcome = match between("{451:")? {
            "0" => Outcome::Ack,
            "1" => Outcome::Nak {
                code: between("{405:")?.to_owned(),
                reason: between("{REA:").unwrap_or_default().to_owned(),
            },
            _ => return None,
        };
        Some(Reply {
            input_sequence,
            outcome,
        })
    }
}

/// Block 1 prefix of a service message (ACK/NAK), in either direction.
pub const SERVICE_PREFIX: &[u8] = b"{1:F21";
/// Block 1 prefix of a FIN user message.
pub const USER_PREFIX: &str = "{1:F01";
/// The possible duplicate trailer field.
pub const POSSIBLE_DUPLICATE: &str = "{PDE:}";

/// An output message as the PSS receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMessage {
    pub output_sequence: u64,
    pub possible_duplicate: bool,
    pub text: String,
}

impl OutputMessage {
    /// Reads an output message frame: `{1:F01<LT><OSN:010>}...`.
    pub fn parse(text: &str) -> Option<OutputMessage> {
        let rest = text.strip_prefix(USER_PREFIX)?;
        let digits = rest.get(LOGICAL_TERMINAL_CHARS..LOGICAL_TERMINAL_CHARS + 10)?;
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Some(OutputMessage {
            output_sequence: digits.parse().ok()?,
            possible_duplicate: text.contains(POSSIBLE_DUPLICATE),
            text: text.to_owned(),
        })
    }

    /// The message type in block 2 (`{2:I548...` or `{2:O548...`), when present.
    pub fn message_type(&self) -> Option<&str> {
        message_type_of(&self.text)
    }
}

/// The three digits of block 2's message type, when present.
pub fn message_type_of(text: &str) -> Option<&str> {
    let start = text.find("{2:")? + 4;
    text.get(start..start + 3)
        .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
}

/// The frame text of an output message: block 1's session and sequence fields set to
/// `output_sequence` (a block 1 for `logical_terminal` is put in front when the text has none
/// of the FIN shape), and `{PDE:}` added to block 5 when `possible_duplicate`.
pub fn output_message(
    text: &str,
    logical_terminal: &str,
    output_sequence: u64,
    possible_duplicate: bool,
) -> String {
    let sequence = format!("{:010}", output_sequence % 10_000_000_000);
    let digits_at = USER_PREFIX.len() + LOGICAL_TERMINAL_CHARS;
    let has_block_1 = text.starts_with(USER_PREFIX)
        && text.get(digits_at..digits_at + 11).is_some_and(|rest| {
            rest[..10].bytes().all(|byte| byte.is_ascii_digit()) && rest.ends_with('}')
        });
    let mut out = String::with_capacity(text.len() + 48);
    if has_block_1 {
        out.push_str(&text[..digits_at]);
        out.push_str(&sequence);
        out.push_str(&text[digits_at + 10..]);
    } else {
        out.push_str(USER_PREFIX);
        out.push_str(logical_terminal);
        out.push_str(&sequence);
        out.push('}');
        out.push_str(text);
    }
    if possible_duplicate && !out.contains(POSSIBLE_DUPLICATE) {
        if let Some(at) = out.find("{5:") {
            out.insert_str(at + 3, POSSIBLE_DUPLICATE);
        } else if let Some(end) = out
            .find("{4:")
            .and_then(|start| out[start..].find("-}").map(|end| start + end + 2))
        {
            out.insert_str(end, "{5:{PDE:}}");
        } else {
            out.push_str("{5:{PDE:}}");
        }
    }
    out
}

/// The PSS's acknowledgement of output messages up to `output_sequence`.
pub fn output_ack(logical_terminal: &str, output_sequence: u64) -> String {
    Reply {
        input_sequence: output_sequence,
        outcome: Outcome::Ack,
    }
    .encode(logical_terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_messages_carry_their_sequence_and_the_duplicate_mark() {
        // Goal: the output sequence number goes into block 1 and a resend is marked PDE in
        // block 5, whatever trailers the message already has. Method: frame and parse back.
        let text = "{1:F01B01234XXXXXX0000000000}{2:I548B01234XXXXXXN}{4:\r\n:20C::SEME//A\r\n-}";
        let first = output_message(text, "B01234XXXXXX", 42, false);
        let parsed = OutputMessage::parse(&first).unwrap();
        assert_eq!(parsed.output_sequence, 42);
        assert!(!parsed.possible_duplicate);
        assert_eq!(parsed.message_type(), Some("548"));
        let again = output_message(text, "B01234XXXXXX", 42, true);
        assert!(again.ends_with("-}{5:{PDE:}}"), "{again}");
        assert!(OutputMessage::parse(&again).unwrap().possible_duplicate);
        let with_trailer = output_message(
            &format!("{text}{{5:{{CHK:123456789ABC}}}}"),
            "B01234XXXXXX",
            7,
            true,
        );
        assert!(
            with_trailer.ends_with("{5:{PDE:}{CHK:123456789ABC}}"),
            "{with_trailer}"
        );
        let bare = output_message("{4:\r\n:20C::SEME//A\r\n-}", "B01234XXXXXX", 9, false);
        assert_eq!(OutputMessage::parse(&bare).unwrap().output_sequence, 9);
        let ack = output_ack("B01234XXXXXX", 42);
        assert!(ack.as_bytes().starts_with(SERVICE_PREFIX));
        assert_eq!(Reply::parse(&ack).unwrap().input_sequence, 42);
    }

    #[test]
    fn replies_round_trip() {
        // Goal: what the gateway writes, the PSS library reads back. Method: encode then parse
        // an ACK and a NAK whose reason holds braces.
        for outcome in [
            Outcome::Ack,
            Outcome::Nak {
                code: "T13".to_owned(),
                reason: "missing {GENL}".to_owned(),
            },
        ] {
            let reply = Reply {
                input_sequence: 42,
                outcome,
            };
            let parsed = Reply::parse(&reply.encode("B01234XXXXXX")).unwrap();
            assert_eq!(parsed.input_sequence, 42);
            match (&parsed.outcome, &reply.outcome) {
                (Outcome::Ack, Outcome::Ack) => {}
                (Outcome::Nak { code, reason }, Outcome::Nak { code: want, .. }) => {
                    assert_eq!(code, want);
                    assert_eq!(reason, "missing  GENL ");
                }
                other => panic!("outcome changed: {other:?}"),
            }
        }
    }

    #[test]
    fn login_must_name_the_certificates_participant() {
        // Goal: a PSS cannot log in as another participant's terminal. Method: parse logins.
        assert_eq!(
            parse_login(login("B01234XXXXXX", 7).as_bytes(), "B01234").unwrap(),
            Login {
                logical_terminal: "B01234XXXXXX".to_owned(),
                last_output_sequence: 7
            }
        );
        assert!(parse_login(b"LOGIN B05678XXXXXX 0", "B01234").is_err());
        assert!(parse_login(b"LOGIN B01234 0", "B01234").is_err());
        assert!(parse_login(b"HELLO", "B01234").is_err());
    }

    #[tokio::test]
    async fn frames_are_checked_before_they_are_read() {
        // Goal: a bad prefix or an oversized length is refused without reading the body.
        // Method: read frames from in-memory byte strings.
        let mut ok: &[u8] = b"000005hello";
        assert_eq!(read_frame(&mut ok, 10).await.unwrap().unwrap(), b"hello");
        assert!(read_frame(&mut ok, 10).await.unwrap().is_none());
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(matches!(
            read_frame(&mut garbage, 10).await,
            Err(FrameError::BadPrefix(_))
        ));
        let mut large: &[u8] = b"999999";
        assert!(matches!(
            read_frame(&mut large, 10).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut short: &[u8] = b"000009abc";
        assert!(matches!(
            read_frame(&mut short, 10).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn the_frame_reader_reads_frames_in_pieces_and_refuses_as_read_frame_does() {
        // Goal: the buffered reader yields each frame once, whole, however the bytes arrive
        // (one byte per read, several frames per read), and refuses what read_frame refuses.
        // Method: a mock stream that hands out one byte per read, then whole slices.
        let bytes = b"000005hello000000000003abc".to_vec();
        let one_byte_reads = tokio_test_stream(&bytes, 1);
        let mut reader = FrameReader::new(one_byte_reads, 10);
        assert_eq!(&reader.next_frame().await.unwrap().unwrap()[..], b"hello");
        assert_eq!(&reader.next_frame().await.unwrap().unwrap()[..], b"");
        assert_eq!(&reader.next_frame().await.unwrap().unwrap()[..], b"abc");
        assert!(reader.next_frame().await.unwrap().is_none());
        let mut whole = FrameReader::new(&bytes[..], 10);
        assert_eq!(&whole.next_frame().await.unwrap().unwrap()[..], b"hello");
        assert_eq!(&whole.next_frame().await.unwrap().unwrap()[..], b"");
        assert_eq!(&whole.next_frame().await.unwrap().unwrap()[..], b"abc");
        assert!(whole.next_frame().await.unwrap().is_none());
        let mut garbage = FrameReader::new(&b"GET / HTTP/1.1\r\n"[..], 10);
        assert!(matches!(
            garbage.next_frame().await,
            Err(FrameError::BadPrefix(_))
        ));
        let mut large = FrameReader::new(&b"999999"[..], 10);
        assert!(matches!(
            large.next_frame().await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut short = FrameReader::new(&b"000009abc"[..], 10);
        assert!(matches!(
            short.next_frame().await,
            Err(FrameError::Truncated)
        ));
    }

    /// A stream that hands out `bytes` at most `per_read` bytes per read.
    fn tokio_test_stream(bytes: &[u8], per_read: usize) -> impl tokio::io::AsyncRead + Unpin {
        struct Trickle {
            bytes: Vec<u8>,
            per_read: usize,
        }
        impl tokio::io::AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buffer: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let take = self.per_read.min(self.bytes.len()).min(buffer.remaining());
                buffer.put_slice(&self.bytes[..take]);
                self.bytes.drain(..take);
                std::task::Poll::Ready(Ok(()))
            }
        }
        Trickle {
            bytes: bytes.to_vec(),
            per_read,
        }
    }
}
