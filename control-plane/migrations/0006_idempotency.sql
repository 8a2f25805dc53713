-- Idempotency keys of POST /v1/playback/sessions (issue 17): a retried start with the same
-- `Idempotency-Key` and the same body gets the stored answer again instead of a second lease.
-- `response` is NULL while the first request is being answered, then the answer sealed with the
-- master key (it holds grants and the licence token). Rows expire at `expires_at`.
CREATE TABLE idempotency_keys (
    idem_key TEXT PRIMARY KEY,
    request_sha256 TEXT NOT NULL,
    response TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
