-- V0017 CNS capture stores trades in sets: one row per capture transaction and trade date,
-- its trades as lines of text, instead of one row per trade.
--
-- Design choices:
-- * Capture's trade COPY was its largest cost (`ccass bench cns`, 5 M trades: 6.5 of ~17
--   worker-seconds with one row per trade, no index). A row per trade costs a heap tuple
--   header, twelve datums to parse and a WAL record share; measured in psql for 1 M trades:
--   1.09 s as rows, 1.29 s as twelve arrays (array_recv parses every element), 0.32-0.37 s
--   as one text value per 4,000 trades.
-- * `exchange_trade_sets` holds, per (market, trade date, settlement date), the trades one
--   capture transaction accepted: `trades` is one line per trade, nine comma-separated
--   fields, in capture order:
--     trade_id,trade_time,isin,buyer_participant_id,seller_participant_id,quantity,
--     price_micros,currency_code,settlement_type
--   trade_time is HH:MM:SS; quantity and price_micros are decimal integers; settlement_type
--   is `cns` or `isolated`. No field contains a comma or a line break: capture refuses such
--   a trade id (malformed_field), and every other text field is a key of reference data.
--   Lines are separated by a single '\n', with none after the last.
-- * The trades stay readable in SQL: `exchange_trades` is now a view with every column the
--   table had (received_at is the set's capture time). It parses the lines on each read, so
--   it is slower to scan than the table was; its readers are the cut-off's check of a day's
--   netting and people. A filter on market, trade_date or settlement_date applies to the sets
--   before any line is parsed.
-- * Storage is lz4-compressed where the server has it (the text compresses ~2.6:1 and lz4
--   costs less than writing the bytes); pglz, the default, cost more than writing
--   uncompressed (`ccass bench cns`: 3.1 s of server time for 5 M trades' delta sets), so
--   the columns are stored uncompressed otherwise.
-- * Position deltas (V0011) likewise: a capture transaction appended one row per
--   (participant, security) it netted, about as many rows as trades on a busy day (5 M
--   trades: ~4 M delta rows). Now it appends one row per settlement date and kind, its deltas
--   as lines `participant_id,key,net,obligation_count` (key: the ISIN for stock, the currency
--   code for money; the same separators and guarantees as trade lines). Folding (unchanged in
--   what it does: moves every delta of a date into the position rows exactly once) deletes
--   the sets, sums their lines in the client and upserts the sums (src/hostdb/cns.rs).
-- * Isolated obligations lose their three foreign keys (participant, security, currency).
--   Each key check locked the referenced row FOR KEY SHARE, and two capture workers locking
--   the same participants make multixacts: ~30 us a row (`ccass bench cns`, 5 M trades: 1.3
--   to 1.7 s of server time for 50 k obligation rows). Capture validates all three against
--   reference data first, and `ccass audit` checks them (as V0015 did for holdings).
-- * Partitioned by trade_date like the table it replaces; existing trades move into sets,
--   one per (market, trade date, settlement date).

CREATE TABLE exchange_trade_sets (
    market text NOT NULL,
    trade_date date NOT NULL,
    settlement_date date NOT NULL,
    trade_count integer NOT NULL CHECK (trade_count > 0),
    trades text NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT now(),
    CHECK (settlement_date >= trade_date)
) PARTITION BY RANGE (trade_date);

CREATE TABLE cns_position_delta_sets (
    settlement_date date NOT NULL,
    kind text NOT NULL CHECK (kind IN ('stock', 'money')),
    delta_count integer NOT NULL CHECK (delta_count > 0),
    deltas text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cns_position_delta_sets_date ON cns_position_delta_sets (settlement_date, kind);

-- lz4 where the server has it, else no compression (see the design notes above). Set
-- before any partition exists: partitions created later inherit it, existing ones do not.
DO $$
BEGIN
    BEGIN
        ALTER TABLE exchange_trade_sets ALTER COLUMN trades SET COMPRESSION lz4;
        ALTER TABLE cns_position_delta_sets ALTER COLUMN deltas SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
        ALTER TABLE exchange_trade_sets ALTER COLUMN trades SET STORAGE EXTERNAL;
        ALTER TABLE cns_position_delta_sets ALTER COLUMN deltas SET STORAGE EXTERNAL;
    END;
END;
$$;

CREATE TABLE exchange_trade_sets_default PARTITION OF exchange_trade_sets DEFAULT;

-- Months that hold trades get their partitions before the trades move (a month cannot be
-- created later while the DEFAULT partition holds rows of it).
SELECT ccass_create_monthly_partitions('exchange_trade_sets'::regclass, month, 1)
FROM (SELECT DISTINCT date_trunc('month', trade_date)::date AS month FROM exchange_trades) AS m;

INSERT INTO exchange_trade_sets (market, trade_date, settlement_date, trade_count, trades,
                                 captured_at)
SELECT market, trade_date, settlement_date, count(*)::integer,
       string_agg(concat_ws(',', trade_id, to_char(trade_time, 'HH24:MI:SS'), isin,
                            buyer_participant_id, seller_participant_id, quantity, price_micros,
                            currency_code, settlement_type), E'\n' ORDER BY received_at, trade_id),
       min(received_at)
FROM exchange_trades
GROUP BY market, trade_date, settlement_date;

DROP TABLE exchange_trades;

CREATE VIEW exchange_trades AS
SELECT s.market,
       s.trade_date,
       f.fields[1] AS trade_id,
       f.fields[2]::time AS trade_time,
       f.fields[3] AS isin,
       f.fields[4] AS buyer_participant_id,
       f.fields[5] AS seller_participant_id,
       f.fields[6]::bigint AS quantity,
       f.fields[7]::bigint AS price_micros,
       f.fields[8] AS currency_code,
       f.fields[9] AS settlement_type,
       s.settlement_date,
       s.captured_at AS received_at
FROM exchange_trade_sets s
CROSS JOIN LATERAL string_to_table(s.trades, E'\n') AS l (line)
CROSS JOIN LATERAL string_to_array(l.line, ',') AS f (fields);

COMMENT ON VIEW exchange_trades IS
    'captured exchange trades, one row per trade, parsed from exchange_trade_sets (V0017)';

INSERT INTO cns_position_delta_sets (settlement_date, kind, delta_count, deltas)
SELECT settlement_date, 'stock', count(*)::integer,
       string_agg(concat_ws(',', participant_id, isin, net_quantity, obligation_count), E'\n')
FROM cns_stock_position_deltas
GROUP BY settlement_date;

INSERT INTO cns_position_delta_sets (settlement_date, kind, delta_count, deltas)
SELECT settlement_date, 'money', count(*)::integer,
       string_agg(concat_ws(',', participant_id, currency_code, net_amount_minor,
                            obligation_count), E'\n')
FROM cns_money_position_deltas
GROUP BY settlement_date;

DROP TABLE cns_stock_position_deltas;
DROP TABLE cns_money_position_deltas;

ALTER TABLE cns_isolated_obligations
    DROP CONSTRAINT cns_isolated_obligations_participant_id_fkey,
    DROP CONSTRAINT cns_isolated_obligations_isin_fkey,
    DROP CONSTRAINT cns_isolated_obligations_currency_code_fkey;
