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

/// A response decision (`vncguard.Decision.avsc`, version 2; version 1 had no `key_id` and
/// `signature`, which a reader of version 2 fills with `None`: such a record decodes, and agents
/// refuse it as unsigned).
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
    /// The id of the key that signed it (`trust::signing`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Ed25519 signature (standard base64) over every other field.
    #[serde(default)]
    pub signature: Option<String>,
}

impl Event for Decision {
    const SCHEMA_NAME: &'static str = "vncguard.Decision";
}
