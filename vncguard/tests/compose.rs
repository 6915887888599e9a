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

/// Every metric name the workspace's code registers: the string literals that name one.
fn metrics_the_code_registers() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if !matches!(name.as_ref(), "target" | "node_modules" | ".git" | "tests") {
                    walk(&path, names);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    let is_name = literal
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if is_name && (literal.starts_with("vncguard_") || literal.starts_with("api_"))
                    {
                        names.insert(literal.to_string());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        &mut names,
    );
    names
}

/// The vncguard metric names a PromQL expression reads: its identifiers outside quoted label
/// values that carry one of the workspace's prefixes (label names and functions never do).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("vncguard_") || word.starts_with("api_"))
        .map(str::to_string)
        .collect()
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(compose_dir().join("prometheus"))
        .output()
        .expect("promtool (Debian package prometheus; ./dev test installs it)")
}

#[test]
fn the_alerting_rules_are_valid_and_fire_on_what_they_watch() {
    let check = promtool(&["check", "rules", "vncguard-alerts.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Unit tests: each alert fires on the series that should raise it and not on a healthy one.
    let test = promtool(&["test", "rules", "vncguard-alerts.test.yml"]);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn the_rules_and_the_dashboard_read_only_metrics_the_code_exports() {
    let registered = metrics_the_code_registers();
    let mut exprs: Vec<(String, String)> = Vec::new();
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(compose_dir().join("prometheus/vncguard-alerts.yml")).unwrap(),
    )
    .unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            exprs.push((name, rule["expr"].as_str().unwrap().to_string()));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(compose_dir().join("grafana/vncguard-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut panel_ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            panel_ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids repeat"
        );
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            exprs.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let provisioned: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            compose_dir().join("grafana/provisioning/datasources/prometheus.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        provisioned["datasources"][0]["uid"].as_str(),
        Some("prometheus")
    );

    let mut unknown = Vec::new();
    for (owner, expr) in &exprs {
        let read = metrics_in(expr);
        assert!(
            !read.is_empty() || expr.starts_with("up{"),
            "{owner}: no metric in {expr}"
        );
        for metric in read.into_iter().filter(|m| !registered.contains(m)) {
            unknown.push(format!("{owner}: {metric}"));
        }
    }
    assert!(unknown.is_empty(), "metrics no code exports: {unknown:?}");
}

#[test]
fn prometheus_scrapes_each_service_on_the_port_it_serves_metrics() {
    let compose = compose();
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(compose_dir().join("prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let mut targets: Vec<(String, String)> = Vec::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for t in sc["targets"].as_sequence().unwrap() {
                let (host, port) = t.as_str().unwrap().split_once(':').unwrap();
                targets.push((host.to_string(), port.to_string()));
            }
        }
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port = sd["port"].as_u64().unwrap().to_string();
            for name in sd["names"].as_sequence().unwrap() {
                targets.push((name.as_str().unwrap().to_string(), port.clone()));
            }
        }
    }
    let services = compose["services"].as_mapping().unwrap();
    // One-shot init steps (key generation) run to completion before others start, serving no
    // metrics.
    let one_shot: BTreeSet<&str> = services
        .values()
        .filter_map(|s| s["depends_on"].as_mapping())
        .flat_map(|deps| deps.iter())
        .filter(|(_, d)| d["condition"].as_str() == Some("service_completed_successfully"))
        .filter_map(|(name, _)| name.as_str())
        .collect();
    let ours = services
        .iter()
        .filter(|(name, s)| {
            s["image"].as_str() == Some("vncguard")
                && !name.as_str().is_some_and(|n| one_shot.contains(n))
        })
        .count();
    assert_eq!(
        targets.len(),
        ours,
        "one scrape target per vncguard service: {targets:?}"
    );
    for (host, port) in targets {
        let env = &services[&Value::from(host.as_str())]["environment"];
        let serves = env["METRICS_ADDR"]
            .as_str()
            .map(|addr| addr.rsplit(':').next().unwrap().to_string())
            .or_else(|| env["PORT"].as_str().map(str::to_string));
        assert_eq!(
            serves.as_deref(),
            Some(port.as_str()),
            "{host} serves /metrics elsewhere"
        );
    }
}
