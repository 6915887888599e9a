use serde::{Deserialize, Serialize};

use crate::{codec::Event, Timestamp};

/// Outcome of the RFB security handshake (see `vncguard.AuthResult.avsc` for the meaning of each value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthResult {
    Ok,
    Failed,
    TooMany,
    NoneRequired,
    Abandoned,
    #[default]
    Unknown,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Failed => "failed",
            AuthResult::TooMany => "too_many",
            AuthResult::NoneRequired => "none_required",
            AuthResult::Abandoned => "abandoned",
            AuthResult::Unknown => "unknown",
        }
    }
}

/// One TCP connection that spoke RFB. Every field is documented in `vncguard.SessionSummary.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub agent_id: String,
    pub client_ip: String,
    pub client_port: i32,
    pub server_ip: String,
    pub server_port: i32,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    pub client_version: Option<String>,
    pub server_version: Option<String>,
    pub security_types_offered: Vec<i32>,
    pub security_type: Option<i32>,
    pub auth_result: AuthResult,
    pub failure_reason: Option<String>,
    pub vnc_auth_challenge: bool,
    pub shared_flag: Option<bool>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub pixel_format: Option<String>,
    pub desktop_name: Option<String>,
    pub encrypted: bool,
    pub partial: bool,
    pub desynced: bool,
    pub gap_bytes: i64,
    pub bytes_c2s: i64,
    pub bytes_s2c: i64,
    pub packets_c2s: i64,
    pub packets_s2c: i64,
    pub key_events: i64,
    pub pointer_events: i64,
    pub client_cut_text_count: i64,
    pub client_cut_text_bytes: i64,
    pub server_cut_text_count: i64,
    pub server_cut_text_bytes: i64,
    pub clipboard_sha256: Option<String>,
    pub framebuffer_updates: i64,
    pub framebuffer_update_requests: i64,
    pub file_transfer_messages: i64,
    pub bell_count: i64,
    pub encodings: Vec<i32>,
    pub parse_errors: i64,
    pub end_reason: Option<String>,
    /// Client SYN, server SYN-ACK and the client's acknowledgement of the server's sequence
    /// number were seen in order: evidence an off-path sender cannot forge. Absent (false) in
    /// version 1 records.
    #[serde(default)]
    pub handshake_verified: bool,
}

impl SessionSummary {
    /// A summary with no traffic counted yet, for a connection first seen at `start_time`.
    pub fn new(
        session_id: String,
        agent_id: String,
        client: std::net::SocketAddr,
        server: std::net::SocketAddr,
        start_time: Timestamp,
    ) -> Self {
        SessionSummary {
            session_id,
            agent_id,
            client_ip: client.ip().to_string(),
            client_port: i32::from(client.port()),
            server_ip: server.ip().to_string(),
            server_port: i32::from(server.port()),
            start_time,
            end_time: None,
            client_version: None,
            server_version: None,
            security_types_offered: Vec::new(),
            security_type: None,
            auth_result: AuthResult::Unknown,
            failure_reason: None,
            vnc_auth_challenge: false,
            shared_flag: None,
            width: None,
            height: None,
            pixel_format: None,
            desktop_name: None,
            encrypted: false,
            partial: false,
            desynced: false,
            gap_bytes: 0,
            bytes_c2s: 0,
            bytes_s2c: 0,
            packets_c2s: 0,
            packets_s2c: 0,
            key_events: 0,
            pointer_events: 0,
            client_cut_text_count: 0,
            client_cut_text_bytes: 0,
            server_cut_text_count: 0,
            server_cut_text_bytes: 0,
            clipboard_sha256: None,
            framebuffer_updates: 0,
            framebuffer_update_requests: 0,
            file_transfer_messages: 0,
            bell_count: 0,
            encodings: Vec::new(),
            parse_errors: 0,
            end_reason: None,
            handshake_verified: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventKind {
    Started,
    Auth,
    Stats,
    Ended,
}

impl SessionEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEventKind::Started => "started",
            SessionEventKind::Auth => "auth",
            SessionEventKind::Stats => "stats",
            SessionEventKind::Ended => "ended",
        }
    }
}

/// Raw session event from a capture agent (`vncguard.SessionEvent.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub event_id: String,
    pub kind: SessionEventKind,
    pub seq: i64,
    pub time: Timestamp,
    pub summary: SessionSummary,
}

impl SessionEvent {
    /// Builds the event with its deterministic id, so a replayed capture yields the same ids.
    pub fn new(kind: SessionEventKind, seq: i64, time: Timestamp, summary: SessionSummary) -> Self {
        SessionEvent {
            event_id: format!("{}:{}:{}", summary.session_id, kind.as_str(), seq),
            kind,
            seq,
            time,
            summary,
        }
    }
}

impl Event for SessionEvent {
    const SCHEMA_NAME: &'static str = "vncguard.SessionEvent";
}
