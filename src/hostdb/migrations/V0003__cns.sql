-- V0003 CNS clearing: captured feed batches, trade exceptions, net stock and money positions
-- against the CCP, isolated-trade obligations, and the cut-off of each settlement date.
--
-- Design choices:
-- * A feed batch is captured once: `cns_trade_batches` holds (market, batch_id) and is
--   written in the transaction that captured the batch's trades, exceptions and position
--   deltas, so a redelivered batch finds its row and changes nothing.
-- * Positions are signed: `net_quantity` > 0 is long (the participant receives from the
--   CCP), < 0 short (it delivers to the CCP), 0 flat (it traded but owes nothing). Money
--   likewise: `net_amount_minor` > 0 the participant receives from the CCP, < 0 it pays.
--   The CCP's own side is the mirror image and is not stored: per security and settlement
--   date the participants' positions sum to zero (`ccass audit` checks it).
-- * Settlement by the Batch Settlement Run (issue 6) writes only `settled_quantity`,
--   `settled_amount_minor` and `status`; the netted figures never change after the cut-off.
--   The engine takes short positions (net_quantity < 0) first, then SIs, then allocates
--   what the CCP received to long positions (rule in src/cns/mod.rs).
-- * Positions carry no foreign keys and no index beyond the primary key: capture validates
--   participants and securities against reference data before netting, and the primary key
--   (settlement_date, participant_id, ...) serves both the engine (by date) and the views
--   (by date and participant). A foreign key check per upserted row was the largest cost of
--   persisting positions (measured with `ccass bench cns`).
-- * Isolated trades bypass netting: one obligation per trade side against the CCP, settled
--   trade for trade (DvP of quantity against amount).

CREATE TABLE cns_trade_batches (
    market text NOT NULL,
    batch_id text NOT NULL CHECK (batch_id <> ''),
    trade_count integer NOT NULL CHECK (trade_count >= 0),
    accepted_count integer NOT NULL CHECK (accepted_count >= 0),
    rejected_count integer NOT NULL CHECK (rejected_count >= 0),
    captured_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market, batch_id),
    CHECK (accepted_count + rejected_count = trade_count)
);

-- Trades the capture refused, with the reason; they never enter netting. Append-only.
CREATE TABLE cns_trade_exceptions (
    exception_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    market text NOT NULL,
    batch_id text NOT NULL,
    trade_id text NOT NULL,
    -- NULL when the trade's own date could not be read.
    trade_date date,
    reason_code text NOT NULL CHECK (reason_code IN (
        'malformed_field', 'unknown_participant', 'participant_not_active', 'ccp_as_party',
        'unknown_security', 'security_not_active', 'currency_mismatch', 'not_board_lot',
        'bad_price', 'not_business_day', 'duplicate_trade', 'settlement_date_closed')),
    detail text NOT NULL,
    -- The trade as it arrived (the wire record), for investigation.
    trade jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (market, batch_id) REFERENCES cns_trade_batches
);
CREATE INDEX cns_trade_exceptions_batch ON cns_trade_exceptions (market, batch_id);

CREATE TRIGGER cns_trade_exceptions_append_only
    BEFORE UPDATE OR DELETE ON cns_trade_exceptions
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();

-- Settlement states of positions and obligations:
-- provisional: netting continues (before the cut-off of the settlement date);
-- final: netted figures fixed by the cut-off, due for settlement;
-- partially_settled / settled: the Batch Settlement Run moved some / all of it;
-- carried_forward: unsettled at day end, rolled into a later settlement date's position.
CREATE TABLE cns_stock_positions (
    settlement_date date NOT NULL,
    participant_id text NOT NULL,
    isin text NOT NULL,
    net_quantity bigint NOT NULL,
    -- Novated obligations netted into this position: one per CNS trade the participant
    -- bought or sold (two for a trade it did with itself).
    obligation_count integer NOT NULL CHECK (obligation_count > 0),
    -- Filled by the Batch Settlement Run: units moved so far (towards |net_quantity|).
    settled_quantity bigint NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN (
        'provisional', 'final', 'partially_settled', 'settled', 'carried_forward')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (settlement_date, participant_id, isin),
    CHECK (settled_quantity BETWEEN 0 AND abs(net_quantity))
) WITH (fillfactor = 70);

CREATE TABLE cns_money_positions (
    settlement_date date NOT NULL,
    participant_id text NOT NULL,
    currency_code text NOT NULL,
    net_amount_minor bigint NOT NULL,
    obligation_count integer NOT NULL CHECK (obligation_count > 0),
    settled_amount_minor bigint NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN (
        'provisional', 'final', 'partially_settled', 'settled', 'carried_forward')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (settlement_date, participant_id, currency_code),
    CHECK (settled_amount_minor BETWEEN 0 AND abs(net_amount_minor))
) WITH (fillfactor = 70);

-- Isolated trades: each side is one obligation against the CCP, settled trade for trade.
CREATE TABLE cns_isolated_obligations (
    market text NOT NULL,
    trade_date date NOT NULL,
    trade_id text NOT NULL,
    -- buy: the participant receives `quantity` from the CCP and pays `amount_minor`;
    -- sell: it delivers `quantity` to the CCP and is paid `amount_minor`.
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    participant_id text NOT NULL REFERENCES participants,
    settlement_date date NOT NULL,
    isin text NOT NULL REFERENCES securities,
    quantity bigint NOT NULL CHECK (quantity > 0),
    currency_code text NOT NULL REFERENCES currencies,
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    settled_quantity bigint NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN (
        'provisional', 'final', 'partially_settled', 'settled', 'carried_forward')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market, trade_date, trade_id, side),
    CHECK (settled_quantity BETWEEN 0 AND quantity)
);
CREATE INDEX cns_isolated_obligations_due
    ON cns_isolated_obligations (settlement_date, status);
CREATE INDEX cns_isolated_obligations_participant
    ON cns_isolated_obligations (participant_id, settlement_date);

-- A settlement date whose netting was closed by the cut-off: capture refuses later trades
-- for it (reason settlement_date_closed) and positions are final.
CREATE TABLE cns_cutoffs (
    settlement_date date PRIMARY KEY,
    trade_count bigint NOT NULL CHECK (trade_count >= 0),
    stock_position_count bigint NOT NULL CHECK (stock_position_count >= 0),
    money_position_count bigint NOT NULL CHECK (money_position_count >= 0),
    closed_at timestamptz NOT NULL DEFAULT now()
);
