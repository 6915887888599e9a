//! Enriched sessions from the lab captures, for the scorer's tests: the capture agent's
//! events through the real enricher (no geo databases: the lab ran on loopback). Every capture
//! gets windows of its own, as the lab recorded them apart.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bus::{Output, Record};
use enricher::geo::GeoDatabases;
use enricher::reputation::Reputation;
use enricher::windows::{PartitionWindows, WindowConfig};
use schemas::{EnrichedSession, SessionEvent};

pub const NORMAL: &[&str] = &["a_normal_vncauth", "a2_normal_tigervnc_viewer"];
pub const ATTACKS: &[&str] = &[
    "c_bruteforce_vncauth",
    "c2_bruteforce_nmap_success",
    "e_scanner",
];

pub fn lab_capture(name: &str) -> PathBuf {
    testkit::lab_capture(&format!("{name}.pcap"))
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

/// The enriched sessions of events of one capture, through the enricher with fresh windows.
pub fn enrich(events: Vec<SessionEvent>) -> Vec<EnrichedSession> {
    let geo = GeoDatabases::empty();
    let reputation = Reputation::default();
    let mut windows = PartitionWindows::new(WindowConfig::default());
    events
        .into_iter()
        .map(|event| {
            enricher::stage::enrich_event(
                &geo,
                &reputation,
                chrono_tz::Tz::UTC,
                &mut windows,
                event,
            )
        })
        .collect()
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

/// A copy of `session` as if recorded `day` days later, its volumes varied by a few percent.
pub fn replayed(session: &EnrichedSession, day: usize) -> EnrichedSession {
    let mut copy = session.clone();
    let shift = chrono::Duration::days(day as i64 + 1);
    let summary = &mut copy.event.summary;
    summary.session_id = format!("{}-day{day}", summary.session_id);
    summary.start_time += shift;
    copy.event.event_id = format!("{}:{}", summary.session_id, copy.event.seq);
    copy.event.time += shift;
    let variation = 1.0 + 0.05 * ((day * 7 % 11) as f64 / 10.0 - 0.5);
    for name in [
        "duration_secs",
        "bytes_c2s",
        "bytes_s2c",
        "packets_c2s",
        "packets_s2c",
        "framebuffer_updates",
    ] {
        if let Some(value) = copy.features.get_mut(name) {
            *value *= variation;
        }
    }
    copy
}

/// `output` as the stage reads it back at `offset`.
pub fn record(offset: usize, output: Output) -> Record {
    Record {
        topic: output.topic,
        partition: 0,
        offset: offset as i64,
        key: Some(output.key),
        payload: output.payload,
        timestamp_ms: None,
        headers: Vec::new(),
    }
}
