//! Every version of every schema, composed from the `.avsc` files.
//!
//! Each `.avsc` file defines one named type and refers to the others by full name, the way Avro
//! IDL tooling keeps them; [`compose`] inlines the first use of each referenced type so every
//! top-level schema is one self-contained document, as single-object readers expect.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde_avro_fast::Schema;
use serde_json::Value;

/// Named types that top-level schemas refer to, by full name.
const NAMED_TYPES: &[(&str, &str)] = &[
    (
        "vncguard.AuthResult",
        include_str!("../avro/vncguard.AuthResult.avsc"),
    ),
    (
        "vncguard.SessionSummary",
        include_str!("../avro/vncguard.SessionSummary.avsc"),
    ),
    (
        "vncguard.SessionEvent",
        include_str!("../avro/vncguard.SessionEvent.avsc"),
    ),
    (
        "vncguard.GeoInfo",
        include_str!("../avro/vncguard.GeoInfo.avsc"),
    ),
    (
        "vncguard.EnrichedSession",
        include_str!("../avro/vncguard.EnrichedSession.avsc"),
    ),
    (
        "vncguard.RiskReason",
        include_str!("../avro/vncguard.RiskReason.avsc"),
    ),
    (
        "vncguard.RiskComponents",
        include_str!("../avro/vncguard.RiskComponents.avsc"),
    ),
    (
        "vncguard.ScoredSession",
        include_str!("../avro/vncguard.ScoredSession.avsc"),
    ),
    (
        "vncguard.Threat",
        include_str!("../avro/vncguard.Threat.avsc"),
    ),
    (
        "vncguard.Decision",
        include_str!("../avro/vncguard.Decision.avsc"),
    ),
    (
        "vncguard.AgentHeartbeat",
        include_str!("../avro/vncguard.AgentHeartbeat.avsc"),
    ),
    (
        "vncguard.ModelAnnouncement",
        include_str!("../avro/vncguard.ModelAnnouncement.avsc"),
    ),
];

/// Versions of top-level record schemas, oldest first; the last one of a name is what writers use.
const VERSIONS: &[(&str, u32, &str)] = &[
    (
        "vncguard.SessionEvent",
        1,
        include_str!("../avro/history/vncguard.SessionEvent.v1.avsc"),
    ),
    (
        "vncguard.SessionEvent",
        2,
        include_str!("../avro/vncguard.SessionEvent.avsc"),
    ),
    (
        "vncguard.EnrichedSession",
        1,
        include_str!("../avro/history/vncguard.EnrichedSession.v1.avsc"),
    ),
    (
        "vncguard.EnrichedSession",
        2,
        include_str!("../avro/vncguard.EnrichedSession.avsc"),
    ),
    (
        "vncguard.ScoredSession",
        1,
        include_str!("../avro/history/vncguard.ScoredSession.v1.avsc"),
    ),
    (
        "vncguard.ScoredSession",
        2,
        include_str!("../avro/vncguard.ScoredSession.avsc"),
    ),
    (
        "vncguard.Threat",
        1,
        include_str!("../avro/history/vncguard.Threat.v1.avsc"),
    ),
    (
        "vncguard.Threat",
        2,
        include_str!("../avro/vncguard.Threat.avsc"),
    ),
    (
        "vncguard.Decision",
        1,
        include_str!("../avro/history/vncguard.Decision.v1.avsc"),
    ),
    (
        "vncguard.Decision",
        2,
        include_str!("../avro/vncguard.Decision.avsc"),
    ),
    (
        "vncguard.AgentHeartbeat",
        1,
        include_str!("../avro/history/vncguard.AgentHeartbeat.v1.avsc"),
    ),
    (
        "vncguard.AgentHeartbeat",
        2,
        include_str!("../avro/vncguard.AgentHeartbeat.avsc"),
    ),
    (
        "vncguard.ModelAnnouncement",
        1,
        include_str!("../avro/vncguard.ModelAnnouncement.avsc"),
    ),
];

/// One version of one top-level schema.
pub struct SchemaVersion {
    pub name: &'static str,
    pub version: u32,
    /// The composed, self-contained schema document.
    pub json: String,
    pub schema: Schema,
}

impl SchemaVersion {
    /// The CRC-64-AVRO (Rabin) fingerprint of the schema's canonical form, as it appears in
    /// single-object headers.
    pub fn fingerprint(&self) -> [u8; 8] {
        *self.schema.rabin_fingerprint()
    }
}

pub struct Registry {
    versions: Vec<SchemaVersion>,
    by_name: HashMap<&'static str, Vec<usize>>,
}

impl Registry {
    /// All versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &SchemaVersion> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.versions[i])
    }

    /// The version writers use for `name`.
    pub fn current(&self, name: &str) -> Option<&SchemaVersion> {
        self.versions(name).last()
    }

    pub fn all(&self) -> &[SchemaVersion] {
        &self.versions
    }
}

/// The registry of the schemas compiled into this binary.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
        let mut versions = Vec::new();
        let mut by_name: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for &(name, version, text) in VERSIONS {
            let json = compose(text).unwrap_or_else(|e| panic!("schema {name} v{version}: {e}"));
            let schema: Schema = json
                .parse()
                .unwrap_or_else(|e| panic!("schema {name} v{version} does not parse: {e}"));
            by_name.entry(name).or_default().push(versions.len());
            versions.push(SchemaVersion {
                name,
                version,
                json,
                schema,
            });
        }
        Registry { versions, by_name }
    });
    &REGISTRY
}

/// Inlines the named types a schema document refers to, first use only (later uses stay
/// references, as Avro requires).
pub fn compose(text: &str) -> Result<String, String> {
    let mut root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut defined = HashSet::new();
    inline_references(&mut root, &mut defined)?;
    Ok(root.to_string())
}

fn inline_references(value: &mut Value, defined: &mut HashSet<String>) -> Result<(), String> {
    match value {
        Value::String(name) if name.starts_with("vncguard.") => {
            if defined.contains(name.as_str()) {
                return Ok(());
            }
            let text = NAMED_TYPES
                .iter()
                .find(|(full, _)| full == name)
                .map(|(_, text)| *text)
                .ok_or_else(|| format!("unknown type reference {name}"))?;
            let mut definition: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            inline_references(&mut definition, defined)?;
            *value = definition;
        }
        Value::Object(map) => {
            if let (Some(Value::String(name)), Some(Value::String(kind))) =
                (map.get("name"), map.get("type"))
            {
                if matches!(kind.as_str(), "record" | "enum" | "fixed") {
                    let full = match map.get("namespace") {
                        Some(Value::String(ns)) if !name.contains('.') => format!("{ns}.{name}"),
                        _ if name.contains('.') => name.clone(),
                        _ => format!("vncguard.{name}"),
                    };
                    defined.insert(full);
                }
            }
            for (key, child) in map.iter_mut() {
                // Field names and docs are plain strings, never type references.
                if matches!(key.as_str(), "type" | "items" | "values" | "fields") {
                    inline_references(child, defined)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                inline_references(item, defined)?;
            }
        }
        _ => {}
    }
    Ok(())
}
