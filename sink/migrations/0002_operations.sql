-- What the API and the response loop need besides sessions and threats.

CREATE TABLE agents (
    agent_id          TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    version           TEXT NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    last_heartbeat    TIMESTAMPTZ NOT NULL,
    packets           BIGINT NOT NULL DEFAULT 0,
    bytes             BIGINT NOT NULL DEFAULT 0,
    pcap_drops        BIGINT NOT NULL DEFAULT 0,
    flows_active      BIGINT NOT NULL DEFAULT 0,
    flows_evicted     BIGINT NOT NULL DEFAULT 0,
    sessions_active   BIGINT NOT NULL DEFAULT 0,
    sessions_total    BIGINT NOT NULL DEFAULT 0,
    parse_errors      BIGINT NOT NULL DEFAULT 0,
    enforcing         BOOLEAN NOT NULL DEFAULT FALSE,
    capture_sources   TEXT[] NOT NULL DEFAULT '{}',
    first_seen        TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Response decisions (firewall rules with an expiry). `value` is an address or CIDR for the ip
-- and cidr scopes and a session id for the session scope, so it is text; `value_cidr` holds the
-- network form when there is one, for containment queries (`value_cidr >>= $ip`).
CREATE TABLE decisions (
    decision_id         TEXT PRIMARY KEY,
    action              TEXT NOT NULL CHECK (action IN ('block', 'unblock', 'quarantine')),
    origin              TEXT NOT NULL CHECK (origin IN ('automatic', 'analyst')),
    scope               TEXT NOT NULL CHECK (scope IN ('ip', 'cidr', 'session')),
    value               TEXT NOT NULL,
    value_cidr          CIDR,
    duration_secs       BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    until               TIMESTAMPTZ NOT NULL,
    reason              TEXT NOT NULL,
    threat_id           TEXT,
    target_decision_id  TEXT,
    created_by          TEXT,
    dry_run             BOOLEAN NOT NULL DEFAULT FALSE,
    -- Set when an unblock decision naming this one arrives.
    revoked_at          TIMESTAMPTZ,
    revoked_by          TEXT
);
CREATE INDEX idx_decisions_active ON decisions (until DESC) WHERE revoked_at IS NULL;
CREATE INDEX idx_decisions_value_cidr ON decisions USING gist (value_cidr inet_ops);
CREATE INDEX idx_decisions_threat_id ON decisions (threat_id);

CREATE TABLE models (
    name                   TEXT NOT NULL,
    version                TEXT NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    feature_names          TEXT[] NOT NULL,
    training_rows          BIGINT NOT NULL,
    training_window_start  TIMESTAMPTZ,
    training_window_end    TIMESTAMPTZ,
    metrics                JSONB NOT NULL DEFAULT '{}',
    model_json             TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX idx_models_newest ON models (name, created_at DESC);

CREATE TABLE users (
    id             BIGSERIAL PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'analyst', 'admin')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    disabled       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE api_audit_log (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    username      TEXT,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    status        INTEGER NOT NULL,
    client_ip     INET,
    body_summary  TEXT
);
CREATE INDEX idx_api_audit_log_at ON api_audit_log (at DESC);

CREATE TABLE threat_triage_history (
    id         BIGSERIAL PRIMARY KEY,
    threat_id  TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    username   TEXT NOT NULL,
    change     JSONB NOT NULL
);
CREATE INDEX idx_threat_triage_history_threat ON threat_triage_history (threat_id, at);
