-- Quality of experience (issue 16): per-session summaries folded by appliances from CMCD and sent
-- with their heartbeats; one row per (session, appliance), replaced by each report.
CREATE TABLE qoe_sessions (
    sid TEXT NOT NULL,
    appliance_id TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    title TEXT,
    cid TEXT,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    startup_ms BIGINT,
    starvation_events BIGINT NOT NULL,
    media_ms BIGINT NOT NULL,
    avg_bitrate_kbps BIGINT,
    buffer_ms BIGINT,
    min_buffer_ms BIGINT,
    avg_throughput_kbps BIGINT,
    switches BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (sid, appliance_id)
);
CREATE INDEX qoe_sessions_cluster ON qoe_sessions (cluster_id, reported_at);
CREATE INDEX qoe_sessions_reported ON qoe_sessions (reported_at);
