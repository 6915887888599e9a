//! Shared by the integration tests: session events from the lab captures, and records of them.

use std::path::{Path, PathBuf};

use bus::Record;
use schemas::SessionEvent;

pub const LAB: &str = "/work/shared/pcaps/lab";

pub fn lab_capture(name: &str) -> PathBuf {
    Path::new(LAB).join(name)
}

/// The session events the capture agent makes of a lab capture.
pub fn capture_events(name: &str) -> Vec<SessionEvent> {
    let mut events: Vec<SessionEvent> = Vec::new();
    capture_agent::analyze_file(&lab_capture(name), &capture_agent::AgentConfig::default(), &mut events)
        .unwrap_or_else(|e| panic!("analysing {name}: {e}"));
    assert!(!events.is_empty(), "{name} gave no events");
    events
}

/// `events` as consecutive records of partition 0 of `vnc.sessions.raw`.
pub fn records(events: &[SessionEvent]) -> Vec<Record> {
    events
        .iter()
        .enumerate()
        .map(|(offset, event)| Record {
            topic: schemas::topics::SESSIONS_RAW.name.to_string(),
            partition: 0,
            offset: offset as i64,
            key: Some(event.summary.client_ip.clone().into_bytes()),
            payload: schemas::encode(event).unwrap(),
            timestamp_ms: None,
            headers: Vec::new(),
        })
        .collect()
}
