//! Distributed mode end to end, every stage its own process on tansu and Postgres: `sink`,
//! `enricher`, `scorer`, `responder`, `api` and two `capture-agent`s with different `AGENT_ID`s.
//!
//! Five network namespaces hang off one bridge that has `10.200.NET.254` on this host, where
//! tansu listens, so the agents inside namespaces and the stages here share one broker:
//! - server A runs TigerVNC `Xvnc` (VncAuth) and agent A capturing on its own interface;
//! - server B runs a second `Xvnc` and agent B;
//! - client A and client B log in to their server with `vncdo` (normal sessions);
//! - the attacker guesses server A's password with `vncdo` until a brute force is detected.
//!
//! Asserted: the brute-force threat reaches a WebSocket client of the `api` process as
//! `threat_detected` naming the attacker; the block decision is on `vnc.decisions`, in Postgres
//! and applied by both agents (`--enforce`: the attacker in each namespace's nftables set); both
//! agents' heartbeats are in `agents`; every session the clients opened (one per `vncdo` run) is
//! in `vnc_sessions` exactly once, under the agent of its server.
//!
//! Needs root (network namespaces), `Xvnc` and `vncpasswd` (Debian: tigervnc-standalone-server,
//! tigervnc-tools) and `vncdo` (PyPI: vncdotool; `$VNCDO`); prints why and passes without running
//! when one is missing. Without `nft` the agents only monitor, and the decision is checked on the
//! topic and in Postgres instead of in the firewalls. The binaries come from the workspace build
//! (`cargo build --workspace --bins`); the lab is `testkit::netns::Lab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Consumer};
use schemas::topics::DECISIONS;
use schemas::{Decision, DecisionAction};
use serde_json::Value;
use testkit::live::LiveFeed;
use testkit::netns::{Lab, VncSession, VncTools};
use testkit::{wait_for, workspace_binary, Broker};

const VNC_PASSWORD: &str = "secret12";
const ADMIN_USER: &str = "e2e-admin";
const ADMIN_PASSWORD: &str = "e2e-admin-password-1";
const JWT_SECRET: &str = "distributed-e2e-test-secret-of-enough-length";
/// Failed logins within the enricher's window that make a brute force (the scorer's default).
const BRUTE_FORCE_MAX_RETRY: usize = 5;
const MAX_GUESSES: usize = 10;

const SERVER_A: usize = 0;
const SERVER_B: usize = 1;
const ATTACKER: usize = 2;
const CLIENT_A: usize = 3;
const CLIENT_B: usize = 4;
const NAMESPACES: usize = 5;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", testkit::free_port().expect("free port"))
}

/// Starts `program` (in namespace `ns`, if given) from the workspace root with `env` and its
/// output in `log`; its pid.
fn spawn(
    lab: &mut Lab,
    ns: Option<usize>,
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    log: &str,
) -> u32 {
    let mut command = lab.command(ns, program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workspace_root());
    lab.spawn(command, log)
}

/// The addresses in the agent's nftables set `blocked_v4` of namespace `i`.
fn blocked(lab: &Lab, i: usize) -> Vec<String> {
    lab.nft_set(i, "inet", "vncguard", "blocked_v4")
        .into_iter()
        .map(|e| e.address)
        .collect()
}

/// One `vncdo` run (one TCP connection) from namespace `i` to `server`; whether it succeeded.
fn vnc_client(lab: &Lab, i: usize, vncdo: &Path, server: &str, password: &str) -> bool {
    let session = VncSession {
        server,
        password,
        limit: Duration::from_secs(20),
    };
    lab.vnc_client(i, vncdo, session, &["type", "hi", "pause", "0.2"])
        .is_ok()
}

fn session_started_by(client_ip: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["type"] == "vnc_session_started" && e["payload"]["client_ip"] == client_ip
}

/// Every decision on `vnc.decisions` so far.
fn decisions_on_topic(rt: &tokio::runtime::Runtime, brokers: &str) -> Vec<Decision> {
    let bus = KafkaBus::new(&BusArgs::for_brokers(brokers)).expect("bus");
    rt.block_on(async {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let group = format!("e2e-decisions-{nanos}");
        let mut consumer = bus.consumer(&group, &[DECISIONS.name]).expect("consumer");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let batch = consumer
                .next_batch(500, Duration::from_secs(2))
                .await
                .expect("consume");
            if batch.is_empty() && (!records.is_empty() || tokio::time::Instant::now() > deadline) {
                break;
            }
            records.extend(batch);
        }
        records
            .iter()
            .filter_map(|r| schemas::decode::<Decision>(&r.payload).ok())
            .collect()
    })
}

/// `vnc_sessions` rows per (server, client, agent).
type SessionCounts = BTreeMap<(String, String, String), i64>;

async fn session_counts(db: &tokio_postgres::Client) -> SessionCounts {
    db.query(
        "SELECT host(server_ip), host(client_ip), agent_id, count(*) FROM vnc_sessions GROUP BY 1, 2, 3",
        &[],
    )
    .await
    .expect("sessions query")
    .iter()
    .map(|row| ((row.get(0), row.get(1), row.get(2)), row.get(3)))
    .collect()
}

#[test]
fn two_agents_a_brute_force_and_every_stage_as_its_own_process() {
    let started = Instant::now();
    let Some(tools) = VncTools::find_or_skip() else {
        return;
    };
    let binaries = [
        "sink",
        "enricher",
        "scorer",
        "responder",
        "api",
        "capture-agent",
    ]
    .map(|name| (name, workspace_binary(name)))
    .into_iter()
    .collect::<BTreeMap<_, _>>();
    // Declared before the lab, so it is dropped after the lab stopped every process using it.
    let database;
    let net = 100 + (std::process::id() % 100) as u8;
    let Some(mut lab) = Lab::create_or_skip(net, NAMESPACES) else {
        return;
    };
    let enforcing = match lab.run_in(SERVER_A, &["nft", "list", "tables"]) {
        Ok(_) => true,
        Err(e) => {
            println!("nft unusable, the agents only monitor (apt: nftables): {e}");
            false
        }
    };
    let (server_a, server_b) = (lab.ip(SERVER_A), lab.ip(SERVER_B));
    let (attacker, client_a, client_b) = (lab.ip(ATTACKER), lab.ip(CLIENT_A), lab.ip(CLIENT_B));
    let agent_a = format!("e2e-agent-a-{}", lab.id());
    let agent_b = format!("e2e-agent-b-{}", lab.id());
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The broker, its topics, and the database with the schema.
    let broker = Broker::start_on(&lab.host_ip()).expect("tansu");
    let brokers = broker.brokers();
    let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers)).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");
    database = rt
        .block_on(testkit::TestDatabase::create())
        .expect("test database");
    let database_url = database.url().to_string();
    let migrate = Command::new(&binaries["sink"])
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .output()
        .expect("sink migrate");
    assert!(
        migrate.status.success(),
        "sink migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    // The stages, each its own process.
    let common = |metrics: bool| {
        let mut env = vec![
            ("KAFKA_BROKERS", brokers.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("LOG_FORMAT", "json".to_string()),
            ("BUS_LINGER_MS", "20".to_string()),
        ];
        if metrics {
            env.push(("METRICS_ADDR", free_addr()));
        }
        env
    };
    let mut stages = Vec::new();
    let mut sink_env = common(true);
    sink_env.push(("SINK_GROUP", "e2e-sink".into()));
    stages.push(spawn(
        &mut lab,
        None,
        &binaries["sink"],
        &["run"],
        &sink_env,
        "sink.log",
    ));
    let mut enricher_env = common(true);
    let geo = workspace_root().join(".data/geo");
    enricher_env.push(("GEOIP_CITY_DB", geo.display().to_string()));
    enricher_env.push(("GEOIP_ASN_DB", geo.display().to_string()));
    enricher_env.push(("ENRICHER_GROUP", "e2e-enricher".into()));
    stages.push(spawn(
        &mut lab,
        None,
        &binaries["enricher"],
        &[],
        &enricher_env,
        "enricher.log",
    ));
    let mut scorer_env = common(true);
    scorer_env.push(("MODEL_LOAD_IDLE_MS", "500".into()));
    scorer_env.push(("SCORER_GROUP", "e2e-scorer".into()));
    stages.push(spawn(
        &mut lab,
        None,
        &binaries["scorer"],
        &["run"],
        &scorer_env,
        "scorer.log",
    ));
    // The responder's decision key, made by its own keygen; the agents trust its public key.
    let key_file = lab.dir().join("responder-decision.key");
    let keygen = Command::new(&binaries["responder"])
        .args(["keygen", "--key-file"])
        .arg(&key_file)
        .args(["--key-id", "e2e-responder"])
        .output()
        .expect("responder keygen");
    assert!(
        keygen.status.success(),
        "responder keygen: {}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let public_key = String::from_utf8_lossy(&keygen.stdout).trim().to_string();
    let mut responder_env = common(true);
    responder_env.push(("DECISION_SIGNING_KEY_FILE", key_file.display().to_string()));
    responder_env.push(("RESPONDER_RESTORE_IDLE_MS", "500".into()));
    responder_env.push(("RESPONDER_GROUP", "e2e-responder".into()));
    stages.push(spawn(
        &mut lab,
        None,
        &binaries["responder"],
        &[],
        &responder_env,
        "responder.log",
    ));
    let api_addr = free_addr();
    let (_, api_port) = api_addr.split_once(':').expect("host:port");
    let mut api_env = common(false);
    api_env.extend([
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", api_port.to_string()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("VNCGUARD_ADMIN_USER", ADMIN_USER.to_string()),
        ("VNCGUARD_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("AGENT_HEARTBEAT_INTERVAL_SECS", "1".to_string()),
    ]);
    stages.push(spawn(
        &mut lab,
        None,
        &binaries["api"],
        &["serve"],
        &api_env,
        "api.log",
    ));

    // Two VNC servers with a known password, each watched by its own agent in its namespace.
    let password_file = lab.vnc_password_file(&tools.vncpasswd, VNC_PASSWORD);
    let display = 400 + 2 * (std::process::id() % 250);
    lab.start_vnc_server(SERVER_A, &tools.xvnc, &password_file, display);
    lab.start_vnc_server(SERVER_B, &tools.xvnc, &password_file, display + 1);
    let mut agents = Vec::new();
    for (i, agent_id) in [(SERVER_A, &agent_a), (SERVER_B, &agent_b)] {
        let interface = lab.interface(i);
        let mut args = vec!["--interface", &interface, "--sink", "kafka"];
        args.extend(["--heartbeat-interval", "1s"]);
        if enforcing {
            args.push("--enforce");
        }
        let env = [
            ("KAFKA_BROKERS", brokers.clone()),
            ("AGENT_ID", agent_id.clone()),
            ("LOG_FORMAT", "json".to_string()),
            ("BUS_LINGER_MS", "20".to_string()),
            ("DECISION_PUBLIC_KEYS", public_key.clone()),
        ];
        let log = format!("agent-{i}.log");
        agents.push(spawn(
            &mut lab,
            Some(i),
            &binaries["capture-agent"],
            &args,
            &env,
            &log,
        ));
        let ready = if enforcing {
            "enforcing decisions"
        } else {
            "capturing"
        };
        wait_for("the agent ready", Duration::from_secs(60), || {
            let text = lab.log(&log);
            assert!(!text.contains("NOT ENFORCING"), "agent {agent_id}:\n{text}");
            text.contains(ready) && text.contains("capturing")
        });
    }
    for pid in stages.iter().chain(&agents) {
        assert!(
            !lab.exited(*pid),
            "a process exited early; logs in {}",
            lab.dir().display()
        );
    }

    // The admin logs in and opens the live feed.
    let mut token = None;
    wait_for(
        "the api logging in its admin",
        Duration::from_secs(60),
        || {
            token = rt
                .block_on(testkit::live::login(&api_addr, ADMIN_USER, ADMIN_PASSWORD))
                .ok();
            token.is_some()
        },
    );
    let mut feed = rt
        .block_on(LiveFeed::connect(&api_addr, &token.expect("token"), None))
        .expect("WebSocket connects");

    // Normal sessions; the feed only starts at the end of the topics once it has its
    // partitions, so client A logs in until its session shows up there.
    let mut sessions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut live = false;
    for _ in 0..15 {
        assert!(
            vnc_client(&lab, CLIENT_A, &tools.vncdo, &server_a, VNC_PASSWORD),
            "client A's login failed; Xvnc log:\n{}",
            lab.log("xvnc-0.log")
        );
        *sessions.entry(&client_a).or_default() += 1;
        if feed
            .find(Duration::from_secs(3), session_started_by(&client_a))
            .is_some()
        {
            live = true;
            break;
        }
    }
    assert!(
        live,
        "the live feed never showed a session: {:?}",
        feed.types()
    );
    for _ in 0..3 {
        assert!(
            vnc_client(&lab, CLIENT_B, &tools.vncdo, &server_b, VNC_PASSWORD),
            "client B's login failed; Xvnc log:\n{}",
            lab.log("xvnc-1.log")
        );
        *sessions.entry(&client_b).or_default() += 1;
    }

    // The brute force: wrong passwords until the threat reaches the WebSocket client.
    let brute_force = |e: &Value| {
        e["type"] == "threat_detected"
            && e["payload"]["threat_type"] == "brute_force"
            && e["payload"]["source_ip"] == attacker.as_str()
    };
    let mut threat = None;
    for guess in 0..MAX_GUESSES {
        let accepted = vnc_client(
            &lab,
            ATTACKER,
            &tools.vncdo,
            &server_a,
            &format!("wrong{guess}"),
        );
        assert!(!accepted, "a wrong password was accepted");
        *sessions.entry(&attacker).or_default() += 1;
        if guess + 1 >= BRUTE_FORCE_MAX_RETRY {
            // Long enough that a further guess never meets the firewall (it would be no session).
            threat = feed
                .find(Duration::from_secs(20), brute_force)
                .map(|(_, event)| event);
            if threat.is_some() {
                break;
            }
        }
    }
    let guesses = sessions[attacker.as_str()];
    let threat = threat.unwrap_or_else(|| {
        panic!(
            "no brute_force threat_detected naming {attacker} after {guesses} guesses; the feed \
             had {:?}; logs in {}",
            feed.types(),
            lab.dir().display()
        )
    });
    println!(
        "threat after {guesses} guesses, {:.1} s into the test: {}",
        started.elapsed().as_secs_f64(),
        threat["payload"]["description"]
    );
    assert!(
        feed.find(Duration::ZERO, session_started_by(&client_b))
            .is_some(),
        "server B's sessions reached the feed too"
    );
    let (_, firewall_action) = feed
        .find(Duration::from_secs(30), |e| {
            e["type"] == "firewall_action"
                && e["payload"]["value"] == attacker.as_str()
                && e["payload"]["action"] == "block"
        })
        .expect("the block decision on the live feed");
    let decision_id = firewall_action["payload"]["decision_id"]
        .as_str()
        .expect("decision_id")
        .to_string();

    // The decision reaches both agents: each blocks the attacker in its own namespace.
    if enforcing {
        for server in [SERVER_A, SERVER_B] {
            wait_for(
                &format!("the block applied by the agent of namespace {server}"),
                Duration::from_secs(30),
                || blocked(&lab, server).contains(&attacker),
            );
        }
        for server in [SERVER_A, SERVER_B] {
            let others: Vec<String> = blocked(&lab, server)
                .into_iter()
                .filter(|ip| *ip != attacker)
                .collect();
            assert!(
                others.is_empty(),
                "only the attacker is blocked: {others:?}"
            );
        }
    }
    let decisions = decisions_on_topic(&rt, &brokers);
    let blocks: Vec<&Decision> = decisions
        .iter()
        .filter(|d| d.value == attacker && d.action == DecisionAction::Block)
        .collect();
    assert!(
        blocks
            .iter()
            .any(|d| d.decision_id == decision_id && !d.dry_run),
        "the block on vnc.decisions: {decisions:?}"
    );
    assert!(
        decisions.iter().all(|d| d.value == attacker),
        "no decision against anyone else: {decisions:?}"
    );

    let (db, connection) = rt
        .block_on(tokio_postgres::connect(
            &database_url,
            tokio_postgres::NoTls,
        ))
        .expect("database");
    rt.spawn(connection);
    let mut decision_row = None;
    wait_for("the decision in Postgres", Duration::from_secs(30), || {
        decision_row = rt
            .block_on(db.query_opt(
                "SELECT action, value, dry_run FROM decisions WHERE decision_id = $1",
                &[&decision_id],
            ))
            .expect("decisions query");
        decision_row.is_some()
    });
    let row = decision_row.expect("row");
    assert_eq!(row.get::<_, String>(0), "block");
    assert_eq!(row.get::<_, String>(1), attacker);
    assert!(!row.get::<_, bool>(2));
    let mut heartbeats = BTreeMap::new();
    wait_for(
        "both agents' heartbeats in Postgres",
        Duration::from_secs(30),
        || {
            heartbeats = rt
                .block_on(db.query("SELECT agent_id, enforcing FROM agents", &[]))
                .expect("agents query")
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)))
                .collect::<BTreeMap<_, _>>();
            heartbeats.contains_key(&agent_a) && heartbeats.contains_key(&agent_b)
        },
    );
    assert_eq!(heartbeats.len(), 2, "{heartbeats:?}");
    assert!(
        heartbeats.values().all(|e| *e == enforcing),
        "the heartbeats say enforcing = {enforcing}: {heartbeats:?}"
    );

    // Every session once: the agents stop (flushing what they hold), the sink catches up.
    for pid in agents {
        lab.stop(pid);
    }
    let expected: SessionCounts = [
        (&server_a, &client_a, &agent_a),
        (&server_a, &attacker, &agent_a),
        (&server_b, &client_b, &agent_b),
    ]
    .into_iter()
    .map(|(server, client, agent)| {
        let count = sessions[client.as_str()] as i64;
        ((server.clone(), client.clone(), agent.clone()), count)
    })
    .collect();
    let mut counts = SessionCounts::new();
    let limit = Duration::from_secs(30);
    let waiting = Instant::now();
    while counts != expected && waiting.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(300));
        counts = rt.block_on(session_counts(&db));
    }
    // Anything late (a duplicate) would land now.
    std::thread::sleep(Duration::from_secs(2));
    counts = rt.block_on(session_counts(&db));
    assert_eq!(
        counts, expected,
        "vnc_sessions per (server, client, agent) against the vncdo runs"
    );
    let duplicates: i64 = rt
        .block_on(db.query_one(
            "SELECT count(*) FROM (SELECT 1 FROM vnc_sessions
             GROUP BY client_ip, client_port, server_ip, server_port, start_time
             HAVING count(*) > 1) d",
            &[],
        ))
        .expect("duplicates query")
        .get(0);
    assert_eq!(duplicates, 0, "sessions stored more than once");
    let open: i64 = rt
        .block_on(db.query_one(
            "SELECT count(*) FROM vnc_sessions WHERE end_time IS NULL",
            &[],
        ))
        .expect("open sessions query")
        .get(0);
    assert_eq!(open, 0, "every session ended");

    for pid in stages.iter().rev() {
        lab.stop(*pid);
    }
    println!(
        "distributed end to end: {} sessions, {guesses} guesses, enforcing {enforcing}, {:.1} s",
        expected.values().sum::<i64>(),
        started.elapsed().as_secs_f64()
    );
}
