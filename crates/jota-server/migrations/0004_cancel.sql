-- An operator asked to cancel a deployment its device had already started: the device is
-- told (jota poll `cancel`, DDI cancelAction) and the deployment ends when it confirms.
ALTER TABLE deployments ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
