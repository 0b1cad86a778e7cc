-- V0009: the terminal's maker–checker (issue 8).
--
-- An SI input at the terminal is not sent at once: it waits here, as the very FIN text that
-- will be published to INBOUND, until a different user of the same participant holding
-- `si.authorise` authorises it (then it is published with Nats-Msg-Id participant:SEME, so a
-- repeated publish after a crash is deduplicated by JetStream and by intake's unique key) or
-- rejects it. Settlement intake never reads this table: there is one intake, fed only by
-- INBOUND.
--
-- Decisions:
-- - The sender's reference is unique per participant here as in `instructions`, so two
--   pending inputs can never claim one reference.
-- - A decision is a single UPDATE guarded by `status = 'pending'`: two checkers racing on
--   one input cannot both win.
-- - `summary` keeps the form's values (JSON) for the pending list; `fin_text` is authoritative.

CREATE TABLE terminal_pending_instructions (
    pending_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant_id text NOT NULL REFERENCES participants,
    sender_reference text NOT NULL CHECK (sender_reference ~ '^[A-Za-z0-9/?:().,''+ -]{1,16}$'),
    message_type text NOT NULL CHECK (message_type IN ('540', '541', '542', '543')),
    fin_text text NOT NULL,
    summary jsonb NOT NULL,
    maker_uid text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'authorised', 'rejected')),
    checker_uid text,
    decided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (participant_id, sender_reference),
    CHECK ((status = 'pending') = (checker_uid IS NULL AND decided_at IS NULL)),
    CHECK (checker_uid IS DISTINCT FROM maker_uid)
);

CREATE INDEX terminal_pending_instructions_open
    ON terminal_pending_instructions (participant_id, pending_id) WHERE status = 'pending';
