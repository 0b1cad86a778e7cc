//! Wire type of instruction events on `ccass.v1.events.{participant}.instruction`: every
//! status change of a participant's settlement instruction, for terminal consumers (JSON).
//! Published through the outbox, `Nats-Msg-Id` = the outbox dedupe id.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionEvent {
    pub participant: String,
    /// `:20C::SEME//` of the instruction (with the participant, its key; `NONREF` when a
    /// refused message had none readable).
    pub sender_reference: String,
    /// `rejected`, `unmatched`, `matched`, `cancelled`, `cancellation_pending`,
    /// `cancellation_denied`.
    pub status: String,
    /// MT548 reason code (`CMIS`, `DMON`, `DUPL`, ...) when the status has one.
    pub reason_code: Option<String>,
}
