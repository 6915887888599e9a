//! Elastic Common Schema documents: a session as a network-session event, a threat as an
//! intrusion-detection alert, with the ECS field names and the categorization values ECS allows
//! (`event.kind`, `event.category`, `event.type`, `event.outcome`). vncguard's own fields sit
//! under `vncguard.*`, ECS's place for custom fields that no ECS field holds.

use schemas::{AuthResult, GeoInfo, ScoredSession, SessionSummary, Severity, Threat};
use serde_json::{json, Map, Value};

use crate::catalogue;
use crate::{insert_some, session_fields, threat_fields};

/// The ECS version the documents follow (every field used here is in ECS 8 and 9).
pub const ECS_VERSION: &str = "8.17.0";

/// The document of a scored session (its latest state).
pub fn session(scored: &ScoredSession) -> Value {
    let summary = &scored.enriched.event.summary;
    let authenticated = !matches!(
        summary.auth_result,
        AuthResult::Unknown | AuthResult::Abandoned
    );
    let mut category = vec!["network", "session"];
    if authenticated {
        category.push("authentication");
    }
    let outcome = match summary.auth_result {
        AuthResult::Ok | AuthResult::NoneRequired => "success",
        AuthResult::Failed | AuthResult::TooMany => "failure",
        AuthResult::Abandoned | AuthResult::Unknown => "unknown",
    };
    let mut event = Map::new();
    event.insert("kind".into(), "event".into());
    event.insert("category".into(), json!(category));
    event.insert(
        "type".into(),
        json!(if summary.end_time.is_some() {
            ["connection", "end"]
        } else {
            ["connection", "start"]
        }),
    );
    event.insert("outcome".into(), outcome.into());
    event.insert("action".into(), "vnc-session".into());
    event.insert("dataset".into(), "vncguard.session".into());
    event.insert("module".into(), "vncguard".into());
    event.insert("id".into(), summary.session_id.clone().into());
    event.insert("start".into(), summary.start_time.to_rfc3339().into());
    if let Some(end) = summary.end_time {
        event.insert("end".into(), end.to_rfc3339().into());
        if let Some(ns) = (end - summary.start_time).num_nanoseconds() {
            event.insert("duration".into(), ns.into());
        }
    }
    // ECS's severity is the source's own number; vncguard's risk is 0-100.
    event.insert("severity".into(), (scored.risk_score.round() as i64).into());
    event.insert("risk_score".into(), scored.risk_score.into());
    event.insert("risk_score_norm".into(), scored.risk_score.into());

    let mut source = endpoint(&summary.client_ip, Some(summary.client_port));
    source.insert("bytes".into(), summary.bytes_c2s.into());
    source.insert("packets".into(), summary.packets_c2s.into());
    geo(&mut source, &scored.enriched.client_geo);
    let mut destination = endpoint(&summary.server_ip, Some(summary.server_port));
    destination.insert("bytes".into(), summary.bytes_s2c.into());
    destination.insert("packets".into(), summary.packets_s2c.into());
    geo(&mut destination, &scored.enriched.server_geo);

    let mut document = base(&summary.start_time.to_rfc3339(), event, &summary.agent_id);
    document.insert("source".into(), Value::Object(source));
    document.insert("destination".into(), Value::Object(destination));
    document.insert(
        "network".into(),
        network(
            &summary.client_ip,
            Some((
                summary.bytes_c2s + summary.bytes_s2c,
                summary.packets_c2s + summary.packets_s2c,
            )),
        ),
    );
    document.insert(
        "related".into(),
        json!({"ip": [summary.client_ip, summary.server_ip]}),
    );
    document.insert("vncguard".into(), Value::Object(session_fields(scored)));
    Value::Object(document)
}

/// The alert document of a threat; with its session, the client port, sensor and traffic time.
pub fn threat(threat: &Threat, session: Option<&SessionSummary>) -> Value {
    let signature = catalogue::signature(&threat.threat_type);
    let mut category = vec!["intrusion_detection", "network"];
    if matches!(
        threat.threat_type.as_str(),
        "brute_force" | "password_spraying"
    ) {
        category.push("authentication");
    }
    let mut event = Map::new();
    event.insert("kind".into(), "alert".into());
    event.insert("category".into(), json!(category));
    event.insert("type".into(), json!(["info"]));
    event.insert("action".into(), threat.threat_type.clone().into());
    event.insert("dataset".into(), "vncguard.threat".into());
    event.insert("module".into(), "vncguard".into());
    event.insert("id".into(), threat.threat_id.clone().into());
    event.insert("created".into(), threat.detected_at.to_rfc3339().into());
    event.insert("reason".into(), threat.description.clone().into());
    event.insert("severity".into(), severity_number(threat.severity).into());
    event.insert("risk_score".into(), threat.risk_score.into());
    event.insert("risk_score_norm".into(), threat.risk_score.into());

    let (time, agent_id, client_port) = match session {
        Some(summary) => (
            summary.end_time.unwrap_or(summary.start_time),
            summary.agent_id.as_str(),
            Some(summary.client_port),
        ),
        None => (threat.detected_at, "", None),
    };
    let mut document = base(&time.to_rfc3339(), event, agent_id);
    document.insert(
        "source".into(),
        Value::Object(endpoint(&threat.source_ip, client_port)),
    );
    if let Some(target) = &threat.target_ip {
        document.insert(
            "destination".into(),
            Value::Object(endpoint(target, threat.target_port)),
        );
    }
    document.insert("network".into(), network(&threat.source_ip, None));
    let mut related = vec![threat.source_ip.clone()];
    related.extend(threat.target_ip.clone());
    document.insert("related".into(), json!({"ip": related}));
    document.insert(
        "rule".into(),
        json!({
            "id": signature.id.to_string(),
            "name": threat.threat_type,
            "description": signature.message,
            "category": signature.category,
            "ruleset": "vncguard",
            "version": "1",
        }),
    );
    if let Some(technique) = signature.technique {
        let (id, name) = technique.parent.unwrap_or((technique.id, technique.name));
        let mut technique_fields = json!({
            "id": [id],
            "name": [name],
            "reference": [technique.reference()],
        });
        if technique.parent.is_some() {
            technique_fields["subtechnique"] = json!({
                "id": [technique.id],
                "name": [technique.name],
                "reference": [technique.reference()],
            });
        }
        document.insert(
            "threat".into(),
            json!({
                "framework": "MITRE ATT&CK",
                "tactic": {"id": [technique.tactic_id], "name": [technique.tactic_name]},
                "technique": technique_fields,
            }),
        );
    }
    document.insert("vncguard".into(), Value::Object(threat_fields(threat)));
    Value::Object(document)
}

/// ECS's `event.severity` for a threat: 1 (low) to 4 (critical), increasing with severity.
fn severity_number(severity: Severity) -> i64 {
    match severity {
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

/// `@timestamp`, `ecs`, `event`, and `observer` (vncguard, the agent that saw it).
fn base(timestamp: &str, event: Map<String, Value>, agent_id: &str) -> Map<String, Value> {
    let mut document = Map::new();
    document.insert("@timestamp".into(), timestamp.into());
    document.insert("ecs".into(), json!({"version": ECS_VERSION}));
    document.insert("event".into(), Value::Object(event));
    let mut observer = Map::new();
    observer.insert("vendor".into(), "vncguard".into());
    observer.insert("product".into(), "vncguard".into());
    observer.insert("type".into(), "ids".into());
    if !agent_id.is_empty() {
        observer.insert("name".into(), agent_id.into());
    }
    document.insert("observer".into(), Value::Object(observer));
    document
}

fn endpoint(ip: &str, port: Option<i32>) -> Map<String, Value> {
    let mut endpoint = Map::new();
    endpoint.insert("ip".into(), ip.into());
    endpoint.insert("address".into(), ip.into());
    insert_some(&mut endpoint, "port", port);
    endpoint
}

/// `network.*`: TCP, RFB, the address family, and the session's totals when known.
fn network(ip: &str, totals: Option<(i64, i64)>) -> Value {
    let family = if ip.contains(':') { "ipv6" } else { "ipv4" };
    let mut network = json!({"transport": "tcp", "protocol": "rfb", "type": family});
    if let Some((bytes, packets)) = totals {
        network["bytes"] = bytes.into();
        network["packets"] = packets.into();
    }
    network
}

/// `*.geo` and `*.as` from the enricher's view of an address.
fn geo(endpoint: &mut Map<String, Value>, info: &GeoInfo) {
    let mut geo = Map::new();
    insert_some(&mut geo, "country_iso_code", info.country.clone());
    insert_some(&mut geo, "city_name", info.city.clone());
    if let (Some(lat), Some(lon)) = (info.latitude, info.longitude) {
        geo.insert("location".into(), json!({"lat": lat, "lon": lon}));
    }
    if !geo.is_empty() {
        endpoint.insert("geo".into(), Value::Object(geo));
    }
    if let Some(number) = info.asn {
        let mut autonomous = json!({"number": number});
        if let Some(org) = &info.as_org {
            autonomous["organization"] = json!({"name": org});
        }
        endpoint.insert("as".into(), autonomous);
    }
}
