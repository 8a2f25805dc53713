-- The control plane's schema. One migration set for SQLite and PostgreSQL: only TEXT, BIGINT and
-- DOUBLE PRECISION columns, text primary keys, no backend-specific syntax. Times are Unix seconds.

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    max_tier TEXT NOT NULL,
    max_streams BIGINT NOT NULL
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    status TEXT NOT NULL
);

CREATE TABLE device_classes (
    id TEXT PRIMARY KEY,
    key_systems TEXT NOT NULL,
    max_tier TEXT NOT NULL
);

CREATE TABLE geo_prefixes (
    prefix TEXT PRIMARY KEY,
    country TEXT NOT NULL
);

CREATE TABLE windows (
    title TEXT NOT NULL,
    country TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    max_tier TEXT NOT NULL,
    PRIMARY KEY (title, country)
);

CREATE TABLE titles (
    id TEXT PRIMARY KEY,
    catalog TEXT NOT NULL,
    dash TEXT NOT NULL,
    hls TEXT NOT NULL,
    imported_at BIGINT NOT NULL
);

CREATE TABLE content_keys (
    title TEXT NOT NULL,
    kid TEXT NOT NULL,
    scheme TEXT NOT NULL,
    tier TEXT,
    track_type TEXT NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (title, kid)
);

CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE clusters (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    fallbacks TEXT NOT NULL
);

CREATE TABLE appliances (
    id TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL,
    address TEXT NOT NULL,
    port BIGINT NOT NULL,
    prefixes TEXT NOT NULL,
    credential_sha256 TEXT NOT NULL,
    admin_state TEXT NOT NULL,
    configured_titles TEXT,
    status TEXT NOT NULL DEFAULT 'unknown',
    health TEXT,
    load DOUBLE PRECISION NOT NULL DEFAULT 0,
    egress_bps BIGINT NOT NULL DEFAULT 0,
    drives TEXT,
    titles TEXT,
    reported_prefixes TEXT,
    version TEXT,
    last_heartbeat BIGINT
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    title TEXT NOT NULL,
    device_class TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    country TEXT NOT NULL,
    tier TEXT NOT NULL,
    renditions TEXT NOT NULL,
    key_ids TEXT NOT NULL,
    steering TEXT NOT NULL,
    license_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT
);

CREATE INDEX sessions_account_expiry ON sessions (account_id, expires_at);
CREATE INDEX sessions_license ON sessions (license_sha256);
