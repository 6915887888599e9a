//! Suricata EVE JSON: a session as an `event_type: "rfb"` record, a threat as an
//! `event_type: "alert"` record, so a pipeline built for Suricata's eve.json takes them as they
//! are.
//!
//! Field names and shapes follow Suricata's rfb logger (rust/src/rfb/logger.rs) and the EVE
//! schema (etc/schema.json) where vncguard knows the same fact: the common five-tuple and
//! `flow_id`, `rfb.{client,server}_protocol_version.{major,minor}` (the banner's three-digit
//! strings), `rfb.authentication.{security_type,security_result}`,
//! `rfb.server_security_failure_reason`, `rfb.screen_shared` and `rfb.framebuffer`. Suricata
//! also logs the VNC authentication challenge and response (`rfb.authentication.vnc`); vncguard
//! never does: with the challenge, the response is an offline password-cracking target.
//! Everything vncguard adds sits under one `vncguard` key.

use schemas::{AuthResult, ScoredSession, SessionSummary, Threat, Timestamp};
use serde_json::{json, Map, Value};

use crate::catalogue::{self, suricata_severity};
use crate::{flow_id, insert_some, session_fields, threat_fields};

/// EVE's timestamp: local time with microseconds and a numeric offset (`+0000`), the pattern
/// its schema requires.
pub fn timestamp(time: &Timestamp) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6f%z").to_string()
}

/// The `event_type: "rfb"` record of a scored session (its latest state).
pub fn rfb(scored: &ScoredSession) -> Value {
    let summary = &scored.enriched.event.summary;
    let mut record = common(summary, "rfb", &summary.start_time);
    record.insert("rfb".into(), Value::Object(rfb_fields(summary)));
    record.insert("vncguard".into(), Value::Object(session_fields(scored)));
    Value::Object(record)
}

/// The `event_type: "alert"` record of a threat. With its session (offline analysis has it),
/// the alert carries the session's client port, sensor and time, as Suricata's alerts carry the
/// packet's time; without it (a tail of the threats topic), the time the scorer raised it.
pub fn alert(threat: &Threat, session: Option<&SessionSummary>) -> Value {
    let mut record = match session {
        Some(summary) => common(
            summary,
            "alert",
            summary.end_time.as_ref().unwrap_or(&summary.start_time),
        ),
        None => {
            let mut record = Map::new();
            record.insert("timestamp".into(), timestamp(&threat.detected_at).into());
            record.insert("flow_id".into(), flow_id(&threat.session_id).into());
            record.insert("event_type".into(), "alert".into());
            record.insert("src_ip".into(), threat.source_ip.clone().into());
            insert_some(&mut record, "dest_ip", threat.target_ip.clone());
            insert_some(&mut record, "dest_port", threat.target_port);
            record.insert("proto".into(), "TCP".into());
            record.insert("app_proto".into(), "rfb".into());
            record
        }
    };
    let signature = catalogue::signature(&threat.threat_type);
    let mut alert = Map::new();
    alert.insert("action".into(), "allowed".into());
    alert.insert("gid".into(), 1.into());
    alert.insert("signature_id".into(), signature.id.into());
    alert.insert("rev".into(), 1.into());
    alert.insert("signature".into(), signature.message.into());
    alert.insert("category".into(), signature.category.into());
    alert.insert("severity".into(), suricata_severity(threat.severity).into());
    // ET rules carry ATT&CK in their metadata as lists of strings; the same keys here.
    if let Some(technique) = signature.technique {
        alert.insert(
            "metadata".into(),
            json!({
                "mitre_tactic_id": [technique.tactic_id],
                "mitre_tactic_name": [technique.tactic_name],
                "mitre_technique_id": [technique.id],
                "mitre_technique_name": [technique.name],
            }),
        );
    }
    record.insert("alert".into(), Value::Object(alert));
    record.insert("vncguard".into(), Value::Object(threat_fields(threat)));
    Value::Object(record)
}

/// The common section: time, flow, event type, five-tuple, sensor.
fn common(summary: &SessionSummary, event_type: &str, time: &Timestamp) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert("timestamp".into(), timestamp(time).into());
    record.insert("flow_id".into(), flow_id(&summary.session_id).into());
    record.insert("event_type".into(), event_type.into());
    record.insert("src_ip".into(), summary.client_ip.clone().into());
    record.insert("src_port".into(), summary.client_port.into());
    record.insert("dest_ip".into(), summary.server_ip.clone().into());
    record.insert("dest_port".into(), summary.server_port.into());
    record.insert("proto".into(), "TCP".into());
    record.insert("app_proto".into(), "rfb".into());
    // EVE's `host` is the sensor's name: the capture agent's id.
    record.insert("host".into(), summary.agent_id.clone().into());
    record
}

fn rfb_fields(summary: &SessionSummary) -> Map<String, Value> {
    let mut rfb = Map::new();
    if let Some(version) = summary.server_version.as_deref().and_then(protocol_version) {
        rfb.insert("server_protocol_version".into(), version);
    }
    if let Some(version) = summary.client_version.as_deref().and_then(protocol_version) {
        rfb.insert("client_protocol_version".into(), version);
    }
    let mut authentication = Map::new();
    insert_some(&mut authentication, "security_type", summary.security_type);
    // Suricata's words for the SecurityResult: security type None has one from RFB 3.8 on and
    // none before; an abandoned or unknown handshake has none, as in Suricata. TOOMANY is also
    // the server's refusal before any authentication (Xvnc's "Too many security failures"
    // blacklist), where Suricata would log only the reason.
    let result = match summary.auth_result {
        AuthResult::Ok => Some("OK"),
        AuthResult::Failed => Some("FAIL"),
        AuthResult::TooMany => Some("TOOMANY"),
        AuthResult::NoneRequired if has_none_security_result(summary) => Some("OK"),
        AuthResult::NoneRequired | AuthResult::Abandoned | AuthResult::Unknown => None,
    };
    insert_some(&mut authentication, "security_result", result);
    rfb.insert("authentication".into(), Value::Object(authentication));
    insert_some(
        &mut rfb,
        "server_security_failure_reason",
        summary.failure_reason.clone(),
    );
    insert_some(&mut rfb, "screen_shared", summary.shared_flag);
    if let (Some(width), Some(height)) = (summary.width, summary.height) {
        let mut framebuffer = Map::new();
        framebuffer.insert("width".into(), width.into());
        framebuffer.insert("height".into(), height.into());
        insert_some(&mut framebuffer, "name", summary.desktop_name.clone());
        if let Some(format) = summary.pixel_format.as_deref().and_then(pixel_format) {
            framebuffer.insert("pixel_format".into(), format);
        }
        rfb.insert("framebuffer".into(), Value::Object(framebuffer));
    }
    rfb
}

/// RFB 3.8 and later send a SecurityResult after security type None (RFC 6143 7.1.3); the
/// version in use is the lower of the two sides'.
fn has_none_security_result(summary: &SessionSummary) -> bool {
    let client = summary.client_version.as_deref().and_then(version_numbers);
    let server = summary.server_version.as_deref().and_then(version_numbers);
    match (client, server) {
        (Some(client), Some(server)) => client.min(server) >= (3, 8),
        _ => false,
    }
}

/// `3.8` as Suricata prints the banner's digits: `{"major": "003", "minor": "008"}`.
fn protocol_version(version: &str) -> Option<Value> {
    let (major, minor) = version_numbers(version)?;
    Some(json!({"major": format!("{major:03}"), "minor": format!("{minor:03}")}))
}

/// `3.8` as (3, 8).
fn version_numbers(version: &str) -> Option<(u16, u16)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The agent's pixel-format text (`32bpp depth 24 LE true-colour`, see the capture agent's
/// `PixelFormat::describe`) as the subset of Suricata's `pixel_format` object it states; the
/// colour maxima and shifts are not in the session summary.
fn pixel_format(text: &str) -> Option<Value> {
    let mut words = text.split_whitespace();
    let bits_per_pixel: u64 = words.next()?.strip_suffix("bpp")?.parse().ok()?;
    if words.next()? != "depth" {
        return None;
    }
    let depth: u64 = words.next()?.parse().ok()?;
    let big_endian = match words.next()? {
        "BE" => true,
        "LE" => false,
        _ => return None,
    };
    let true_color = match words.next()? {
        "true-colour" => true,
        "colour-map" => false,
        _ => return None,
    };
    Some(json!({
        "bits_per_pixel": bits_per_pixel,
        "depth": depth,
        "big_endian": big_endian,
        "true_color": true_color,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_pixel_formats_read_as_suricata_writes_them() {
        assert_eq!(
            protocol_version("3.889"),
            Some(json!({"major": "003", "minor": "889"}))
        );
        assert_eq!(protocol_version("garbage"), None);
        assert_eq!(
            pixel_format("32bpp depth 24 LE true-colour"),
            Some(
                json!({"bits_per_pixel": 32, "depth": 24, "big_endian": false, "true_color": true})
            )
        );
        assert_eq!(pixel_format("32bpp deep 24 LE true-colour"), None);
        let time = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(timestamp(&time), "2023-11-14T22:13:20.123456+0000");
    }
}
