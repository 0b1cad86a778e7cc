-- V0010 Compact outbox rows for Batch Settlement Runs.
--
-- A run of a million pairs used to write two FIN texts per pair into the outbox inside its
-- transaction (2 M rows, ~17 s of COPY). Now it writes, per participant, a few compact rows
-- (`expansion = 'bsr_confirmations'`): each a "confirmations due" record of at most 512
-- instruction sides of one run (layout in src/hostdb/outbox.rs, `ConfirmationBatch`: the
-- run, the FIN addresses, and per side the instruction id, what this run settled and, when
-- the rest stays pending, why and what remains). The relay expands a compact row at publish
-- time into the individual MT544–547 and MT548 messages, reading the instructions' stored
-- fields (reference, account, ISIN, dates, currency), and publishes each with the same
-- `Nats-Msg-Id` as before (`bsr:{run}:{instruction}:{544..548}`), so OUTBOUND holds each once
-- also when a relay dies midway and the row is published again. Everything a confirmation
-- says is committed in the run's transaction (the compact row beside the markers and the run
-- record) or was committed before it (the instruction), so a leader that dies after commit
-- loses nothing. `published_at` is set when every message of the row is acknowledged.
-- `ccass audit` decodes the compact rows to check every settled side has its confirmation.
ALTER TABLE outbox
    ADD COLUMN expansion text CHECK (expansion IN ('bsr_confirmations'));

-- Compact payloads are already dense (varints): store them out of line without compressing
-- them in the run's transaction.
ALTER TABLE outbox ALTER COLUMN payload SET STORAGE EXTERNAL;
