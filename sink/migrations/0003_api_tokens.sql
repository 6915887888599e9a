-- The API's token state: refresh tokens (stored as SHA-256 hashes, rotated on every use) and the
-- revocation list of access tokens (by jti) that logged out before their expiry.

CREATE TABLE api_refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at   TIMESTAMPTZ NOT NULL,
    -- Set when the token is used (rotated) or its session logs out; a revoked token is refused.
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX idx_api_refresh_tokens_user ON api_refresh_tokens (user_id);

CREATE TABLE api_revoked_tokens (
    jti          TEXT PRIMARY KEY,
    -- The token's own expiry: past it the row can go, the token is refused anyway.
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_api_revoked_tokens_revoked_at ON api_revoked_tokens (revoked_at);
