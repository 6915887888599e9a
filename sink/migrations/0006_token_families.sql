-- Refresh token families and per-user token generations.
--
-- A login starts a family; every refresh rotates within it. A refresh token used a second time
-- means it was copied: the whole family is revoked, with the access tokens it issued. A family
-- ends at its absolute lifetime however often it is refreshed.
ALTER TABLE api_refresh_tokens
    ADD COLUMN family_id          TEXT,
    ADD COLUMN family_started_at  TIMESTAMPTZ,
    -- The access token issued with this refresh token, revoked with its family.
    ADD COLUMN access_jti         TEXT,
    ADD COLUMN access_expires_at  TIMESTAMPTZ,
    -- rotated | logout | family_reused | logout_everywhere
    ADD COLUMN revoked_reason     TEXT;
UPDATE api_refresh_tokens SET family_id = token_hash, family_started_at = issued_at;
ALTER TABLE api_refresh_tokens
    ALTER COLUMN family_id SET NOT NULL,
    ALTER COLUMN family_started_at SET NOT NULL;
CREATE INDEX idx_api_refresh_tokens_family ON api_refresh_tokens (family_id);

-- Tokens carry the generation of their user at issue; raising it refuses every older token of
-- the user at once: logout everywhere, disabling, a role change, a password change.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
