//! Enriched sessions from the lab captures, for the scorer's tests: the capture agent's
//! events through the real enricher (no geo databases: the lab ran on loopback). Every capture
//! gets windows of its own, as the lab recorded them apart.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

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
