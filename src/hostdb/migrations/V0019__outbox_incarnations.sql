-- V0019 Outbox incarnations: after a point-in-time restore, new message ids never repeat lost ones.
--
-- The relay publishes each message with `Nats-Msg-Id` = instance id (V0012) + dedupe id. A
-- database restored to a point before messages it had already published issues the same run,
-- instruction and outbox ids again, for different messages; within a stream's duplicate window
-- JetStream would drop those as copies, and nobody would know. `ccass outbox new-incarnation`
-- (step 3 of the restore procedure, docs/operations.md) records an incarnation starting at the
-- next outbox id: rows from that id on are published as `{instance_id}.{incarnation}:{dedupe_id}`,
-- so they cannot meet an id of the lost timeline; older rows keep their ids, so a republished
-- copy of a row published before the restore point is still dropped. No incarnation row:
-- incarnation 0, ids as before V0019.
CREATE TABLE outbox_incarnations (
    incarnation integer PRIMARY KEY CHECK (incarnation > 0),
    -- The first outbox_id of the incarnation (unique: one boundary per id).
    first_outbox_id bigint NOT NULL UNIQUE,
    reason text NOT NULL CHECK (reason <> '' AND length(reason) <= 500),
    started_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER outbox_incarnations_append_only
    BEFORE UPDATE OR DELETE ON outbox_incarnations
    FOR EACH ROW EXECUTE FUNCTION ccass_refuse_change();
