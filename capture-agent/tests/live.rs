//! Live capture end to end: a real VNC server (TigerVNC `Xvnc`) and a real client (vncdotool's
//! `vncdo`) in two network namespaces joined by a bridge, the agent capturing on that bridge and
//! publishing to a tansu broker, a consumer reading the session's events. A second client holds
//! its session open while the agent is stopped: that session ends with `shutdown`.
//!
//! Needs root (network namespaces), `Xvnc` and `vncpasswd` (Debian: tigervnc-standalone-server,
//! tigervnc-tools) and `vncdo` (PyPI: vncdotool; `$VNCDO` names it when it is not on PATH). The
//! test prints why and passes without running when one is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Consumer};
use schemas::topics::{AGENT_HEARTBEATS, SESSIONS_RAW};
use schemas::{AgentHeartbeat, AuthResult, SessionEvent, SessionEventKind};

const PASSWORD: &str = "secret12";
const SERVER_IP: &str = "10.200.77.1";
const CLIENT_IP: &str = "10.200.77.2";

fn find_program(name: &str, env: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/tmp/vnclab/venv/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Two namespaces (server, client), each with a veth whose peer sits on a bridge in this
/// namespace, where the agent captures. Addresses exist only inside the namespaces. Dropping it
/// stops the processes it started and deletes the namespaces and the bridge.
struct Lab {
    server_ns: String,
    client_ns: String,
    bridge: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let id = std::process::id() % 100_000;
        let dir = std::env::temp_dir().join(format!("capture-agent-live-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let lab = Lab {
            server_ns: format!("ca-live-s{id}"),
            client_ns: format!("ca-live-c{id}"),
            bridge: format!("cabr{id}"),
            dir,
            children: Vec::new(),
        };
        run("ip", &["netns", "add", &lab.server_ns])?;
        run("ip", &["netns", "add", &lab.client_ns])?;
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        run("ip", &["link", "set", &lab.bridge, "up"])?;
        for (ns, side, ip) in [
            (&lab.server_ns, "s", SERVER_IP),
            (&lab.client_ns, "c", CLIENT_IP),
        ] {
            let inner = format!("ca{side}{id}");
            let outer = format!("ca{side}p{id}");
            run(
                "ip",
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", ns])?;
            run("ip", &["link", "set", &outer, "master", &lab.bridge, "up"])?;
            let cidr = format!("{ip}/24");
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", &inner])?;
            run("ip", &["-n", ns, "link", "set", &inner, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn spawn_in(&mut self, ns: &str, program: &Path, args: &[&str], log: &str) -> &mut Child {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn server_listening(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server_ns,
                "ss",
                "-Hltn",
                "sport = :5900",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = run("ip", &["netns", "del", &self.client_ns]);
        let _ = run("ip", &["netns", "del", &self.server_ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `topic` until `done` holds for what was read (or a minute passes).
fn consume(
    rt: &tokio::runtime::Runtime,
    bus: &KafkaBus,
    group: &str,
    topic: &str,
    mut done: impl FnMut(&[bus::Record]) -> bool,
) -> Vec<bus::Record> {
    rt.block_on(async {
        let mut consumer = bus.consumer(group, &[topic]).expect("consumer");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(&records) && tokio::time::Instant::now() < deadline {
            let batch = consumer
                .next_batch(100, Duration::from_millis(300))
                .await
                .expect("consume");
            consumer.store(&batch);
            records.extend(batch);
        }
        records
    })
}

fn session_events(records: &[bus::Record]) -> Vec<SessionEvent> {
    records
        .iter()
        .map(|r| schemas::decode::<SessionEvent>(&r.payload).expect("decodes"))
        .collect()
}

fn ended(events: &[SessionEvent]) -> Vec<&SessionEvent> {
    events
        .iter()
        .filter(|e| e.kind == SessionEventKind::Ended)
        .collect()
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn live_session_in_network_namespaces_reaches_kafka() {
    let (Some(xvnc), Some(vncpasswd), Some(vncdo)) = (
        find_program("Xvnc", None),
        find_program("vncpasswd", None),
        find_program("vncdo", Some("VNCDO")),
    ) else {
        println!(
            "SKIPPED live test: needs Xvnc and vncpasswd (apt: tigervnc-standalone-server \
             tigervnc-tools) and vncdo (pip: vncdotool, or $VNCDO)"
        );
        return;
    };
    let mut lab = match Lab::create() {
        Ok(lab) => lab,
        Err(e) => {
            println!("SKIPPED live test: cannot create network namespaces (root needed): {e}");
            return;
        }
    };

    let broker = testkit::Broker::start().expect("tansu");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // The VNC server, VNC authentication with a known password, no X11 over TCP.
    let password_file = lab.dir.join("passwd");
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
    std::fs::write(&password_file, output.stdout).expect("password file");
    let display = format!(":{}", 600 + std::process::id() % 300);
    let server_ns = lab.server_ns.clone();
    lab.spawn_in(
        &server_ns,
        &xvnc,
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
        "xvnc.log",
    );
    wait_for("Xvnc listening", Duration::from_secs(20), || {
        lab.server_listening()
    });

    // The agent on the bridge, publishing to the broker.
    let metrics_addr = format!("127.0.0.1:{}", testkit::free_port().expect("port"));
    let agent_log = lab.dir.join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_capture-agent"))
        .args(["--interface", &lab.bridge, "--sink", "kafka"])
        .args(["--agent-id", "live-test", "--heartbeat-interval", "1s"])
        .args(["--metrics-addr", &metrics_addr])
        .env("KAFKA_BROKERS", broker.brokers())
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).expect("agent log"))
        .spawn()
        .expect("agent starts");
    let agent_ready = || std::fs::read_to_string(&agent_log).is_ok_and(|l| l.contains("capturing"));
    wait_for("agent capturing", Duration::from_secs(30), agent_ready);

    // One complete session: authenticate, type, leave.
    let client_ns = lab.client_ns.clone();
    let target = format!("{SERVER_IP}::5900");
    let status = Command::new("ip")
        .args(["netns", "exec", &client_ns, "timeout", "30"])
        .arg(&vncdo)
        .args([
            "-s", &target, "-p", PASSWORD, "type", "hello", "pause", "0.5",
        ])
        .status()
        .expect("vncdo");
    assert!(status.success(), "the VNC client failed: {status}");

    let bus = KafkaBus::new(&BusArgs::for_brokers(&broker.brokers())).expect("bus");
    let records = consume(&rt, &bus, "live-first", SESSIONS_RAW.name, |r| {
        !ended(&session_events(r)).is_empty()
    });
    let events = session_events(&records);
    let kinds: Vec<SessionEventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            SessionEventKind::Started,
            SessionEventKind::Auth,
            SessionEventKind::Ended
        ],
        "agent log:\n{}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    for record in &records {
        assert_eq!(record.key.as_deref(), Some(CLIENT_IP.as_bytes()));
    }
    let summary = &events[2].summary;
    assert_eq!(summary.client_ip, CLIENT_IP);
    assert_eq!(summary.server_ip, SERVER_IP);
    assert_eq!(summary.server_port, 5900);
    assert_eq!(summary.security_type, Some(2));
    assert_eq!(summary.auth_result, AuthResult::Ok);
    assert_eq!(events[1].summary.auth_result, AuthResult::Ok);
    assert_eq!((summary.width, summary.height), (Some(320), Some(240)));
    assert_eq!(summary.key_events, 10, "five keys pressed and released");
    assert_eq!(summary.agent_id, "live-test");

    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(metrics.contains("vncguard_agent_packets "), "{metrics}");
    assert!(
        metrics.contains("vncguard_agent_records_published_total"),
        "{metrics}"
    );

    // A session still open when the agent stops ends with `shutdown`.
    let holder = lab.spawn_in(
        &client_ns,
        &vncdo,
        &["-s", &target, "-p", PASSWORD, "pause", "20"],
        "holder.log",
    );
    let holder_id = holder.id();
    let records = consume(&rt, &bus, "live-second", SESSIONS_RAW.name, |r| {
        session_events(r)
            .iter()
            .filter(|e| e.kind == SessionEventKind::Auth)
            .count()
            >= 2
    });
    assert!(
        session_events(&records)
            .iter()
            .filter(|e| e.kind == SessionEventKind::Auth)
            .count()
            >= 2,
        "the second session authenticated (client {holder_id}): {}",
        lab.log("holder.log")
    );
    run("kill", &["-TERM", &agent.id().to_string()]).expect("signal the agent");
    let status = agent.wait().expect("agent exits");
    assert!(
        status.success(),
        "agent: {status}\n{}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    let records = consume(&rt, &bus, "live-third", SESSIONS_RAW.name, |r| {
        ended(&session_events(r)).len() >= 2
    });
    let events = session_events(&records);
    let last = ended(&events).into_iter().last().expect("two ended events");
    assert_eq!(last.summary.end_reason.as_deref(), Some("shutdown"));
    assert_eq!(last.summary.auth_result, AuthResult::Ok);

    // Early heartbeats come before the sessions; the one sent at shutdown counts both.
    let decode_heartbeats = |records: &[bus::Record]| -> Vec<AgentHeartbeat> {
        records
            .iter()
            .map(|r| schemas::decode(&r.payload).expect("decodes"))
            .collect()
    };
    let records = consume(&rt, &bus, "live-hb", AGENT_HEARTBEATS.name, |r| {
        decode_heartbeats(r).iter().any(|h| h.sessions_total >= 2)
    });
    let heartbeats = decode_heartbeats(&records);
    let heartbeat = heartbeats
        .iter()
        .find(|h| h.sessions_total >= 2)
        .expect("a heartbeat counting both sessions");
    assert_eq!(heartbeat.agent_id, "live-test");
    assert_eq!(records[0].key.as_deref(), Some(&b"live-test"[..]));
    assert!(heartbeat.packets > 20, "{heartbeat:?}");
    assert_eq!(
        heartbeat.capture_sources,
        vec![format!("live:{}", lab.bridge)]
    );
}
