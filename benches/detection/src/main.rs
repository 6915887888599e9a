//! Detection quality on the labelled recordings: every recording goes through the embedded
//! pipeline (capture replay, enricher, scorer, sink) into a throwaway Postgres database, in the
//! order it was recorded, and the stored risk scores and threats are compared with the labels.
//! Prints the details, `REPORT|detection|...` lines for the bench report, and writes the
//! features of the authenticated sessions with vncguard's forest scores for `compare.py`, which
//! puts scikit-learn's IsolationForest beside it on the same rows and folds.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capture_agent::config::AgentConfig;
use clap::Parser;
use detection_bench::{labelled_recordings, read_labels, roc_auc, Class, LabelledSession};
use schemas::AuthResult;
use scorer::forest::{ForestParams, IsolationForest};
use vncguard::{Embedded, EmbeddedConfig};

#[derive(Parser)]
#[command(
    about = "vncguard detection quality on labelled recordings of attacks, normal use and insider anomalies"
)]
struct Args {
    /// Folder of the recordings and their labels.tsv (made by benches/detection/record.sh).
    #[arg(long, default_value = "benches/detection/recordings")]
    recordings: PathBuf,
    /// Where the forest comparison's rows and scores go.
    #[arg(long, default_value = "target/detection-bench")]
    work_dir: PathBuf,
    /// Forest seeds averaged over: a forest fitted on a few dozen sessions varies from seed to
    /// seed, and the comparison with scikit-learn should not hang on one draw.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Folds of the normal authenticated sessions: each fold is scored by forests fitted on the
    /// others, so no normal session is scored by a forest that saw it.
    #[arg(long, default_value_t = 3)]
    folds: usize,
    #[command(flatten)]
    risk: scorer::risk::RiskConfig,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

/// What the pipeline stored for one session.
struct Outcome {
    session: LabelledSession,
    risk: f64,
    /// Worst threat severity, 0 (none) to 4 (critical).
    severity: u8,
    threat_types: Vec<String>,
    start_ns: i64,
    features: BTreeMap<String, f64>,
}

const SEVERITIES: [&str; 5] = ["none", "low", "medium", "high", "critical"];
const MEDIUM: u8 = 2;

fn severity_rank(name: &str) -> u8 {
    SEVERITIES
        .iter()
        .position(|s| *s == name)
        .unwrap_or_default() as u8
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    if args.folds < 2 {
        bail!("--folds must be at least 2");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(run_pipeline(&args))?;
    let mut report = String::new();
    report_rules_and_risk(&outcomes, &mut report);
    write_forest_rows(&args, &outcomes)?;
    print!("{report}");
    Ok(())
}

async fn run_pipeline(args: &Args) -> Result<Vec<Outcome>> {
    let agent = AgentConfig::default();
    let labels = read_labels(&args.recordings.join("labels.tsv"))?;
    let recordings = labelled_recordings(&args.recordings, &labels, &agent)?;
    let sessions: Vec<LabelledSession> = recordings
        .iter()
        .flat_map(|recording| recording.sessions.iter().cloned())
        .collect();
    println!(
        "{} recordings, {} sessions: {} benign, {} attack, {} insider",
        recordings.len(),
        sessions.len(),
        count_class(&sessions, Class::Benign),
        count_class(&sessions, Class::Attack),
        count_class(&sessions, Class::Insider)
    );
    let database = testkit::TestDatabase::create().await?;
    let embedded = Embedded::start(EmbeddedConfig {
        database_url: database.url().to_string(),
        // Every recorded address is private: there is nothing to look up.
        geoip_city_db: String::new(),
        geoip_asn_db: String::new(),
        risk: args.risk.clone(),
        // As a new installation learns: a first model once enough normal sessions have passed.
        learn: scorer::learn::LearnConfig::default(),
        bus_capacity: 100_000,
        agent,
    })
    .await?;
    let files: Vec<PathBuf> = recordings.iter().map(|r| r.path.clone()).collect();
    let started = Instant::now();
    embedded.replay(&files).await?;
    settle(&embedded, sessions.len()).await?;
    println!(
        "pipeline: {} sessions stored and scored in {:.1} s",
        sessions.len(),
        started.elapsed().as_secs_f64()
    );
    let outcomes = stored_outcomes(&embedded, sessions).await;
    embedded.stop().await;
    outcomes
}

fn count_class(sessions: &[LabelledSession], class: Class) -> usize {
    sessions.iter().filter(|s| s.label.class == class).count()
}

/// Waits until the stages have taken everything off the bus, every session is stored and
/// scored, and the threat count stops moving.
async fn settle(embedded: &Embedded, sessions: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let client = embedded.pool().get().await?;
    let mut last = (-1, -1, -1);
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM vnc_sessions),
                        (SELECT count(*) FROM vnc_sessions WHERE scored_at IS NOT NULL),
                        (SELECT count(*) FROM threat_logs)",
                &[],
            )
            .await?;
        let now: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if embedded.drained() && now == last && now.0 == sessions as i64 && now.1 == now.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not settle: (stored, scored, threats) = {now:?} of {sessions} sessions");
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn stored_outcomes(
    embedded: &Embedded,
    sessions: Vec<LabelledSession>,
) -> Result<Vec<Outcome>> {
    let client = embedded.pool().get().await?;
    let mut stored: HashMap<String, (f64, i64, BTreeMap<String, f64>)> = HashMap::new();
    for row in client
        .query(
            "SELECT id, risk_score::float8, (extract(epoch FROM start_time) * 1e9)::int8, features FROM vnc_sessions",
            &[],
        )
        .await?
    {
        let features: serde_json::Value = row.get(3);
        let features = features
            .as_object()
            .context("features is not an object")?
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_f64()?)))
            .collect();
        stored.insert(row.get(0), (row.get(1), row.get(2), features));
    }
    let mut threats: HashMap<String, (u8, Vec<String>)> = HashMap::new();
    for row in client
        .query(
            "SELECT session_id, severity, threat_type FROM threat_logs WHERE session_id IS NOT NULL",
            &[],
        )
        .await?
    {
        let entry = threats.entry(row.get(0)).or_default();
        entry.0 = entry.0.max(severity_rank(row.get(1)));
        entry.1.push(row.get(2));
    }
    sessions
        .into_iter()
        .map(|session| {
            let (risk, start_ns, features) = stored
                .remove(&session.session_id)
                .with_context(|| format!("session {} was not stored", session.session_id))?;
            let (severity, mut threat_types) =
                threats.remove(&session.session_id).unwrap_or_default();
            threat_types.sort();
            threat_types.dedup();
            Ok(Outcome {
                session,
                risk,
                severity,
                threat_types,
                start_ns,
                features,
            })
        })
        .collect()
}

fn report_line(report: &mut String, what: &str, value: &str) {
    let _ = writeln!(report, "REPORT|detection|{what}|{value}|-|-");
}

fn fraction(part: usize, whole: usize) -> String {
    format!("{part}/{whole}")
}

fn report_rules_and_risk(outcomes: &[Outcome], report: &mut String) {
    println!("\nsession                                   class    kind                  risk  worst     threats");
    for o in outcomes {
        println!(
            "{:<41} {:<8} {:<21} {:>5.1} {:<9} {}",
            format!("{} {}", o.session.capture, o.session.client_ip),
            o.session.label.class.as_str(),
            o.session.label.kind,
            o.risk,
            SEVERITIES[o.severity as usize],
            o.threat_types.join(",")
        );
    }

    // Recall per attack type: an attack (one tool's run, one capture) is found when any of its
    // sessions raised a threat of medium or worse; its sessions are counted too.
    let mut by_kind: BTreeMap<(Class, &str), BTreeMap<&str, Vec<&Outcome>>> = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| o.session.label.class != Class::Benign)
    {
        by_kind
            .entry((o.session.label.class, o.session.label.kind.as_str()))
            .or_default()
            .entry(o.session.capture.as_str())
            .or_default()
            .push(o);
    }
    println!();
    for ((class, kind), captures) in &by_kind {
        let found = captures
            .values()
            .filter(|sessions| sessions.iter().any(|o| o.severity >= MEDIUM))
            .count();
        let sessions: Vec<&&Outcome> = captures.values().flatten().collect();
        let alerted = sessions.iter().filter(|o| o.severity >= MEDIUM).count();
        let what = match class {
            Class::Attack => format!("recall, attack type {kind}"),
            _ => format!("rules' recall, insider {kind} (after a correct login)"),
        };
        let value = format!(
            "{} {} ({} sessions at >= medium)",
            fraction(found, captures.len()),
            if *class == Class::Attack {
                "attacks"
            } else {
                "sessions' recordings"
            },
            fraction(alerted, sessions.len())
        );
        println!("{what}: {value}");
        report_line(report, &what, &value);
    }

    let benign: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.session.label.class == Class::Benign)
        .collect();
    let alerted: Vec<&&Outcome> = benign.iter().filter(|o| o.severity >= MEDIUM).collect();
    for o in &alerted {
        println!(
            "benign alerted: {} {} ({})",
            o.session.capture,
            o.session.client_ip,
            o.threat_types.join(",")
        );
    }
    report_line(
        report,
        "benign sessions alerted at >= medium",
        &fraction(alerted.len(), benign.len()),
    );

    for (class, what) in [
        (Class::Attack, "risk ROC AUC, attack sessions vs benign"),
        (Class::Insider, "risk ROC AUC, insider sessions vs benign"),
    ] {
        let pairs: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.session.label.class == class || o.session.label.class == Class::Benign)
            .collect();
        let scores: Vec<f64> = pairs.iter().map(|o| o.risk).collect();
        let positives: Vec<bool> = pairs
            .iter()
            .map(|o| o.session.label.class == class)
            .collect();
        let value = roc_auc(&scores, &positives).map_or("-".to_string(), |auc| format!("{auc:.3}"));
        println!("{what}: {value}");
        report_line(report, what, &value);
    }

    // The bounds: a session's risk against its worst finding.
    let mut bounds = Vec::new();
    for severity in (0..SEVERITIES.len()).rev() {
        let risks: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.severity as usize == severity)
            .map(|o| o.risk)
            .collect();
        if risks.is_empty() {
            continue;
        }
        let (min, max) = risks
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        bounds.push(format!(
            "{} {min:.0}-{max:.0} (n={})",
            SEVERITIES[severity],
            risks.len()
        ));
    }
    let value = bounds.join(", ");
    println!("risk by worst threat: {value}");
    report_line(report, "risk range by worst threat of the session", &value);
}

/// The authenticated benign and insider sessions: a CSV of their features with each benign
/// session's fold, and vncguard's forest scores for every (seed, fold), each forest fitted on
/// the benign sessions of the other folds.
fn write_forest_rows(args: &Args, outcomes: &[Outcome]) -> Result<()> {
    let mut rows: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.session.label.class != Class::Attack
                && matches!(
                    o.session.auth_result,
                    AuthResult::Ok | AuthResult::NoneRequired
                )
        })
        .collect();
    rows.sort_by_key(|o| o.start_ns);
    // The scorer's own model inputs, so both forests see what the scorer's sees.
    let names: Vec<String> = schemas::features::model_names()
        .map(str::to_string)
        .collect();
    let matrix: Vec<Vec<f64>> = rows
        .iter()
        .map(|o| scorer::model::feature_row(&o.features, &names).collect())
        .collect();
    // Benign sessions take turns in time order, so every fold spans the whole week.
    let mut benign_seen = 0;
    let folds: Vec<Option<usize>> = rows
        .iter()
        .map(|o| {
            (o.session.label.class == Class::Benign).then(|| {
                benign_seen += 1;
                (benign_seen - 1) % args.folds
            })
        })
        .collect();
    if benign_seen < args.folds * 2 || benign_seen == rows.len() {
        bail!(
            "{benign_seen} benign of {} authenticated sessions: too few to compare forests",
            rows.len()
        );
    }

    let mut csv = format!("session,class,kind,fold,{}\n", names.join(","));
    for ((o, fold), values) in rows.iter().zip(&folds).zip(&matrix) {
        let values: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let _ = writeln!(
            csv,
            "{} {},{},{},{},{}",
            o.session.capture,
            o.session.client_ip,
            o.session.label.class.as_str(),
            o.session.label.kind,
            fold.map_or(-1, |f| f as i64),
            values.join(",")
        );
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let features_csv = args.work_dir.join("authenticated_sessions.csv");
    std::fs::write(&features_csv, csv)?;

    let mut scores_csv = String::from("seed,fold,row,score\n");
    let mut aucs = Vec::new();
    for seed in 0..args.seeds {
        for fold in 0..args.folds {
            let train: Vec<f64> = matrix
                .iter()
                .zip(&folds)
                .filter(|(_, f)| f.is_some_and(|f| f != fold))
                .flat_map(|(values, _)| values.iter().copied())
                .collect();
            let params = ForestParams {
                seed,
                ..ForestParams::default()
            };
            let forest = IsolationForest::fit(&train, names.len(), names.clone(), &params)
                .context("fitting the forest")?;
            let (mut scores, mut positives) = (Vec::new(), Vec::new());
            for (index, (values, f)) in matrix.iter().zip(&folds).enumerate() {
                if f.is_some_and(|f| f != fold) {
                    continue;
                }
                let score = forest.score(values);
                let _ = writeln!(scores_csv, "{seed},{fold},{index},{score:?}");
                scores.push(score);
                positives.push(f.is_none());
            }
            aucs.extend(roc_auc(&scores, &positives));
        }
    }
    std::fs::write(args.work_dir.join("vncguard_forest_scores.csv"), scores_csv)?;
    let mean = aucs.iter().sum::<f64>() / aucs.len().max(1) as f64;
    println!(
        "forest on {} authenticated sessions ({benign_seen} benign in {} folds, {} insider), {} seeds: mean AUC {mean:.3}; rows in {}",
        rows.len(),
        args.folds,
        rows.len() - benign_seen,
        args.seeds,
        features_csv.display()
    );
    Ok(())
}
