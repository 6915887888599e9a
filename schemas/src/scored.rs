use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{codec::Event, EnrichedSession, Timestamp};

/// One reason behind a risk component (`vncguard.RiskReason.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskReason {
    pub rule: String,
    pub component: String,
    pub score: f64,
    pub reason: String,
}

/// How a risk score was reached (`vncguard.RiskComponents.avsc`): the five components, their weighted
/// composite and the severity floor that placed it. Records of `ScoredSession` version 1 lack
/// the last four fields and read with their defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RiskComponents {
    pub anomaly: f64,
    pub threat: f64,
    pub behavioral: f64,
    pub geographic: f64,
    pub temporal: f64,
    pub weights: Vec<f64>,
    #[serde(default)]
    pub composite: f64,
    #[serde(default)]
    pub floor: Option<String>,
    #[serde(default)]
    pub floor_rule: Option<String>,
    #[serde(default)]
    pub anomaly_status: Option<String>,
}

/// An enriched session with its risk score (`vncguard.ScoredSession.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredSession {
    pub enriched: EnrichedSession,
    pub risk_score: f64,
    pub anomaly_score: f64,
    pub components: RiskComponents,
    pub reasons: Vec<RiskReason>,
    pub model_version: String,
    pub scored_at: Timestamp,
}

impl Event for ScoredSession {
    const SCHEMA_NAME: &'static str = "vncguard.ScoredSession";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A detected threat (`vncguard.Threat.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threat {
    pub threat_id: String,
    pub session_id: String,
    pub threat_type: String,
    pub severity: Severity,
    pub description: String,
    pub source_ip: String,
    pub target_ip: Option<String>,
    pub target_port: Option<i32>,
    pub risk_score: f64,
    pub ml_confidence: Option<f64>,
    pub evidence: BTreeMap<String, String>,
    pub model_version: String,
    pub detected_at: Timestamp,
    /// Handshake-verified sessions alone are enough for the rule; only such a threat may block
    /// automatically. Absent (false) in version 1 records.
    #[serde(default)]
    pub verified: bool,
}

impl Event for Threat {
    const SCHEMA_NAME: &'static str = "vncguard.Threat";
}
