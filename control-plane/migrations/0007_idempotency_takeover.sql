-- A replica that dies while answering a start under an Idempotency-Key leaves the key claimed
-- with no answer; until 0007 every retry of that start was refused (409) until the key expired.
-- `owner` names the request answering the key (a random token per claim), so a claim older than
-- a few seconds can be taken over by a retry, and only its current owner may take the lease or
-- store the answer. `sessions.idempotency_key` ties a lease to the key it was taken under, so
-- the takeover ends the lease the dead replica took before answering (its token never reached
-- anyone): one live lease per start, whatever happens to the replica answering it.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN idempotency_key TEXT;
CREATE INDEX sessions_idempotency_key ON sessions (idempotency_key);
