-- V0020 CNS capture sets aside a trade batch it can never capture, instead of retrying it for
-- ever.
--
-- Until now a batch that failed to decode was terminated on the stream (and so lost but for
-- a log line), and a batch the host database refused (a value a column cannot hold, a
-- constraint the code did not foresee) was negatively acknowledged and redelivered for ever,
-- failing every capture transaction it was fetched into: one bad batch stopped the feed.
-- Now the worker captures the batches of a refused group one by one, and a batch that is
-- malformed, or refused on its own, is stored here with its payload before it is terminated
-- on the stream: nothing the feed delivered is lost, and the rest is captured. Operators see
-- `ccass_cns_batches_quarantined_total` and `ccass cns quarantine list`, and either release a
-- batch (captured again once the cause is mended: `ccass cns quarantine release`) or dismiss
-- it with a note (e.g. corrected and loaded again from the source).
CREATE TABLE cns_quarantined_batches (
    quarantine_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Where the message was on the bus: a redelivered message is quarantined once.
    nats_stream text NOT NULL,
    nats_stream_sequence bigint NOT NULL,
    subject text NOT NULL,
    -- The message as delivered, byte for byte.
    payload bytea NOT NULL,
    -- malformed: not a trade batch (or its market or batch id cannot be stored);
    -- refused: the host database refused the batch when captured on its own.
    reason text NOT NULL CHECK (reason IN ('malformed', 'refused')),
    error text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    -- held until an operator releases (captured again) or dismisses it.
    status text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'released', 'dismissed')),
    closed_at timestamptz,
    note text CHECK (length(note) <= 500),
    UNIQUE (nats_stream, nats_stream_sequence),
    CHECK ((status = 'held') = (closed_at IS NULL))
);
