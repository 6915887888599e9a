//! Acceptance: a subscriber outside Rust decodes a record of every topic. One record of each type
//! crosses a real broker (tansu); the payloads as consumed go to fastavro (Python, in a venv),
//! which knows only the repository's .avsc files and finds each writer schema by the
//! fingerprint in the record's header; what it decodes equals what was written.

#[path = "../../schemas/tests/samples/mod.rs"]
mod samples;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::{Bus, Consumer, Output, Producer};
use schemas::topics::{self, Topic};
use serde_json::Value;

/// One sample record per topic, encoded with the codec every stage uses, and the same record
/// as JSON for the comparison.
fn outputs() -> Vec<(Topic, Output, Value)> {
    fn one<T: schemas::Event>(topic: Topic, record: T) -> (Topic, Output, Value) {
        let json = serde_json::to_value(&record).unwrap();
        (
            topic,
            Output::encode(&topic, b"key".to_vec(), &record).unwrap(),
            json,
        )
    }
    vec![
        one(topics::SESSIONS_RAW, samples::event()),
        one(topics::SESSIONS_ENRICHED, samples::enriched()),
        one(topics::SESSIONS_SCORED, samples::scored()),
        one(topics::THREATS, samples::threat()),
        one(topics::DECISIONS, samples::decision()),
        one(topics::AGENT_HEARTBEATS, samples::heartbeat()),
        one(topics::MODELS, samples::model()),
    ]
}

/// Equal as JSON, except that numbers agree to 1e-6 relative: `float` fields are widened by
/// Python.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_decodes_a_record_of_every_topic_by_fingerprint_alone() {
    let python = tokio::task::spawn_blocking(|| {
        testkit::python::venv_bin("fastavro", &["fastavro==1.13.1"], "python")
    })
    .await
    .unwrap()
    .expect("a venv with fastavro")
    .join("python");

    let outputs = outputs();
    let covered: Vec<&str> = outputs.iter().map(|(t, _, _)| t.name).collect();
    for topic in topics::ALL {
        assert!(
            covered.contains(&topic.name) || topic.name == topics::DEAD_LETTERS.name,
            "{} has no sample record here",
            topic.name
        );
    }

    let all: Vec<Topic> = outputs.iter().map(|(t, _, _)| *t).collect();
    let (_broker, bus) = testkit::broker_with_topics(1, &all).await;
    let producer = bus.producer().unwrap();
    producer
        .send(outputs.iter().map(|(_, o, _)| o.clone()).collect())
        .await
        .unwrap();

    let mut consumer = bus.consumer("avro-interop", &covered).unwrap();
    let mut consumed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumed.len() < covered.len() && tokio::time::Instant::now() < deadline {
        for record in consumer
            .next_batch(100, Duration::from_millis(200))
            .await
            .unwrap()
        {
            consumed.insert(record.topic.clone(), record.payload);
        }
    }
    assert_eq!(
        consumed.len(),
        covered.len(),
        "records consumed: {:?}",
        consumed.keys()
    );

    let input: String = consumed
        .iter()
        .map(|(topic, payload)| {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}\n",
                serde_json::json!({"topic": topic, "payload_hex": hex})
            )
        })
        .collect();
    let schemas_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut child = Command::new(python)
        .arg(schemas_dir.join("tests/fastavro_decode.py"))
        .arg(schemas_dir.join("avro"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let run = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "fastavro_decode.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );

    let decoded: BTreeMap<String, Value> = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["topic"].as_str().unwrap().to_string(), v)
        })
        .collect();
    for (topic, output, written) in &outputs {
        let got = decoded
            .get(topic.name)
            .unwrap_or_else(|| panic!("nothing decoded for {}", topic.name));
        let header: String = output.payload[2..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got["fingerprint"], header.as_str(), "{}", topic.name);
        assert!(
            same(&got["record"], written),
            "{}: fastavro read {} from {}\nwritten: {written}",
            topic.name,
            got["record"],
            got["schema"]
        );
    }
}
