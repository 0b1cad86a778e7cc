//! Matching of settlement instructions (pure).
//!
//! Two SIs match when they come from the two participants naming each other, one delivers
//! and the other receives, and ISIN, quantity, settlement date, payment type, the real-time
//! flag (`:22F::RTGS//YRTG`) and, against payment, currency agree, with the amounts within
//! the configured tolerance (DESIGN.md section 1). Trade date and accounts are not matching
//! fields.
//!
//! **Deterministic rule**: among the counterparty's unmatched instructions that fit, the one
//! input first (lowest `instruction_id`) is taken.
//!
//! **Unmatched reason**: with no counterparty instruction in the opposite direction, `CMIS`;
//! otherwise the closest candidate is the one agreeing on most fields (ties: input first)
//! and the reason names its first differing field in this order: DSEC (ISIN), DQUA
//! (quantity), DDAT (settlement date), DDEA (payment type or real-time flag), DMON
//! (currency or amount).

use crate::hostdb::intake::InstructionRow;
use crate::iso15022::ReasonCode;

/// The first field in which `candidate` disagrees with `instruction`, `None` when they match.
pub fn difference(
    instruction: &InstructionRow,
    candidate: &InstructionRow,
    amount_tolerance_minor: i64,
) -> Option<ReasonCode> {
    differences(instruction, candidate, amount_tolerance_minor)
        .into_iter()
        .next()
}

fn differences(
    instruction: &InstructionRow,
    candidate: &InstructionRow,
    amount_tolerance_minor: i64,
) -> Vec<ReasonCode> {
    let mut found = Vec::new();
    if instruction.isin != candidate.isin {
        found.push(ReasonCode::Dsec);
    }
    if instruction.quantity != candidate.quantity {
        found.push(ReasonCode::Dqua);
    }
    if instruction.settlement_date != candidate.settlement_date {
        found.push(ReasonCode::Ddat);
    }
    if instruction.payment != candidate.payment
        || instruction.real_time != candidate.real_time
        || instruction.direction == candidate.direction
    {
        found.push(ReasonCode::Ddea);
    }
    let amounts_agree = match (instruction.amount_minor, candidate.amount_minor) {
        (Some(left), Some(right)) => left.abs_diff(right) <= amount_tolerance_minor.unsigned_abs(),
        (None, None) => true,
        _ => false,
    };
    if instruction.currency_code != candidate.currency_code || !amounts_agree {
        found.push(ReasonCode::Dmon);
    }
    found
}

/// The candidate `instruction` matches under the rule above (candidates oldest first).
pub fn find_match<'c>(
    instruction: &InstructionRow,
    candidates: &'c [InstructionRow],
    amount_tolerance_minor: i64,
) -> Option<&'c InstructionRow> {
    candidates
        .iter()
        .filter(|candidate| {
            candidate.instruction_id != instruction.instruction_id
                && candidate.participant_id == instruction.counterparty_participant_id
                && candidate.counterparty_participant_id == instruction.participant_id
                && difference(instruction, candidate, amount_tolerance_minor).is_none()
        })
        .min_by_key(|candidate| candidate.instruction_id)
}

/// Why `instruction` is unmatched, given the counterparty's unmatched instructions.
pub fn unmatched_reason(
    instruction: &InstructionRow,
    candidates: &[InstructionRow],
    amount_tolerance_minor: i64,
) -> ReasonCode {
    candidates
        .iter()
        .filter(|candidate| candidate.instruction_id != instruction.instruction_id)
        .map(|candidate| {
            (
                differences(instruction, candidate, amount_tolerance_minor),
                candidate.instruction_id,
            )
        })
        .min_by_key(|(found, id)| (found.len(), *id))
        .and_then(|(found, _)| found.first().copied())
        .unwrap_or(ReasonCode::Cmis)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn instruction(id: i64, participant: &str, direction: &str, amount: i64) -> InstructionRow {
        let counterparty = if participant == "B01234" {
            "B05678"
        } else {
            "B01234"
        };
        InstructionRow {
            instruction_id: id,
            participant_id: participant.to_owned(),
            sender_reference: format!("REF{id}"),
            message_type: "541".to_owned(),
            function: "NEWM".to_owned(),
            previous_reference: None,
            direction: direction.to_owned(),
            payment: "DVP".to_owned(),
            account_id: format!("{participant}-01"),
            counterparty_participant_id: counterparty.to_owned(),
            counterparty_account_id: None,
            isin: "HK0700001069".to_owned(),
            quantity: 1_000,
            trade_date: None,
            settlement_date: date!(2026 - 11 - 26),
            currency_code: Some("HKD".to_owned()),
            amount_minor: Some(amount),
            partial_settlement_allowed: false,
            real_time: false,
            status: "unmatched".to_owned(),
        }
    }

    #[test]
    fn the_first_input_of_several_fitting_candidates_matches() {
        // Goal: the documented deterministic rule. Method: two fitting candidates and one
        // beyond the amount tolerance; the lowest id that fits wins.
        let receive = instruction(10, "B01234", "receive", 100_000);
        let candidates = vec![
            instruction(3, "B05678", "deliver", 100_500),
            instruction(5, "B05678", "deliver", 100_050),
            instruction(7, "B05678", "deliver", 100_000),
        ];
        let found = find_match(&receive, &candidates, 100).unwrap();
        assert_eq!(found.instruction_id, 5);
    }

    #[test]
    fn unmatched_reasons_name_the_closest_difference() {
        // Goal: CMIS without candidates, otherwise the first field that differs from the
        // closest one. Method: candidates differing in amount, quantity and date.
        let receive = instruction(10, "B01234", "receive", 100_000);
        assert_eq!(unmatched_reason(&receive, &[], 0), ReasonCode::Cmis);
        let mut far = instruction(1, "B05678", "deliver", 1);
        far.quantity = 5;
        let near = instruction(2, "B05678", "deliver", 200_000);
        assert_eq!(
            unmatched_reason(&receive, &[far.clone(), near], 0),
            ReasonCode::Dmon
        );
        let mut late = instruction(3, "B05678", "deliver", 100_000);
        late.settlement_date = date!(2026 - 11 - 27);
        assert_eq!(
            unmatched_reason(&receive, &[far, late], 0),
            ReasonCode::Ddat
        );
    }
}
