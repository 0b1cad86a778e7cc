-- V0016 Settled pairs leave the Batch Settlement Run's reads.
--
-- A run appends settled markers and leaves its instructions at status 'matched' (no update
-- per pair in the run's transaction, V0005). Until now every run therefore read every pair
-- ever matched (all 'matched' instructions up to its date, all matches, all markers): a run
-- grew slower with every day of operation. Now a sweep after each run (its own transaction,
-- src/hostdb/settlement.rs `sweep_settled`) moves the instructions of the pairs settled in
-- full to status 'settled' in one set-based UPDATE, and the run reads only the instructions
-- still 'matched', then the matches and markers of those only (ranges of their ids). A pair
-- settled in full but not swept yet is still read and skipped by its complete marker, so
-- the sweep keeps the reads small and the markers keep the run right.
--
-- * settlement_runs.swept_at: when the sweep moved that run's settled pairs; the sweep takes
--   the completed runs where it is NULL.
ALTER TABLE settlement_runs ADD COLUMN swept_at timestamptz;

-- * instructions_open: the due read's index over the open instructions only; it stays the
--   size of the open pairs however many days are settled. It replaces instructions_due
--   (settlement_date, status), which indexed every instruction ever input and which no
--   query needs any more: an index less to maintain on every insert and every sweep.
CREATE INDEX instructions_open ON instructions (settlement_date) WHERE status = 'matched';
DROP INDEX instructions_due;

-- * instruction_settlements by run: the sweep reads the markers of the runs it sweeps. BRIN
--   as the match index (V0013): runs append their markers in run order, so block ranges stay
--   narrow and the index costs next to nothing to maintain in the run's COPY.
CREATE INDEX instruction_settlements_run ON instruction_settlements USING brin (settlement_run_id);

-- Runs before this migration are unswept: the first sweeps move their settled pairs, a few
-- runs per transaction (rather than every settled instruction in this migration).
