-- V0002 auth: pending grants of delegated administration (maker–checker).
--
-- A participant listed in `auth.grant_approval_participants` has its users' group grants
-- wait here until a second administrator, entitled to manage that user and different from
-- the requester, approves (the directory is written then) or rejects them. Kept in the host
-- database rather than LDAP because Debian's standard schemas have no object class for a
-- pending change, and a row gives a transactional "decide once" (status moves from pending
-- exactly once) and a history next to the audit trail. Revocations are immediate and never
-- pend: taking a right away must not wait.

CREATE TABLE auth_grant_requests (
    grant_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    participant_id text NOT NULL CHECK (participant_id ~ '^[A-Z][A-Z0-9]{5}$'),
    uid text NOT NULL CHECK (uid <> ''),
    user_group text NOT NULL CHECK (user_group ~ '^[a-z0-9-]{1,64}$'),
    -- The requesting administrator, `B01234.admin1`.
    requested_by text NOT NULL CHECK (requested_by <> ''),
    requested_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by text,
    decided_at timestamptz,
    CHECK ((status = 'pending') = (decided_by IS NULL)),
    CHECK ((decided_by IS NULL) = (decided_at IS NULL)),
    -- Maker–checker: nobody decides their own request.
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
-- One pending request per (user, group): a repeated grant returns the pending one.
CREATE UNIQUE INDEX auth_grant_requests_one_pending
    ON auth_grant_requests (participant_id, uid, user_group) WHERE status = 'pending';

-- Reading the audit trail by actor (the auth tests and the terminal's "my activity").
CREATE INDEX audit_trail_actor_at ON audit_trail (actor, at);
