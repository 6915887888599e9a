//! Shared by the integration tests: session events from the lab captures.

use schemas::SessionEvent;
pub use testkit::lab_capture;

/// The session events the capture agent makes of a lab capture.
pub fn capture_events(name: &str) -> Vec<SessionEvent> {
    let mut events: Vec<SessionEvent> = Vec::new();
    capture_agent::analyze_file(
        &lab_capture(name),
        &capture_agent::AgentConfig::default(),
        &mut events,
    )
    .unwrap_or_else(|e| panic!("analysing {name}: {e}"));
    assert!(!events.is_empty(), "{name} gave no events");
    events
}
