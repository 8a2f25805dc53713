-- Cumulative counters from appliance heartbeats, for the fleet view.
ALTER TABLE appliances ADD COLUMN requests_served BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appliances ADD COLUMN bytes_served BIGINT NOT NULL DEFAULT 0;
