//! The response policy on threats: the allow-list is never blocked, dry run records decisions
//! marked dry_run, the second ban of a source lasts factor times the first up to the maximum, a
//! replayed threat decides nothing new, a second threat of a blocked source extends its block,
//! and ban histories rebuilt from the decisions topic (on tansu) escalate the next ban. The
//! stage dead-letters undecodable threats and goes on, and signs every decision it publishes.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::kafka::KafkaBus;
use bus::{pipeline, Bus, BusArgs, Consumer, Output, PipelineOptions, Producer};
use chrono::{TimeZone, Utc};
use responder::policy::{parse_cidr_list, BanIncrement, BlockRule};
use responder::{restore_history, Policy, Responder, ResponderStage, Verdict};
use schemas::topics::{DEAD_LETTERS, DECISIONS, THREATS};
use schemas::{Decision, DecisionAction, Severity, Threat, Timestamp};

const ATTACKER: &str = "198.51.100.23";

fn at(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_750_000_000 + secs, 0).unwrap()
}

fn threat(id: &str, source: &str, threat_type: &str, severity: Severity) -> Threat {
    Threat {
        threat_id: id.to_string(),
        session_id: format!("session-{id}"),
        threat_type: threat_type.to_string(),
        severity,
        description: "7 failed logins".to_string(),
        source_ip: source.to_string(),
        target_ip: Some("10.0.0.5".into()),
        target_port: Some(5900),
        risk_score: 85.0,
        ml_confidence: None,
        evidence: BTreeMap::new(),
        model_version: "test".into(),
        detected_at: at(0),
        verified: true,
    }
}

fn brute_force(id: &str, source: &str) -> Threat {
    threat(id, source, "brute_force", Severity::High)
}

fn policy(ban_secs: i64, max_secs: i64) -> Policy {
    Policy {
        rules: vec![BlockRule {
            threat_type: "brute_force".into(),
            min_severity: Severity::High,
            ban_secs,
        }],
        increment: BanIncrement {
            enabled: true,
            factor: 2.0,
            max_secs,
        },
        allow: parse_cidr_list("10.9.0.0/16, 192.0.2.7").unwrap(),
        ..Policy::default()
    }
}

fn block(verdict: Verdict) -> Decision {
    match verdict {
        Verdict::Block(decision) => decision,
        other => panic!("expected a new block, got {other:?}"),
    }
}

#[test]
fn an_allow_listed_source_is_never_blocked_however_it_behaves() {
    let mut responder = Responder::new(Policy {
        rules: Policy::default().rules,
        ..policy(60, 600)
    });
    let kinds = [
        ("brute_force", Severity::Critical),
        ("password_spraying", Severity::Critical),
        ("scanning", Severity::High),
        ("auth_bypass_attempt", Severity::Critical),
    ];
    for (n, (kind, severity)) in kinds.iter().cycle().take(40).enumerate() {
        for source in ["192.0.2.7", "10.9.44.1"] {
            let verdict = responder.decide(
                &threat(&format!("t{n}-{source}"), source, kind, *severity),
                at(n as i64),
            );
            assert_eq!(verdict, Verdict::AllowListed, "{kind} from {source}");
        }
    }
    assert_eq!(responder.bans("192.0.2.7"), 0);
    // The same behaviour from outside the allow-list blocks.
    let decision = block(responder.decide(&brute_force("outside", "10.10.0.1"), at(0)));
    assert_eq!(decision.value, "10.10.0.1");
}

#[test]
fn dry_run_records_a_decision_marked_dry_run() {
    let mut responder = Responder::new(Policy {
        dry_run: true,
        ..policy(60, 600)
    });
    let decision = block(responder.decide(&brute_force("t1", ATTACKER), at(0)));
    assert!(decision.dry_run);
    assert_eq!(decision.action, DecisionAction::Block);
    assert_eq!(decision.value, ATTACKER);
    assert_eq!(decision.until, at(60));
}

#[test]
fn the_second_ban_is_factor_times_the_first_up_to_the_maximum() {
    let mut responder = Responder::new(policy(100, 350));
    let mut durations = Vec::new();
    let mut now = 0;
    for n in 0..4 {
        let decision = block(responder.decide(&brute_force(&format!("t{n}"), ATTACKER), at(now)));
        assert_eq!(decision.until, at(now + decision.duration_secs));
        durations.push(decision.duration_secs);
        // The next offence comes after this ban expired.
        now += decision.duration_secs + 1;
    }
    assert_eq!(durations, [100, 200, 350, 350]);
    assert_eq!(responder.bans(ATTACKER), 4);
    // Other sources start over.
    let other = block(responder.decide(&brute_force("x", "203.0.113.9"), at(now)));
    assert_eq!(other.duration_secs, 100);
}

#[test]
fn a_replayed_threat_creates_no_second_decision() {
    let mut responder = Responder::new(policy(100, 1000));
    let first = block(responder.decide(&brute_force("t1", ATTACKER), at(0)));
    // The same threat again, even after its ban expired, and with a changed severity.
    assert_eq!(
        responder.decide(&brute_force("t1", ATTACKER), at(5)),
        Verdict::AlreadyDecided
    );
    let mut updated = brute_force("t1", ATTACKER);
    updated.severity = Severity::Critical;
    assert_eq!(responder.decide(&updated, at(500)), Verdict::AlreadyDecided);
    assert_eq!(responder.bans(ATTACKER), 1);
    // A fresh responder deciding the same threat gives the same decision id.
    let mut other = Responder::new(policy(100, 1000));
    let again = block(other.decide(&brute_force("t1", ATTACKER), at(0)));
    assert_eq!(again.decision_id, first.decision_id);
}

#[test]
fn a_new_threat_of_a_blocked_source_extends_its_block() {
    let mut responder = Responder::new(policy(100, 1000));
    let first = block(responder.decide(&brute_force("t1", ATTACKER), at(0)));
    let extended = match responder.decide(&brute_force("t2", ATTACKER), at(30)) {
        Verdict::Extend(decision) => decision,
        other => panic!("expected an extension, got {other:?}"),
    };
    assert_eq!(extended.decision_id, first.decision_id);
    assert_eq!(extended.until, at(130));
    assert_eq!(extended.duration_secs, 130);
    assert_eq!(responder.bans(ATTACKER), 1, "an extension is not a new ban");
}

#[test]
fn below_the_rule_s_severity_or_without_a_rule_nothing_is_decided() {
    let mut responder = Responder::new(policy(100, 1000));
    let medium = threat("t1", ATTACKER, "brute_force", Severity::Medium);
    assert_eq!(responder.decide(&medium, at(0)), Verdict::NoRule);
    let other = threat("t2", ATTACKER, "high_risk", Severity::Critical);
    assert_eq!(responder.decide(&other, at(0)), Verdict::NoRule);
    let bad = threat("t3", "not-an-ip", "brute_force", Severity::High);
    assert_eq!(responder.decide(&bad, at(0)), Verdict::InvalidSource);
}

#[test]
fn an_unverified_threat_never_blocks_and_is_counted() {
    let mut responder = Responder::new(Policy {
        rules: Policy::default().rules,
        ..policy(60, 600)
    });
    let refused = || {
        telemetry::render()
            .lines()
            .find(|l| {
                l.starts_with("vncguard_responder_verdicts_total") && l.contains("\"unverified\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = refused();
    // Every threat type the default policy blocks, at the highest severity, unverified.
    for (n, kind) in [
        "brute_force",
        "password_spraying",
        "scanning",
        "auth_bypass_attempt",
    ]
    .into_iter()
    .enumerate()
    {
        let mut forged = threat(&format!("forged-{n}"), ATTACKER, kind, Severity::Critical);
        forged.verified = false;
        assert_eq!(
            responder.decide(&forged, at(n as i64)),
            Verdict::Unverified,
            "{kind}"
        );
    }
    assert!(refused() >= before + 4, "each refusal is counted");
    assert_eq!(
        responder.bans(ATTACKER),
        0,
        "no ban history from forged evidence"
    );
    // The same source with verified evidence is blocked, as its first ban (the default
    // brute-force ban, not an escalated one).
    let decision = block(responder.decide(&brute_force("real", ATTACKER), at(10)));
    assert_eq!(decision.duration_secs, 3_600);
}

async fn read_all(consumer: &mut impl Consumer, want: usize) -> Vec<bus::Record> {
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < want && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .next_batch(100, Duration::from_millis(100))
            .await
            .unwrap();
        consumer.store(&batch);
        records.extend(batch);
    }
    records
}

#[tokio::test]
async fn the_stage_publishes_decisions_and_a_restart_remembers_the_bans() {
    let broker = testkit::Broker::start().unwrap();
    let bus = KafkaBus::new(&BusArgs::for_brokers(&broker.brokers())).unwrap();
    bus.ensure_topics(&[THREATS, DECISIONS, DEAD_LETTERS])
        .await
        .unwrap();
    let producer = bus.producer().unwrap();
    let signer = trust::DecisionSigner::generate(Some("responder-test")).unwrap();
    let verifier = signer.verifier();
    let run_stage = |responder: Responder| {
        let consumer = bus
            .consumer("responder", &[THREATS.name, DECISIONS.name])
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pipeline::run(
            consumer,
            bus.producer().unwrap(),
            ResponderStage::new(responder, signer.clone()),
            PipelineOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    };

    let (stop, task) = run_stage(Responder::new(policy(1, 10)));
    let first = brute_force("t1", ATTACKER);
    producer
        .send(vec![
            Output::encode(&THREATS, ATTACKER, &first).unwrap(),
            Output::new(THREATS.name, ATTACKER, b"not a threat".to_vec()),
            Output::encode(&THREATS, ATTACKER, &first).unwrap(),
        ])
        .await
        .unwrap();
    let mut decisions_out = bus.consumer("check", &[DECISIONS.name]).unwrap();
    let records = read_all(&mut decisions_out, 1).await;
    let mut dead = bus.consumer("check-dlq", &[DEAD_LETTERS.name]).unwrap();
    let dead_letters = read_all(&mut dead, 1).await;
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].payload, b"not a threat");
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(records.len(), 1, "the replayed threat decided nothing");
    let decision: Decision = schemas::decode(&records[0].payload).unwrap();
    assert_eq!(
        records[0].key.as_deref(),
        Some(decision.decision_id.as_bytes())
    );
    assert_eq!(decision.duration_secs, 1);
    assert_eq!(verifier.verify(&decision), Ok("responder-test"));

    // A new responder rebuilds the history from the decisions topic: the next ban is the
    // second of this source.
    let mut restarted = Responder::new(policy(1, 10));
    let read = restore_history(&bus, &mut restarted, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(read, 1);
    assert_eq!(restarted.bans(ATTACKER), 1);
    let second = block(restarted.decide(&brute_force("t2", ATTACKER), Utc::now()));
    assert_eq!(second.duration_secs, 2);
    assert_eq!(
        restarted.decide(&first, Utc::now()),
        Verdict::AlreadyDecided,
        "the rebuilt history knows the decided threat"
    );
}
