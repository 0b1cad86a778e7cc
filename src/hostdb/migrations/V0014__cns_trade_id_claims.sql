-- V0014 CNS capture write path: trade ids claimed in bitmaps instead of a primary key on
-- exchange_trades, and prices stored as integer millionths.
--
-- Design choices:
-- * The primary key (market, trade_date, trade_id) of exchange_trades was the largest
--   capture cost (`ccass bench cns`, 5 M trades: 18.1 of ~34 worker-seconds in the trade
--   COPY; COPY BINARY measured 730 k rows/s with a key, 2.25 M without): one index tuple,
--   one btree descent and one WAL record per trade. It is dropped; exchange_trades becomes
--   an append-only table without indexes, like the journals.
-- * Duplicate trade ids within (market, trade date) stay refused exactly and durably: every
--   accepted trade CLAIMS its id, in the capture transaction that stores the trade.
--   - An id of the canonical form `<prefix><digits>` (the prefix has no ASCII digit, 1 to 18
--     digits, e.g. `G000001234`, `T1`, `20261124000123`) is the triple (prefix, digit count,
--     number), one to one. Exchanges number their trades sequentially, so the numbers of a
--     day are dense: the id is one bit in `cns_trade_id_blocks`, a bitmap of 8,192
--     consecutive numbers of a series (market, trade date, prefix, digit count). Bit n of
--     block b stands for number b * 8192 + n; it is `get_bit(seen, n)` (PostgreSQL's bytea
--     numbering: bit n % 8 of byte n / 8, least significant first); bytes past the stored
--     length are zero (trailing zero bytes are never stored). A capture transaction locks its
--     blocks in key order (an upsert that creates missing ones), refuses every id whose bit
--     is set (duplicate_trade), and writes back the blocks with the bits of the trades it
--     accepted. A 1 M trade day is ~122 block rows, not 1 M index tuples; two workers meet
--     only on a block that both their batches touch, and wait for each other's commit there
--     (row lock), so a duplicate across workers is still refused.
--   - Any other id (no digits, digits inside, more than 18 digits) is claimed in
--     `cns_trade_ids`, a plain primary key (the old behaviour, for those ids only).
--   Which table claims an id depends on the id alone, so the two never disagree.
--   src/hostdb/cns.rs (`claim_trade_ids`, `TradeIdKey`) implements it.
-- * Existing trades are claimed below (backfill), so an id captured before this migration is
--   still refused after it.
-- * price numeric(20, 6) becomes price_micros bigint (millionths of a major unit, the value
--   capture validates and nets with): cheaper to encode in COPY BINARY and to read. Every
--   reader (the cut-off's re-netting) reads micros.

CREATE TABLE cns_trade_id_blocks (
    market text NOT NULL,
    trade_date date NOT NULL,
    -- The id's characters before its first ASCII digit ('' when it starts with a digit).
    id_prefix text NOT NULL,
    -- How many digits follow the prefix (so `T01` and `T1` are different ids).
    id_digits smallint NOT NULL CHECK (id_digits BETWEEN 1 AND 18),
    -- Numbers block_number * 8192 .. block_number * 8192 + 8191.
    block_number bigint NOT NULL CHECK (block_number >= 0),
    seen bytea NOT NULL CHECK (octet_length(seen) <= 1024),
    PRIMARY KEY (market, trade_date, id_prefix, id_digits, block_number)
);

-- Trade ids not of the canonical form (see above).
CREATE TABLE cns_trade_ids (
    market text NOT NULL,
    trade_date date NOT NULL,
    trade_id text NOT NULL,
    PRIMARY KEY (market, trade_date, trade_id)
);

-- Backfill: claim every stored trade's id.
CREATE FUNCTION ccass_trade_id_bitmap(positions integer[]) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bits bytea := decode(repeat('00', 1024), 'hex');
    bit_index integer;
BEGIN
    FOREACH bit_index IN ARRAY positions LOOP
        bits := set_bit(bits, bit_index, 1);
    END LOOP;
    RETURN rtrim(bits, '\x00'::bytea);
END;
$$;

INSERT INTO cns_trade_id_blocks (market, trade_date, id_prefix, id_digits, block_number, seen)
SELECT market, trade_date, id_prefix, id_digits, number / 8192,
       ccass_trade_id_bitmap(array_agg((number % 8192)::integer))
FROM (
    SELECT market, trade_date, parts[1] AS id_prefix, length(parts[2])::smallint AS id_digits,
           parts[2]::bigint AS number
    FROM (
        SELECT market, trade_date, regexp_match(trade_id, '^([^0-9]*)([0-9]{1,18})$') AS parts
        FROM exchange_trades
    ) AS split
    WHERE parts IS NOT NULL
) AS canonical
GROUP BY market, trade_date, id_prefix, id_digits, number / 8192;

INSERT INTO cns_trade_ids (market, trade_date, trade_id)
SELECT market, trade_date, trade_id
FROM exchange_trades
WHERE regexp_match(trade_id, '^([^0-9]*)([0-9]{1,18})$') IS NULL;

DROP FUNCTION ccass_trade_id_bitmap(integer[]);

ALTER TABLE exchange_trades DROP CONSTRAINT exchange_trades_pkey;

ALTER TABLE exchange_trades ALTER COLUMN price TYPE bigint USING (price * 1000000)::bigint;
ALTER TABLE exchange_trades RENAME COLUMN price TO price_micros;
