-- What the fill planner's popularity reads from a session, stored when the session starts so
-- the database sums it (`Repository::usage_totals`) instead of the control plane decoding
-- every session of the popularity window (a day of sessions) on each plan: the session's bit
-- rate (its best video plus best audio rendition, `popularity::session_bitrate`), the title's
-- duration in seconds (no session streams more than the whole title), the cluster its first
-- choice steered it to, and whether that choice was a content miss (1) or not (0). NULL in the
-- rows of sessions started before this migration: `Repository::legacy_session_usage` reads
-- those the old way until they leave the window.
ALTER TABLE sessions ADD COLUMN bitrate_bps BIGINT;
ALTER TABLE sessions ADD COLUMN title_secs BIGINT;
ALTER TABLE sessions ADD COLUMN served_cluster TEXT;
ALTER TABLE sessions ADD COLUMN content_miss BIGINT;
-- The window's range condition, `COALESCE(ended_at, expires_at) > $since`.
CREATE INDEX sessions_last_at ON sessions ((COALESCE(ended_at, expires_at)));
