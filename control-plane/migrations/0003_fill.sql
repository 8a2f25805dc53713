-- Fill (issue 8): what appliances report about their holdings and fill progress, the content
-- region of each cluster, the imported popularity forecast and the last placement the planner
-- published per cluster (so the next plan can weigh swap cost against it).
ALTER TABLE appliances ADD COLUMN held TEXT;
ALTER TABLE appliances ADD COLUMN fill_status TEXT;
ALTER TABLE clusters ADD COLUMN countries TEXT NOT NULL DEFAULT '[]';

CREATE TABLE forecasts (
    country TEXT NOT NULL,
    title TEXT NOT NULL,
    position BIGINT NOT NULL,
    views DOUBLE PRECISION NOT NULL,
    imported_at BIGINT NOT NULL,
    PRIMARY KEY (country, title)
);

CREATE TABLE fill_placements (
    cluster_id TEXT NOT NULL,
    appliance_id TEXT NOT NULL,
    title TEXT NOT NULL,
    placed_at BIGINT NOT NULL,
    PRIMARY KEY (appliance_id, title)
);

CREATE INDEX fill_placements_cluster ON fill_placements (cluster_id);
