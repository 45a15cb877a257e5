-- Portable SQL: the same migration runs on SQLite and PostgreSQL.
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    hardware TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    version TEXT,
    created BIGINT NOT NULL,
    last_seen BIGINT
);

CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    chunked_bytes BIGINT NOT NULL,
    created BIGINT NOT NULL
);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    state TEXT NOT NULL,
    progress BIGINT NOT NULL DEFAULT 0,
    downloaded_bytes BIGINT NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    active BIGINT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);

CREATE INDEX deployments_device ON deployments (device_id, active);
-- At most one active deployment per device, whatever the number of server replicas.
CREATE UNIQUE INDEX deployments_one_active ON deployments (device_id) WHERE active = 1;

CREATE TABLE events (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    progress BIGINT NOT NULL,
    message TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE UNIQUE INDEX events_order ON events (deployment_id, seq);
