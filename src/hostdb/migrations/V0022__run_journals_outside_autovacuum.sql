-- V0022 Autovacuum leaves a run's journal tables alone until the run attaches them.
--
-- Why: a run's two journal tables are committed, and filled by COPY on connections of their
-- own, before the run's transaction attaches them (V0021). Autovacuum saw half a million
-- inserted rows in a committed table and started on it; the attach (ACCESS EXCLUSIVE on the
-- table) then waited `deadlock_timeout` (1 s) for each table until the server cancelled the
-- worker. Measured on the bench's day: the run's commit took 2.0 s instead of 0.01 s, and
-- the server log said "canceling autovacuum task ... while scanning block 5837 of relation
-- public.holding_movements_run_1", then the same for cash_movements_run_1.
--
-- Design choices:
-- * An unattached run table is created with autovacuum off (also for its TOAST table): it
--   is not part of the journal yet, and a run that never commits drops it.
-- * The attach resets both settings in the run's transaction, so once the run commits the
--   partition is vacuumed and analysed like any other table. The reset needs no lock beyond
--   the ACCESS EXCLUSIVE the attach already holds on the table.
-- * The SQL baselines' tables (created attached) are unchanged.

CREATE OR REPLACE FUNCTION ccass_create_run_journals(run_id bigint, attached boolean DEFAULT false)
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
                                      AND settlement_run_id = %s))
             WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off)',
            ccass_run_journal_name(journal, run_id), journal,
            ccass_run_journal_name(journal, run_id) || '_names_run', run_id);
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION ccass_attach_run_journals(run_id bigint) RETURNS integer
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
            EXECUTE format('ALTER TABLE %I RESET (autovacuum_enabled, toast.autovacuum_enabled)',
                ccass_run_journal_name(journal, run_id));
            attached := attached + 1;
        ELSE
            EXECUTE format('DROP TABLE %I', ccass_run_journal_name(journal, run_id));
        END IF;
    END LOOP;
    RETURN attached;
END;
$$;
