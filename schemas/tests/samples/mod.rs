//! One record of every type with every optional field present: the contract test compares them
//! field by field with their schemas, and bus/tests/avro_interop.rs has fastavro decode them.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use schemas::*;

pub fn time(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_764_000_000 + secs, 123_456_000)
        .unwrap()
}

/// A summary with every optional field present, so the comparison covers all of them.
pub fn summary() -> SessionSummary {
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
    s.handshake_verified = true;
    s
}

pub fn event() -> SessionEvent {
    SessionEvent::new(SessionEventKind::Ended, 3, time(30), summary())
}

pub fn geo() -> GeoInfo {
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

pub fn enriched() -> EnrichedSession {
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

pub fn scored() -> ScoredSession {
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

pub fn threat() -> Threat {
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
        verified: true,
    }
}

pub fn decision() -> Decision {
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
        key_id: Some("responder-1".into()),
        signature: Some("c2lnbmVkIGJ5IHRoZSByZXNwb25kZXI=".into()),
    }
}

pub fn heartbeat() -> AgentHeartbeat {
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

pub fn model() -> ModelAnnouncement {
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
