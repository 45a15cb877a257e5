-- Dashboard sessions and one-time sign-in links (sha256 of the secret only), in the
-- database so that any replica serves them.
CREATE TABLE dashboard_sessions (
    token_sha256 TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    next TEXT NOT NULL DEFAULT '/dashboard',
    expires BIGINT NOT NULL
);
