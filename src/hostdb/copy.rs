//! COPY BINARY in bulk. In: rows are written into one byte buffer with plain (non-async)
//! calls, then sent to the server in large chunks ([`CopyRows`], [`copy_rows`]). Out: rows of
//! a `COPY … TO STDOUT (FORMAT binary)` read field by field without an allocation per row
//! ([`CopyOut`]).
//!
//! [`super::journal::CopyIn`] awaits one `BinaryCopyInWriter::write` per row, which encodes
//! each value through `ToSql` with its type checks; for hundreds of thousands of rows that
//! per-row overhead dominates (`ccass bench cns`). Here a caller pushes each row as an array
//! of [`Field`]s in column order, so the field count is checked by the compiler:
//!
//! ```ignore
//! let mut rows = CopyRows::<3>::new();
//! rows.push([Field::Text("xhkg"), Field::Int8(400), Field::Date(settlement_date)]);
//! copy_rows(transaction, "copy example", "COPY t (a, b, c) FROM STDIN BINARY", rows).await?;
//! ```
//!
//! Guarantees: within the caller's transaction like every COPY (nothing visible before it
//! commits, a refused row fails the whole COPY); values are encoded as PostgreSQL's binary
//! receive functions expect (text: UTF-8 bytes; int8/int4: big endian; date: days since
//! 2000-01-01; bool: one byte). A field's type must be its column's: the
//! server refuses a mismatch (e.g. 4 bytes for an int8) and the COPY fails.

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt as _, Stream, StreamExt as _};
use time::Date;

use super::{HostDbError, Pool};

/// PostgreSQL's epoch for dates and times, 2000-01-01, as a Julian day.
const POSTGRES_EPOCH_JULIAN_DAY: i32 = 2_451_545;

/// The binary COPY signature that opens the data.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Bytes sent per CopyData message.
const CHUNK_BYTES: usize = 1 << 20;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Text(&'a str),
    Int8(i64),
    Int4(i32),
    Date(Date),
    Bool(bool),
    /// SQL NULL (the journals' optional columns: run id, accounts).
    Null,
}

impl<'a> Field<'a> {
    /// `Text` or NULL.
    pub(crate) fn optional_text(value: Option<&'a str>) -> Field<'a> {
        value.map_or(Field::Null, Field::Text)
    }

    /// `Int8` or NULL.
    pub(crate) fn optional_int8(value: Option<i64>) -> Field<'a> {
        value.map_or(Field::Null, Field::Int8)
    }
}

/// Rows of one COPY BINARY of `COLUMNS` columns, encoded.
pub(crate) struct CopyRows<const COLUMNS: usize> {
    buffer: BytesMut,
    rows: u64,
}

impl<const COLUMNS: usize> Default for CopyRows<COLUMNS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const COLUMNS: usize> CopyRows<COLUMNS> {
    pub(crate) fn new() -> CopyRows<COLUMNS> {
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        buffer.put_slice(SIGNATURE);
        buffer.put_i32(0); // flags
        buffer.put_i32(0); // header extension length
        CopyRows { buffer, rows: 0 }
    }

    /// Appends one row.
    pub(crate) fn push(&mut self, fields: [Field<'_>; COLUMNS]) {
        // COPY's field count is an int16; tables have at most 1,600 columns.
        self.buffer.put_i16(COLUMNS as i16);
        for field in fields {
            match field {
                Field::Text(value) => self.bytes(value.as_bytes()),
                Field::Int8(value) => self.bytes(&value.to_be_bytes()),
                Field::Int4(value) => self.bytes(&value.to_be_bytes()),
                Field::Date(value) => {
                    self.bytes(&(value.to_julian_day() - POSTGRES_EPOCH_JULIAN_DAY).to_be_bytes())
                }
                Field::Bool(value) => self.bytes(&[u8::from(value)]),
                Field::Null => self.buffer.put_i32(-1),
            }
        }
        self.rows += 1;
    }

    fn bytes(&mut self, bytes: &[u8]) {
        // A field is at most 1 GB in PostgreSQL; ours are short strings and numbers.
        self.buffer
            .put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
        self.buffer.put_slice(bytes);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub(crate) fn len(&self) -> u64 {
        self.rows
    }

    /// The complete COPY BINARY stream (header, rows, trailer).
    fn into_stream(mut self) -> BytesMut {
        self.buffer.put_i16(-1);
        self.buffer
    }
}

/// Runs `statement` (`COPY … FROM STDIN BINARY` naming the rows' columns in order) in
/// `transaction` and sends `rows` in large chunks; returns the number of rows the server
/// reports written. Nothing is sent for no rows.
pub(crate) async fn copy_rows<const COLUMNS: usize>(
    transaction: &tokio_postgres::Transaction<'_>,
    context: &'static str,
    statement: &str,
    rows: CopyRows<COLUMNS>,
) -> Result<u64, HostDbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sink = transaction
        .copy_in::<_, Bytes>(statement)
        .await
        .map_err(|error| HostDbError::from_postgres(context, error))?;
    send_rows(sink, rows.into_stream(), context).await
}

/// Sends a complete COPY BINARY stream in chunks of at most [`CHUNK_BYTES`] and finishes.
async fn send_rows(
    sink: tokio_postgres::CopyInSink<Bytes>,
    mut stream: BytesMut,
    context: &'static str,
) -> Result<u64, HostDbError> {
    futures::pin_mut!(sink);
    while !stream.is_empty() {
        let chunk = stream.split_to(stream.len().min(CHUNK_BYTES)).freeze();
        sink.feed(chunk)
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|error| HostDbError::from_postgres(context, error))
}

/// A COPY that a task of its own runs on a connection of its own
/// ([`spawn_copy_rows_committed`]) while the caller goes on: another server process ingests
/// the rows while the caller's transaction writes the rest. Dropped unfinished (the caller
/// failed meanwhile), the task still completes its transaction.
#[must_use = "a spawned COPY must be finished to learn whether its rows were committed"]
pub struct PendingCopy {
    task: Option<tokio::task::JoinHandle<Result<u64, HostDbError>>>,
    context: &'static str,
}

impl PendingCopy {
    /// Waits for the server's answer; returns the number of rows written.
    pub async fn finish(self) -> Result<u64, HostDbError> {
        let Some(task) = self.task else {
            return Ok(0);
        };
        task.await.map_err(|error| HostDbError::Unavailable {
            context: self.context.to_owned(),
            detail: format!("the task sending the rows failed: {error}"),
        })?
    }
}

/// [`copy_rows`] on a pool connection of its own, in a transaction of its own that commits
/// with the COPY, run by a spawned task: returns at once. [`PendingCopy::finish`] returns
/// once the rows are committed.
pub(crate) fn spawn_copy_rows_committed<const COLUMNS: usize>(
    pool: Pool,
    context: &'static str,
    statement: String,
    rows: CopyRows<COLUMNS>,
) -> PendingCopy {
    if rows.is_empty() {
        return PendingCopy {
            task: None,
            context,
        };
    }
    let task = tokio::spawn(async move {
        let mut client = super::client(&pool).await?;
        let transaction = client
            .transaction()
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))?;
        let count = copy_rows(&transaction, context, &statement, rows).await?;
        transaction
            .commit()
            .await
            .map_err(|error| HostDbError::from_postgres(context, error))?;
        Ok(count)
    });
    PendingCopy {
        task: Some(task),
        context,
    }
}

/// Reading `COPY … TO STDOUT (FORMAT binary)` rows field by field, without an allocation
/// per row (the settlement run's million-row reads, where
/// `tokio_postgres::binary_copy::BinaryCopyOutStream` — a vector of field ranges per row and a
/// type check per field — took most of the client's time): the caller knows its statement's
/// column types and reads them in order; any other shape is a [`HostDbError::MalformedData`]
/// naming the statement, never a panic.
///
/// The rows of one binary COPY out, read message by message from `S` (a pinned
/// `tokio_postgres::CopyOutStream`).
pub struct CopyOut<S> {
    stream: S,
    context: &'static str,
    /// What is left of the current message.
    buffer: Bytes,
    /// The row last returned (a view of its message, not a copy).
    current: Bytes,
    header_read: bool,
    finished: bool,
}

impl<S> CopyOut<S>
where
    S: Stream<Item = Result<Bytes, tokio_postgres::Error>> + Unpin,
{
    pub fn new(stream: S, context: &'static str) -> CopyOut<S> {
        CopyOut {
            stream,
            context,
            buffer: Bytes::new(),
            current: Bytes::new(),
            header_read: false,
            finished: false,
        }
    }

    fn malformed(&self, what: &str) -> HostDbError {
        HostDbError::MalformedData {
            context: self.context.to_owned(),
            message: format!("binary COPY data with {what}"),
        }
    }

    /// The next row, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<OutRow<'_>>, HostDbError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if self.buffer.is_empty() {
                match self.stream.next().await {
                    Some(Ok(message)) => self.buffer = message,
                    Some(Err(error)) => {
                        return Err(HostDbError::from_postgres(self.context, error));
                    }
                    None => {
                        return Err(self.malformed("no trailer"));
                    }
                }
                continue;
            }
            if !self.header_read {
                let header_length = SIGNATURE.len() + 8;
                if self.buffer.len() < header_length || !self.buffer.starts_with(SIGNATURE) {
                    return Err(self.malformed("no signature"));
                }
                let extension = u32::from_be_bytes(
                    self.buffer[SIGNATURE.len() + 4..header_length]
                        .try_into()
                        .unwrap_or_default(),
                ) as usize;
                if self.buffer.len() < header_length + extension {
                    return Err(self.malformed("a truncated header"));
                }
                let _ = self.buffer.split_to(header_length + extension);
                self.header_read = true;
                continue;
            }
            if self.buffer.len() < 2 {
                return Err(self.malformed("a truncated field count"));
            }
            let field_count = i16::from_be_bytes([self.buffer[0], self.buffer[1]]);
            if field_count < 0 {
                self.finished = true;
                return Ok(None);
            }
            // One row: its fields' lengths say where it ends.
            let mut end = 2;
            for _ in 0..field_count {
                let Some(length) = self.buffer.get(end..end + 4) else {
                    return Err(self.malformed("a truncated field length"));
                };
                let length = i32::from_be_bytes(length.try_into().unwrap_or_default());
                end += 4 + usize::try_from(length).unwrap_or(0);
            }
            if end > self.buffer.len() {
                return Err(self.malformed("a truncated row"));
            }
            self.current = self.buffer.split_to(end);
            return Ok(Some(OutRow {
                data: &self.current[2..],
                context: self.context,
            }));
        }
    }
}

/// One row: read its fields in order with the typed readers.
pub struct OutRow<'a> {
    data: &'a [u8],
    context: &'static str,
}

impl<'a> OutRow<'a> {
    fn malformed(&self, what: &str) -> HostDbError {
        HostDbError::MalformedData {
            context: self.context.to_owned(),
            message: format!("a binary COPY row with {what}"),
        }
    }

    /// The next field's bytes; `None` for NULL.
    fn field(&mut self) -> Result<Option<&'a [u8]>, HostDbError> {
        let Some((length, rest)) = self.data.split_first_chunk::<4>() else {
            return Err(self.malformed("fewer fields than read"));
        };
        let length = i32::from_be_bytes(*length);
        if length < 0 {
            self.data = rest;
            return Ok(None);
        }
        let length = length as usize;
        if rest.len() < length {
            return Err(self.malformed("a truncated field"));
        }
        let (value, rest) = rest.split_at(length);
        self.data = rest;
        Ok(Some(value))
    }

    fn fixed<const N: usize>(&mut self, kind: &str) -> Result<Option<[u8; N]>, HostDbError> {
        match self.field()? {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(Some)
                .map_err(|_| self.malformed(&format!("{kind} of {} bytes", bytes.len()))),
        }
    }

    fn required<T>(&self, value: Option<T>, kind: &str) -> Result<T, HostDbError> {
        value.ok_or_else(|| self.malformed(&format!("NULL where {kind} is required")))
    }

    pub fn int8(&mut self) -> Result<i64, HostDbError> {
        let value = self.optional_int8()?;
        self.required(value, "an int8")
    }

    pub fn optional_int8(&mut self) -> Result<Option<i64>, HostDbError> {
        Ok(self.fixed::<8>("an int8")?.map(i64::from_be_bytes))
    }

    pub fn boolean(&mut self) -> Result<bool, HostDbError> {
        let value = self.fixed::<1>("a bool")?;
        Ok(self.required(value, "a bool")?[0] != 0)
    }

    pub fn date(&mut self) -> Result<Date, HostDbError> {
        let value = self.fixed::<4>("a date")?;
        let days = i32::from_be_bytes(self.required(value, "a date")?);
        Date::from_julian_day(POSTGRES_EPOCH_JULIAN_DAY + days)
            .map_err(|_| self.malformed(&format!("date {days} days from 2000-01-01")))
    }

    pub fn text(&mut self) -> Result<&'a str, HostDbError> {
        let value = self.optional_text()?;
        self.required(value, "a text")
    }

    pub fn optional_text(&mut self) -> Result<Option<&'a str>, HostDbError> {
        match self.field()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.malformed("text that is not UTF-8")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn values_are_encoded_as_postgres_receives_them() {
        // Goal: the byte layout PostgreSQL's COPY BINARY reader expects. Method: rows of each
        // field kind against hand-computed bytes.
        let mut rows = CopyRows::<5>::new();
        rows.push([
            Field::Text("ab"),
            Field::Int8(-2),
            Field::Int4(7),
            Field::Date(date!(2000 - 01 - 02)),
            Field::Bool(true),
        ]);
        rows.push([
            Field::Null,
            Field::Int8(0),
            Field::Int4(0),
            Field::Date(date!(1999 - 12 - 31)),
            Field::Null,
        ]);
        assert_eq!(rows.rows, 2);
        let stream = rows.into_stream();
        let mut expected: Vec<u8> = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 5]);
        expected.extend([0, 0, 0, 2, b'a', b'b']);
        expected.extend([0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend([0, 0, 0, 4, 0, 0, 0, 7]);
        expected.extend([0, 0, 0, 4, 0, 0, 0, 1]);
        expected.extend([0, 0, 0, 1, 1]);
        expected.extend([0, 5]);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 4, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([0xff, 0xff]);
        assert_eq!(&stream[..], &expected[..]);
    }

    fn header() -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes
    }

    fn row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut bytes = (fields.len() as i16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(value) => {
                    bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    bytes.extend_from_slice(value);
                }
            }
        }
        bytes
    }

    fn rows(
        messages: Vec<Vec<u8>>,
    ) -> CopyOut<futures::stream::Iter<std::vec::IntoIter<Result<Bytes, tokio_postgres::Error>>>>
    {
        let messages: Vec<Result<Bytes, tokio_postgres::Error>> =
            messages.into_iter().map(|m| Ok(Bytes::from(m))).collect();
        CopyOut::new(futures::stream::iter(messages), "test copy")
    }

    const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

    #[tokio::test]
    async fn reads_typed_fields_across_messages_and_rows_sharing_one() {
        // Goal: the reader follows the format whether the server sends the header, each
        // row and the trailer as separate messages or packs several into one. Method: a
        // header alone, then two rows and the trailer in one message.
        let date = (9_000i32).to_be_bytes();
        let first = row(&[
            Some(&7i64.to_be_bytes()),
            Some(b"B01234-01"),
            None,
            Some(&date),
            Some(&[1]),
        ]);
        let second = row(&[
            Some(&(-3i64).to_be_bytes()),
            Some(b"HK0005000010"),
            Some(&5i64.to_be_bytes()),
            Some(&date),
            Some(&[0]),
        ]);
        let mut packed = first;
        packed.extend_from_slice(&second);
        packed.extend_from_slice(&TRAILER);
        let mut copy = rows(vec![header(), packed]);
        let mut seen = Vec::new();
        while let Some(mut row) = copy.next().await.unwrap() {
            seen.push((
                row.int8().unwrap(),
                row.text().unwrap().to_owned(),
                row.optional_int8().unwrap(),
                row.date().unwrap(),
                row.boolean().unwrap(),
            ));
        }
        let day = time::macros::date!(2024 - 08 - 22); // 2000-01-01 + 9,000 days
        assert_eq!(
            seen,
            [
                (7, "B01234-01".to_owned(), None, day, true),
                (-3, "HK0005000010".to_owned(), Some(5), day, false)
            ]
        );
    }

    #[tokio::test]
    async fn bad_data_is_a_clear_error_not_a_panic() {
        // Goal: a truncated or mistyped stream fails with MalformedData naming the
        // statement. Method: no signature; a row cut short; a NULL read as required; an
        // int8 field of 4 bytes; the stream ending without its trailer.
        let error = |result: Result<(), HostDbError>| result.unwrap_err().to_string();
        let mut copy = rows(vec![b"not a copy".to_vec()]);
        assert!(
            error(copy.next().await.map(|_| ()))
                .contains("test copy: binary COPY data with no signature")
        );
        let mut cut = row(&[Some(&7i64.to_be_bytes())]);
        cut.truncate(cut.len() - 3);
        let mut copy = rows(vec![header(), cut]);
        assert!(error(copy.next().await.map(|_| ())).contains("a truncated row"));
        let mut copy = rows(vec![header(), row(&[None, Some(&[0, 0, 0, 1])])]);
        let mut row_read = copy.next().await.unwrap().unwrap();
        assert!(error(row_read.int8().map(|_| ())).contains("NULL where an int8 is required"));
        assert!(error(row_read.int8().map(|_| ())).contains("an int8 of 4 bytes"));
        assert!(error(row_read.text().map(|_| ())).contains("fewer fields than read"));
        let mut copy = rows(vec![header()]);
        assert!(error(copy.next().await.map(|_| ())).contains("no trailer"));
    }
}
