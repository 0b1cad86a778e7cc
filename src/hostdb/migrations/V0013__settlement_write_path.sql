-- V0013 The Batch Settlement Run's write path: cheaper markers and balance updates.
--
-- * instruction_settlements: the primary key (match_id, settlement_run_id) cost the run's
--   COPY of its markers ~3x (730 k rows/s with a btree, 2.25 M without). A run's exactly-once
--   comes from the run record and the leader lock (one transaction per run, a complete pair is
--   never loaded again), not from the key; `ccass audit` checks that no pair has two markers
--   of one run. The lookups by match_id (terminal, statements) use a BRIN index instead:
--   a run appends its markers in match_id order, so block ranges stay narrow and the index
--   costs next to nothing to maintain.
-- * holdings and cash_balances: fillfactor 70, so that the run's UPDATE of their quantities
--   (no indexed column changes) stays on the page as a HOT update (measured 7.7 s per million
--   rows without, 4.5 s with). Applies to pages written from now on.
ALTER TABLE instruction_settlements DROP CONSTRAINT instruction_settlements_pkey;
CREATE INDEX instruction_settlements_match ON instruction_settlements USING brin (match_id);

ALTER TABLE holdings SET (fillfactor = 70);
ALTER TABLE cash_balances SET (fillfactor = 70);
