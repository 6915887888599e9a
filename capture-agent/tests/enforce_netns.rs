//! Automated response end to end in network namespaces. A VNC server namespace runs TigerVNC
//! `Xvnc` (VncAuth) and the capture agent with `--enforce`; an attacker namespace brute-forces
//! the password with `vncdo`; a normal client namespace connects too. The agent's events go
//! through the real enricher, scorer and responder stages (in this process, on tansu); the
//! responder's brute-force decision (an 8 s ban) reaches the agent, which blocks the attacker
//! with nftables: the attacker cannot open a TCP connection to the VNC port, the normal client
//! can, and once the ban expires in the kernel the attacker can connect again.
//!
//! The restart test kills an enforcing agent while a ban is in force, empties the set (as a
//! reboot would) and starts the agent again: the ban is back with the time that remained, not a
//! fresh full one.
//!
//! The namespaces hang off a bridge that has an address on this host, where tansu listens, so
//! the agent inside a namespace and the stages here reach the same broker (`testkit::netns::Lab`,
//! `testkit::Broker::start_on`). Needs root, `nft`,
//! and for the first test `Xvnc`, `vncpasswd` and `vncdo` (`$VNCDO`); each test prints why and
//! passes without running when something is missing.

use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{pipeline, Bus, BusArgs, Consumer, Output, PipelineOptions, Producer, Stage};
use enricher::{Enricher, EnricherConfig, EnricherStage, GeoDatabases, KafkaHistory, Reputation};
use responder::policy::{BlockRule, Policy};
use responder::{Responder, ResponderStage};
use schemas::topics::{
    AGENT_HEARTBEATS, DECISIONS, MODELS, SESSIONS_ENRICHED, SESSIONS_RAW, THREATS,
};
use schemas::{AgentHeartbeat, Decision, DecisionAction, DecisionOrigin, DecisionScope, Severity};
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::RiskConfig;
use scorer::stage::ScoringStage;
use testkit::netns::{VncSession, VncTools};
use testkit::{wait_for, Broker};

mod enforcing;
use enforcing::{blocked, is_blocked, privileged_lab, start_agent};

const PASSWORD: &str = "secret12";
const BAN_SECS: i64 = 8;

/// Runs `stage` on `bus` from `inputs`, until the test ends.
fn spawn_stage<S: Stage + 'static>(
    rt: &tokio::runtime::Runtime,
    bus: &KafkaBus,
    group: &str,
    inputs: &[&str],
    stage: S,
) {
    let consumer = bus.consumer(group, inputs).expect("consumer");
    let producer = bus.producer().expect("producer");
    let options = PipelineOptions {
        batch_size: 50,
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    rt.spawn(pipeline::run(
        consumer,
        producer,
        stage,
        options,
        std::future::pending(),
    ));
}

/// Every record of `topic` so far (a group of its own, from the beginning).
fn read_topic(rt: &tokio::runtime::Runtime, bus: &KafkaBus, topic: &str) -> Vec<bus::Record> {
    static READERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let group = format!(
        "enforce-reader-{}",
        READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    rt.block_on(async {
        let mut consumer = bus.consumer(&group, &[topic]).expect("consumer");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let batch = consumer
                .next_batch(500, Duration::from_secs(2))
                .await
                .expect("consume");
            // Heartbeats never stop coming: the deadline ends the read too.
            let quiet = batch.is_empty() && !records.is_empty();
            if quiet || tokio::time::Instant::now() > deadline {
                records.extend(batch);
                return records;
            }
            records.extend(batch);
        }
    })
}

fn decisions_for(rt: &tokio::runtime::Runtime, bus: &KafkaBus, source: &str) -> Vec<Decision> {
    read_topic(rt, bus, DECISIONS.name)
        .iter()
        .filter_map(|r| schemas::decode::<Decision>(&r.payload).ok())
        .filter(|d| d.value == source)
        .collect()
}

#[test]
fn a_brute_force_is_blocked_by_the_agent_and_the_ban_expires() {
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    const SERVER: usize = 0;
    const ATTACKER: usize = 1;
    const NORMAL: usize = 2;
    let Some(mut lab) = privileged_lab(81, 3) else {
        return;
    };
    let (server_ip, attacker_ip) = (lab.ip(SERVER), lab.ip(ATTACKER));
    let broker = Broker::start_on(&lab.host_ip()).expect("tansu");
    let brokers = broker.brokers();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let args = BusArgs::for_brokers(&brokers);
    let bus = KafkaBus::new(&args).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");

    // The VNC server with a known password.
    let password_file = lab.vnc_password_file(&tools.vncpasswd, PASSWORD);
    let display = 300 + std::process::id() % 300;
    lab.start_vnc_server(SERVER, &tools.xvnc, &password_file, display);
    let signer = trust::DecisionSigner::generate(Some("responder")).expect("key");
    start_agent(&mut lab, SERVER, &brokers, &signer, &[], "agent.log");

    // The pipeline: enricher → scorer → responder (brute force of high severity: 8 s).
    let geo = std::sync::Arc::new(GeoDatabases::empty());
    let enricher = Enricher::new(geo, Reputation::default(), EnricherConfig::default());
    let history = KafkaHistory::new(&args).expect("history");
    let _guard = rt.enter();
    spawn_stage(
        &rt,
        &bus,
        "enforce-enricher",
        &[SESSIONS_RAW.name],
        EnricherStage::new(enricher, history),
    );
    spawn_stage(
        &rt,
        &bus,
        "enforce-scorer",
        &[SESSIONS_ENRICHED.name, MODELS.name],
        ScoringStage::new(
            ModelStore::new(DEFAULT_MODEL_NAME),
            RiskConfig::default(),
            1_000,
        ),
    );
    let policy = Policy {
        rules: vec![BlockRule {
            threat_type: "brute_force".into(),
            min_severity: Severity::High,
            ban_secs: BAN_SECS,
        }],
        ..Policy::default()
    };
    spawn_stage(
        &rt,
        &bus,
        "enforce-responder",
        &[THREATS.name, DECISIONS.name],
        ResponderStage::new(Responder::new(policy), signer),
    );

    // The normal client logs in.
    let session = VncSession {
        server: &server_ip,
        password: PASSWORD,
        limit: Duration::from_secs(30),
    };
    let login = lab.vnc_client(NORMAL, &tools.vncdo, session, &["pause", "0.2"]);
    assert!(login.is_ok(), "normal login: {login:?}");

    // The attacker guesses until the agent blocks it.
    let started = Instant::now();
    let mut attempts = 0;
    while !is_blocked(&lab, SERVER, &attacker_ip) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no block after {attempts} attempts; agent log:\n{}",
            lab.log("agent.log")
        );
        if attempts < 12 {
            let guess = VncSession {
                password: &format!("wrong{attempts}"),
                limit: Duration::from_secs(10),
                ..session
            };
            let result = lab.vnc_client(ATTACKER, &tools.vncdo, guess, &["pause", "0.1"]);
            assert!(result.is_err(), "a wrong password was accepted");
            attempts += 1;
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let blocked_at = chrono::Utc::now();
    println!("blocked after {attempts} failed logins");

    assert!(
        !lab.can_connect(ATTACKER, &server_ip, 5900),
        "the blocked attacker still opens a TCP connection"
    );
    assert!(
        lab.can_connect(NORMAL, &server_ip, 5900),
        "the normal client is blocked too"
    );

    // The ban expires in the kernel: the attacker connects again after `until`.
    wait_for("the ban to expire", Duration::from_secs(90), || {
        lab.can_connect(ATTACKER, &server_ip, 5900)
    });
    let reconnected_at = chrono::Utc::now();
    let decisions = decisions_for(&rt, &bus, &attacker_ip);
    for decision in &decisions {
        assert_eq!(decision.action, DecisionAction::Block);
        assert_eq!(decision.origin, DecisionOrigin::Automatic);
        assert!(!decision.dry_run);
        assert!(decision.reason.contains("brute_force"), "{decision:?}");
    }
    // Threats of the attacker's sessions still in the pipeline when a ban ends raise the next,
    // escalated ban; a session after the last ban (the probe) may too. The bans decided before
    // the attacker got back in: one at a time, each later one at least twice as long, and the
    // attacker in again once the last one ended (not before, and not much after).
    let mut bans: Vec<Decision> = Vec::new();
    for decision in decisions
        .into_iter()
        .filter(|d| d.created_at < reconnected_at)
    {
        match bans
            .iter_mut()
            .find(|b| b.decision_id == decision.decision_id)
        {
            Some(ban) if decision.until > ban.until => *ban = decision,
            Some(_) => {}
            None => bans.push(decision),
        }
    }
    bans.sort_by_key(|b| b.created_at);
    println!(
        "bans: {:?}",
        bans.iter().map(|b| b.duration_secs).collect::<Vec<_>>()
    );
    // The first ban, perhaps extended by the same burst's later threats.
    assert!(
        (BAN_SECS..2 * BAN_SECS).contains(&bans[0].duration_secs),
        "{bans:?}"
    );
    for pair in bans.windows(2) {
        assert!(
            pair[1].created_at >= pair[0].until,
            "two blocks of one source at a time: {bans:?}"
        );
        assert!(
            pair[1].duration_secs >= 2 * BAN_SECS,
            "a repeat offence escalates: {bans:?}"
        );
    }
    let until = bans.last().expect("a ban").until;
    assert!(
        reconnected_at >= until - chrono::Duration::milliseconds(1_500),
        "the attacker got back in at {reconnected_at} before the ban's end {until}"
    );
    assert!(
        reconnected_at <= until + chrono::Duration::seconds(6),
        "the ban ended at {until} but the attacker got in only at {reconnected_at}"
    );
    assert!(blocked_at < until);

    let heartbeats: Vec<AgentHeartbeat> = read_topic(&rt, &bus, AGENT_HEARTBEATS.name)
        .iter()
        .filter_map(|r| schemas::decode(&r.payload).ok())
        .collect();
    assert!(
        heartbeats.iter().any(|h| h.enforcing),
        "heartbeats say enforcing: {heartbeats:?}"
    );
}

#[test]
fn a_restarted_agent_restores_the_ban_with_its_remaining_time() {
    const SERVER: usize = 0;
    let Some(mut lab) = privileged_lab(82, 1) else {
        return;
    };
    let broker = Broker::start_on(&lab.host_ip()).expect("tansu");
    let brokers = broker.brokers();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers)).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");
    let signer = trust::DecisionSigner::generate(Some("api")).expect("key");
    let agent = start_agent(&mut lab, SERVER, &brokers, &signer, &[], "agent-1.log");

    let source = "10.200.82.77";
    let now = chrono::Utc::now();
    let full = 120;
    let decision = Decision {
        decision_id: "restart-test-ban".into(),
        action: DecisionAction::Block,
        origin: DecisionOrigin::Analyst,
        scope: DecisionScope::Ip,
        value: source.into(),
        duration_secs: full,
        created_at: now,
        until: now + chrono::Duration::seconds(full),
        reason: "restart test".into(),
        threat_id: None,
        target_decision_id: None,
        created_by: Some("test".into()),
        dry_run: false,
        key_id: None,
        signature: None,
    };
    let decision = signer.signed(decision);
    let record = Output::encode(&DECISIONS, decision.decision_id.clone(), &decision).unwrap();
    rt.block_on(bus.producer().unwrap().send(vec![record]))
        .expect("publish");
    wait_for("the ban applied", Duration::from_secs(30), || {
        is_blocked(&lab, SERVER, source)
    });

    lab.kill(agent);
    assert!(
        is_blocked(&lab, SERVER, source),
        "the ban outlives the agent in the kernel"
    );
    // Lose the kernel state too (as a reboot would), and let time pass.
    lab.run_in(
        SERVER,
        &["nft", "flush", "set", "inet", "vncguard", "blocked_v4"],
    )
    .expect("flush");
    std::thread::sleep(Duration::from_secs(4));

    start_agent(&mut lab, SERVER, &brokers, &signer, &[], "agent-2.log");
    wait_for("the ban restored", Duration::from_secs(30), || {
        is_blocked(&lab, SERVER, source)
    });
    let restored = blocked(&lab, SERVER)
        .into_iter()
        .find(|e| e.address == source)
        .expect("restored element");
    let (timeout, expires) = (
        restored.timeout.unwrap_or(-1),
        restored.expires.unwrap_or(-1),
    );
    println!("restored ban: timeout {timeout} s, expires {expires} s of {full} s");
    assert!(
        timeout < full - 3 && timeout > 0,
        "timeout {timeout} is the remaining time, not a fresh {full}"
    );
    assert!(expires > 0 && expires <= timeout, "expires {expires}");
}
