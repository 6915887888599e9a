//! The enforcer on real nftables, inside a throwaway network namespace: a block puts its
//! source in the set with the time that remains (not the full duration), a dry-run decision
//! changes no rule, an expired decision is skipped, an unblock removes the element and keeps a
//! replayed block out, a CIDR blocks its network, and a quarantine drops that one 4-tuple.
//! Every decision here is signed with the key the enforcer is configured with (the refusals of
//! unsigned and forged ones are in red_team_signing.rs).
//!
//! Needs root (network namespaces) and `nft` (Debian: nftables); prints why and passes without
//! running otherwise.

use std::process::Command;

use std::sync::LazyLock;

use capture_agent::enforce::{Applied, DecisionTrust, Enforcer, HostCommands, SessionIndex, Skip};
use chrono::{Duration, Utc};
use schemas::{
    Decision, DecisionAction, DecisionOrigin, DecisionScope, SessionEvent, SessionEventKind,
    SessionSummary,
};

static SIGNER: LazyLock<trust::DecisionSigner> =
    LazyLock::new(|| trust::DecisionSigner::generate(Some("enforce-test")).expect("key"));

fn trusting_the_test_key() -> DecisionTrust {
    DecisionTrust {
        verifier: SIGNER.verifier(),
        guardrails: trust::Guardrails::default(),
    }
}

/// Applies `decision`, signed, now.
fn apply(enforcer: &mut Enforcer, decision: &Decision) -> Applied {
    enforcer
        .apply(&SIGNER.signed(decision.clone()), Utc::now())
        .expect("nft")
}

struct Namespace(String);

impl Namespace {
    fn create(tag: &str) -> Option<Namespace> {
        let name = format!("vg-enf-{tag}-{}", std::process::id() % 100_000);
        let created = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !created {
            println!("SKIPPED: cannot create a network namespace (root needed)");
            return None;
        }
        let namespace = Namespace(name);
        let nft = Command::new("ip")
            .args(["netns", "exec", &namespace.0, "nft", "list", "tables"])
            .status()
            .is_ok_and(|s| s.success());
        if !nft {
            println!("SKIPPED: nft unusable (apt: nftables)");
            return None;
        }
        Some(namespace)
    }

    fn host(&self) -> HostCommands {
        HostCommands::in_namespace(&self.0)
    }

    /// The elements of `set` as (value, timeout seconds, expires seconds).
    fn elements(&self, set: &str) -> Vec<(serde_json::Value, i64, i64)> {
        let text = self
            .host()
            .run("nft", &["-j", "list", "set", "inet", "vncguard", set], None)
            .expect("list set");
        let json: serde_json::Value = serde_json::from_str(&text).expect("nft JSON");
        json["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .filter_map(|item| item.get("set"))
            .flat_map(|set| set["elem"].as_array().cloned().unwrap_or_default())
            .map(|elem| {
                let elem = &elem["elem"];
                (
                    elem["val"].clone(),
                    elem["timeout"].as_i64().unwrap_or(-1),
                    elem["expires"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn decision(id: &str, action: DecisionAction, scope: DecisionScope, value: &str) -> Decision {
    let created_at = Utc::now() - Duration::seconds(30);
    Decision {
        decision_id: id.to_string(),
        action,
        origin: DecisionOrigin::Automatic,
        scope,
        value: value.to_string(),
        duration_secs: 120,
        created_at,
        until: created_at + Duration::seconds(120),
        reason: "test".into(),
        threat_id: None,
        target_decision_id: None,
        created_by: None,
        dry_run: false,
        key_id: None,
        signature: None,
    }
}

fn block(id: &str, value: &str) -> Decision {
    decision(id, DecisionAction::Block, DecisionScope::Ip, value)
}

#[test]
fn blocks_unblocks_and_skips_on_real_nftables() {
    let Some(ns) = Namespace::create("a") else {
        return;
    };
    let ports = "5900-5905".parse().unwrap();
    let mut enforcer = Enforcer::start(
        ns.host(),
        &ports,
        SessionIndex::new(16),
        trusting_the_test_key(),
    )
    .expect("enforcer starts");

    // A block created 30 s ago for 120 s: the element lives ~90 s, not 120.
    let first = block("d1", "10.200.90.7");
    assert_eq!(apply(&mut enforcer, &first), Applied::Blocked);
    let elements = ns.elements("blocked_v4");
    assert_eq!(elements.len(), 1, "{elements:?}");
    let (value, timeout, expires) = &elements[0];
    assert_eq!(value, "10.200.90.7");
    assert!((85..=90).contains(timeout), "timeout {timeout}");
    assert!(*expires > 0 && expires <= timeout, "expires {expires}");

    // Dry run and expired decisions change no rule.
    let before: Vec<_> = ns.elements("blocked_v4").into_iter().map(|e| e.0).collect();
    let dry = Decision {
        dry_run: true,
        ..block("d2", "10.200.90.8")
    };
    assert_eq!(apply(&mut enforcer, &dry), Applied::Skipped(Skip::DryRun));
    let expired = Decision {
        until: Utc::now() - Duration::seconds(1),
        ..block("d3", "10.200.90.9")
    };
    assert_eq!(
        apply(&mut enforcer, &expired),
        Applied::Skipped(Skip::Expired)
    );
    let after: Vec<_> = ns.elements("blocked_v4").into_iter().map(|e| e.0).collect();
    assert_eq!(before, after);

    // A CIDR blocks its network.
    let network = decision(
        "d4",
        DecisionAction::Block,
        DecisionScope::Cidr,
        "10.201.3.9/24",
    );
    assert_eq!(apply(&mut enforcer, &network), Applied::Blocked);
    assert!(ns
        .elements("blocked_v4")
        .iter()
        .any(|e| e.0 == serde_json::json!({"prefix": {"addr": "10.201.3.0", "len": 24}})));

    // Unblock removes the element; the block read again later stays lifted.
    let unblock = Decision {
        target_decision_id: Some("d1".into()),
        ..decision(
            "u1",
            DecisionAction::Unblock,
            DecisionScope::Ip,
            "10.200.90.7",
        )
    };
    assert_eq!(apply(&mut enforcer, &unblock), Applied::Unblocked);
    assert!(!ns
        .elements("blocked_v4")
        .iter()
        .any(|e| e.0 == "10.200.90.7"));
    assert_eq!(apply(&mut enforcer, &first), Applied::Skipped(Skip::Lifted));
    // An unblock of an element that is not there succeeds as well.
    assert_eq!(apply(&mut enforcer, &unblock), Applied::Unblocked);
}

#[test]
fn a_quarantine_drops_one_connection_without_blocking_its_source() {
    let Some(ns) = Namespace::create("q") else {
        return;
    };
    let sessions = SessionIndex::new(16);
    let summary = SessionSummary::new(
        "session-42".into(),
        "agent".into(),
        "10.200.91.2:45000".parse().unwrap(),
        "10.200.91.1:5900".parse().unwrap(),
        Utc::now(),
    );
    sessions.track(&SessionEvent::new(
        SessionEventKind::Started,
        0,
        Utc::now(),
        summary,
    ));
    let ports = "5900".parse().unwrap();
    let mut enforcer = Enforcer::start(ns.host(), &ports, sessions, trusting_the_test_key())
        .expect("enforcer starts");
    let quarantine = decision(
        "q1",
        DecisionAction::Quarantine,
        DecisionScope::Session,
        "session-42",
    );
    assert_eq!(apply(&mut enforcer, &quarantine), Applied::Quarantined);
    let tuples = ns.elements("quarantine_v4");
    assert_eq!(tuples.len(), 1);
    assert_eq!(
        tuples[0].0,
        serde_json::json!({"concat": ["10.200.91.2", 45000, "10.200.91.1", 5900]})
    );
    assert!(
        ns.elements("blocked_v4").is_empty(),
        "the source is not blocked"
    );
    let elsewhere = decision(
        "q2",
        DecisionAction::Quarantine,
        DecisionScope::Session,
        "another-agent-s-session",
    );
    assert_eq!(
        apply(&mut enforcer, &elsewhere),
        Applied::Skipped(Skip::UnknownSession)
    );
}
