-- V0011 CNS position deltas: capture appends what each transaction netted instead of
-- updating position rows.
--
-- Design choices:
-- * Updating `cns_stock_positions` per capture transaction was the largest capture cost
--   (`ccass bench cns`, 1 M trades: 8.4 of 14.8 worker-seconds), and two workers updating
--   the same hot position rows wait on each other's row locks. Capture now appends its
--   netted deltas with COPY BINARY to these tables (no index, no key: append only, so
--   workers never contend), in the same transaction as the trades and the batch marker.
-- * A position is its `cns_stock_positions` / `cns_money_positions` row plus the deltas of
--   its key not yet folded. Folding (src/hostdb/cns.rs `fold_position_deltas`) moves a
--   settlement date's deltas into the position rows in ONE statement (DELETE ... RETURNING
--   feeding the upsert), so a delta is counted exactly once even when two folds race.
--   The cut-off folds under its exclusive lock before it compares and finalises, and the
--   positions view folds before it reads; after the cut-off a date has no deltas (capture
--   refuses closed dates), so the Batch Settlement Run and the day-end read rows only.
-- * Deltas of one transaction sum to zero per security (every trade has a buyer and a
--   seller), so `ccass audit`'s zero-sum check holds on the position rows at any time.

CREATE TABLE cns_stock_position_deltas (
    settlement_date date NOT NULL,
    participant_id text NOT NULL,
    isin text NOT NULL,
    net_quantity bigint NOT NULL,
    obligation_count integer NOT NULL CHECK (obligation_count > 0)
);

CREATE TABLE cns_money_position_deltas (
    settlement_date date NOT NULL,
    participant_id text NOT NULL,
    currency_code text NOT NULL,
    net_amount_minor bigint NOT NULL,
    obligation_count integer NOT NULL CHECK (obligation_count > 0)
);
