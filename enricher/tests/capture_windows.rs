//! Acceptance 2: over the brute-force and scanner lab captures, the window aggregates of the
//! attacking source equal the counts in the captures' truth files.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use bus::{Outcome, Record};
use enricher::{
    Enricher, EnricherConfig, GeoDatabases, PartitionWindows, Reputation, WindowConfig,
};
use schemas::{EnrichedSession, SessionEvent};
use serde_json::Value;

/// What the truth file says about the RFB sessions of one capture.
#[derive(Debug, Default)]
struct TruthCounts {
    sessions: u32,
    failed: u32,
    ok: u32,
    refused: u32,
    banner_only: u32,
    abandoned: u32,
    servers: BTreeSet<String>,
    ports: BTreeSet<String>,
}

/// Truth `auth` values of connections that never spoke RFB (no session for the agent).
const NOT_SESSIONS: &[&str] = &["half-open(SYN scan)", "port-closed(RST)", "no-rfb-data"];

fn truth(name: &str) -> TruthCounts {
    let path = common::lab_capture(&name.replace(".pcap", ".truth.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let truth: Value = serde_json::from_str(&text).unwrap();
    let mut counts = TruthCounts::default();
    for session in truth["sessions"].as_array().unwrap() {
        let auth = session["auth"].as_str().unwrap();
        if NOT_SESSIONS.contains(&auth) {
            continue;
        }
        counts.sessions += 1;
        let server = session["server"].as_str().unwrap();
        let (ip, port) = server.rsplit_once(':').unwrap();
        counts.servers.insert(ip.to_string());
        counts.ports.insert(port.to_string());
        match auth {
            "failed" => counts.failed += 1,
            "ok" => counts.ok += 1,
            // The server refused before any authentication ("Too many security failures").
            "connection-failed" => counts.refused += 1,
            "banner-only" => {
                counts.banner_only += 1;
                counts.abandoned += 1;
            }
            left if left.starts_with("client-left-after-") => counts.abandoned += 1,
            other => panic!("{name}: unexpected truth auth {other:?}"),
        }
    }
    counts
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

fn check(name: &str) {
    let expected = truth(name);
    let events = common::capture_events(name);
    let clients: BTreeSet<&str> = events
        .iter()
        .map(|e| e.summary.client_ip.as_str())
        .collect();
    assert_eq!(
        clients.len(),
        1,
        "{name}: one attacking source expected, got {clients:?}"
    );

    // Through the stage's enrich path: the last record carries the totals (the whole capture
    // lies within one window).
    let mut enricher = Enricher::new(
        Arc::new(GeoDatabases::empty()),
        Reputation::default(),
        EnricherConfig::default(),
    );
    let mut last: Option<EnrichedSession> = None;
    for record in records(&events) {
        match enricher.enrich(&record) {
            Outcome::Emit(outputs) => {
                assert_eq!(outputs.len(), 1);
                assert_eq!(outputs[0].topic, schemas::topics::SESSIONS_ENRICHED.name);
                last = Some(schemas::decode(&outputs[0].payload).unwrap());
            }
            Outcome::DeadLetter(reason) => panic!("{name}: dead letter {reason}"),
        }
    }
    let features = last.unwrap().features;
    let window_minutes = WindowConfig::default().auth_window.num_minutes() as f64;
    assert_eq!(
        features["src_failed_auth_window"],
        f64::from(expected.failed),
        "{name}: failed"
    );
    assert_eq!(
        features["src_ok_auth_window"],
        f64::from(expected.ok),
        "{name}: ok"
    );
    assert_eq!(
        features["src_banner_only_window"],
        f64::from(expected.banner_only),
        "{name}: banner-only"
    );
    assert_eq!(
        features["src_distinct_servers_window"],
        expected.servers.len() as f64,
        "{name}: servers"
    );
    assert_eq!(
        features["src_distinct_ports_window"],
        expected.ports.len() as f64,
        "{name}: ports"
    );
    assert_eq!(
        features["src_sessions_per_min"],
        f64::from(expected.sessions) / window_minutes,
        "{name}: sessions per minute"
    );

    // The counts without a feature of their own, from the windows directly.
    let mut windows = PartitionWindows::new(WindowConfig::default());
    let context = events
        .iter()
        .map(|e| windows.observe(e, None))
        .last()
        .unwrap();
    assert_eq!(context.sessions, expected.sessions, "{name}: sessions");
    assert_eq!(context.refused_auths, expected.refused, "{name}: refused");
    assert_eq!(context.abandoned, expected.abandoned, "{name}: abandoned");
    println!("{name}: {expected:?}");
}

#[test]
fn brute_force_with_vnc_auth() {
    check("c_bruteforce_vncauth.pcap");
}

#[test]
fn nmap_brute_force_ending_in_success() {
    check("c2_bruteforce_nmap_success.pcap");
}

#[test]
fn scanner_over_open_and_closed_ports() {
    check("e_scanner.pcap");
}
