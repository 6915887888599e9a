use serde::{Deserialize, Serialize};

use crate::{codec::Event, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    Block,
    Unblock,
    Quarantine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOrigin {
    Automatic,
    Analyst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionScope {
    Ip,
    Cidr,
    Session,
}

/// A response decision (`vncguard.Decision.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub decision_id: String,
    pub action: DecisionAction,
    pub origin: DecisionOrigin,
    pub scope: DecisionScope,
    pub value: String,
    pub duration_secs: i64,
    pub created_at: Timestamp,
    pub until: Timestamp,
    pub reason: String,
    pub threat_id: Option<String>,
    pub target_decision_id: Option<String>,
    pub created_by: Option<String>,
    pub dry_run: bool,
}

impl Event for Decision {
    const SCHEMA_NAME: &'static str = "vncguard.Decision";
}
