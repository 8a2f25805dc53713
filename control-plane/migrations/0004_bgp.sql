-- BGP (issue 14): the routes each appliance hears from its ISP's routers, kept as the appliance
-- reports them (deltas applied in order, a full table when the digests disagree), and the last
-- reported session state, digest and steerability per appliance.
CREATE TABLE bgp_routes (
    appliance_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    as_path_len BIGINT NOT NULL,
    med BIGINT NOT NULL,
    communities TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (appliance_id, prefix)
);

CREATE TABLE bgp_status (
    appliance_id TEXT PRIMARY KEY,
    sessions TEXT NOT NULL,
    digest TEXT NOT NULL,
    steerable BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
