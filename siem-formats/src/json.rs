//! vncguard's own JSON lines: one object per session and per threat, tagged by `type`, with
//! the fields the schemas document (`session_summary.avsc` and risk; `threat.avsc`).

use schemas::{ScoredSession, Threat};
use serde_json::{Map, Value};

use crate::{session_fields, threat_fields};

/// `{"type": "session", ...}`.
pub fn session(scored: &ScoredSession) -> Value {
    tagged("session", session_fields(scored))
}

/// `{"type": "threat", ...}`.
pub fn threat(threat: &Threat) -> Value {
    tagged("threat", threat_fields(threat))
}

fn tagged(kind: &str, fields: Map<String, Value>) -> Value {
    let mut record = Map::new();
    record.insert("type".into(), kind.into());
    record.extend(fields);
    Value::Object(record)
}
