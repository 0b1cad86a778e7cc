//! Lifecycle of matched SIs beyond matching and cancellation (which intake applies from the
//! messages): hold and release of a matched SI by either side, and exclusion of a matched
//! pair from Batch Settlement Runs by an operator. Each is a change of the pair's
//! `instruction_matches` row (the BSR engine settles pairs neither on hold nor excluded),
//! recorded in `instruction_status_history` (status stays `matched`, `detail` says what
//! changed), reported to both sides by MT548 `:25D::SETT//PEND` with reason `NARR` and a
//! narrative, and published as an instruction event. A pair a run settled in full changes no
//! more; a change waits for a run in progress (`hostdb::intake::hold_off_settlement_runs`).
//!
//! Not here: pending authorisation (maker–checker) belongs to terminal input (the terminal
//! issue) and SIs from a PSS are authorised by the gateway's certificate.

use crate::hostdb::intake::{self as sql, MatchFlag};
use crate::hostdb::{HostDbError, Pool};
use crate::iso15022::ReasonCode;

use super::intake::{Reference, Reports};

/// What a lifecycle request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Hold,
    Release,
    Exclude,
    Include,
}

impl Change {
    fn detail(self) -> &'static str {
        match self {
            Change::Hold => "matched on hold",
            Change::Release => "released from hold",
            Change::Exclude => "excluded from settlement runs",
            Change::Include => "included in settlement runs again",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{participant} has no instruction {reference}")]
    UnknownInstruction {
        participant: String,
        reference: String,
    },
    #[error("instruction {reference} of {participant} is not matched")]
    NotMatched {
        participant: String,
        reference: String,
    },
    #[error("instruction {reference} of {participant} is already settled")]
    AlreadySettled {
        participant: String,
        reference: String,
    },
    #[error(transparent)]
    Db(#[from] HostDbError),
}

/// Applies `change` to the matched SI `participant` sent as `reference` (and so to its pair),
/// in one transaction with its history, MT548s and events.
pub async fn apply(
    pool: &Pool,
    reference_data: &Reference,
    participant: &str,
    reference: &str,
    change: Change,
) -> Result<(), LifecycleError> {
    let mut client = crate::hostdb::client(pool).await?;
    let transaction = client
        .transaction()
        .await
        .map_err(|error| HostDbError::from_postgres("begin lifecycle change", error))?;
    let instruction = sql::instruction_by_reference(&transaction, participant, reference)
        .await?
        .filter(|instruction| instruction.function == "NEWM")
        .ok_or_else(|| LifecycleError::UnknownInstruction {
            participant: participant.to_owned(),
            reference: reference.to_owned(),
        })?;
    let (flag, value) = match change {
        Change::Hold => (MatchFlag::OnHold, true),
        Change::Release => (MatchFlag::OnHold, false),
        Change::Exclude => (MatchFlag::ExcludedFromRuns, true),
        Change::Include => (MatchFlag::ExcludedFromRuns, false),
    };
    let pair = match instruction.status.as_str() {
        // Swept after a run settled its pair in full (V0016).
        "settled" => {
            return Err(LifecycleError::AlreadySettled {
                participant: participant.to_owned(),
                reference: reference.to_owned(),
            });
        }
        "matched" => {
            // Decide against the settled state no run can change under us.
            sql::hold_off_settlement_runs(&transaction).await?;
            let state = sql::match_state(&transaction, instruction.instruction_id).await?;
            if state.is_some_and(|state| state.complete) {
                return Err(LifecycleError::AlreadySettled {
                    participant: participant.to_owned(),
                    reference: reference.to_owned(),
                });
            }
            sql::set_match_flag(&transaction, instruction.instruction_id, flag, value).await?
        }
        _ => None,
    };
    let Some((delivering, receiving)) = pair else {
        return Err(LifecycleError::NotMatched {
            participant: participant.to_owned(),
            reference: reference.to_owned(),
        });
    };
    let change_id: i64 = sql::next_change_id(&transaction).await?;
    let mut reports = Reports::new(reference_data);
    for (index, instruction_id) in [delivering, receiving].into_iter().enumerate() {
        let Some(side) = sql::instruction_by_id(&transaction, instruction_id).await? else {
            continue;
        };
        sql::insert_history(
            &transaction,
            instruction_id,
            "matched",
            None,
            Some(change.detail()),
        )
        .await?;
        reports.add(
            &side.participant_id,
            format!("L{change_id:X}{index}"),
            &side.sender_reference,
            false,
            ("SETT", "PEND"),
            Some(("PEND", ReasonCode::Narr, change.detail())),
        );
    }
    reports.write(&transaction).await?;
    transaction
        .commit()
        .await
        .map_err(|error| HostDbError::from_postgres("commit lifecycle change", error))?;
    Ok(())
}
