//! The threat rules on the lab's real captures: brute force, scanning, a server without
//! authentication and clipboard exfiltration are found where they happened, and the normal
//! sessions raise none of them.

mod support;

use std::collections::BTreeMap;

use schemas::{Severity, Threat};
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::{banded_score, RiskConfig};
use scorer::stage::ScoringStage;

/// Every threat published while scoring every event of the capture, by type.
fn threats_of(capture: &str) -> BTreeMap<String, Vec<Threat>> {
    let mut stage = ScoringStage::new(
        ModelStore::new(DEFAULT_MODEL_NAME),
        RiskConfig::default(),
        1000,
    );
    let mut by_type: BTreeMap<String, Vec<Threat>> = BTreeMap::new();
    for session in support::enrich_capture(capture) {
        let (scored, threats) = stage.score_session(session);
        assert_eq!(scored.model_version, "none");
        assert!(scored.reasons.iter().any(|r| r.rule == "no_model"));
        assert!((0.0..=100.0).contains(&scored.risk_score));
        for threat in threats {
            by_type
                .entry(threat.threat_type.clone())
                .or_default()
                .push(threat);
        }
    }
    by_type
}

const ATTACK_TYPES: &[&str] = &[
    "brute_force",
    "password_spraying",
    "scanning",
    "no_authentication",
    "auth_bypass_attempt",
    "clipboard_exfiltration",
    "file_transfer",
];

#[test]
fn brute_force_captures_yield_brute_force_naming_the_source() {
    for capture in ["c_bruteforce_vncauth", "c2_bruteforce_nmap_success"] {
        let threats = threats_of(capture);
        let brute = threats
            .get("brute_force")
            .unwrap_or_else(|| panic!("{capture}: no brute force in {:?}", threats.keys()));
        assert!(
            brute.iter().all(|t| t.source_ip == "127.0.0.1"),
            "{capture}"
        );
        assert!(brute.iter().all(|t| t.evidence["source_ip"] == "127.0.0.1"));
        // Real logins over completed handshakes: verified evidence, enough for a block.
        assert!(brute.iter().any(|t| t.verified), "{capture}");
        assert!(brute.iter().all(|t| t.evidence.contains_key("verified")));
    }
    // nmap found the password: the login after the failures is the critical one.
    let c2 = threats_of("c2_bruteforce_nmap_success");
    assert!(c2["brute_force"]
        .iter()
        .any(|t| t.severity == Severity::Critical));
    // The server's too-many-failures refusals are brute force too.
    let c = threats_of("c_bruteforce_vncauth");
    assert!(c["brute_force"]
        .iter()
        .any(|t| t.evidence["auth_result"] == "too_many"));
}

#[test]
fn scanner_capture_yields_a_scan() {
    let threats = threats_of("e_scanner");
    let scans = threats.get("scanning").expect("scan threat");
    assert!(scans.iter().all(|t| t.source_ip == "127.0.0.1"));
    // The scanner connected: its probes completed verified handshakes, so the scan may block.
    assert!(scans.iter().any(|t| t.verified), "{scans:#?}");
}

#[test]
fn noauth_capture_yields_server_without_authentication_once() {
    let threats = threats_of("d_noauth_session");
    let noauth = threats.get("no_authentication").expect("no-auth threat");
    // Three events of one session: one threat, not repeated.
    assert_eq!(noauth.len(), 1, "{noauth:?}");
    assert_eq!(noauth[0].target_port, Some(5901));
}

#[test]
fn clipboard_captures_yield_exfiltration() {
    for capture in ["b_clipboard_classic", "b2_clipboard_extended_tigervnc"] {
        let threats = threats_of(capture);
        assert!(
            threats.contains_key("clipboard_exfiltration"),
            "{capture}: {:?}",
            threats.keys()
        );
    }
}

#[test]
fn normal_sessions_yield_no_attack() {
    for capture in support::NORMAL {
        let threats = threats_of(capture);
        for attack in ATTACK_TYPES {
            assert!(
                !threats.contains_key(*attack),
                "{capture}: {attack} {:?}",
                threats[*attack]
            );
        }
    }
}

#[test]
fn every_scored_session_explains_its_components() {
    let mut stage = ScoringStage::new(
        ModelStore::new(DEFAULT_MODEL_NAME),
        RiskConfig::default(),
        1000,
    );
    for session in support::final_sessions("c_bruteforce_vncauth") {
        let (scored, _) = stage.score_session(session);
        let c = &scored.components;
        let weights = [0.3, 0.25, 0.2, 0.15, 0.1];
        let composite = weights[0] * c.anomaly
            + weights[1] * c.threat
            + weights[2] * c.behavioral
            + weights[3] * c.geographic
            + weights[4] * c.temporal;
        assert!((c.composite - composite).abs() < 1e-9);
        assert_eq!(c.weights, weights);
        // The score is the composite in the band of the worst finding, which is named.
        let severity = c.floor.as_deref().map(|floor| match floor {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            other => panic!("floor {other}"),
        });
        assert!((scored.risk_score - banded_score(composite, severity)).abs() < 1e-9);
        if let Some(rule) = &c.floor_rule {
            assert!(scored.reasons.iter().any(|r| &r.rule == rule));
        }
        assert_eq!(c.anomaly_status.as_deref(), Some("no model"));
        if c.threat > 0.0 {
            assert!(scored
                .reasons
                .iter()
                .any(|r| r.component == "threat" && r.score > 0.0));
        }
    }
}
