//! The SIEM tail of the distributed mode: `vncguard-bus consume --format eve` on a real tansu
//! broker, behind the real `capture-agent --pcap` (the shared brute-force capture), `enricher`
//! and `scorer` processes. Its lines pass the EVE consumer check (`tests/eve/`), hold every
//! session of the capture once and the brute-force alert, and SIGTERM stops it cleanly.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use schemas::topics;
use serde_json::Value;
use support::{eve_schema, validate};
use testkit::{lab_capture, wait_for, workspace_binary};

/// The processes of the test, killed when dropped so a failed assertion leaves none behind.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stage(binary: &str, args: &[&str], brokers: &str, log: &Path) -> Command {
    let mut command = Command::new(workspace_binary(binary));
    command
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("KAFKA_BROKERS", brokers)
        .env(
            "METRICS_ADDR",
            format!("127.0.0.1:{}", testkit::free_port().unwrap()),
        )
        .env("BUS_LINGER_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

fn documents(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_format_eve_tails_the_scored_sessions_and_threats() {
    let (_broker, _bus) = testkit::broker_with_topics(1, topics::ALL).await;
    let brokers = _broker.brokers();
    let dir = std::env::temp_dir().join(format!("vncguard-siem-tail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut processes = Processes::default();
    for (binary, args) in [("enricher", vec![]), ("scorer", vec!["run"])] {
        let mut command = stage(binary, &args, &brokers, &dir.join(format!("{binary}.log")));
        command.env("MODEL_LOAD_IDLE_MS", "500");
        processes.0.push(command.spawn().expect(binary));
    }
    let eve = dir.join("eve.jsonl");
    let mut tail = stage(
        "vncguard-bus",
        &["consume", "--format", "eve", "--group", "siem-tail"],
        &brokers,
        &dir.join("tail.log"),
    );
    tail.stdout(std::fs::File::create(&eve).unwrap());
    let tail = tail.spawn().expect("vncguard-bus consume");
    let tail_pid = tail.id();
    processes.0.push(tail);

    let capture = lab_capture("c_bruteforce_vncauth.pcap");
    let agent = stage(
        "capture-agent",
        &["--pcap", capture.to_str().unwrap(), "--sink", "kafka"],
        &brokers,
        &dir.join("agent.log"),
    )
    .env("AGENT_ID", "siem-tail")
    .status()
    .expect("capture-agent --pcap");
    assert!(agent.success());

    let complete = |docs: &[Value]| {
        docs.iter().filter(|d| d["event_type"] == "rfb").count() >= 8
            && docs.iter().any(|d| {
                d["event_type"] == "alert" && d["vncguard"]["threat_type"] == "brute_force"
            })
    };
    tokio::task::spawn_blocking({
        let eve = eve.clone();
        move || {
            wait_for(
                "the tail's eight sessions and the brute force",
                Duration::from_secs(120),
                || complete(&documents(&eve)),
            )
        }
    })
    .await
    .unwrap();

    let stopped = Command::new("kill")
        .args(["-TERM", &tail_pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let tail = processes.0.pop().unwrap();
    let exit = tail.wait_with_output().unwrap();
    assert!(exit.status.success(), "the tail stops cleanly on SIGTERM");

    let text = std::fs::read(&eve).unwrap();
    let errors = validate(&text, &eve_schema());
    assert!(errors.is_empty(), "{errors}");
    let docs = documents(&eve);
    let sessions: Vec<&str> = docs
        .iter()
        .filter(|d| d["event_type"] == "rfb")
        .map(|d| d["vncguard"]["session_id"].as_str().unwrap())
        .collect();
    let mut distinct = sessions.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(sessions.len(), 8, "each session once, when it ended");
    assert_eq!(distinct.len(), 8);
    let brute = docs
        .iter()
        .find(|d| d["event_type"] == "alert" && d["vncguard"]["threat_type"] == "brute_force")
        .unwrap();
    assert_eq!(brute["src_ip"], "127.0.0.1");
    assert!(distinct.contains(&brute["vncguard"]["session_id"].as_str().unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}
