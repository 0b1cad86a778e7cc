-- V0008 CNS settlement: positions settled by the Batch Settlement Run, carried forward at day
-- end, money settled once per day.
--
-- Design choices:
-- * A position's settlement is recorded in the run's one transaction twice over: its
--   `settled_quantity`/`status` move on (so a killed run settles nothing twice: the rollback
--   takes both back), and one row per (run, position) is appended to
--   `cns_position_settlements`, the record statements and `ccass audit` read.
-- * Carry forward keeps the netted figures honest: the remainder added to the next settlement
--   date's position is also counted in `carried_in_quantity`/`carried_in_count`, so the
--   cut-off of that date can still compare its re-netting of trades with what capture netted
--   (stored minus carried in).
-- * `cns_day_ends` records the day-end of a settlement date (carry forward and money
--   settlement in one transaction): its primary key makes the day-end happen once.

ALTER TABLE cns_stock_positions
    ADD COLUMN carried_in_quantity bigint NOT NULL DEFAULT 0,
    ADD COLUMN carried_in_count integer NOT NULL DEFAULT 0 CHECK (carried_in_count >= 0);

-- Append-only: what each run moved for each position (short: participant -> CCP; long: CCP ->
-- participant). No foreign keys, as the journals.
CREATE TABLE cns_position_settlements (
    settlement_run_id bigint NOT NULL,
    settlement_date date NOT NULL,
    participant_id text NOT NULL,
    isin text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('deliver', 'receive')),
    account_id text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (settlement_run_id, settlement_date, participant_id, isin)
);

CREATE TRIGGER cns_position_settlements_append_only
    BEFORE UPDATE OR DELETE ON cns_position_settlements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER cns_position_settlements_no_truncate
    BEFORE TRUNCATE ON cns_position_settlements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

CREATE TABLE cns_day_ends (
    settlement_date date PRIMARY KEY,
    -- Next business day that received the carried remainders.
    carried_to date NOT NULL CHECK (carried_to > settlement_date),
    carried_stock_position_count bigint NOT NULL CHECK (carried_stock_position_count >= 0),
    money_positions_settled_count bigint NOT NULL CHECK (money_positions_settled_count >= 0),
    money_positions_unpaid_count bigint NOT NULL CHECK (money_positions_unpaid_count >= 0),
    closed_at timestamptz NOT NULL DEFAULT now()
);
