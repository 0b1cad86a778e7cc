//! Feed batches capture set aside (V0020): a batch that is not a trade batch, or that the
//! host database refused when captured on its own, is stored with its payload and
//! terminated on the stream by the capture worker, so that it neither blocks the batches
//! behind it nor is lost. Operators list them, and release one (captured again, here, once
//! the cause is mended) or dismiss it with a note (`ccass cns quarantine …`).

use super::CnsConfig;
use super::capture::{self, CaptureError, CaptureReport, Reference};
use crate::hostdb::cns::{self as sql, QuarantinedBatch};
use crate::hostdb::{HostDbError, Pool};

/// Most batches `ccass cns quarantine list` prints.
pub const LIST_MAX: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("no quarantined batch {0}")]
    NotFound(i64),
    #[error("quarantined batch {quarantine_id} is {status} already")]
    NotHeld { quarantine_id: i64, status: String },
    #[error(
        "quarantined batch {quarantine_id} is not a trade batch ({error}): correct it at the source, load it again, then dismiss it"
    )]
    Malformed { quarantine_id: i64, error: String },
    #[error("quarantined batch {quarantine_id} is still refused, and stays held: {source}")]
    StillRefused {
        quarantine_id: i64,
        #[source]
        source: CaptureError,
    },
    #[error(transparent)]
    Db(#[from] HostDbError),
}

/// The held batches (all of them with `all`), oldest first, at most [`LIST_MAX`].
pub async fn list(pool: &Pool, all: bool) -> Result<Vec<QuarantinedBatch>, HostDbError> {
    sql::quarantined_batches(pool, all, LIST_MAX).await
}

/// Captures a held batch again (one transaction, as a capture worker would, refused trades
/// reported as usual) and marks it released. A batch captured before (its marker exists)
/// changes nothing and is released. A batch still refused stays held.
pub async fn release(
    pool: &Pool,
    config: &CnsConfig,
    quarantine_id: i64,
) -> Result<CaptureReport, QuarantineError> {
    let batch = held(pool, quarantine_id).await?;
    let malformed = |error: String| QuarantineError::Malformed {
        quarantine_id,
        error,
    };
    let view = capture::decode_capturable(&batch.payload).map_err(malformed)?;
    let reference = Reference::load(pool, &config.ccp_participant).await?;
    let mut book = reference.netting_book();
    let phases = capture::CapturePhases::default();
    let report = capture::capture_batches_timed(
        pool,
        &reference,
        &config.calendar(),
        &view.market,
        std::slice::from_ref(&view),
        &mut book,
        &phases,
    )
    .await
    .map_err(|source| match source {
        CaptureError::Db(error) if !error.refuses_the_data() => QuarantineError::Db(error),
        source => QuarantineError::StillRefused {
            quarantine_id,
            source,
        },
    })?;
    let note = format!("released: {}", summary(&report));
    // Captured (or found captured): closing it twice is harmless, as is a crash before.
    sql::close_quarantined_batch(pool, quarantine_id, true, &note).await?;
    Ok(report)
}

/// What a release captured: `10 trades accepted, 1 refused`.
pub fn summary(report: &CaptureReport) -> String {
    format!(
        "{} trades accepted, {} refused{}",
        report.trades_accepted,
        report.rejections.len(),
        if report.batches_already_captured > 0 {
            " (it was captured before)"
        } else {
            ""
        }
    )
}

/// Marks a held batch handled without capturing it (`note` says why: e.g. corrected and
/// loaded again from the source).
pub async fn dismiss(pool: &Pool, quarantine_id: i64, note: &str) -> Result<(), QuarantineError> {
    if sql::close_quarantined_batch(pool, quarantine_id, false, note).await? {
        return Ok(());
    }
    // Not held: say whether it is closed already or does not exist.
    Err(held(pool, quarantine_id)
        .await
        .err()
        .unwrap_or(QuarantineError::NotFound(quarantine_id)))
}

async fn held(pool: &Pool, quarantine_id: i64) -> Result<QuarantinedBatch, QuarantineError> {
    let batch = sql::quarantined_batch(pool, quarantine_id)
        .await?
        .ok_or(QuarantineError::NotFound(quarantine_id))?;
    if batch.status != "held" {
        return Err(QuarantineError::NotHeld {
            quarantine_id,
            status: batch.status,
        });
    }
    Ok(batch)
}
