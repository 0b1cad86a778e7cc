-- V0021 Each Batch Settlement Run's journal rows are a partition of their own, written beside
-- the run's transaction and attached by it.
--
-- Why: the run writes its results in one transaction, and one transaction is one server
-- process: on the 2-core machine its write phase was one core at 100 % with the other idle,
-- and the two journals (about a million rows on the bench's day) were 1.2 s of its 2.9 s.
--
-- Design choices:
-- * The journals are now partitioned by LIST (settlement_run_id):
--     <journal>_outside_runs  FOR VALUES IN (NULL): openings, deposits, withdrawals and the
--                             CNS day end's money settlement; still partitioned by month of
--                             settlement_date (monthly partitions + DEFAULT, as V0001):
--                             `ccass_create_monthly_partitions` given a journal now creates
--                             this table's months;
--     <journal>_run_<id>      FOR VALUES IN (<id>): every row one run wrote.
--   There is no DEFAULT partition at the top: a row naming a run without its partition is
--   refused ("no partition of relation ... found for row"), never stored somewhere unseen.
-- * How a run writes (src/hostdb/settlement.rs): after it recorded itself (and so knows its
--   id) it creates its two tables with `ccass_create_run_journals`, committed on a pool
--   connection of their own. Each table has the journal's columns, defaults and CHECKs, plus
--   a CHECK that every row names the run. The journals' COPY runs on further connections
--   of their own, in parallel with the run's transaction writing balances, markers and
--   confirmations; the run's own rows (CNS positions) go into the tables by name from the
--   run's transaction. Last before its commit the run attaches them
--   (`ccass_attach_run_journals`). The CHECK implies the partition's constraint, so the
--   attach reads no row (1.5 ms for a million rows, measured in psql), and with no DEFAULT
--   partition it takes only SHARE UPDATE EXCLUSIVE on the journal: readers and writers of
--   other partitions do not wait.
-- * Exactly once is unchanged: the rows are part of the journal exactly when the run's
--   transaction commits, because the attach is in it. A run that fails or is killed leaves
--   its tables unattached, outside the journal; the next leader drops them
--   (`ccass_drop_unattached_run_journals`, in its own transaction, before it creates its
--   tables). Only the leader creates and drops: runs on one database share one leader lock.
-- * A run that wrote no journal row drops its empty tables instead of attaching them.
-- * The append-only row triggers are on the parent, so PostgreSQL clones them onto each
--   attached partition. Old runs can be detached and archived as whole partitions.

CREATE FUNCTION ccass_run_journal_name(journal text, run_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT journal || '_run_' || run_id $$;

-- Creates run `run_id`'s two journal tables, unattached (the run's protocol, above) or, with
-- `attached`, as partitions at once (the benchmark's SQL baselines, this migration).
CREATE FUNCTION ccass_create_run_journals(run_id bigint, attached boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    journal text;
BEGIN
    FOREACH journal IN ARRAY ARRAY['holding_movements', 'cash_movements'] LOOP
        IF attached THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%s)',
                ccass_run_journal_name(journal, run_id), journal, run_id);
            CONTINUE;
        END IF;
        EXECUTE format(
            'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                 CONSTRAINT %I CHECK (settlement_run_id IS NOT NULL
                                      AND settlement_run_id = %s))',
            ccass_run_journal_name(journal, run_id), journal,
            ccass_run_journal_name(journal, run_id) || '_names_run', run_id);
    END LOOP;
END;
$$;

-- Attaches the run's two tables to the journals, or drops a table the run wrote nothing in.
-- Returns how many were attached.
CREATE FUNCTION ccass_attach_run_journals(run_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    journal text;
    has_rows boolean;
    attached integer := 0;
BEGIN
    FOREACH journal IN ARRAY ARRAY['holding_movements', 'cash_movements'] LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', ccass_run_journal_name(journal, run_id))
            INTO has_rows;
        IF has_rows THEN
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%s)',
                journal, ccass_run_journal_name(journal, run_id), run_id);
            attached := attached + 1;
        ELSE
            EXECUTE format('DROP TABLE %I', ccass_run_journal_name(journal, run_id));
        END IF;
    END LOOP;
    RETURN attached;
END;
$$;

-- Drops every run journal table that is not attached: what runs that never committed left.
-- Returns how many were dropped.
CREATE FUNCTION ccass_drop_unattached_run_journals() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    orphan regclass;
    dropped integer := 0;
BEGIN
    FOR orphan IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relkind = 'r' AND NOT c.relispartition
          AND c.relnamespace = 'public'::regnamespace
          AND c.relname ~ '^(holding|cash)_movements_run_[0-9]+$'
    LOOP
        EXECUTE format('DROP TABLE %s', orphan);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;

-- As V0001's, but a journal's months are those of its rows outside runs.
CREATE OR REPLACE FUNCTION ccass_create_monthly_partitions(parent regclass, first_month date,
                                                           month_count integer)
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
    IF parent::text IN ('holding_movements', 'cash_movements') THEN
        parent := (parent::text || '_outside_runs')::regclass;
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

-- The journals, rebuilt with the new partitioning; existing rows are copied over.
DROP VIEW holding_balances_derived;
DROP VIEW cash_balances_derived;
ALTER SEQUENCE holding_movement_id_seq OWNED BY NONE;
ALTER SEQUENCE cash_movement_id_seq OWNED BY NONE;
ALTER TABLE holding_movements RENAME TO holding_movements_before_v0021;
ALTER TABLE cash_movements RENAME TO cash_movements_before_v0021;

CREATE TABLE holding_movements (
    LIKE holding_movements_before_v0021 INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY LIST (settlement_run_id);
CREATE TABLE holding_movements_outside_runs PARTITION OF holding_movements
    FOR VALUES IN (NULL) PARTITION BY RANGE (settlement_date);
CREATE TABLE holding_movements_outside_runs_default PARTITION OF holding_movements_outside_runs
    DEFAULT;
ALTER SEQUENCE holding_movement_id_seq OWNED BY holding_movements.movement_id;
CREATE TRIGGER holding_movements_append_only
    BEFORE UPDATE OR DELETE ON holding_movements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER holding_movements_no_truncate
    BEFORE TRUNCATE ON holding_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

CREATE TABLE cash_movements (
    LIKE cash_movements_before_v0021 INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY LIST (settlement_run_id);
CREATE TABLE cash_movements_outside_runs PARTITION OF cash_movements
    FOR VALUES IN (NULL) PARTITION BY RANGE (settlement_date);
CREATE TABLE cash_movements_outside_runs_default PARTITION OF cash_movements_outside_runs
    DEFAULT;
ALTER SEQUENCE cash_movement_id_seq OWNED BY cash_movements.movement_id;
CREATE TRIGGER cash_movements_append_only
    BEFORE UPDATE OR DELETE ON cash_movements
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
CREATE TRIGGER cash_movements_no_truncate
    BEFORE TRUNCATE ON cash_movements
    FOR EACH STATEMENT EXECUTE FUNCTION ccass_refuse_change();

-- Months of the rows outside runs, then a partition per run that wrote rows.
DO $$
DECLARE
    journal text;
    first_month date;
    last_month date;
    run_id bigint;
BEGIN
    FOREACH journal IN ARRAY ARRAY['holding_movements', 'cash_movements'] LOOP
        EXECUTE format('SELECT min(settlement_date), max(settlement_date) FROM %I
                        WHERE settlement_run_id IS NULL', journal || '_before_v0021')
            INTO first_month, last_month;
        IF first_month IS NOT NULL THEN
            PERFORM ccass_create_monthly_partitions(
                (journal || '_outside_runs')::regclass, first_month,
                least(120, (extract(year FROM age(date_trunc('month', last_month),
                                                  date_trunc('month', first_month))) * 12
                            + extract(month FROM age(date_trunc('month', last_month),
                                                     date_trunc('month', first_month))))::integer
                           + 1));
        END IF;
    END LOOP;
    FOR run_id IN
        SELECT settlement_run_id FROM holding_movements_before_v0021
        WHERE settlement_run_id IS NOT NULL
        UNION
        SELECT settlement_run_id FROM cash_movements_before_v0021
        WHERE settlement_run_id IS NOT NULL
    LOOP
        PERFORM ccass_create_run_journals(run_id, true);
    END LOOP;
END;
$$;

INSERT INTO holding_movements SELECT * FROM holding_movements_before_v0021;
INSERT INTO cash_movements SELECT * FROM cash_movements_before_v0021;
DROP TABLE holding_movements_before_v0021;
DROP TABLE cash_movements_before_v0021;

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
