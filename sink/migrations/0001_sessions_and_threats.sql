-- The seed's two core tables with their columns and types, plus what the pipeline knows beyond them.

CREATE TABLE vnc_sessions (
    -- Seed columns.
    id                          VARCHAR PRIMARY KEY DEFAULT gen_random_uuid(),
    client_ip                   INET NOT NULL,
    server_ip                   INET NOT NULL,
    client_port                 INTEGER NOT NULL,
    server_port                 INTEGER NOT NULL,
    start_time                  TIMESTAMPTZ DEFAULT NOW(),
    end_time                    TIMESTAMPTZ,
    status                      VARCHAR(20) DEFAULT 'active'
        CHECK (status IN ('active', 'terminated', 'blocked', 'quarantined')),
    data_transferred            NUMERIC(12,2) DEFAULT 0,
    packets_sent                BIGINT DEFAULT 0,
    packets_received            BIGINT DEFAULT 0,
    screenshots_count           INTEGER DEFAULT 0,
    clipboard_operations        INTEGER DEFAULT 0,
    file_operations             INTEGER DEFAULT 0,
    risk_score                  NUMERIC(5,2) DEFAULT 0,
    anomaly_score               NUMERIC(5,2) DEFAULT 0,
    auth_method                 VARCHAR(50),
    user_agent                  TEXT,
    created_at                  TIMESTAMPTZ DEFAULT NOW(),
    updated_at                  TIMESTAMPTZ DEFAULT NOW(),

    -- The session summary of the capture agent (schemas/avro/session_summary.avsc).
    agent_id                    TEXT NOT NULL DEFAULT '',
    client_version              TEXT,
    server_version              TEXT,
    security_types_offered      INTEGER[] NOT NULL DEFAULT '{}',
    security_type               INTEGER,
    auth_result                 TEXT NOT NULL DEFAULT 'unknown',
    failure_reason              TEXT,
    vnc_auth_challenge          BOOLEAN NOT NULL DEFAULT FALSE,
    shared_flag                 BOOLEAN,
    width                       INTEGER,
    height                      INTEGER,
    pixel_format                TEXT,
    desktop_name                TEXT,
    encrypted                   BOOLEAN NOT NULL DEFAULT FALSE,
    partial                     BOOLEAN NOT NULL DEFAULT FALSE,
    desynced                    BOOLEAN NOT NULL DEFAULT FALSE,
    gap_bytes                   BIGINT NOT NULL DEFAULT 0,
    bytes_c2s                   BIGINT NOT NULL DEFAULT 0,
    bytes_s2c                   BIGINT NOT NULL DEFAULT 0,
    packets_c2s                 BIGINT NOT NULL DEFAULT 0,
    packets_s2c                 BIGINT NOT NULL DEFAULT 0,
    key_events                  BIGINT NOT NULL DEFAULT 0,
    pointer_events              BIGINT NOT NULL DEFAULT 0,
    client_cut_text_count       BIGINT NOT NULL DEFAULT 0,
    client_cut_text_bytes       BIGINT NOT NULL DEFAULT 0,
    server_cut_text_count       BIGINT NOT NULL DEFAULT 0,
    server_cut_text_bytes       BIGINT NOT NULL DEFAULT 0,
    clipboard_sha256            TEXT,
    framebuffer_updates         BIGINT NOT NULL DEFAULT 0,
    framebuffer_update_requests BIGINT NOT NULL DEFAULT 0,
    file_transfer_messages      BIGINT NOT NULL DEFAULT 0,
    bell_count                  BIGINT NOT NULL DEFAULT 0,
    encodings                   INTEGER[] NOT NULL DEFAULT '{}',
    parse_errors                BIGINT NOT NULL DEFAULT 0,
    end_reason                  TEXT,

    -- The newest raw event applied: (last_event_ended, last_event_seq) only ever grows, so a
    -- replayed or late event never overwrites newer state and an ended session stays ended.
    last_event_id               TEXT NOT NULL DEFAULT '',
    last_event_seq              BIGINT NOT NULL DEFAULT -1,
    last_event_ended            BOOLEAN NOT NULL DEFAULT FALSE,

    -- Scoring (schemas/avro/scored_session.avsc), guarded the same way by the scored event.
    risk_components             JSONB,
    risk_reasons                JSONB NOT NULL DEFAULT '[]',
    model_version               TEXT,
    scored_at                   TIMESTAMPTZ,
    scored_event_seq            BIGINT NOT NULL DEFAULT -1,
    scored_event_ended          BOOLEAN NOT NULL DEFAULT FALSE,
    features                    JSONB NOT NULL DEFAULT '{}',
    client_country              TEXT,
    client_city                 TEXT,
    client_latitude             DOUBLE PRECISION,
    client_longitude            DOUBLE PRECISION,
    client_asn                  BIGINT,
    client_as_org               TEXT,
    client_address_class        TEXT,
    server_country              TEXT,
    distance_km                 DOUBLE PRECISION,
    reputation                  TEXT
);

-- Seed indexes.
CREATE INDEX idx_vnc_sessions_status ON vnc_sessions (status);
CREATE INDEX idx_vnc_sessions_risk_score ON vnc_sessions (risk_score DESC);
CREATE INDEX idx_vnc_sessions_start_time ON vnc_sessions (start_time DESC);
-- The API's lists: newest first within a status, a client address, an agent.
CREATE INDEX idx_vnc_sessions_status_start_time ON vnc_sessions (status, start_time DESC);
CREATE INDEX idx_vnc_sessions_client_ip_start_time ON vnc_sessions (client_ip, start_time DESC);
CREATE INDEX idx_vnc_sessions_agent_start_time ON vnc_sessions (agent_id, start_time DESC);

-- No foreign key to vnc_sessions: a threat and its session travel on different topics and may
-- arrive in either order, and the two tables are kept for different ages.
CREATE TABLE threat_logs (
    -- Seed columns.
    id              VARCHAR PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id      VARCHAR,
    threat_type     VARCHAR(100) NOT NULL,
    severity        VARCHAR(20) NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    description     TEXT NOT NULL,
    source_ip       INET NOT NULL,
    target_ip       INET,
    action_taken    VARCHAR(100),
    ml_confidence   NUMERIC(5,2),
    timestamp       TIMESTAMPTZ DEFAULT NOW(),
    metadata        JSONB DEFAULT '{}',

    -- Detection (schemas/avro/threat.avsc): metadata holds the rule's evidence.
    target_port     INTEGER,
    risk_score      NUMERIC(5,2),
    model_version   TEXT,
    -- Triage, written by the API only; the sink never touches these after the first insert.
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'closed')),
    close_reason    TEXT,
    assignee        TEXT,
    notes           JSONB NOT NULL DEFAULT '[]',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Seed indexes.
CREATE INDEX idx_threat_logs_severity ON threat_logs (severity, timestamp DESC);
CREATE INDEX idx_threat_logs_source_ip ON threat_logs (source_ip);
-- The API's lists and retention.
CREATE INDEX idx_threat_logs_timestamp ON threat_logs (timestamp DESC);
CREATE INDEX idx_threat_logs_status ON threat_logs (status, timestamp DESC);
CREATE INDEX idx_threat_logs_session_id ON threat_logs (session_id, timestamp DESC);
