//! Enriched sessions from the lab captures, for the scorer's tests. The enricher crate is not
//! there yet, so the features are built here from the session summaries, with a small
//! per-source sliding window (fail2ban's findtime, 10 minutes) for the `src_*_window`
//! features; every capture gets a window of its own, as the lab recorded them apart.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use chrono::{Datelike, Timelike};
use schemas::{AuthResult, EnrichedSession, GeoInfo, SessionEvent, SessionSummary};

pub const FINDTIME_SECS: i64 = 600;

pub const NORMAL: &[&str] = &["a_normal_vncauth", "a2_normal_tigervnc_viewer"];
pub const ATTACKS: &[&str] = &[
    "c_bruteforce_vncauth",
    "c2_bruteforce_nmap_success",
    "e_scanner",
];

pub fn lab_capture(name: &str) -> PathBuf {
    PathBuf::from(format!("/work/shared/pcaps/lab/{name}.pcap"))
}

/// Session events of a lab capture, in time order.
pub fn capture_events(name: &str) -> Vec<SessionEvent> {
    let mut events: Vec<SessionEvent> = Vec::new();
    capture_agent::analyze_file(
        &lab_capture(name),
        &capture_agent::config::AgentConfig::default(),
        &mut events,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    events.sort_by_key(|e| e.time);
    events
}

/// One session as the window sees it.
struct Seen {
    time: chrono::DateTime<chrono::Utc>,
    session_id: String,
    server: (String, i32),
    auth: AuthResult,
    banner_only: bool,
}

/// The enriched sessions of one capture's events.
pub fn enrich(events: Vec<SessionEvent>) -> Vec<EnrichedSession> {
    let mut window: Vec<Seen> = Vec::new();
    events
        .into_iter()
        .map(|event| {
            let s = &event.summary;
            window.retain(|seen| (event.time - seen.time).num_seconds() <= FINDTIME_SECS);
            let banner_only = s.auth_result == AuthResult::Abandoned && s.security_type.is_none();
            match window
                .iter_mut()
                .find(|seen| seen.session_id == s.session_id)
            {
                Some(seen) => {
                    seen.auth = s.auth_result;
                    seen.banner_only = banner_only;
                }
                None => window.push(Seen {
                    time: s.start_time,
                    session_id: s.session_id.clone(),
                    server: (s.server_ip.clone(), s.server_port),
                    auth: s.auth_result,
                    banner_only,
                }),
            }
            let count =
                |pred: &dyn Fn(&Seen) -> bool| window.iter().filter(|w| pred(w)).count() as f64;
            let mut features = summary_features(s, event.time);
            features.insert(
                "src_failed_auth_window".into(),
                count(&|w| matches!(w.auth, AuthResult::Failed | AuthResult::TooMany)),
            );
            features.insert(
                "src_ok_auth_window".into(),
                count(&|w| w.auth == AuthResult::Ok),
            );
            features.insert("src_banner_only_window".into(), count(&|w| w.banner_only));
            features.insert(
                "src_distinct_servers_window".into(),
                window
                    .iter()
                    .map(|w| &w.server.0)
                    .collect::<HashSet<_>>()
                    .len() as f64,
            );
            features.insert(
                "src_distinct_ports_window".into(),
                window
                    .iter()
                    .map(|w| w.server.1)
                    .collect::<HashSet<_>>()
                    .len() as f64,
            );
            EnrichedSession {
                client_geo: GeoInfo {
                    address_class: "loopback".into(),
                    ..GeoInfo::default()
                },
                server_geo: GeoInfo {
                    address_class: "loopback".into(),
                    ..GeoInfo::default()
                },
                distance_km: None,
                reputation: None,
                features,
                enriched_at: event.time,
                event,
            }
        })
        .collect()
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn summary_features(
    s: &SessionSummary,
    now: chrono::DateTime<chrono::Utc>,
) -> BTreeMap<String, f64> {
    let duration = (s.end_time.unwrap_or(now) - s.start_time)
        .num_milliseconds()
        .max(0) as f64
        / 1000.0;
    let per_sec = |v: i64| {
        if duration > 0.0 {
            v as f64 / duration
        } else {
            0.0
        }
    };
    let minutes = (duration / 60.0).max(1.0 / 60.0);
    let version_33 = [&s.client_version, &s.server_version]
        .iter()
        .any(|v| v.as_deref() == Some("3.3"));
    BTreeMap::from([
        ("duration_secs".into(), duration),
        ("bytes_c2s".into(), s.bytes_c2s as f64),
        ("bytes_s2c".into(), s.bytes_s2c as f64),
        ("packets_c2s".into(), s.packets_c2s as f64),
        ("packets_s2c".into(), s.packets_s2c as f64),
        ("bytes_c2s_per_sec".into(), per_sec(s.bytes_c2s)),
        ("bytes_s2c_per_sec".into(), per_sec(s.bytes_s2c)),
        ("key_events_per_min".into(), s.key_events as f64 / minutes),
        (
            "pointer_events_per_min".into(),
            s.pointer_events as f64 / minutes,
        ),
        (
            "client_cut_text_count".into(),
            s.client_cut_text_count as f64,
        ),
        (
            "client_cut_text_bytes".into(),
            s.client_cut_text_bytes as f64,
        ),
        (
            "server_cut_text_count".into(),
            s.server_cut_text_count as f64,
        ),
        (
            "server_cut_text_bytes".into(),
            s.server_cut_text_bytes as f64,
        ),
        ("framebuffer_updates".into(), s.framebuffer_updates as f64),
        (
            "file_transfer_messages".into(),
            s.file_transfer_messages as f64,
        ),
        ("hour_of_day".into(), f64::from(s.start_time.hour())),
        (
            "weekday".into(),
            f64::from(s.start_time.weekday().num_days_from_monday()),
        ),
        ("auth_ok".into(), flag(s.auth_result == AuthResult::Ok)),
        (
            "auth_failed".into(),
            flag(s.auth_result == AuthResult::Failed),
        ),
        (
            "auth_too_many".into(),
            flag(s.auth_result == AuthResult::TooMany),
        ),
        (
            "auth_none_required".into(),
            flag(s.auth_result == AuthResult::NoneRequired),
        ),
        (
            "auth_abandoned".into(),
            flag(s.auth_result == AuthResult::Abandoned),
        ),
        ("security_none".into(), flag(s.security_type == Some(1))),
        ("security_vnc_des".into(), flag(s.vnc_auth_challenge)),
        ("security_encrypted".into(), flag(s.encrypted)),
        ("rfb_33".into(), flag(version_33)),
        ("client_public".into(), 0.0),
    ])
}

/// The enriched sessions of a lab capture.
pub fn enrich_capture(name: &str) -> Vec<EnrichedSession> {
    enrich(capture_events(name))
}

/// The last enriched event of every session of a capture.
pub fn final_sessions(name: &str) -> Vec<EnrichedSession> {
    let mut latest: BTreeMap<String, EnrichedSession> = BTreeMap::new();
    for session in enrich_capture(name) {
        latest.insert(session.event.summary.session_id.clone(), session);
    }
    latest.into_values().collect()
}
