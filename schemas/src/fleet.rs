use serde::{Deserialize, Serialize};

use crate::{codec::Event, Timestamp};

/// Capture agent heartbeat (`vncguard.AgentHeartbeat.avsc`, version 2; version 1 lacked
/// `capture_sources`, which a reader of version 2 fills with its default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    pub agent_id: String,
    pub hostname: String,
    pub version: String,
    pub time: Timestamp,
    pub started_at: Timestamp,
    pub packets: i64,
    pub bytes: i64,
    pub pcap_drops: i64,
    pub flows_active: i64,
    pub flows_evicted: i64,
    pub sessions_active: i64,
    pub sessions_total: i64,
    pub parse_errors: i64,
    pub enforcing: bool,
    #[serde(default)]
    pub capture_sources: Vec<String>,
}

impl Event for AgentHeartbeat {
    const SCHEMA_NAME: &'static str = "vncguard.AgentHeartbeat";
}
