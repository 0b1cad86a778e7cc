-- V0012 The database's identity: one row, made when the schema is created.
--
-- The outbox relay publishes each message with `Nats-Msg-Id` = `{instance_id}:{dedupe_id}`.
-- Dedupe ids are built from this database's identities (run ids, instruction ids, dates), so a
-- second database that starts its sequences from 1 again (the demo's, recreated at every
-- start; a test's; a new environment on a shared NATS) would produce the same ids for
-- different messages, and JetStream's duplicate window (OUTBOUND: a day) would silently drop
-- them. The instance id keeps them apart; within one database a republished row keeps its id,
-- so the window still drops the copies (at-least-once relay, each message once in the stream).
-- A restore from backup brings back the same instance id: see docs/operations.md (restore).
CREATE TABLE system_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance_id text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
        CHECK (instance_id ~ '^[0-9a-f]{32}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO system_identity DEFAULT VALUES;

CREATE TRIGGER system_identity_append_only
    BEFORE UPDATE OR DELETE ON system_identity
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
