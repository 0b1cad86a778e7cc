//! COPY BINARY rows encoded in bulk: rows are written into one byte buffer with plain
//! (non-async) calls, then sent to the server in large chunks.
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
//! 2000-01-01; time: microseconds since midnight). A field's type must be its column's: the
//! server refuses a mismatch (e.g. 4 bytes for an int8) and the COPY fails.

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt as _;
use time::{Date, Time};

use super::HostDbError;

/// PostgreSQL's epoch for dates and times, 2000-01-01, as a Julian day.
const POSTGRES_EPOCH_JULIAN_DAY: i32 = 2_451_545;

/// Bytes sent per CopyData message.
const CHUNK_BYTES: usize = 1 << 20;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Text(&'a str),
    Int8(i64),
    Int4(i32),
    Date(Date),
    Time(Time),
    /// SQL NULL (the journals' optional columns: run id, accounts).
    #[allow(dead_code)]
    Null,
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
        buffer.put_slice(b"PGCOPY\n\xff\r\n\0");
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
                Field::Time(value) => {
                    let (hour, minute, second, micro) = value.as_hms_micro();
                    let micros = ((i64::from(hour) * 60 + i64::from(minute)) * 60
                        + i64::from(second))
                        * 1_000_000
                        + i64::from(micro);
                    self.bytes(&micros.to_be_bytes())
                }
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
    futures::pin_mut!(sink);
    let mut stream = rows.into_stream();
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, time};

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
            Field::Time(time!(00:00:01.000002)),
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
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x42]);
        expected.extend([0, 5]);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 4, 0, 0, 0, 0]);
        expected.extend([0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([0xff, 0xff]);
        assert_eq!(&stream[..], &expected[..]);
    }
}
