//! vncguard's records as the documents SIEMs already ingest. Pure functions from the
//! `schemas` records to JSON values, one module per format:
//! - [`eve`]: Suricata EVE (`event_type: "rfb"` per session, `event_type: "alert"` per threat);
//! - [`ecs`]: Elastic Common Schema documents;
//! - [`json`]: vncguard's own JSON lines (`{"type": "session", ...}`, `{"type": "threat", ...}`).
//!
//! [`catalogue`] names each threat rule as a signature (id, message, category) and an ATT&CK
//! technique. No format carries what vncguard never sends anywhere: keystrokes, clipboard
//! contents (nor the clipboard's hash: a short text is found again from its SHA-256 by trying
//! candidates), passwords, the VNC challenge or response.

pub mod catalogue;
pub mod ecs;
pub mod eve;
pub mod json;

use schemas::{ScoredSession, SessionSummary, Threat};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The format of a record stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    /// vncguard's own JSON lines.
    Json,
    /// Suricata EVE JSON (`rfb` and `alert` records).
    Eve,
    /// Elastic Common Schema documents.
    Ecs,
}

impl RecordFormat {
    /// The document of a session, from its latest scored record.
    pub fn session(self, scored: &ScoredSession) -> Value {
        match self {
            RecordFormat::Json => json::session(scored),
            RecordFormat::Eve => eve::rfb(scored),
            RecordFormat::Ecs => ecs::session(scored),
        }
    }

    /// The document of a threat; `session` is its session's summary when the caller has it.
    pub fn threat(self, threat: &Threat, session: Option<&SessionSummary>) -> Value {
        match self {
            RecordFormat::Json => json::threat(threat),
            RecordFormat::Eve => eve::alert(threat, session),
            RecordFormat::Ecs => ecs::threat(threat, session),
        }
    }
}

/// A session's flow id, as EVE's integer `flow_id`: the first bytes of SHA-256 of the session
/// id, kept to 53 bits so every JSON reader (JavaScript's doubles too) holds it exactly. The
/// same session gives the same id in its rfb record and in every alert on it.
pub fn flow_id(session_id: &str) -> u64 {
    let digest = Sha256::digest(session_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes) & ((1 << 53) - 1)
}

/// vncguard's fields of a session: the summary as `session_summary.avsc` documents it (less the
/// clipboard hash) and its risk.
pub fn session_fields(scored: &ScoredSession) -> Map<String, Value> {
    let summary = &scored.enriched.event.summary;
    let mut fields = match serde_json::to_value(summary) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    fields.remove("clipboard_sha256");
    fields.insert("risk_score".into(), scored.risk_score.into());
    fields.insert("anomaly_score".into(), scored.anomaly_score.into());
    insert_value(&mut fields, "risk_components", &scored.components);
    insert_value(&mut fields, "risk_reasons", &scored.reasons);
    fields.insert("model_version".into(), scored.model_version.clone().into());
    insert_value(&mut fields, "client_geo", &scored.enriched.client_geo);
    insert_some(
        &mut fields,
        "reputation",
        scored.enriched.reputation.clone(),
    );
    fields
}

/// vncguard's fields of a threat, as `threat.avsc` documents them.
pub fn threat_fields(threat: &Threat) -> Map<String, Value> {
    match serde_json::to_value(threat) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

/// Inserts `value` under `key` when there is one: EVE and ECS leave unknown fields out rather
/// than writing nulls.
fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        map.insert(key.into(), value.into());
    }
}

fn insert_value(map: &mut Map<String, Value>, key: &str, value: &impl serde::Serialize) {
    if let Ok(value) = serde_json::to_value(value) {
        map.insert(key.into(), value);
    }
}
