-- QoE steering moves (issue 16): when a steering response first moved a session off an
-- appliance for its QoE, Unix seconds; NULL while it has not (or after it was let back in front).
-- Set by a conditional UPDATE, so a move is counted once however many steering manifests repeat
-- it and however many replicas serve them.
ALTER TABLE qoe_sessions ADD COLUMN moved_at BIGINT;
