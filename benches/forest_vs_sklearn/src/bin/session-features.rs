//! Writes the session features of the shared captures as a labelled CSV, the data set
//! `compare.py` calls `vnc_sessions`: every capture goes through the capture agent and the
//! enricher (no geo databases, windows of its own, as the lab recorded the captures apart),
//! and the last enriched event of each session becomes one row of `schemas::features::FEATURES`
//! values, built as the scorer builds them (an absent feature is 0).
//!
//! Labelling rule (the `is_anomaly` column):
//! - every session of a lab attack capture is an anomaly: clipboard (`b_*`, `b2_*`), brute
//!   force (`c_*`, `c2_*`), no authentication (`d_*`) and the scanner (`e_*`), whatever its
//!   own outcome (the one correct guess of `c2_*` is still the attacker's session);
//! - in every other capture (`a_*`, `a2_*`, `g*`, the public ones) a session whose
//!   authentication failed, was refused for too many failures or was abandoned is an anomaly,
//!   and every other session (ok, none required, not readable past the handshake) is normal.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use enricher::{
    geo::GeoDatabases,
    reputation::Reputation,
    stage::enrich_event,
    windows::{PartitionWindows, WindowConfig},
};
use schemas::{features::FEATURES, AuthResult, EnrichedSession, SessionEvent};

const HELP: &str = "\
session-features: the session features of the shared captures as a labelled CSV

Usage: session-features --captures <DIR> --output <CSV>

  --captures <DIR>   directory holding lab/ and public/ with *.pcap captures
  --output <CSV>     where to write: a header, then is_anomaly (0/1) and one column per feature
  -h, --help         print this help

No environment variables are read.";

/// Lab captures recorded as attacks: every session in them is labelled an anomaly.
const ATTACK_CAPTURE_PREFIXES: &[&str] = &["b_", "b2_", "c_", "c2_", "d_", "e_"];

fn is_anomaly(capture: &str, lab: bool, session: &EnrichedSession) -> bool {
    let attack_capture = lab
        && ATTACK_CAPTURE_PREFIXES
            .iter()
            .any(|prefix| capture.starts_with(prefix));
    attack_capture
        || matches!(
            session.event.summary.auth_result,
            AuthResult::Failed | AuthResult::TooMany | AuthResult::Abandoned
        )
}

/// The last enriched event of every session of one capture.
fn final_sessions(path: &Path) -> anyhow::Result<Vec<EnrichedSession>> {
    let mut events: Vec<SessionEvent> = Vec::new();
    capture_agent::analyze_file(
        path,
        &capture_agent::config::AgentConfig::default(),
        &mut events,
    )
    .with_context(|| format!("analysing {}", path.display()))?;
    events.sort_by_key(|event| event.time);
    let geo = GeoDatabases::empty();
    let reputation = Reputation::default();
    let mut windows = PartitionWindows::new(WindowConfig::default());
    let mut latest = BTreeMap::new();
    for event in events {
        let session = enrich_event(&geo, &reputation, chrono_tz::Tz::UTC, &mut windows, event);
        latest.insert(session.event.summary.session_id.clone(), session);
    }
    Ok(latest.into_values().collect())
}

fn captures_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut captures: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    captures.retain(|path| path.extension().is_some_and(|ext| ext == "pcap"));
    captures.sort();
    Ok(captures)
}

fn run(captures_dir: &Path, output: &Path) -> anyhow::Result<()> {
    let names: Vec<String> = FEATURES.iter().map(|f| f.name.to_string()).collect();
    let mut csv = format!("is_anomaly,{}\n", names.join(","));
    let (mut normal, mut anomalous) = (0, 0);
    for (subdir, lab) in [("lab", true), ("public", false)] {
        for path in captures_in(&captures_dir.join(subdir))? {
            let capture = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .context("capture name")?;
            let sessions = final_sessions(&path)?;
            let labels: Vec<bool> = sessions
                .iter()
                .map(|session| is_anomaly(capture, lab, session))
                .collect();
            let capture_anomalies = labels.iter().filter(|&&label| label).count();
            eprintln!(
                "{subdir}/{capture}: {} sessions, {capture_anomalies} anomalous",
                sessions.len()
            );
            for (session, label) in sessions.iter().zip(labels) {
                let values: Vec<String> = scorer::model::feature_row(&session.features, &names)
                    .map(|value| format!("{value:?}"))
                    .collect();
                csv.push_str(&format!("{},{}\n", u8::from(label), values.join(",")));
            }
            anomalous += capture_anomalies;
            normal += sessions.len() - capture_anomalies;
        }
    }
    if normal == 0 || anomalous == 0 {
        bail!("{normal} normal and {anomalous} anomalous sessions: no AUC can be computed");
    }
    eprintln!("{normal} normal and {anomalous} anomalous sessions");
    fs::write(output, csv).with_context(|| format!("writing {}", output.display()))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut captures, mut output) = (None, None);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--captures" => captures = Some(PathBuf::from(value)),
            "--output" => output = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}; see --help"),
        }
    }
    run(
        &captures.context("--captures is required")?,
        &output.context("--output is required")?,
    )
}
