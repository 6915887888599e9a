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
//! (`cargo test --workspace` builds them all).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Consumer};
use futures::StreamExt;
use schemas::topics::DECISIONS;
use schemas::{Decision, DecisionAction};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

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

fn find_program(name: &str, env: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(home.map(|home| home.join(".cache/vncguard/venv/bin")))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A workspace binary, beside this package's.
fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_vncguard")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace builds every binary)",
        path.display()
    );
    path
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", testkit::free_port().expect("free port"))
}

/// The namespaces, their bridge, the processes and the test database. Dropping it (also when
/// the test fails) stops every process it started, then deletes the namespaces, the bridge and
/// the database; logs are kept when the test failed.
struct Lab {
    net: u8,
    id: u32,
    bridge: String,
    namespaces: Vec<String>,
    dir: PathBuf,
    children: Vec<Child>,
    database: Option<testkit::TestDatabase>,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let id = std::process::id() % 10_000;
        let net = 100 + (std::process::id() % 100) as u8;
        let dir = std::env::temp_dir().join(format!("vncguard-e2e-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut lab = Lab {
            net,
            id,
            bridge: format!("vge2e{id}"),
            namespaces: Vec::new(),
            dir,
            children: Vec::new(),
            database: None,
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        let host_cidr = format!("{}/24", lab.host_ip());
        run("ip", &["addr", "add", &host_cidr, "dev", &lab.bridge])?;
        run("ip", &["link", "set", &lab.bridge, "up"])?;
        for i in 0..NAMESPACES {
            let ns = format!("vg-e2e-{i}-{id}");
            run("ip", &["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let (inner, outer) = (lab.interface(i), format!("vge{i}o{id}"));
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
        format!("vge{i}i{}", self.id)
    }

    /// Starts `program` (in namespace `ns`, if given) with its output in `log`; its pid.
    fn spawn(
        &mut self,
        ns: Option<usize>,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: &str,
    ) -> u32 {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let mut command = match ns {
            Some(i) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &self.namespaces[i]])
                    .arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// SIGTERM to the process `pid` this lab started; waits for it to exit.
    fn stop(&mut self, pid: u32) {
        let Some(at) = self.children.iter().position(|c| c.id() == pid) else {
            return;
        };
        let mut child = self.children.remove(at);
        let _ = run("kill", &["-TERM", &pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether a process this lab started has exited.
    fn exited(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut line = vec!["netns", "exec", &self.namespaces[i]];
        line.extend_from_slice(args);
        run("ip", &line)
    }

    /// The addresses in the agent's nftables set `blocked_v4` of namespace `i`.
    fn blocked(&self, i: usize) -> Vec<String> {
        let Ok(text) = self.exec(
            i,
            &["nft", "-j", "list", "set", "inet", "vncguard", "blocked_v4"],
        ) else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&text).expect("nft JSON");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("set"))
            .flat_map(|set| set["elem"].as_array().cloned().unwrap_or_default())
            .filter_map(|elem| {
                elem["elem"]["val"]
                    .as_str()
                    .or_else(|| elem.as_str())
                    .map(str::to_string)
            })
            .collect()
    }

    /// tansu on the bridge's host address, reachable from this host and every namespace.
    fn start_broker(&mut self) -> String {
        let port = testkit::free_port().expect("port");
        let url = format!("tcp://{}:{port}", self.host_ip());
        let tansu = std::env::var_os("TANSU_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".cargo/bin/tansu"))
                    .filter(|path| path.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("tansu"));
        let args = [
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ];
        self.spawn(None, &tansu, &args, &[], "tansu.log");
        let brokers = format!("{}:{port}", self.host_ip());
        wait_for("tansu listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&brokers).is_ok()
        });
        brokers
    }

    /// Xvnc with VNC authentication in namespace `i`, listening on 5900.
    fn start_vnc_server(&mut self, i: usize, xvnc: &Path, password_file: &Path, display: u32) {
        let display = format!(":{display}");
        let log = format!("xvnc-{i}.log");
        self.spawn(
            Some(i),
            xvnc,
            &[
                &display,
                "-geometry",
                "320x240",
                "-depth",
                "24",
                "-rfbport",
                "5900",
                "-SecurityTypes",
                "VncAuth",
                "-PasswordFile",
                password_file.to_str().expect("UTF-8 path"),
                "-nolisten",
                "tcp",
            ],
            &[],
            &log,
        );
        wait_for("Xvnc listening", Duration::from_secs(20), || {
            self.exec(i, &["ss", "-Hltn", "sport = :5900"])
                .is_ok_and(|out| out.contains("LISTEN"))
        });
    }

    /// One `vncdo` run (one TCP connection) from namespace `i` to `server`; whether it succeeded.
    fn vnc_client(&self, i: usize, vncdo: &Path, server: &str, password: &str) -> bool {
        let target = format!("{server}::5900");
        let vncdo = vncdo.to_str().expect("UTF-8 path");
        self.exec(
            i,
            &[
                "timeout", "20", vncdo, "-s", &target, "-p", password, "type", "hi", "pause", "0.2",
            ],
        )
        .is_ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its connections are gone with the processes, so the database can be dropped.
        self.database.take();
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

/// The events a WebSocket client received, in order.
struct LiveFeed {
    incoming: mpsc::Receiver<Value>,
    events: Vec<Value>,
}

impl LiveFeed {
    fn connect(rt: &tokio::runtime::Runtime, api: &str, token: &str) -> LiveFeed {
        let url = format!("ws://{api}/ws?token={token}");
        let (mut socket, _) = rt
            .block_on(tokio_tungstenite::connect_async(url))
            .expect("WebSocket connects");
        let (sender, incoming) = mpsc::channel();
        rt.spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    if let Ok(event) = serde_json::from_str::<Value>(&text) {
                        if sender.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        LiveFeed {
            incoming,
            events: Vec::new(),
        }
    }

    /// The first event so far, or arriving within `limit`, that `wanted` accepts.
    fn find(&mut self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self.events.iter().find(|e| wanted(e)) {
                return Some(event.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(event) => self.events.push(event),
                Err(_) => return None,
            }
        }
    }

    fn types(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect()
    }
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
    let (Some(xvnc), Some(vncpasswd), Some(vncdo)) = (
        find_program("Xvnc", None),
        find_program("vncpasswd", None),
        find_program("vncdo", Some("VNCDO")),
    ) else {
        println!(
            "SKIPPED distributed end-to-end test: needs Xvnc and vncpasswd (apt: \
             tigervnc-standalone-server tigervnc-tools) and vncdo (pip: vncdotool, or $VNCDO)"
        );
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
    .map(|name| (name, binary(name)))
    .into_iter()
    .collect::<BTreeMap<_, _>>();
    let mut lab = match Lab::create() {
        Ok(lab) => lab,
        Err(e) => {
            println!(
                "SKIPPED distributed end-to-end test: cannot create network namespaces (root \
                 needed): {e}"
            );
            return;
        }
    };
    let enforcing = match lab.exec(SERVER_A, &["nft", "list", "tables"]) {
        Ok(_) => true,
        Err(e) => {
            println!("nft unusable, the agents only monitor (apt: nftables): {e}");
            false
        }
    };
    let (server_a, server_b) = (lab.ip(SERVER_A), lab.ip(SERVER_B));
    let (attacker, client_a, client_b) = (lab.ip(ATTACKER), lab.ip(CLIENT_A), lab.ip(CLIENT_B));
    let agent_a = format!("e2e-agent-a-{}", lab.id);
    let agent_b = format!("e2e-agent-b-{}", lab.id);
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The broker, its topics, and the database with the schema.
    let brokers = lab.start_broker();
    let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers)).expect("bus");
    rt.block_on(bus.ensure_topics(schemas::topics::ALL))
        .expect("topics");
    let database = rt
        .block_on(testkit::TestDatabase::create())
        .expect("test database");
    let database_url = database.url().to_string();
    lab.database = Some(database);
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
    stages.push(lab.spawn(None, &binaries["sink"], &["run"], &sink_env, "sink.log"));
    let mut enricher_env = common(true);
    let geo = workspace_root().join(".data/geo");
    enricher_env.push(("GEOIP_CITY_DB", geo.display().to_string()));
    enricher_env.push(("GEOIP_ASN_DB", geo.display().to_string()));
    enricher_env.push(("ENRICHER_GROUP", "e2e-enricher".into()));
    stages.push(lab.spawn(
        None,
        &binaries["enricher"],
        &[],
        &enricher_env,
        "enricher.log",
    ));
    let mut scorer_env = common(true);
    scorer_env.push(("MODEL_LOAD_IDLE_MS", "500".into()));
    scorer_env.push(("SCORER_GROUP", "e2e-scorer".into()));
    stages.push(lab.spawn(
        None,
        &binaries["scorer"],
        &["run"],
        &scorer_env,
        "scorer.log",
    ));
    let mut responder_env = common(true);
    responder_env.push(("RESPONDER_RESTORE_IDLE_MS", "500".into()));
    responder_env.push(("RESPONDER_GROUP", "e2e-responder".into()));
    stages.push(lab.spawn(
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
    stages.push(lab.spawn(None, &binaries["api"], &["serve"], &api_env, "api.log"));

    // Two VNC servers with a known password, each watched by its own agent in its namespace.
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
                .write_all(format!("{VNC_PASSWORD}\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("vncpasswd");
    let password_file = lab.dir.join("passwd");
    std::fs::write(&password_file, output.stdout).expect("password file");
    let display = 400 + 2 * (std::process::id() % 250);
    lab.start_vnc_server(SERVER_A, &xvnc, &password_file, display);
    lab.start_vnc_server(SERVER_B, &xvnc, &password_file, display + 1);
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
        ];
        let log = format!("agent-{i}.log");
        agents.push(lab.spawn(Some(i), &binaries["capture-agent"], &args, &env, &log));
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
            lab.dir.display()
        );
    }

    // The admin logs in and opens the live feed.
    let http = reqwest::Client::new();
    let login_url = format!("http://{api_addr}/api/auth/login");
    let login = serde_json::json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD});
    let mut token = None;
    wait_for(
        "the api logging in its admin",
        Duration::from_secs(60),
        || {
            token = rt.block_on(async {
                let response = http.post(&login_url).json(&login).send().await.ok()?;
                let body: Value = response.error_for_status().ok()?.json().await.ok()?;
                body["access_token"].as_str().map(str::to_string)
            });
            token.is_some()
        },
    );
    let mut feed = LiveFeed::connect(&rt, &api_addr, &token.expect("token"));

    // Normal sessions; the feed only starts at the end of the topics once it has its
    // partitions, so client A logs in until its session shows up there.
    let mut sessions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut live = false;
    for _ in 0..15 {
        assert!(
            lab.vnc_client(CLIENT_A, &vncdo, &server_a, VNC_PASSWORD),
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
            lab.vnc_client(CLIENT_B, &vncdo, &server_b, VNC_PASSWORD),
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
        let accepted = lab.vnc_client(ATTACKER, &vncdo, &server_a, &format!("wrong{guess}"));
        assert!(!accepted, "a wrong password was accepted");
        *sessions.entry(&attacker).or_default() += 1;
        if guess + 1 >= BRUTE_FORCE_MAX_RETRY {
            // Long enough that a further guess never meets the firewall (it would be no session).
            threat = feed.find(Duration::from_secs(20), brute_force);
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
            lab.dir.display()
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
    let firewall_action = feed
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
                || lab.blocked(server).contains(&attacker),
            );
        }
        for server in [SERVER_A, SERVER_B] {
            let others: Vec<String> = lab
                .blocked(server)
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
