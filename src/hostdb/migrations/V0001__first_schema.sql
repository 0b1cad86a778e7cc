-- V0001 first schema: reference data, movement journals and balances, instructions,
-- exchange trades, settlement runs, message journal, outbox, audit trail.
--
-- Design choices (read before adding tables):
-- * Natural keys where the domain has them (participant id `B01234`, account `B01234-01`,
--   ISIN, ISO currency code); surrogate bigint identities for events.
-- * Quantities are bigint whole units; money is bigint minor units of its currency
--   (HKD cents). Only exchange prices are numeric (they carry more decimals than money).
-- * Journals (holding_movements, cash_movements) are append-only, one row per transfer,
--   range-partitioned by settlement_date (monthly partitions + a DEFAULT partition) and carry
--   NO indexes, primary keys or foreign keys: the settlement engine appends them with COPY
--   BINARY at ~2 M rows/s (measured 2.25 M rows/s without an index, 730 k/s with a primary
--   key). Referential integrity of journal rows is checked by `ccass audit` instead, and
--   old months can be detached and archived as whole partitions.
--   Kept on purpose: the row-local CHECKs (positive quantity, known kind, which side may be
--   NULL) and the movement_id sequence default. Measured on the shared 2-core machine
--   (1 M rows, server-side COPY BINARY, noisy): bare columns 0.70 s, with these CHECKs and
--   defaults 0.9-1.2 s. If a benchmark shows them on the critical path, the CASE check is
--   the one to drop (the engine asserts the same before writing).
-- * Balances (holdings, cash_balances) are stored beside the journals, updated in the same
--   transaction, and checked against the journal by `ccass audit` and the derived views.
-- * Append-only tables refuse UPDATE, DELETE and TRUNCATE with a trigger. Row triggers
--   reach every partition; the TRUNCATE trigger guards the parent only, because detaching
--   or truncating a whole old month after archiving it is the intended retention path.
-- * Status and kind columns are text with CHECK constraints (readable in psql, cheap to
--   extend in a later migration).

-- ---------------------------------------------------------------------------------------
-- Helpers

-- Raises on any change to an append-only table.
CREATE FUNCTION ccass_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- ISIN (ISO 6166): 2-letter country, 9 alphanumerics, 1 check digit; the check digit is
-- Luhn over the digits obtained by replacing each letter with its value (A = 10 .. Z = 35).
CREATE FUNCTION ccass_isin_is_valid(isin text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    digits text := '';
    ch text;
    sum integer := 0;
    digit integer;
    position integer;
    double boolean := true;
BEGIN
    IF isin !~ '^[A-Z]{2}[A-Z0-9]{9}[0-9]$' THEN
        RETURN false;
    END IF;
    FOR position IN 1..11 LOOP
        ch := substr(isin, position, 1);
        IF ch ~ '[0-9]' THEN
            digits := digits || ch;
        ELSE
            digits := digits || (ascii(ch) - ascii('A') + 10)::text;
        END IF;
    END LOOP;
    -- From the right end of the payload, double every other digit starting with the last.
    FOR position IN REVERSE length(digits)..1 LOOP
        digit := substr(digits, position, 1)::integer;
        IF double THEN
            digit := digit * 2;
            IF digit > 9 THEN
                digit := digit - 9;
            END IF;
        END IF;
        sum := sum + digit;
        double := NOT double;
    END LOOP;
    RETURN (10 - sum % 10) % 10 = substr(isin, 12, 1)::integer;
END;
$$;

-- ---------------------------------------------------------------------------------------
-- Reference data

CREATE TABLE currencies (
    currency_code text PRIMARY KEY CHECK (currency_code ~ '^[A-Z]{3}$'),
    name text NOT NULL,
    -- Decimal places of the minor unit (HKD 2): money columns are in these units.
    minor_units smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4)
);

CREATE TABLE participants (
    participant_id text PRIMARY KEY CHECK (participant_id ~ '^[A-Z][A-Z0-9]{5}$'),
    name text NOT NULL CHECK (name <> ''),
    participant_type text NOT NULL
        CHECK (participant_type IN ('ccp', 'broker', 'custodian', 'investor', 'stock_pledgee')),
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    -- FIN logical-terminal address: 8-character BIC, terminal code, 3-character branch.
    logical_terminal text NOT NULL UNIQUE CHECK (logical_terminal ~ '^[A-Z]{6}[A-Z0-9]{6}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stock_accounts (
    account_id text PRIMARY KEY CHECK (account_id ~ '^[A-Z][A-Z0-9]{5}-[0-9]{2}$'),
    participant_id text NOT NULL REFERENCES participants,
    -- house: the participant's own; client: segregated client holdings; ccp: the CCP's
    -- settlement account for CNS; pledge: stock pledged to a stock pledgee.
    account_kind text NOT NULL CHECK (account_kind IN ('house', 'client', 'ccp', 'pledge')),
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The account id starts with its owner's id: `B01234-01` belongs to `B01234`.
    CHECK (left(account_id, 6) = participant_id)
);

CREATE TABLE securities (
    isin text PRIMARY KEY CHECK (ccass_isin_is_valid(isin)),
    stock_code text NOT NULL UNIQUE CHECK (stock_code ~ '^[0-9]{5}$'),
    name text NOT NULL CHECK (name <> ''),
    currency_code text NOT NULL REFERENCES currencies,
    board_lot integer NOT NULL CHECK (board_lot > 0),
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'delisted')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One money account per participant and currency, held at its designated bank.
CREATE TABLE cash_accounts (
    participant_id text NOT NULL REFERENCES participants,
    currency_code text NOT NULL REFERENCES currencies,
    -- participant: an ordinary participant's money account (never negative).
    -- ccp_settlement: the CCP's settlement account. It may go negative: within a settlement
    -- day the CCP pays CNS short deliverers before it collects from long receivers (the
    -- run settles shorts first), and its position is squared by money settlement at day
    -- end. Every other balance is >= 0 (enforced on cash_balances).
    account_kind text NOT NULL CHECK (account_kind IN ('participant', 'ccp_settlement')),
    designated_bank text NOT NULL CHECK (designated_bank <> ''),
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant_id, currency_code),
    -- Target of cash_balances' composite key, which carries account_kind for its CHECK.
    UNIQUE (participant_id, currency_code, account_kind)
);

-- ---------------------------------------------------------------------------------------
-- Journals and balances

-- Partition creation, also called from Rust (`hostdb::partitions`) ahead of each month.
-- Creates `<parent>_yYYYYmMM` for each of `month_count` months starting with the month of
-- `first_month`; existing partitions are left alone. Returns how many it created.
CREATE FUNCTION ccass_create_monthly_partitions(parent regclass, first_month date, month_count integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', first_month)::date;
    partition_name text;
    created integer := 0;
BEGIN
    IF month_count < 0 OR month_count > 120 THEN
        RAISE EXCEPTION 'month_count % out of range 0..=120', month_count;
    END IF;
    FOR i IN 1..month_count LOOP
        partition_name := format('%s_y%sm%s', parent::text,
            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                partition_name, parent, month_start, (month_start + interval '1 month')::date);
            created := created + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;

CREATE SEQUENCE holding_movement_id_seq CACHE 1000;

-- Holdings movement journal: one row per transfer of `quantity` units of `isin` from
-- `from_account_id` to `to_account_id`. A NULL side is outside the depository: opening and
-- deposit have no source, withdrawal has no destination; settlement has both.
CREATE TABLE holding_movements (
    movement_id bigint NOT NULL DEFAULT nextval('holding_movement_id_seq'),
    settlement_date date NOT NULL,
    settlement_run_id bigint,
    from_account_id text,
    to_account_id text,
    isin text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    movement_kind text NOT NULL
        CHECK (movement_kind IN ('opening', 'deposit', 'withdrawal', 'settlement')),
    reference text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (from_account_id IS DISTINCT FROM to_account_id),
    CHECK (CASE movement_kind
        WHEN 'opening' THEN from_account_id IS NULL AND to_account_id IS NOT NULL
        WHEN 'deposit' THEN from_account_id IS NULL AND to_account_id IS NOT NULL
        WHEN 'withdrawal' THEN from_account_id IS NOT NULL AND to_account_id IS NULL
        ELSE from_account_id IS NOT NULL AND to_account_id IS NOT NULL
    END)
) PARTITION BY RANGE (settlement_date);
-- No indexes on the journal: see the header. Rows outside every monthly partition land in
-- the DEFAULT partition rather than failing a settlement run.
CREATE TABLE holding_movements_default PARTITION OF holding_movements DEFAULT;
ALTER SEQUENCE holding_movement_id_seq OWNED BY holding_movements.movement_id;

CREATE TRIGGER holding_movements_append_only
    BEFORE UPDATE OR DELETE ON holding_movements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER holding_movements_no_truncate
    BEFORE TRUNCATE ON holding_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

-- Stored balance per account and security, updated with the journal in one transaction.
-- fillfactor 70 leaves room for HOT updates (measured: 1 M balance updates 7.7 s -> 4.5 s).
CREATE TABLE holdings (
    account_id text NOT NULL REFERENCES stock_accounts,
    isin text NOT NULL REFERENCES securities,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, isin)
) WITH (fillfactor = 70);

-- The balance the journal implies, for audits and reconciliation (a full scan: not for the
-- hot path).
CREATE VIEW holding_balances_derived AS
SELECT account_id, isin, sum(quantity)::bigint AS quantity
FROM (
    SELECT to_account_id AS account_id, isin, quantity
    FROM holding_movements WHERE to_account_id IS NOT NULL
    UNION ALL
    SELECT from_account_id, isin, -quantity
    FROM holding_movements WHERE from_account_id IS NOT NULL
) AS legs
GROUP BY account_id, isin;

CREATE SEQUENCE cash_movement_id_seq CACHE 1000;

-- Cash movement journal, same design as holding_movements. A cash account is
-- (participant, currency), so a row names the two participants and one currency.
-- opening/deposit: money paid in from outside (no source); withdrawal: paid out (no
-- destination); dvp: the money leg of a settled DvP instruction or CNS position;
-- money_settlement: end-of-day transfers between participants and the CCP.
CREATE TABLE cash_movements (
    movement_id bigint NOT NULL DEFAULT nextval('cash_movement_id_seq'),
    settlement_date date NOT NULL,
    settlement_run_id bigint,
    from_participant_id text,
    to_participant_id text,
    currency_code text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    movement_kind text NOT NULL
        CHECK (movement_kind IN ('opening', 'deposit', 'withdrawal', 'dvp', 'money_settlement')),
    reference text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (from_participant_id IS DISTINCT FROM to_participant_id),
    CHECK (CASE movement_kind
        WHEN 'opening' THEN from_participant_id IS NULL AND to_participant_id IS NOT NULL
        WHEN 'deposit' THEN from_participant_id IS NULL AND to_participant_id IS NOT NULL
        WHEN 'withdrawal' THEN from_participant_id IS NOT NULL AND to_participant_id IS NULL
        ELSE from_participant_id IS NOT NULL AND to_participant_id IS NOT NULL
    END)
) PARTITION BY RANGE (settlement_date);
CREATE TABLE cash_movements_default PARTITION OF cash_movements DEFAULT;
ALTER SEQUENCE cash_movement_id_seq OWNED BY cash_movements.movement_id;

CREATE TRIGGER cash_movements_append_only
    BEFORE UPDATE OR DELETE ON cash_movements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER cash_movements_no_truncate
    BEFORE TRUNCATE ON cash_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

CREATE TABLE cash_balances (
    participant_id text NOT NULL,
    currency_code text NOT NULL,
    -- Copied from cash_accounts (and held equal by the foreign key) so the CHECK below can
    -- let only the CCP's settlement account go negative.
    account_kind text NOT NULL,
    amount_minor bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (participant_id, currency_code),
    FOREIGN KEY (participant_id, currency_code, account_kind)
        REFERENCES cash_accounts (participant_id, currency_code, account_kind)
        ON UPDATE CASCADE,
    CHECK (amount_minor >= 0 OR account_kind = 'ccp_settlement')
) WITH (fillfactor = 70);

CREATE VIEW cash_balances_derived AS
SELECT participant_id, currency_code, sum(amount_minor)::bigint AS amount_minor
FROM (
    SELECT to_participant_id AS participant_id, currency_code, amount_minor
    FROM cash_movements WHERE to_participant_id IS NOT NULL
    UNION ALL
    SELECT from_participant_id, currency_code, -amount_minor
    FROM cash_movements WHERE from_participant_id IS NOT NULL
) AS legs
GROUP BY participant_id, currency_code;

-- ---------------------------------------------------------------------------------------
-- Settlement runs

CREATE TABLE settlement_runs (
    settlement_run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    settlement_date date NOT NULL,
    -- 1 for the day's first Batch Settlement Run, and so on.
    run_number smallint NOT NULL CHECK (run_number > 0),
    scheduled_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    status text NOT NULL
        CHECK (status IN ('scheduled', 'running', 'completed', 'failed', 'aborted')),
    -- Identity of the process that held the leader lease for this run.
    leader text,
    instructions_settled_count bigint NOT NULL DEFAULT 0 CHECK (instructions_settled_count >= 0),
    instructions_recycled_count bigint NOT NULL DEFAULT 0 CHECK (instructions_recycled_count >= 0),
    cns_positions_settled_count bigint NOT NULL DEFAULT 0 CHECK (cns_positions_settled_count >= 0),
    holding_movements_count bigint NOT NULL DEFAULT 0 CHECK (holding_movements_count >= 0),
    cash_movements_count bigint NOT NULL DEFAULT 0 CHECK (cash_movements_count >= 0),
    -- Money settled per currency in minor units: {"HKD": 123456}.
    settled_value_minor jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (settlement_date, run_number),
    CHECK (finished_at IS NULL OR started_at IS NOT NULL)
);

-- ---------------------------------------------------------------------------------------
-- Messages

-- Every FIN message in and out, byte for byte, with its hash. Append-only.
CREATE TABLE message_journal (
    message_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    -- No foreign key: a message is journalled even when its participant is not (or no
    -- longer) known; the gateway has already authenticated the sender.
    participant_id text NOT NULL,
    message_type text NOT NULL CHECK (message_type ~ '^[0-9]{3}$'),
    -- :20C::SEME// of the message, when it has one.
    sender_reference text,
    -- Inbound: when the gateway received it. Outbound: when ccass issued it (the row is
    -- written with the outbox row that publishes it); delivery to the PSS and its
    -- acknowledgement are tracked by the OUTBOUND stream, since this table is append-only.
    received_at timestamptz,
    sent_at timestamptz,
    text_sha256 bytea NOT NULL CHECK (octet_length(text_sha256) = 32),
    fin_text text NOT NULL,
    -- Where the message came from or went to on the bus; unique so a redelivered message
    -- is journalled once.
    nats_stream text,
    nats_stream_sequence bigint,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((direction = 'in') = (received_at IS NOT NULL)),
    CHECK ((direction = 'out') = (sent_at IS NOT NULL)),
    CHECK ((nats_stream IS NULL) = (nats_stream_sequence IS NULL)),
    UNIQUE (nats_stream, nats_stream_sequence)
);
CREATE INDEX message_journal_participant_reference
    ON message_journal (participant_id, sender_reference);

CREATE TRIGGER message_journal_append_only
    BEFORE UPDATE OR DELETE ON message_journal
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER message_journal_no_truncate
    BEFORE TRUNCATE ON message_journal
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

-- ---------------------------------------------------------------------------------------
-- Settlement instructions

CREATE TABLE instructions (
    instruction_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant_id text NOT NULL REFERENCES participants,
    -- :20C::SEME//: with the participant, the end-to-end idempotency key. A duplicate is
    -- refused by the unique constraint below, never settled twice.
    sender_reference text NOT NULL CHECK (sender_reference ~ '^[A-Za-z0-9/?:().,''+ -]{1,16}$'),
    message_type text NOT NULL CHECK (message_type IN ('540', '541', '542', '543')),
    function text NOT NULL CHECK (function IN ('NEWM', 'CANC')),
    -- For CANC: the SEME of the instruction being cancelled (:20C::PREV//).
    previous_reference text,
    direction text NOT NULL CHECK (direction IN ('deliver', 'receive')),
    payment text NOT NULL CHECK (payment IN ('FOP', 'DVP')),
    account_id text NOT NULL REFERENCES stock_accounts,
    counterparty_participant_id text NOT NULL REFERENCES participants,
    counterparty_account_id text REFERENCES stock_accounts,
    isin text NOT NULL REFERENCES securities,
    quantity bigint NOT NULL CHECK (quantity > 0),
    trade_date date,
    settlement_date date NOT NULL,
    currency_code text REFERENCES currencies,
    amount_minor bigint CHECK (amount_minor > 0),
    partial_settlement_allowed boolean NOT NULL,
    status text NOT NULL CHECK (status IN (
        'received', 'rejected', 'unmatched', 'matched', 'pending', 'partially_settled',
        'settled', 'cancelled')),
    received_message_id bigint REFERENCES message_journal,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (participant_id, sender_reference),
    -- Money fields exactly when the instruction is against payment.
    CHECK ((payment = 'DVP') = (currency_code IS NOT NULL AND amount_minor IS NOT NULL)),
    CHECK ((function = 'CANC') = (previous_reference IS NOT NULL)),
    CHECK (left(account_id, 6) = participant_id),
    CHECK (counterparty_account_id IS NULL
        OR left(counterparty_account_id, 6) = counterparty_participant_id)
);
CREATE INDEX instructions_due ON instructions (settlement_date, status);

-- Every status an instruction passed through. Append-only.
CREATE TABLE instruction_status_history (
    instruction_id bigint NOT NULL REFERENCES instructions,
    status text NOT NULL CHECK (status IN (
        'received', 'rejected', 'unmatched', 'matched', 'pending', 'partially_settled',
        'settled', 'cancelled')),
    -- MT548 reason code (LACK, MONY, CMIS, ...) when the status has one.
    reason_code text,
    detail text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instruction_status_history_instruction
    ON instruction_status_history (instruction_id, at);

CREATE TRIGGER instruction_status_history_append_only
    BEFORE UPDATE OR DELETE ON instruction_status_history
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER instruction_status_history_no_truncate
    BEFORE TRUNCATE ON instruction_status_history
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

-- ---------------------------------------------------------------------------------------
-- Exchange trades

-- Trades from the exchange feed, partitioned by trade date and appended with COPY. The only
-- index is the primary key, which makes a replayed feed batch a clear duplicate instead of
-- a double settlement; it costs COPY speed (measured 730 k rows/s with a key), which is
-- still far above a record day's trade count per second. No foreign keys, for the same
-- reason as the journals; the CNS netting step validates references.
CREATE TABLE exchange_trades (
    market text NOT NULL,
    trade_date date NOT NULL,
    trade_id text NOT NULL,
    trade_time time NOT NULL,
    isin text NOT NULL,
    buyer_participant_id text NOT NULL,
    seller_participant_id text NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    price numeric(20, 6) NOT NULL CHECK (price > 0),
    currency_code text NOT NULL,
    settlement_type text NOT NULL CHECK (settlement_type IN ('cns', 'isolated')),
    settlement_date date NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (market, trade_date, trade_id),
    CHECK (settlement_date >= trade_date)
) PARTITION BY RANGE (trade_date);
CREATE TABLE exchange_trades_default PARTITION OF exchange_trades DEFAULT;

-- ---------------------------------------------------------------------------------------
-- Outbox: what must be published after a commit is written here in the same transaction;
-- a relay publishes it to JetStream (dedupe by `dedupe_id` as Nats-Msg-Id) and marks it.

CREATE TABLE outbox (
    outbox_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject text NOT NULL CHECK (subject <> ''),
    dedupe_id text NOT NULL UNIQUE,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- The relay's work queue: small, because published rows drop out of it.
CREATE INDEX outbox_unpublished ON outbox (outbox_id) WHERE published_at IS NULL;

-- ---------------------------------------------------------------------------------------
-- Audit trail: every authorisation decision and operator action. Append-only.

CREATE TABLE audit_trail (
    audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    -- Who: a user (`B01234.alice`), a certificate subject or a service.
    actor text NOT NULL,
    participant_id text,
    action text NOT NULL,
    target text,
    outcome text NOT NULL CHECK (outcome IN ('allowed', 'refused', 'error')),
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_trail_participant_at ON audit_trail (participant_id, at);

CREATE TRIGGER audit_trail_append_only
    BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER audit_trail_no_truncate
    BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();
