//! The Docker Compose deployment and the agent's systemd unit: their structure, and every
//! environment variable they set is one the binaries read (as their `--help` lists it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use testkit::workspace_binary;

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

/// The environment variables `name --help` documents.
fn variables_read_by(name: &str) -> BTreeSet<String> {
    let output = Command::new(workspace_binary(name))
        .arg("--help")
        .output()
        .unwrap();
    let mut help = String::from_utf8_lossy(&output.stdout).into_owned();
    // Subcommands document their own flags.
    for sub in ["run", "serve"] {
        if let Ok(out) = Command::new(workspace_binary(name))
            .args([sub, "--help"])
            .output()
        {
            if out.status.success() {
                help.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(compose_dir().join("docker-compose.yml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    value
}

#[test]
fn compose_runs_kafka_in_kraft_mode_postgres_every_stage_and_two_agents() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for required in [
        "kafka",
        "postgres",
        "sink",
        "enricher",
        "scorer",
        "responder",
        "api",
    ] {
        assert!(
            names.contains(required),
            "service {required} missing: {names:?}"
        );
    }
    let kafka = &services[&Value::from("kafka")]["environment"];
    assert!(kafka["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap()
        .contains("controller"));
    let agents = services
        .values()
        .filter(|s| s["command"][0].as_str() == Some("capture-agent"))
        .count();
    assert!(agents >= 2, "compose runs {agents} capture agents");
}

#[test]
fn every_variable_compose_sets_is_read_by_its_binary() {
    let compose = compose();
    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (service, spec) in compose["services"].as_mapping().unwrap() {
        let service = service.as_str().unwrap();
        let Some(binary_name) = spec["command"][0].as_str() else {
            continue; // kafka and postgres are not ours
        };
        let read = variables_read_by(binary_name);
        for key in spec["environment"].as_mapping().unwrap().keys() {
            let key = key.as_str().unwrap().to_string();
            if !read.contains(&key) {
                unknown.entry(service.to_string()).or_default().push(key);
            }
        }
    }
    assert!(unknown.is_empty(), "variables no binary reads: {unknown:?}");
}

#[test]
fn the_systemd_unit_starts_the_capture_agent_with_flags_it_has() {
    let unit = std::fs::read_to_string(compose_dir().join("vncguard-agent.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert!(words.next().unwrap().ends_with("/capture-agent"));
    let help = Command::new(workspace_binary("capture-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in words.filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "capture-agent has no flag {flag}");
    }
    let read = variables_read_by("capture-agent");
    for line in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        let key = line.split('=').next().unwrap();
        assert!(read.contains(key), "capture-agent does not read {key}");
    }
}
