//! `vncguard analyze` on real captures, through the real binary: the brute force of the shared
//! brute-force capture with no database (an unreachable `DATABASE_URL` proves none is used) and
//! with no network at all (a network namespace of its own),
//! deterministic session ids, a truncated capture (exit 1, the offset named, the sessions before
//! it printed), the table, storing through the sink with `--database-url`, and the SIEM formats:
//! `--format eve` checked with a JSON Schema validator (Python's `jsonschema`, Debian's
//! python3-jsonschema) against Suricata's EVE shapes (`tests/eve/`), `--format ecs` checked for
//! ECS's required fields, types and allowed categorization values. No output carries a VNC
//! challenge or response (the truth file lists each session's).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use serde_json::Value;
use support::{eve_schema, validate};
use testkit::{lab_capture, workspace_binary};

const BRUTE_FORCE: &str = "c_bruteforce_vncauth.pcap";
/// The client the brute-force capture's 8 connections come from (its truth file).
const ATTACKER: &str = "127.0.0.1";
/// Not a database: the analysis must not need one, and would fail if it tried this.
const NO_DATABASE: &str = "postgres://postgres@127.0.0.1:1/no-database-here";

fn analyze(args: &[&str], files: &[&Path]) -> Output {
    Command::new(workspace_binary("vncguard"))
        .arg("analyze")
        .args(args)
        .args(files)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("DATABASE_URL", NO_DATABASE)
        .env("RUST_LOG", "warn")
        .output()
        .expect("vncguard analyze runs")
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

fn truth(capture: &str) -> Value {
    let path = lab_capture(&capture.replace(".pcap", ".truth.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("truth file")).expect("truth JSON")
}

/// Every VNC challenge and response of the capture's truth file.
fn secrets(capture: &str) -> Vec<String> {
    truth(capture)["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .flat_map(|s| [s["challenge"].as_str(), s["response"].as_str()])
        .flatten()
        .map(str::to_string)
        .collect()
}

fn assert_no_secrets(output: &Output, capture: &str) {
    let text = String::from_utf8_lossy(&output.stdout).to_lowercase();
    let secrets = secrets(capture);
    assert!(!secrets.is_empty(), "the truth file lists the challenges");
    for secret in secrets {
        assert!(
            !text.contains(&secret),
            "output carries the VNC secret {secret}"
        );
    }
}

#[test]
fn the_brute_force_capture_prints_its_brute_force_without_a_database() {
    let output = analyze(&["--format", "json"], &[&lab_capture(BRUTE_FORCE)]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = lines(&output);
    let sessions = of_type(&records, "session");
    // The truth file's eight connections: five failed logins, then three refusals.
    let truth = truth(BRUTE_FORCE);
    let expected: BTreeSet<String> = truth["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client"].as_str().unwrap().to_string())
        .collect();
    let clients: BTreeSet<String> = sessions
        .iter()
        .map(|s| format!("{}:{}", s["client_ip"].as_str().unwrap(), s["client_port"]))
        .collect();
    assert_eq!(clients, expected);
    let failed = sessions
        .iter()
        .filter(|s| s["auth_result"] == "failed")
        .count();
    assert_eq!(failed, 5, "{sessions:#?}");

    let threats = of_type(&records, "threat");
    let brute_force: Vec<_> = threats
        .iter()
        .filter(|t| t["threat_type"] == "brute_force")
        .collect();
    assert!(!brute_force.is_empty(), "no brute force in {threats:#?}");
    for threat in &brute_force {
        assert_eq!(threat["source_ip"], ATTACKER);
        let session = threat["session_id"].as_str().unwrap();
        assert!(
            sessions.iter().any(|s| s["session_id"] == session),
            "the threat's session {session} is among the sessions printed"
        );
    }
    // Each threat once, in its latest state.
    let ids: BTreeSet<&str> = threats
        .iter()
        .map(|t| t["threat_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), threats.len());
    assert_no_secrets(&output, BRUTE_FORCE);
}

#[test]
fn it_needs_no_network_at_all() {
    // In a network namespace of its own (util-linux `unshare`, as root) not even loopback is up:
    // no database, broker or listener could be reached or bound, and the analysis is the same.
    let output = Command::new("unshare")
        .arg("--net")
        .arg(workspace_binary("vncguard"))
        .args(["analyze", "--format", "json"])
        .arg(lab_capture(BRUTE_FORCE))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("RUST_LOG", "warn")
        .output()
        .expect("unshare (util-linux)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = lines(&output);
    assert_eq!(of_type(&records, "session").len(), 8);
    assert!(of_type(&records, "threat")
        .iter()
        .any(|t| t["threat_type"] == "brute_force"));
}

#[test]
fn session_ids_are_the_capture_agents_and_the_same_on_every_run() {
    let file = lab_capture(BRUTE_FORCE);
    let ids = |output: &Output| -> Vec<String> {
        let mut ids: Vec<String> = of_type(&lines(output), "session")
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let first = ids(&analyze(
        &["--format", "json", "--agent-id", "sensor-7"],
        &[&file],
    ));
    let second = ids(&analyze(
        &["--format", "json", "--agent-id", "sensor-7"],
        &[&file],
    ));
    assert_eq!(first, second);
    // The capture agent's own reading of the same file under the same agent id.
    let mut events: Vec<schemas::SessionEvent> = Vec::new();
    let config = capture_agent::AgentConfig {
        agent_id: "sensor-7".into(),
        ..Default::default()
    };
    capture_agent::analyze_file(&file, &config, &mut events).expect("capture agent");
    let mut agent: Vec<String> = events
        .iter()
        .filter(|e| e.kind == schemas::SessionEventKind::Ended)
        .map(|e| e.summary.session_id.clone())
        .collect();
    agent.sort();
    assert_eq!(first, agent);
    let other = ids(&analyze(
        &["--format", "json", "--agent-id", "sensor-8"],
        &[&file],
    ));
    assert!(other.iter().all(|id| !first.contains(id)));
}

#[test]
fn a_truncated_capture_exits_non_zero_names_the_offset_and_prints_what_was_read() {
    let whole = std::fs::read(lab_capture(BRUTE_FORCE)).expect("capture");
    let dir = tempdir();
    let cut = dir.join("cut.pcap");
    // Past the first sessions, inside a packet record.
    let length = whole.len() * 3 / 5;
    std::fs::write(&cut, &whole[..length]).unwrap();
    let full = analyze(&["--format", "json"], &[&lab_capture(BRUTE_FORCE)]);
    let output = analyze(&["--format", "json"], &[&cut]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&cut.display().to_string()), "{stderr}");
    let offset: u64 = stderr
        .split("byte offset ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset named in {stderr}"));
    assert!(
        offset > 24 && offset <= length as u64,
        "offset {offset} in a file cut at {length}"
    );

    // The sessions that began before the cut are printed, under their ids of the whole file.
    let full_ids: BTreeSet<String> = of_type(&lines(&full), "session")
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect();
    let read: Vec<String> = of_type(&lines(&output), "session")
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect();
    assert!(read.len() >= 3, "{read:?}");
    assert!(read.len() < full_ids.len());
    assert!(read.iter().all(|id| full_ids.contains(id)));
}

#[test]
fn a_missing_file_is_named_and_the_other_files_are_still_analysed() {
    let missing = PathBuf::from("/nonexistent/capture.pcap");
    let output = analyze(
        &["--format", "json"],
        &[&missing, &lab_capture(BRUTE_FORCE)],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/capture.pcap"), "{stderr}");
    assert_eq!(of_type(&lines(&output), "session").len(), 8);
}

#[test]
fn the_table_lists_sessions_and_threats() {
    let output = analyze(&["--format", "table"], &[&lab_capture(BRUTE_FORCE)]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("SESSIONS (8)"), "{text}");
    let threat_rows: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("THREATS"))
        .filter(|line| line.contains("brute_force"))
        .collect();
    assert!(!threat_rows.is_empty(), "{text}");
    assert!(threat_rows.iter().all(|row| row.contains(ATTACKER)));
    assert_eq!(
        text.lines()
            .take_while(|line| !line.starts_with("THREATS"))
            .filter(|line| line.contains("127.0.0.1:5900") && line.contains(" failed "))
            .count(),
        5,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_url_also_stores_the_results_through_the_sink() {
    let db = testkit::TestDatabase::create().await.expect("database");
    let url = db.url().to_string();
    let output = tokio::task::spawn_blocking(move || {
        analyze(
            &["--format", "json", "--database-url", &url],
            &[&lab_capture(BRUTE_FORCE)],
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = lines(&output);
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let sessions: i64 = client
        .query_one("SELECT count(*) FROM vnc_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions as usize, of_type(&printed, "session").len());
    let stored: BTreeSet<String> = client
        .query("SELECT threat_type FROM threat_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(stored.contains("brute_force"), "{stored:?}");
}

#[test]
fn eve_output_passes_the_suricata_eve_check() {
    let captures = [
        lab_capture(BRUTE_FORCE),
        lab_capture("e_scanner.pcap"),
        lab_capture("a2_normal_tigervnc_viewer.pcap"),
        lab_capture("d_noauth_session.pcap"),
    ];
    let files: Vec<&Path> = captures.iter().map(PathBuf::as_path).collect();
    let output = analyze(&["--format", "eve"], &files);
    assert!(output.status.success());
    let errors = validate(&output.stdout, &eve_schema());
    assert!(errors.is_empty(), "{errors}");
    // The check can fail: a record with the challenge Suricata would log is refused.
    let forged = br#"{"timestamp":"2026-11-28T10:00:00.000000+0000","event_type":"rfb","flow_id":1,"src_ip":"10.0.0.1","src_port":1,"dest_ip":"10.0.0.2","dest_port":5900,"proto":"TCP","rfb":{"authentication":{"security_type":2,"vnc":{"challenge":"00","response":"11"}}}}"#;
    assert!(!validate(forged, &eve_schema()).is_empty());

    let records = lines(&output);
    let rfb: Vec<&Value> = records
        .iter()
        .filter(|r| r["event_type"] == "rfb")
        .collect();
    let alerts: Vec<&Value> = records
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .collect();
    // The brute force: five failed SecurityResults as Suricata words them, and its alert.
    let failed = rfb
        .iter()
        .filter(|r| r["rfb"]["authentication"]["security_result"] == "FAIL")
        .count();
    assert_eq!(failed, 5);
    let brute = alerts
        .iter()
        .find(|a| a["vncguard"]["threat_type"] == "brute_force")
        .expect("a brute-force alert");
    assert_eq!(brute["src_ip"], ATTACKER);
    assert_eq!(brute["alert"]["signature"], "VNCGUARD VNC brute force");
    assert_eq!(brute["alert"]["metadata"]["mitre_technique_id"][0], "T1110");
    // Its flow id is its session's.
    assert!(rfb.iter().any(|r| r["flow_id"] == brute["flow_id"]
        && r["vncguard"]["session_id"] == brute["vncguard"]["session_id"]));
    // The viewer session's handshake as Suricata logs it.
    let viewer = rfb
        .iter()
        .find(|r| r["rfb"]["framebuffer"]["width"].is_u64())
        .expect("a session with a framebuffer");
    assert_eq!(viewer["rfb"]["client_protocol_version"]["major"], "003");
    assert!(viewer["rfb"]["framebuffer"]["pixel_format"]["bits_per_pixel"].is_u64());
    // RFB 3.8 with security type None has a SecurityResult (the lab's Xvnc SecurityTypes=None).
    let none = rfb
        .iter()
        .find(|r| r["rfb"]["authentication"]["security_type"] == 1)
        .expect("the session without authentication");
    assert_eq!(none["rfb"]["authentication"]["security_result"], "OK");
    assert_no_secrets(&output, BRUTE_FORCE);
}

/// ECS's allowed categorization values (ECS reference, "ECS categorization fields").
const EVENT_KINDS: &[&str] = &[
    "alert",
    "asset",
    "enrichment",
    "event",
    "metric",
    "state",
    "pipeline_error",
    "signal",
];
const EVENT_CATEGORIES: &[&str] = &[
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];
const EVENT_TYPES: &[&str] = &[
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "device",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
];
const EVENT_OUTCOMES: &[&str] = &["failure", "success", "unknown"];

fn assert_ecs_document(doc: &Value) {
    let at = doc["@timestamp"].as_str().expect("@timestamp");
    chrono::DateTime::parse_from_rfc3339(at).expect("@timestamp is RFC 3339");
    assert!(doc["ecs"]["version"]
        .as_str()
        .is_some_and(|v| v.starts_with('8')));
    let event = &doc["event"];
    assert!(EVENT_KINDS.contains(&event["kind"].as_str().expect("event.kind")));
    for (field, allowed) in [("category", EVENT_CATEGORIES), ("type", EVENT_TYPES)] {
        let values = event[field]
            .as_array()
            .unwrap_or_else(|| panic!("event.{field} is an array"));
        assert!(!values.is_empty());
        for value in values {
            assert!(
                allowed.contains(&value.as_str().unwrap()),
                "event.{field} {value}"
            );
        }
    }
    if let Some(outcome) = event.get("outcome") {
        assert!(EVENT_OUTCOMES.contains(&outcome.as_str().unwrap()));
    }
    assert!(event["severity"].is_i64(), "event.severity is a long");
    assert!(event["risk_score"].is_f64() || event["risk_score"].is_i64());
    for side in ["source", "destination"] {
        let ip = doc[side]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("{side}.ip"));
        ip.parse::<std::net::IpAddr>().expect("an IP address");
        if let Some(port) = doc[side].get("port") {
            assert!(port.as_u64().is_some_and(|p| p <= 65535));
        }
    }
    assert_eq!(doc["network"]["transport"], "tcp");
    assert!(doc["vncguard"].is_object());
}

#[test]
fn ecs_output_has_the_required_ecs_fields_and_types() {
    let output = analyze(&["--format", "ecs"], &[&lab_capture(BRUTE_FORCE)]);
    assert!(output.status.success());
    let documents = lines(&output);
    assert!(!documents.is_empty());
    for doc in &documents {
        assert_ecs_document(doc);
    }
    let sessions: Vec<&Value> = documents
        .iter()
        .filter(|d| d["event"]["kind"] == "event")
        .collect();
    assert_eq!(sessions.len(), 8);
    assert_eq!(
        sessions
            .iter()
            .filter(|d| d["event"]["outcome"] == "failure")
            .count(),
        8,
        "five failed logins and three refusals"
    );
    let brute = documents
        .iter()
        .find(|d| d["event"]["kind"] == "alert" && d["rule"]["name"] == "brute_force")
        .expect("a brute-force alert");
    assert_eq!(brute["source"]["ip"], ATTACKER);
    assert!(brute["rule"]["id"].is_string());
    assert_eq!(brute["threat"]["framework"], "MITRE ATT&CK");
    assert_eq!(brute["threat"]["technique"]["id"][0], "T1110");
    assert!(
        brute["source"]["port"].is_u64(),
        "the session's client port"
    );
    assert_no_secrets(&output, BRUTE_FORCE);
}

/// Lab captures that add up to more than `analyze::PROGRESS_MIN_BYTES` (16 MiB).
const LARGE: [&str; 3] = [
    "a_normal_vncauth.pcap",
    "b_clipboard_classic.pcap",
    "d_noauth_session.pcap",
];

#[test]
fn the_progress_bar_shows_on_a_terminal_only() {
    let files: Vec<PathBuf> = LARGE.iter().map(|name| lab_capture(name)).collect();
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(total >= vncguard::analyze::PROGRESS_MIN_BYTES);
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();

    // stderr a pipe: no bar.
    let piped = analyze(&["--format", "json"], &paths);
    assert!(piped.status.success());
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("MiB"));

    // stderr a terminal (util-linux `script` gives the program a pseudo-terminal): the bar, with
    // the file names and the total size, and the JSON still on stdout.
    let dir = tempdir();
    let out = dir.join("out.jsonl");
    let typescript = dir.join("typescript");
    let mut command = format!(
        "{} analyze --format json",
        workspace_binary("vncguard").display()
    );
    for file in &files {
        command.push_str(&format!(" '{}'", file.display()));
    }
    command.push_str(&format!(" > '{}'", out.display()));
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script (util-linux)");
    assert!(status.success());
    let terminal = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).to_string();
    assert!(terminal.contains("a_normal_vncauth.pcap"), "{terminal}");
    assert!(terminal.contains("MiB/"), "{terminal}");
    let sessions = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|line| line.contains(r#""type":"session""#))
        .count();
    assert_eq!(sessions, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vncguard-analyze-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
