//! Red team: aiming the agents' firewall through `vnc.decisions`. Anything that can write to the
//! topic (a compromised stage, a leaked broker credential, a misconfigured producer) tries to
//! block addresses of its choosing or lift real bans. A real agent with `--enforce` runs in a
//! network namespace on real nftables and reads the decisions from a real tansu broker; the
//! attacks are produced straight onto the topic.
//!
//! - **Forged decision**: unsigned blocks, blocks signed by a key the agent does not know, a
//!   real signed decision with its value changed, a decision signed under the real key id by
//!   another key, and an unsigned unblock of a real ban: none changes the firewall, each is
//!   counted by reason; the properly signed blocks are enforced.
//! - **Short prefix and protected addresses**: signed `0.0.0.0/0`, `::/0` and `10.0.0.0/8`,
//!   loopback (also IPv4-mapped), the agent's own address and its /24, a management network and
//!   an allow-listed address are all refused; an IPv4-mapped address is enforced as IPv4 and an
//!   IPv6 address as its /64; past the cap of active blocks the next block is refused.
//!
//! Needs root and `nft` (Debian: nftables); prints why and passes without running otherwise.

use std::time::Duration;

use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Output, Producer};
use chrono::Utc;
use schemas::topics::DECISIONS;
use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope};
use testkit::netns::Lab;
use testkit::{wait_for, Broker};
use trust::DecisionSigner;

mod enforcing;
use enforcing::{blocked, elements, privileged_lab, start_agent};

const AGENT: usize = 0;
/// Where the agent in the namespace serves `/metrics`.
const METRICS_PORT: u16 = 9464;

fn decision(id: &str, action: DecisionAction, value: &str) -> Decision {
    let now = Utc::now();
    Decision {
        decision_id: id.to_string(),
        action,
        origin: DecisionOrigin::Analyst,
        scope: if value.contains('/') {
            DecisionScope::Cidr
        } else {
            DecisionScope::Ip
        },
        value: value.to_string(),
        duration_secs: 300,
        created_at: now,
        until: now + chrono::Duration::seconds(300),
        reason: "red team".into(),
        threat_id: None,
        target_decision_id: None,
        created_by: Some("red-team".into()),
        dry_run: false,
        key_id: None,
        signature: None,
    }
}

fn block(id: &str, value: &str) -> Decision {
    decision(id, DecisionAction::Block, value)
}

/// A broker on the lab's bridge with its topics, and a bus to it.
struct Topic {
    _broker: Broker,
    brokers: String,
    bus: KafkaBus,
    rt: tokio::runtime::Runtime,
}

impl Topic {
    fn start(lab: &Lab) -> Topic {
        let broker = Broker::start_on(&lab.host_ip()).expect("tansu");
        let brokers = broker.brokers();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers)).expect("bus");
        rt.block_on(bus.ensure_topics(schemas::topics::ALL))
            .expect("topics");
        Topic {
            _broker: broker,
            brokers,
            bus,
            rt,
        }
    }

    /// Produces `decisions` onto `vnc.decisions` as they are, keyed by decision id.
    fn produce(&self, decisions: &[Decision]) {
        let records = decisions
            .iter()
            .map(|d| Output::encode(&DECISIONS, d.decision_id.clone(), d).expect("encode"))
            .collect();
        let producer = self.bus.producer().expect("producer");
        self.rt.block_on(producer.send(records)).expect("publish");
    }
}

/// The agent's `vncguard_agent_enforce_refused_total` by reason.
fn refused(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let addr = format!("{}:{METRICS_PORT}", lab.ip(AGENT));
    let text = testkit::http_get(&addr, "/metrics").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix("vncguard_agent_enforce_refused_total{reason=\""))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn total(counts: &std::collections::BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

fn addresses(lab: &Lab, set: &str) -> Vec<String> {
    let mut found: Vec<String> = elements(lab, AGENT, set)
        .into_iter()
        .map(|e| e.address)
        .collect();
    found.sort();
    found
}

#[test]
fn forged_decisions_on_the_topic_are_not_enforced_and_signed_ones_are() {
    let Some(mut lab) = privileged_lab(161, 1) else {
        return;
    };
    let topic = Topic::start(&lab);
    let responder = DecisionSigner::generate(Some("responder")).expect("key");
    let metrics = format!("0.0.0.0:{METRICS_PORT}");
    start_agent(
        &mut lab,
        AGENT,
        &topic.brokers,
        &responder,
        &[("METRICS_ADDR", &metrics)],
        "agent.log",
    );

    let intruder = DecisionSigner::generate(Some("intruder")).expect("key");
    let impostor = DecisionSigner::generate(Some("responder")).expect("key");
    let real_ban = responder.signed(block("real-ban", "10.200.161.106"));
    let altered = Decision {
        value: "10.200.161.104".into(),
        ..responder.signed(block("altered", "10.200.161.103"))
    };
    let lift_real_ban = Decision {
        target_decision_id: Some("real-ban".into()),
        duration_secs: 0,
        ..decision("forged-unblock", DecisionAction::Unblock, "10.200.161.106")
    };
    topic.produce(&[
        block("unsigned", "10.200.161.101"),
        intruder.signed(block("unknown-key", "10.200.161.102")),
        altered,
        impostor.signed(block("impostor", "10.200.161.105")),
        real_ban,
        lift_real_ban,
        responder.signed(block("signed", "10.200.161.107")),
    ]);

    wait_for("five refusals counted", Duration::from_secs(60), || {
        total(&refused(&lab)) >= 5
    });
    wait_for("the signed blocks applied", Duration::from_secs(30), || {
        blocked(&lab, AGENT).len() >= 2
    });
    let counts = refused(&lab);
    println!("refused: {counts:?}");
    assert_eq!(counts.get("unsigned"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("unknown_key"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("forged"), Some(&2), "{counts:?}");
    assert_eq!(
        addresses(&lab, "blocked_v4"),
        ["10.200.161.106", "10.200.161.107"],
        "only the signed blocks, and the real ban survived the forged unblock"
    );
    let log = lab.log("agent.log");
    assert_eq!(
        log.matches("decision refused").count(),
        5,
        "each refusal is logged:\n{log}"
    );
    assert!(log.contains("not configured"), "{log}");
}

#[test]
fn short_prefixes_and_protected_addresses_are_refused_even_when_signed() {
    let Some(mut lab) = privileged_lab(162, 1) else {
        return;
    };
    let topic = Topic::start(&lab);
    let signer = DecisionSigner::generate(Some("api")).expect("key");
    let metrics = format!("0.0.0.0:{METRICS_PORT}");
    // The broker's host (.254) is in the management network.
    start_agent(
        &mut lab,
        AGENT,
        &topic.brokers,
        &signer,
        &[
            ("METRICS_ADDR", &metrics),
            ("MANAGEMENT_NETWORKS", "10.200.162.240/28"),
            ("RESPONSE_ALLOW", "10.200.162.50"),
            ("DECISION_MAX_ACTIVE_BLOCKS", "3"),
        ],
        "agent.log",
    );
    let own = lab.ip(AGENT);
    let refused_values = [
        "0.0.0.0/0",
        "::/0",
        "10.0.0.0/8",
        "127.0.0.1",
        "::ffff:127.0.0.1",
        own.as_str(),
        "10.200.162.0/24",
        "10.200.162.254",
        "10.200.162.50",
    ];
    let mut decisions: Vec<Decision> = refused_values
        .iter()
        .enumerate()
        .map(|(i, value)| signer.signed(block(&format!("refused-{i}"), value)))
        .collect();
    decisions.push(signer.signed(block("mapped", "::ffff:10.200.162.77")));
    decisions.push(signer.signed(block("v6", "2001:db8:7:7::1")));
    topic.produce(&decisions);

    wait_for("nine refusals counted", Duration::from_secs(60), || {
        total(&refused(&lab)) >= 9
    });
    wait_for(
        "the two allowed blocks applied",
        Duration::from_secs(30),
        || !blocked(&lab, AGENT).is_empty() && !elements(&lab, AGENT, "blocked_v6").is_empty(),
    );
    let counts = refused(&lab);
    println!("refused: {counts:?}");
    for (reason, expected) in [
        ("prefix_too_short", 3),
        ("loopback", 2),
        ("own_address", 2),
        ("management_network", 1),
        ("allow_listed", 1),
    ] {
        assert_eq!(counts.get(reason), Some(&expected), "{reason}: {counts:?}");
    }
    // Normalised: the IPv4-mapped address lands in the IPv4 set, the IPv6 one as its /64.
    assert_eq!(addresses(&lab, "blocked_v4"), ["10.200.162.77"]);
    let v6: Vec<_> = elements(&lab, AGENT, "blocked_v6")
        .into_iter()
        .map(|e| (e.address, e.prefix))
        .collect();
    assert_eq!(v6, [("2001:db8:7:7::".to_string(), Some(64))]);

    // The cap: two blocks are in force, so one more fits and the next is refused.
    topic.produce(&[signer.signed(block("third", "10.200.162.78"))]);
    wait_for("the third block applied", Duration::from_secs(30), || {
        blocked(&lab, AGENT).len() == 2
    });
    topic.produce(&[signer.signed(block("fourth", "10.200.162.79"))]);
    wait_for(
        "the block past the cap refused",
        Duration::from_secs(30),
        || refused(&lab).get("block_cap") == Some(&1),
    );
    assert_eq!(
        addresses(&lab, "blocked_v4"),
        ["10.200.162.77", "10.200.162.78"]
    );
    assert!(
        lab.log("agent.log")
            .contains("cap of active blocks is reached"),
        "the cap is alerted in the log"
    );
}
