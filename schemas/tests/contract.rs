//! The Rust types and the `.avsc` files describe the same records, and readers of a newer schema
//! version read records written with an older one.

use std::collections::{BTreeMap, BTreeSet};

use schemas::registry::registry;
use schemas::*;
use serde_json::Value;

mod samples;
use samples::*;

/// Every record field of `schema` is a key of `value` and the other way round, recursively.
fn assert_same_fields(schema: &Value, value: &Value, path: &str) {
    match schema {
        // A union: the non-null branch describes a present value.
        Value::Array(branches) if !value.is_null() => {
            let branch = branches
                .iter()
                .find(|b| b.as_str() != Some("null"))
                .unwrap();
            assert_same_fields(branch, value, path);
        }
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("record") => {
                let object = value
                    .as_object()
                    .unwrap_or_else(|| panic!("{path}: not an object: {value}"));
                let fields = map["fields"].as_array().unwrap();
                let schema_names: BTreeSet<&str> =
                    fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
                let rust_names: BTreeSet<&str> = object.keys().map(String::as_str).collect();
                assert_eq!(
                    schema_names, rust_names,
                    "{path}: .avsc fields differ from the Rust type's"
                );
                for field in fields {
                    let name = field["name"].as_str().unwrap();
                    assert_same_fields(&field["type"], &object[name], &format!("{path}.{name}"));
                }
            }
            Some("enum") => {
                let symbols: Vec<&str> = map["symbols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect();
                let symbol = value.as_str().unwrap();
                assert!(
                    symbols.contains(&symbol),
                    "{path}: {symbol} is not a symbol of the enum"
                );
            }
            Some("array") => {
                for item in value.as_array().unwrap() {
                    assert_same_fields(&map["items"], item, &format!("{path}[]"));
                }
            }
            Some("map") => {
                for item in value.as_object().unwrap().values() {
                    assert_same_fields(&map["values"], item, &format!("{path}{{}}"));
                }
            }
            _ => assert_same_fields(&map["type"], value, path),
        },
        _ => {}
    }
}

fn check<T: Event + PartialEq + std::fmt::Debug>(sample: T) {
    let current = registry().current(T::SCHEMA_NAME).expect("registered");
    let schema: Value = serde_json::from_str(&current.json).unwrap();
    assert_same_fields(
        &schema,
        &serde_json::to_value(&sample).unwrap(),
        T::SCHEMA_NAME,
    );

    let bytes = encode(&sample).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(&bytes[2..10], &current.fingerprint());
    assert_eq!(decode::<T>(&bytes).unwrap(), sample);
}

#[test]
fn every_record_type_matches_its_avsc() {
    check(event());
    check(enriched());
    check(scored());
    check(threat());
    check(decision());
    check(heartbeat());
    check(model());
}

#[test]
fn every_enum_value_is_a_symbol() {
    for result in [
        AuthResult::Ok,
        AuthResult::Failed,
        AuthResult::TooMany,
        AuthResult::NoneRequired,
        AuthResult::Abandoned,
        AuthResult::Unknown,
    ] {
        let mut e = event();
        e.summary.auth_result = result;
        check(e);
    }
    for kind in [
        SessionEventKind::Started,
        SessionEventKind::Auth,
        SessionEventKind::Stats,
    ] {
        let mut e = event();
        e.kind = kind;
        check(e);
    }
    for severity in [Severity::Low, Severity::Medium, Severity::Critical] {
        check(Threat {
            severity,
            ..threat()
        });
    }
    for (action, origin, scope) in [
        (
            DecisionAction::Unblock,
            DecisionOrigin::Analyst,
            DecisionScope::Cidr,
        ),
        (
            DecisionAction::Quarantine,
            DecisionOrigin::Analyst,
            DecisionScope::Session,
        ),
    ] {
        check(Decision {
            action,
            origin,
            scope,
            ..decision()
        });
    }
}

/// A heartbeat as agents of schema version 1 wrote it, before `capture_sources` existed.
#[derive(serde::Serialize)]
struct HeartbeatV1 {
    agent_id: String,
    hostname: String,
    version: String,
    time: Timestamp,
    started_at: Timestamp,
    packets: i64,
    bytes: i64,
    pcap_drops: i64,
    flows_active: i64,
    flows_evicted: i64,
    sessions_active: i64,
    sessions_total: i64,
    parse_errors: i64,
    enforcing: bool,
}

#[test]
fn a_version_2_reader_reads_version_1_records() {
    let versions: Vec<_> = registry().versions("vncguard.AgentHeartbeat").collect();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_ne!(versions[0].fingerprint(), versions[1].fingerprint());

    let h = heartbeat();
    let old = HeartbeatV1 {
        agent_id: h.agent_id.clone(),
        hostname: h.hostname.clone(),
        version: h.version.clone(),
        time: h.time,
        started_at: h.started_at,
        packets: h.packets,
        bytes: h.bytes,
        pcap_drops: h.pcap_drops,
        flows_active: h.flows_active,
        flows_evicted: h.flows_evicted,
        sessions_active: h.sessions_active,
        sessions_total: h.sessions_total,
        parse_errors: h.parse_errors,
        enforcing: h.enforcing,
    };
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&versions[0].schema);
    let bytes = serde_avro_fast::to_single_object_vec(&old, &mut config).unwrap();

    let read: AgentHeartbeat = decode(&bytes).unwrap();
    assert_eq!(
        read,
        AgentHeartbeat {
            capture_sources: Vec::new(),
            ..h
        }
    );
}

/// `Threat` as version 1 wrote it, before `verified`.
#[derive(serde::Serialize)]
struct ThreatV1 {
    threat_id: String,
    session_id: String,
    threat_type: String,
    severity: Severity,
    description: String,
    source_ip: String,
    target_ip: Option<String>,
    target_port: Option<i32>,
    risk_score: f64,
    ml_confidence: Option<f64>,
    evidence: BTreeMap<String, String>,
    model_version: String,
    detected_at: Timestamp,
}

#[test]
fn a_version_1_threat_reads_as_unverified() {
    let versions: Vec<_> = registry().versions("vncguard.Threat").collect();
    assert_eq!(versions.len(), 2);
    let t = threat();
    assert!(t.verified);
    let old = ThreatV1 {
        threat_id: t.threat_id.clone(),
        session_id: t.session_id.clone(),
        threat_type: t.threat_type.clone(),
        severity: t.severity,
        description: t.description.clone(),
        source_ip: t.source_ip.clone(),
        target_ip: t.target_ip.clone(),
        target_port: t.target_port,
        risk_score: t.risk_score,
        ml_confidence: t.ml_confidence,
        evidence: t.evidence.clone(),
        model_version: t.model_version.clone(),
        detected_at: t.detected_at,
    };
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&versions[0].schema);
    let bytes = serde_avro_fast::to_single_object_vec(&old, &mut config).unwrap();
    // An old scorer's threat is never taken for verified evidence.
    let read: Threat = decode(&bytes).unwrap();
    assert_eq!(
        read,
        Threat {
            verified: false,
            ..t
        }
    );
}

/// Risk components as scorers of `ScoredSession` version 1 wrote them, before the composite,
/// the floor and the anomaly status existed.
#[derive(serde::Serialize)]
struct RiskComponentsV1 {
    anomaly: f64,
    threat: f64,
    behavioral: f64,
    geographic: f64,
    temporal: f64,
    weights: Vec<f64>,
}

#[derive(serde::Serialize)]
struct ScoredSessionV1 {
    /// The enriched session as version 1 had it: without `handshake_verified`.
    enriched: Value,
    risk_score: f64,
    anomaly_score: f64,
    components: RiskComponentsV1,
    reasons: Vec<RiskReason>,
    model_version: String,
    scored_at: Timestamp,
}

#[test]
fn a_scored_session_version_2_reader_reads_version_1_records() {
    let versions: Vec<_> = registry().versions("vncguard.ScoredSession").collect();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_ne!(versions[0].fingerprint(), versions[1].fingerprint());

    let s = scored();
    let c = &s.components;
    let old = ScoredSessionV1 {
        enriched: {
            let mut enriched = serde_json::to_value(&s.enriched).unwrap();
            enriched["event"]["summary"]
                .as_object_mut()
                .unwrap()
                .remove("handshake_verified");
            enriched
        },
        risk_score: s.risk_score,
        anomaly_score: s.anomaly_score,
        components: RiskComponentsV1 {
            anomaly: c.anomaly,
            threat: c.threat,
            behavioral: c.behavioral,
            geographic: c.geographic,
            temporal: c.temporal,
            weights: c.weights.clone(),
        },
        reasons: s.reasons.clone(),
        model_version: s.model_version.clone(),
        scored_at: s.scored_at,
    };
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&versions[0].schema);
    let bytes = serde_avro_fast::to_single_object_vec(&old, &mut config).unwrap();

    let read: ScoredSession = decode(&bytes).unwrap();
    let mut unverified = s.enriched.clone();
    // Version 1 sessions read as not verified.
    unverified.event.summary.handshake_verified = false;
    let expected = ScoredSession {
        enriched: unverified,
        components: RiskComponents {
            composite: 0.0,
            floor: None,
            floor_rule: None,
            anomaly_status: None,
            ..s.components.clone()
        },
        ..s
    };
    assert_eq!(read, expected);
}

#[test]
fn bad_records_are_errors_not_panics() {
    assert!(matches!(
        decode::<SessionEvent>(b"\xc3"),
        Err(CodecError::TooShort(1))
    ));
    assert!(matches!(
        decode::<SessionEvent>(b"not avro at all"),
        Err(CodecError::BadMarker)
    ));
    let threat_bytes = encode(&threat()).unwrap();
    assert!(matches!(
        decode::<SessionEvent>(&threat_bytes),
        Err(CodecError::UnknownFingerprint { .. })
    ));
    let mut truncated = encode(&event()).unwrap();
    truncated.truncate(40);
    assert!(matches!(
        decode::<SessionEvent>(&truncated),
        Err(CodecError::Decode { .. })
    ));
}

#[test]
fn every_registered_schema_has_a_distinct_fingerprint() {
    let fingerprints: BTreeSet<[u8; 8]> =
        registry().all().iter().map(|v| v.fingerprint()).collect();
    assert_eq!(fingerprints.len(), registry().all().len());
}

/// Avro tools (fastavro's `load_schema`, the Java parser over a folder) find the type that a
/// reference names in the file named after its full name: `vncguard.SessionSummary.avsc`, and
/// older versions beside it as `vncguard.AgentHeartbeat.v1.avsc`. A file named otherwise makes a
/// subscriber expand references by hand, where it is easy to get a schema whose fingerprint is
/// not the writer's.
#[test]
fn every_avsc_file_is_named_after_its_full_name() {
    let avro = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    let versions: BTreeSet<(String, u32)> = registry()
        .all()
        .iter()
        .map(|v| (v.name.to_string(), v.version))
        .collect();
    for dir in [avro.clone(), avro.join("history")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "avsc") {
                continue;
            }
            let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let full = format!(
                "{}.{}",
                schema["namespace"].as_str().unwrap(),
                schema["name"].as_str().unwrap()
            );
            let file = path.file_name().unwrap().to_str().unwrap();
            if dir == avro {
                assert_eq!(file, format!("{full}.avsc"));
            } else {
                let version: u32 = file
                    .strip_prefix(&format!("{full}.v"))
                    .and_then(|rest| rest.strip_suffix(".avsc"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{file} is not {full}.vN.avsc"));
                assert!(
                    versions.contains(&(full.clone(), version)),
                    "{file} is not in the registry"
                );
            }
        }
    }
}

/// The README's fingerprint table is the registry's, so a subscriber can trust it.
#[test]
fn the_readme_lists_every_fingerprint() {
    let mut table =
        String::from("| schema | version | fingerprint (header bytes, hex) |\n|---|---|---|\n");
    for v in registry().all() {
        let hex: String = v.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
        table.push_str(&format!("| `{}` | {} | `{hex}` |\n", v.name, v.version));
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md should hold this table:\n{table}"
    );
}

/// A decision as the responder and the API wrote it in schema version 1, unsigned.
#[derive(serde::Serialize)]
struct DecisionV1 {
    decision_id: String,
    action: DecisionAction,
    origin: DecisionOrigin,
    scope: DecisionScope,
    value: String,
    duration_secs: i64,
    created_at: Timestamp,
    until: Timestamp,
    reason: String,
    threat_id: Option<String>,
    target_decision_id: Option<String>,
    created_by: Option<String>,
    dry_run: bool,
}

#[test]
fn an_unsigned_version_1_decision_still_decodes_without_a_signature() {
    let versions: Vec<_> = registry().versions("vncguard.Decision").collect();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let d = decision();
    let old = DecisionV1 {
        decision_id: d.decision_id.clone(),
        action: d.action,
        origin: d.origin,
        scope: d.scope,
        value: d.value.clone(),
        duration_secs: d.duration_secs,
        created_at: d.created_at,
        until: d.until,
        reason: d.reason.clone(),
        threat_id: d.threat_id.clone(),
        target_decision_id: d.target_decision_id.clone(),
        created_by: d.created_by.clone(),
        dry_run: d.dry_run,
    };
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&versions[0].schema);
    let bytes = serde_avro_fast::to_single_object_vec(&old, &mut config).unwrap();
    let read: Decision = decode(&bytes).unwrap();
    assert_eq!(
        read,
        Decision {
            key_id: None,
            signature: None,
            ..d
        }
    );
}
