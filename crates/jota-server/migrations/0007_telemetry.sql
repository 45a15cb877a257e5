-- Device telemetry (seed 001 §20.1), inventory (the §9.3 version report) and boots (for
-- boot-loop alerts, §20.2). Reports are kept for the retention period (--telemetry-days).
ALTER TABLE devices ADD COLUMN inventory TEXT NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN inventory_at BIGINT;
ALTER TABLE devices ADD COLUMN telemetry_at BIGINT;

CREATE TABLE telemetry (
    device_id TEXT NOT NULL REFERENCES devices (id),
    at BIGINT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX telemetry_device ON telemetry (device_id, at);
CREATE INDEX telemetry_at ON telemetry (at);

-- When a device booted (server time of the report minus its uptime), once per boot.
CREATE TABLE boots (
    device_id TEXT NOT NULL REFERENCES devices (id),
    at BIGINT NOT NULL
);
CREATE INDEX boots_device ON boots (device_id, at);
CREATE INDEX boots_at ON boots (at);
