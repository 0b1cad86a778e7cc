-- V0006 intake: the real-time (RDP) flag of an SI, a matching field (`:22F::RTGS//YRTG`).
ALTER TABLE instructions ADD COLUMN real_time boolean NOT NULL DEFAULT false;
-- Matching looks up the counterparty's unmatched instructions.
CREATE INDEX instructions_unmatched ON instructions (counterparty_participant_id, isin, settlement_date)
    WHERE status = 'unmatched';
-- Numbers lifecycle changes (hold, release, exclusion) for their MT548 references.
CREATE SEQUENCE intake_change_id_seq;
