-- The appliance's own send rate per session (issue 16): bytes of the session's responses of at
-- least 64 KiB and the microseconds it took to send them (`SessionQoe::timed_bytes`, `timed_us`);
-- NULL from appliances that do not report them.
ALTER TABLE qoe_sessions ADD COLUMN timed_bytes BIGINT;
ALTER TABLE qoe_sessions ADD COLUMN timed_us BIGINT;
