-- V0004 instruction matches: the interface between SI intake (which matches) and the Batch
-- Settlement Run engine (which settles). Intake inserts one row per matched pair, in the same
-- transaction that moves both instructions to status 'matched'; the engine reads the pairs
-- that are due and neither on hold nor excluded. Hold/release and exclusion are changes of
-- this row (requested by the participants through intake), never of the instructions.
CREATE TABLE instruction_matches (
    match_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivering_instruction_id bigint NOT NULL UNIQUE REFERENCES instructions,
    receiving_instruction_id bigint NOT NULL UNIQUE REFERENCES instructions,
    matched_at timestamptz NOT NULL DEFAULT now(),
    -- Matched on hold: not settled until released.
    on_hold boolean NOT NULL DEFAULT false,
    -- Excluded from Batch Settlement Runs by an operator.
    excluded_from_runs boolean NOT NULL DEFAULT false,
    CHECK (delivering_instruction_id <> receiving_instruction_id)
);
