//! The detection bench's recordings and the bundled normal samples, as `record.sh` made them,
//! read by the capture agent: every session has its truth in labels.tsv (and every label names
//! a session), the capture agent parses every one without losing its place, and the set holds
//! what the bench reports on: at least 30 normal authenticated sessions, each attack type and
//! each insider anomaly.

use std::collections::BTreeSet;
use std::path::PathBuf;

use capture_agent::config::AgentConfig;
use detection_bench::{labelled_recordings, read_labels, Class, LabelError};
use schemas::{AuthResult, SessionEvent};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recordings() -> PathBuf {
    repo().join("benches/detection/recordings")
}

#[test]
fn every_recorded_session_has_its_label_and_parses() {
    let labels = read_labels(&recordings().join("labels.tsv")).unwrap();
    let recordings = labelled_recordings(&recordings(), &labels, &AgentConfig::default()).unwrap();
    let sessions: Vec<_> = recordings.iter().flat_map(|r| &r.sessions).collect();
    for recording in &recordings {
        assert_eq!(recording.parse_errors, 0, "{}", recording.path.display());
    }
    for session in &sessions {
        assert!(
            !session.desynced,
            "{} {}: the capture agent lost the RFB stream",
            session.capture, session.client_ip
        );
    }

    let benign_ok = sessions
        .iter()
        .filter(|s| s.label.class == Class::Benign && s.auth_result == AuthResult::Ok)
        .count();
    assert!(benign_ok >= 30, "{benign_ok} normal authenticated sessions");
    // A benign label means a user at work: every one of its sessions logged in.
    for session in sessions.iter().filter(|s| s.label.class == Class::Benign) {
        assert_eq!(session.auth_result, AuthResult::Ok, "{session:?}");
    }
    // Insider anomalies come after a correct login.
    for session in sessions.iter().filter(|s| s.label.class == Class::Insider) {
        assert_eq!(session.auth_result, AuthResult::Ok, "{session:?}");
    }
    let kinds = |class| -> BTreeSet<&str> {
        sessions
            .iter()
            .filter(|s| s.label.class == class)
            .map(|s| s.label.kind.as_str())
            .collect()
    };
    assert_eq!(
        kinds(Class::Attack),
        BTreeSet::from([
            "auth_bypass",
            "brute_force",
            "brute_force_success",
            "no_auth",
            "password_spray",
            "scan"
        ])
    );
    assert_eq!(
        kinds(Class::Insider),
        BTreeSet::from([
            "bulk_clipboard",
            "first_time_source",
            "heavy",
            "long",
            "off_hours"
        ])
    );
    // A brute force that ends in a correct guess holds the guess.
    for capture in sessions
        .iter()
        .filter(|s| s.label.kind == "brute_force_success")
        .map(|s| &s.capture)
        .collect::<BTreeSet<_>>()
    {
        let outcomes: BTreeSet<&str> = sessions
            .iter()
            .filter(|s| &s.capture == capture)
            .map(|s| s.auth_result.as_str())
            .collect();
        assert!(
            outcomes.contains(AuthResult::Ok.as_str())
                && outcomes.contains(AuthResult::Failed.as_str()),
            "{capture}: {outcomes:?}"
        );
    }
}

#[test]
fn a_session_without_a_label_is_refused() {
    let mut labels = read_labels(&recordings().join("labels.tsv")).unwrap();
    let dropped = labels.remove(0);
    match labelled_recordings(&recordings(), &labels, &AgentConfig::default()) {
        Err(LabelError::Unlabelled {
            capture, client_ip, ..
        }) => assert_eq!((capture, client_ip), (dropped.capture, dropped.client_ip)),
        Err(other) => panic!("expected an unlabelled session, got {other}"),
        Ok(recordings) => panic!("{} recordings read without {dropped:?}", recordings.len()),
    }
}

#[test]
fn bundled_samples_hold_thirty_normal_authenticated_sessions() {
    let path = repo().join("samples/pcaps/normal_office_sessions.pcap");
    let mut events: Vec<SessionEvent> = Vec::new();
    let stats = capture_agent::analyze_file(&path, &AgentConfig::default(), &mut events).unwrap();
    assert_eq!(stats.parse_errors, 0);
    let mut ended = std::collections::BTreeMap::new();
    for event in events {
        ended.insert(event.summary.session_id.clone(), event.summary);
    }
    assert!(ended.len() >= 30, "{} sessions", ended.len());
    for summary in ended.values() {
        assert_eq!(summary.auth_result, AuthResult::Ok, "{summary:?}");
        assert!(!summary.desynced, "{summary:?}");
    }
    let clients: BTreeSet<&str> = ended.values().map(|s| s.client_ip.as_str()).collect();
    assert!(clients.len() >= 3, "{clients:?}");
}
