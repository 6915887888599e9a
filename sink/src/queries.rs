//! The API's main queries, kept here so the API runs exactly the statements whose plans the
//! sink's indexes serve (`tests/query_plans.rs` checks each uses an index on a large table).

/// Columns of a session in a list.
macro_rules! session_list_columns {
    () => {
        "SELECT id, client_ip, server_ip, client_port, server_port, start_time, end_time, \
         status, data_transferred, risk_score, anomaly_score, auth_method, auth_result, agent_id, \
         client_country FROM vnc_sessions"
    };
}

/// Newest sessions first. `$1` limit, `$2` offset.
pub const SESSIONS_NEWEST: &str = concat!(
    session_list_columns!(),
    " ORDER BY start_time DESC LIMIT $1 OFFSET $2"
);

/// Newest sessions with a status. `$1` status, `$2` limit, `$3` offset.
pub const SESSIONS_BY_STATUS: &str = concat!(
    session_list_columns!(),
    " WHERE status = $1 ORDER BY start_time DESC LIMIT $2 OFFSET $3"
);

/// Newest sessions of a client address. `$1` client_ip (inet), `$2` limit.
pub const SESSIONS_BY_CLIENT_IP: &str = concat!(
    session_list_columns!(),
    " WHERE client_ip = $1 ORDER BY start_time DESC LIMIT $2"
);

/// Riskiest sessions at or above a score. `$1` minimum risk_score (float8), `$2` limit.
pub const SESSIONS_BY_MIN_RISK: &str = concat!(
    session_list_columns!(),
    " WHERE risk_score >= $1::float8::numeric ORDER BY risk_score DESC LIMIT $2"
);

/// One session, every column. `$1` id.
pub const SESSION_BY_ID: &str = "SELECT * FROM vnc_sessions WHERE id = $1";

/// Threats of one session, newest first. `$1` session id.
pub const THREATS_OF_SESSION: &str =
    "SELECT * FROM threat_logs WHERE session_id = $1 ORDER BY timestamp DESC";

/// Newest threats first. `$1` limit, `$2` offset.
pub const THREATS_NEWEST: &str =
    "SELECT * FROM threat_logs ORDER BY timestamp DESC LIMIT $1 OFFSET $2";

/// Newest threats of a severity. `$1` severity, `$2` limit, `$3` offset.
pub const THREATS_BY_SEVERITY: &str =
    "SELECT * FROM threat_logs WHERE severity = $1 ORDER BY timestamp DESC LIMIT $2 OFFSET $3";

/// Newest threats in a triage status. `$1` status, `$2` limit, `$3` offset.
pub const THREATS_BY_STATUS: &str =
    "SELECT * FROM threat_logs WHERE status = $1 ORDER BY timestamp DESC LIMIT $2 OFFSET $3";

/// Threats from a source address. `$1` source_ip (inet), `$2` limit.
pub const THREATS_BY_SOURCE_IP: &str =
    "SELECT * FROM threat_logs WHERE source_ip = $1 ORDER BY timestamp DESC LIMIT $2";
