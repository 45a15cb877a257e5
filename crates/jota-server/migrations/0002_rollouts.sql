-- Staged rollouts (seed 001 §15.2). Portable SQL, as 0001.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    artifact_id TEXT NOT NULL REFERENCES artifacts (id),
    filter TEXT NOT NULL,
    phases TEXT NOT NULL,
    policy TEXT NOT NULL,
    state TEXT NOT NULL,
    phase BIGINT NOT NULL,
    phase_started BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    -- Failures and rollbacks an operator accepted by resuming after a halt: the gates
    -- count only those that come after.
    accepted_failures BIGINT NOT NULL DEFAULT 0,
    accepted_rollbacks BIGINT NOT NULL DEFAULT 0,
    -- Bumped by every evaluation and transition: replicas compare-and-swap on it, so a
    -- phase moves once and no device is assigned twice.
    revision BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);

-- Which phase each targeted device belongs to, chosen once at creation; ord is its place
-- in the rollout (canary-tier devices first, then a stable per-rollout shuffle).
CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    device_id TEXT NOT NULL REFERENCES devices (id),
    phase BIGINT NOT NULL,
    ord BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);

CREATE INDEX rollout_targets_order ON rollout_targets (rollout_id, ord);

ALTER TABLE deployments ADD COLUMN rollout_id TEXT REFERENCES rollouts (id);

-- A rollout deploys to a device at most once, whatever the number of replicas evaluating.
CREATE UNIQUE INDEX deployments_rollout_device ON deployments (rollout_id, device_id)
    WHERE rollout_id IS NOT NULL;
