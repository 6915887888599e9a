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
//! the agent inside a namespace and the stages here reach the same broker. Needs root, `nft`,
//! and for the first test `Xvnc`, `vncpasswd` and `vncdo` (`$VNCDO`); each test prints why and
//! passes without running when something is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

const PASSWORD: &str = "secret12";
const BAN_SECS: i64 = 8;

fn find_program(name: &str, env: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([
            PathBuf::from("/tmp/vnclab/venv/bin"),
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/vncguard/venv/bin"))
                .unwrap_or_default(),
        ])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Namespaces on a bridge with `10.200.NET.254` on this host; namespace `i` has
/// `10.200.NET.(i+1)`. Dropping it stops its processes and deletes namespaces and bridge.
struct Lab {
    net: u8,
    namespaces: Vec<String>,
    bridge: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn create(net: u8, count: usize) -> Result<Lab, String> {
        let id = std::process::id() % 10_000;
        let dir = std::env::temp_dir().join(format!("capture-agent-enforce-{net}-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut lab = Lab {
            net,
            namespaces: Vec::new(),
            bridge: format!("vgbr{net}x{id}"),
            dir,
            children: Vec::new(),
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        let host_cidr = format!("{}/24", lab.host_ip());
        run("ip", &["addr", "add", &host_cidr, "dev", &lab.bridge])?;
        run("ip", &["link", "set", &lab.bridge, "up"])?;
        for i in 0..count {
            let ns = format!("vg-e{net}-{i}-{id}");
            run("ip", &["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let (inner, outer) = (lab.interface(i), format!("vgo{net}x{i}x{id}"));
            run(
                "ip",
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            run("ip", &["link", "set", &outer, "master", &lab.bridge, "up"])?;
            let cidr = format!("{}/24", lab.ip(i));
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
            run("ip", &["-n", &ns, "link", "set", &inner, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn host_ip(&self) -> String {
        format!("10.200.{}.254", self.net)
    }

    fn ip(&self, i: usize) -> String {
        format!("10.200.{}.{}", self.net, i + 1)
    }

    fn interface(&self, i: usize) -> String {
        format!("vgi{}x{i}x{}", self.net, std::process::id() % 10_000)
    }

    fn spawn_in(&mut self, i: usize, program: &Path, args: &[&str], log: &str) -> u32 {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[i]])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn in namespace");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills (SIGKILL) the process `pid` this lab started.
    fn kill(&mut self, pid: u32) {
        if let Some(at) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut line = vec!["netns", "exec", &self.namespaces[i]];
        line.extend_from_slice(args);
        run("ip", &line)
    }

    /// Whether namespace `i` can open a TCP connection to `target` within two seconds.
    fn can_connect(&self, i: usize, target: &str, port: u16) -> bool {
        let script = format!(
            "import socket; socket.create_connection(('{target}', {port}), timeout=2).close()"
        );
        self.exec(i, &["python3", "-c", &script]).is_ok()
    }

    /// The elements of set `blocked_v4` in namespace `i` as (address, timeout s, expires s).
    fn blocked(&self, i: usize) -> Vec<(String, i64, i64)> {
        let Ok(text) = self.exec(
            i,
            &["nft", "-j", "list", "set", "inet", "vncguard", "blocked_v4"],
        ) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&text).expect("nft JSON");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("set"))
            .flat_map(|set| set["elem"].as_array().cloned().unwrap_or_default())
            .map(|elem| {
                (
                    elem["elem"]["val"].as_str().unwrap_or_default().to_string(),
                    elem["elem"]["timeout"].as_i64().unwrap_or(-1),
                    elem["elem"]["expires"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }

    /// tansu on this host's bridge address, reachable from every namespace.
    fn start_broker(&mut self) -> String {
        let port = testkit::free_port().expect("port");
        let url = format!("tcp://{}:{port}", self.host_ip());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let tansu = std::env::var_os("TANSU_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cargo/bin/tansu"));
        let log = std::fs::File::create(self.dir.join("tansu.log")).expect("log");
        let child = Command::new(tansu)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.children.push(child);
        let brokers = format!("{}:{port}", self.host_ip());
        wait_for("tansu listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&brokers).is_ok()
        });
        brokers
    }

    /// The agent with `--enforce` inside namespace `i`; its pid.
    fn start_agent(&mut self, i: usize, brokers: &str, log: &str) -> u32 {
        let interface = self.interface(i);
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_capture-agent"));
        let log_file = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[i]])
            .arg(agent)
            .args(["--interface", &interface, "--sink", "kafka", "--enforce"])
            .args(["--agent-id", "enforce-test", "--heartbeat-interval", "1s"])
            .env("KAFKA_BROKERS", brokers)
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("agent starts");
        let pid = child.id();
        self.children.push(child);
        wait_for("the agent enforcing", Duration::from_secs(60), || {
            self.log(log).contains("enforcing decisions")
        });
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        if std::thread::panicking() {
            println!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn privileged_lab(net: u8, count: usize) -> Option<Lab> {
    let lab = match Lab::create(net, count) {
        Ok(lab) => lab,
        Err(e) => {
            println!("SKIPPED: cannot create network namespaces (root needed): {e}");
            return None;
        }
    };
    if let Err(e) = lab.exec(0, &["nft", "list", "tables"]) {
        println!("SKIPPED: nft unusable (apt: nftables): {e}");
        return None;
    }
    Some(lab)
}

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
    let (Some(xvnc), Some(vncpasswd), Some(vncdo)) = (
        find_program("Xvnc", None),
        find_program("vncpasswd", None),
        find_program("vncdo", Some("VNCDO")),
    ) else {
        println!(
            "SKIPPED: needs Xvnc and vncpasswd (apt: tigervnc-standalone-server tigervnc-tools) \
             and vncdo (pip: vncdotool, or $VNCDO)"
        );
        return;
    };
    const SERVER: usize = 0;
    const ATTACKER: usize = 1;
    const NORMAL: usize = 2;
    let Some(mut lab) = privileged_lab(81, 3) else {
        return;
    };
    let (server_ip, attacker_ip) = (lab.ip(SERVER), lab.ip(ATTACKER));
    let brokers = lab.start_broker();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let args = BusArgs::for_brokers(&brokers);
    let bus = KafkaBus::new(&args).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");

    // The VNC server with a known password.
    let output = Command::new(&vncpasswd)
        .arg("-f")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(format!("{PASSWORD}\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("vncpasswd");
    let password_file = lab.dir.join("passwd");
    std::fs::write(&password_file, output.stdout).expect("password file");
    let display = format!(":{}", 300 + std::process::id() % 300);
    lab.spawn_in(
        SERVER,
        &xvnc,
        &[
            &display,
            "-geometry",
            "320x240",
            "-rfbport",
            "5900",
            "-SecurityTypes",
            "VncAuth",
            "-PasswordFile",
            password_file.to_str().expect("UTF-8 path"),
            "-nolisten",
            "tcp",
        ],
        "xvnc.log",
    );
    wait_for("Xvnc listening", Duration::from_secs(20), || {
        lab.exec(SERVER, &["ss", "-Hltn", "sport = :5900"])
            .is_ok_and(|out| out.contains("LISTEN"))
    });
    lab.start_agent(SERVER, &brokers, "agent.log");

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
        ResponderStage::new(Responder::new(policy)),
    );

    // The normal client logs in.
    let target = format!("{server_ip}::5900");
    let login = lab.exec(
        NORMAL,
        &[
            "timeout",
            "30",
            vncdo.to_str().expect("UTF-8"),
            "-s",
            &target,
            "-p",
            PASSWORD,
            "pause",
            "0.2",
        ],
    );
    assert!(login.is_ok(), "normal login: {login:?}");

    // The attacker guesses until the agent blocks it.
    let started = Instant::now();
    let mut attempts = 0;
    while lab
        .blocked(SERVER)
        .iter()
        .all(|(ip, _, _)| *ip != attacker_ip)
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no block after {attempts} attempts; agent log:\n{}",
            lab.log("agent.log")
        );
        if attempts < 12 {
            let guess = format!("wrong{attempts}");
            let result = lab.exec(
                ATTACKER,
                &[
                    "timeout",
                    "10",
                    vncdo.to_str().expect("UTF-8"),
                    "-s",
                    &target,
                    "-p",
                    &guess,
                    "pause",
                    "0.1",
                ],
            );
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
    let brokers = lab.start_broker();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers)).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");
    let agent = lab.start_agent(SERVER, &brokers, "agent-1.log");

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
    };
    let record = Output::encode(&DECISIONS, decision.decision_id.clone(), &decision).unwrap();
    rt.block_on(bus.producer().unwrap().send(vec![record]))
        .expect("publish");
    wait_for("the ban applied", Duration::from_secs(30), || {
        lab.blocked(SERVER).iter().any(|(ip, _, _)| ip == source)
    });

    lab.kill(agent);
    assert!(
        lab.blocked(SERVER).iter().any(|(ip, _, _)| ip == source),
        "the ban outlives the agent in the kernel"
    );
    // Lose the kernel state too (as a reboot would), and let time pass.
    lab.exec(
        SERVER,
        &["nft", "flush", "set", "inet", "vncguard", "blocked_v4"],
    )
    .expect("flush");
    std::thread::sleep(Duration::from_secs(4));

    lab.start_agent(SERVER, &brokers, "agent-2.log");
    wait_for("the ban restored", Duration::from_secs(30), || {
        lab.blocked(SERVER).iter().any(|(ip, _, _)| ip == source)
    });
    let (_, timeout, expires) = lab
        .blocked(SERVER)
        .into_iter()
        .find(|(ip, _, _)| ip == source)
        .expect("restored element");
    println!("restored ban: timeout {timeout} s, expires {expires} s of {full} s");
    assert!(
        timeout < full - 3 && timeout > 0,
        "timeout {timeout} is the remaining time, not a fresh {full}"
    );
    assert!(expires > 0 && expires <= timeout, "expires {expires}");
}
