-- V0005 Batch Settlement Runs: the settled markers the engine appends.
--
-- The engine never updates instruction rows: a matched pair's settlement is one row here per
-- run that settled (part of) it, appended in the run's transaction together with the journals,
-- the balance deltas, the run record and the confirmations in the outbox. A pair whose
-- markers add up to its quantity (`complete`) is settled and never loaded again; the
-- primary key makes a second marker for the same pair in the same run impossible.
-- No foreign keys (as the journals): `ccass audit` checks the references.
CREATE TABLE instruction_settlements (
    match_id bigint NOT NULL,
    settlement_run_id bigint NOT NULL,
    delivering_instruction_id bigint NOT NULL,
    receiving_instruction_id bigint NOT NULL,
    -- Settled by this run (a partial settlement settles less than the instruction).
    quantity bigint NOT NULL CHECK (quantity > 0),
    -- Money moved by this run in minor units; NULL for free of payment.
    amount_minor bigint CHECK (amount_minor > 0),
    -- The pair is fully settled after this run.
    complete boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (match_id, settlement_run_id)
);

CREATE TRIGGER instruction_settlements_append_only
    BEFORE UPDATE OR DELETE ON instruction_settlements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER instruction_settlements_no_truncate
    BEFORE TRUNCATE ON instruction_settlements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();
