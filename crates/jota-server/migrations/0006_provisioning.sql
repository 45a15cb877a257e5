-- Provisioning (seed 003 §5.1) and device mTLS: a device proves its key with a CSR and
-- gets a certificate from the fleet CA; the server keeps the sha256 of the key (to
-- recognise the device when it renews) and of the certificate (to recognise it on a TLS
-- connection; a new certificate replaces the old one, which stops working).
ALTER TABLE devices ADD COLUMN key_sha256 TEXT;
ALTER TABLE devices ADD COLUMN cert_sha256 TEXT;
CREATE UNIQUE INDEX devices_cert ON devices (cert_sha256);

-- Pre-authorised provisioning tokens (baked into a factory image): each registers up to
-- `uses_left` new devices, with its hardware and tags, until `expires`.
CREATE TABLE provision_tokens (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    hardware TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    uses_left BIGINT NOT NULL,
    expires BIGINT,
    created BIGINT NOT NULL
);

-- Devices that asked without a token (or for an id taken by another key): an operator
-- accepts or rejects them.
CREATE TABLE provision_requests (
    id TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    mac TEXT NOT NULL,
    hardware TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
