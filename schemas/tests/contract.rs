//! The Rust types and the `.avsc` files describe the same records, and readers of a newer schema
//! version read records written with an older one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use schemas::registry::registry;
use schemas::*;
use serde_json::Value;

fn time(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_764_000_000 + secs, 123_456_000)
        .unwrap()
}

/// A summary with every optional field present, so the comparison covers all of them.
fn summary() -> SessionSummary {
    let mut s = SessionSummary::new(
        "0123456789abcdef0123456789abcdef".into(),
        "agent-a".into(),
        "192.0.2.10:51000".parse().unwrap(),
        "[2001:db8::5]:5900".parse().unwrap(),
        time(0),
    );
    s.end_time = Some(time(30));
    s.client_version = Some("3.8".into());
    s.server_version = Some("3.889".into());
    s.security_types_offered = vec![2, 16];
    s.security_type = Some(2);
    s.auth_result = AuthResult::Failed;
    s.failure_reason = Some("Authentication failed".into());
    s.vnc_auth_challenge = true;
    s.shared_flag = Some(true);
    s.width = Some(1280);
    s.height = Some(800);
    s.pixel_format = Some("32bpp depth 24 LE true-colour".into());
    s.desktop_name = Some("desk\\xa0".into());
    s.gap_bytes = 7;
    s.bytes_c2s = 100;
    s.bytes_s2c = 2000;
    s.packets_c2s = 10;
    s.packets_s2c = 20;
    s.key_events = 3;
    s.clipboard_sha256 = Some("ab".repeat(32));
    s.encodings = vec![0, 1, -224];
    s.end_reason = Some("fin".into());
    s
}

fn event() -> SessionEvent {
    SessionEvent::new(SessionEventKind::Ended, 3, time(30), summary())
}

fn geo() -> GeoInfo {
    GeoInfo {
        address_class: "public".into(),
        country: Some("US".into()),
        city: Some("Mountain View".into()),
        latitude: Some(37.4),
        longitude: Some(-122.1),
        asn: Some(15169),
        as_org: Some("Google LLC".into()),
    }
}

fn enriched() -> EnrichedSession {
    EnrichedSession {
        event: event(),
        client_geo: geo(),
        server_geo: geo(),
        distance_km: Some(12.5),
        reputation: Some("known_bad".into()),
        features: BTreeMap::from([("duration_secs".into(), 30.0), ("auth_failed".into(), 1.0)]),
        enriched_at: time(31),
    }
}

fn scored() -> ScoredSession {
    ScoredSession {
        enriched: enriched(),
        risk_score: 81.5,
        anomaly_score: 64.0,
        components: RiskComponents {
            anomaly: 64.0,
            threat: 100.0,
            behavioral: 50.0,
            geographic: 20.0,
            temporal: 0.0,
            weights: vec![0.3, 0.25, 0.2, 0.15, 0.1],
            composite: 57.2,
            floor: Some("high".into()),
            floor_rule: Some("brute_force".into()),
            anomaly_status: None,
        },
        reasons: vec![RiskReason {
            rule: "brute_force".into(),
            component: "threat".into(),
            score: 1.0,
            reason: "5 failed logins in 10 min".into(),
        }],
        model_version: "forest-3".into(),
        scored_at: time(32),
    }
}

fn threat() -> Threat {
    Threat {
        threat_id: "t1".into(),
        session_id: "s1".into(),
        threat_type: "brute_force".into(),
        severity: Severity::High,
        description: "Brute force".into(),
        source_ip: "192.0.2.10".into(),
        target_ip: Some("198.51.100.1".into()),
        target_port: Some(5900),
        risk_score: 81.5,
        ml_confidence: Some(0.7),
        evidence: BTreeMap::from([("failures".into(), "5".into())]),
        model_version: "forest-3".into(),
        detected_at: time(33),
    }
}

fn decision() -> Decision {
    Decision {
        decision_id: "d1".into(),
        action: DecisionAction::Block,
        origin: DecisionOrigin::Automatic,
        scope: DecisionScope::Ip,
        value: "192.0.2.10".into(),
        duration_secs: 3600,
        created_at: time(34),
        until: time(3634),
        reason: "brute force".into(),
        threat_id: Some("t1".into()),
        target_decision_id: Some("d0".into()),
        created_by: Some("rule:brute_force".into()),
        dry_run: false,
    }
}

fn heartbeat() -> AgentHeartbeat {
    AgentHeartbeat {
        agent_id: "agent-a".into(),
        hostname: "host-a".into(),
        version: "0.1.0".into(),
        time: time(40),
        started_at: time(0),
        packets: 1000,
        bytes: 100_000,
        pcap_drops: 1,
        flows_active: 3,
        flows_evicted: 0,
        sessions_active: 2,
        sessions_total: 9,
        parse_errors: 0,
        enforcing: true,
        capture_sources: vec!["eth0".into()],
    }
}

fn model() -> ModelAnnouncement {
    ModelAnnouncement {
        model_name: "session-forest".into(),
        version: "forest-3".into(),
        created_at: time(50),
        feature_names: vec!["duration_secs".into()],
        training_rows: 1000,
        training_window_start: Some(time(-86400)),
        training_window_end: Some(time(0)),
        metrics: BTreeMap::from([("auc".into(), 0.93)]),
        model_json: "{}".into(),
    }
}

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
    enriched: EnrichedSession,
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
        enriched: s.enriched.clone(),
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
    let expected = ScoredSession {
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
