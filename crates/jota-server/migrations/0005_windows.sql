-- Maintenance windows (tag window=HH:MM-HH:MM, UTC) as minutes since midnight, so that
-- rollout assignment can honour them in SQL. NULL: always available.
ALTER TABLE devices ADD COLUMN window_start BIGINT;
ALTER TABLE devices ADD COLUMN window_end BIGINT;
