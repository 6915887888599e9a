//! The feature vector of `schemas::features::FEATURES`, computed from an event's summary, its
//! source's window context and the geo context. A feature that cannot be computed (no
//! coordinates for a distance) is left out rather than set to zero.

use std::collections::BTreeMap;

use chrono::{Datelike, Timelike};
use chrono_tz::Tz;
use schemas::{AuthResult, GeoInfo, SessionEvent};

use crate::reputation::KNOWN_BAD;
use crate::windows::SourceContext;

/// RFB security types (RFC 6143 and the IANA registry).
const SECURITY_NONE: i32 = 1;
const SECURITY_VNC_AUTH: i32 = 2;

/// Everything the features are computed from.
pub struct FeatureInputs<'a> {
    pub event: &'a SessionEvent,
    pub context: &'a SourceContext,
    pub client_geo: &'a GeoInfo,
    pub distance_km: Option<f64>,
    pub reputation: Option<&'a str>,
    pub server_timezone: Tz,
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// The named features of one event.
pub fn compute_features(inputs: &FeatureInputs<'_>) -> BTreeMap<String, f64> {
    let summary = &inputs.event.summary;
    let context = inputs.context;
    let end = summary.end_time.unwrap_or(inputs.event.time);
    let duration_secs = ((end - summary.start_time).num_milliseconds().max(0) as f64) / 1000.0;
    // Rates over at least one second, so a session of a few packets does not read as a flood.
    let rate_secs = duration_secs.max(1.0);
    let rate_minutes = rate_secs / 60.0;
    let start = summary.start_time.with_timezone(&inputs.server_timezone);
    let auth = summary.auth_result;
    let negotiated_version = summary
        .client_version
        .as_deref()
        .or(summary.server_version.as_deref());

    let mut features: Vec<(&'static str, f64)> = vec![
        ("duration_secs", duration_secs),
        ("bytes_c2s", summary.bytes_c2s as f64),
        ("bytes_s2c", summary.bytes_s2c as f64),
        ("packets_c2s", summary.packets_c2s as f64),
        ("packets_s2c", summary.packets_s2c as f64),
        ("bytes_c2s_per_sec", summary.bytes_c2s as f64 / rate_secs),
        ("bytes_s2c_per_sec", summary.bytes_s2c as f64 / rate_secs),
        (
            "key_events_per_min",
            summary.key_events as f64 / rate_minutes,
        ),
        (
            "pointer_events_per_min",
            summary.pointer_events as f64 / rate_minutes,
        ),
        (
            "client_cut_text_count",
            summary.client_cut_text_count as f64,
        ),
        (
            "client_cut_text_bytes",
            summary.client_cut_text_bytes as f64,
        ),
        (
            "server_cut_text_count",
            summary.server_cut_text_count as f64,
        ),
        (
            "server_cut_text_bytes",
            summary.server_cut_text_bytes as f64,
        ),
        ("framebuffer_updates", summary.framebuffer_updates as f64),
        (
            "file_transfer_messages",
            summary.file_transfer_messages as f64,
        ),
        ("hour_of_day", f64::from(start.hour())),
        ("weekday", f64::from(start.weekday().num_days_from_monday())),
        ("auth_ok", flag(auth == AuthResult::Ok)),
        ("auth_failed", flag(auth == AuthResult::Failed)),
        ("auth_too_many", flag(auth == AuthResult::TooMany)),
        ("auth_none_required", flag(auth == AuthResult::NoneRequired)),
        ("auth_abandoned", flag(auth == AuthResult::Abandoned)),
        (
            "security_none",
            flag(summary.security_type == Some(SECURITY_NONE)),
        ),
        (
            "security_vnc_des",
            flag(summary.security_type == Some(SECURITY_VNC_AUTH)),
        ),
        ("security_encrypted", flag(summary.encrypted)),
        ("rfb_33", flag(negotiated_version == Some("3.3"))),
        (
            "client_public",
            flag(inputs.client_geo.address_class == "public"),
        ),
        ("src_failed_auth_window", f64::from(context.failed_auths)),
        ("src_ok_auth_window", f64::from(context.ok_auths)),
        (
            "src_distinct_servers_window",
            f64::from(context.distinct_servers),
        ),
        (
            "src_distinct_ports_window",
            f64::from(context.distinct_ports),
        ),
        ("src_banner_only_window", f64::from(context.banner_only)),
        ("handshake_verified", flag(summary.handshake_verified)),
        (
            "src_verified_failed_auth_window",
            f64::from(context.verified.failed_auths),
        ),
        (
            "src_verified_distinct_servers_window",
            f64::from(context.verified.distinct_servers),
        ),
        (
            "src_verified_distinct_ports_window",
            f64::from(context.verified.distinct_ports),
        ),
        (
            "src_verified_banner_only_window",
            f64::from(context.verified.banner_only),
        ),
        ("src_sessions_per_min", context.sessions_per_min),
        (
            "src_first_seen_age_secs",
            (inputs.event.time - context.first_seen)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0,
        ),
        ("src_new_to_server", flag(context.new_to_server)),
        ("src_known_bad", flag(inputs.reputation == Some(KNOWN_BAD))),
    ];
    if let Some(distance) = inputs.distance_km {
        features.push(("geo_distance_km", distance));
    }
    if let Some(new_country) = context.server_new_country {
        features.push(("server_new_country", flag(new_country)));
    }
    features
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{SessionEventKind, SessionSummary};

    #[test]
    fn every_documented_feature_is_computed_when_geo_is_known() {
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-28T23:30:00Z")
            .unwrap()
            .to_utc();
        let mut summary = SessionSummary::new(
            "s".into(),
            "a".into(),
            "8.8.8.8:40000".parse().unwrap(),
            "1.1.1.1:5900".parse().unwrap(),
            start,
        );
        summary.key_events = 120;
        summary.security_type = Some(2);
        summary.auth_result = AuthResult::Ok;
        let event = SessionEvent::new(
            SessionEventKind::Stats,
            1,
            start + chrono::Duration::minutes(2),
            summary,
        );
        let context = SourceContext {
            failed_auths: 3,
            ok_auths: 1,
            refused_auths: 0,
            banner_only: 0,
            abandoned: 0,
            sessions: 4,
            sessions_per_min: 0.4,
            distinct_servers: 1,
            distinct_ports: 1,
            verified: Default::default(),
            first_seen: start,
            new_to_server: true,
            server_new_country: Some(false),
        };
        let geo = GeoInfo {
            address_class: "public".into(),
            ..GeoInfo::default()
        };
        let features = compute_features(&FeatureInputs {
            event: &event,
            context: &context,
            client_geo: &geo,
            distance_km: Some(12.5),
            reputation: Some(KNOWN_BAD),
            server_timezone: "Europe/Paris".parse().unwrap(),
        });
        let missing: Vec<&str> = schemas::features::names()
            .filter(|n| !features.contains_key(*n))
            .collect();
        assert!(missing.is_empty(), "not computed: {missing:?}");
        assert_eq!(features.len(), schemas::features::FEATURES.len());
        // 23:30 UTC on a Saturday is 00:30 on Sunday in Paris.
        assert_eq!(features["hour_of_day"], 0.0);
        assert_eq!(features["weekday"], 6.0);
        assert_eq!(features["key_events_per_min"], 60.0);
        assert_eq!(features["src_first_seen_age_secs"], 120.0);
        assert_eq!(features["src_known_bad"], 1.0);
        assert_eq!(features["security_vnc_des"], 1.0);
    }
}
