//! End to end, on the in-process bus (the embedded mode) and on Kafka (tansu, every stage its
//! own process): sessions per second from packets handed to the capture agent until every
//! session is a complete row in Postgres, and the latency from the packet that completes a
//! brute force to its alert on a WebSocket client of the API. Prints a few lines per system,
//! then `REPORT|end_to_end|...` lines for the bench report.

mod captures;
mod measure;
mod pipelines;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use capture_agent::AgentConfig;
use clap::{Parser, ValueEnum};
use tokio::runtime::Runtime;

use captures::{Capture, Sources};
use measure::BruteForce;
use pipelines::{Pipeline, Settings};

/// Throughput copies come from these blocks (public, so the enricher looks every source up),
/// the brute-force trials from others, so the row counts see only the throughput sessions.
const THROUGHPUT_V4: Ipv4Addr = Ipv4Addr::new(45, 0, 0, 1);
const THROUGHPUT_V6: Ipv6Addr = Ipv6Addr::new(0x2a00, 0x4500, 0, 0, 0, 0, 0, 1);
const THROUGHPUT_BLOCKS: &[&str] = &["45.0.0.0/8", "2a00:4500::/32"];
const TRIAL_V4: Ipv4Addr = Ipv4Addr::new(46, 0, 0, 1);
const TRIAL_V6: Ipv6Addr = Ipv6Addr::new(0x2a00, 0x4600, 0, 0, 0, 0, 0, 1);
/// Throughput runs, each larger, before the one that is reported must take most of --seconds.
const MAX_SIZING_RUNS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Systems {
    Both,
    InProcess,
    Kafka,
}

#[derive(Parser)]
#[command(
    about = "vncguard end to end: sessions/s from packets to Postgres rows, and brute force to WebSocket alert latency, on the in-process bus and on Kafka"
)]
struct Args {
    /// Folder of the shared captures; every capture in its lab/ and public/ is replayed.
    #[arg(long, env = "VNCGUARD_PCAPS", default_value = "../shared/pcaps")]
    pcaps: PathBuf,
    /// The brute-force capture of the latency trials, inside --pcaps.
    #[arg(long, default_value = "lab/c_bruteforce_vncauth.pcap")]
    brute_force: PathBuf,
    /// Counted brute-force trials on each system.
    #[arg(long, env = "E2E_TRIALS", default_value_t = 200)]
    trials: usize,
    /// Seconds of end-to-end work the throughput run is sized for (by smaller runs before it).
    #[arg(long, env = "E2E_SECONDS", default_value_t = 12.0)]
    seconds: f64,
    /// Copies of the captures in the throughput run, instead of sizing it to --seconds.
    #[arg(long, env = "E2E_COPIES")]
    copies: Option<usize>,
    /// Which systems to measure.
    #[arg(long, value_enum, default_value = "both")]
    systems: Systems,
    /// City geo databases (see `enricher --help`).
    #[arg(long, env = "GEOIP_CITY_DB", default_value = ".data/geo")]
    geoip_city_db: String,
    /// ASN databases (see `enricher --help`).
    #[arg(long, env = "GEOIP_ASN_DB", default_value = ".data/geo")]
    geoip_asn_db: String,
    #[command(flatten)]
    risk: scorer::risk::RiskConfig,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

/// Every capture in `lab/` and `public/` of `pcaps`.
fn load_captures(pcaps: &std::path::Path, config: &AgentConfig) -> Result<Vec<Capture>> {
    let mut captures = Vec::new();
    for folder in ["lab", "public"] {
        for file in vncguard::capture_files(&pcaps.join(folder))? {
            captures.push(Capture::load(&file, config)?);
        }
    }
    if captures.is_empty() {
        bail!("no captures in {}/lab or /public", pcaps.display());
    }
    Ok(captures)
}

/// Starts one of the systems.
type Start = fn(&Runtime, &Settings) -> Result<Pipeline>;

/// Both measurements on one system; its REPORT lines.
fn measure_system(
    rt: &Runtime,
    start: Start,
    args: &Args,
    settings: &Settings,
    captures: &mut [Capture],
    brute_force: &mut BruteForce,
) -> Result<Vec<String>> {
    let mut pipeline = start(rt, settings)?;
    let label = pipeline.label;
    println!("== {label} ==");
    let mut trial_sources = Sources::new(TRIAL_V4, TRIAL_V6);
    let latencies = measure::alert_latency(
        rt,
        &mut pipeline,
        brute_force,
        &settings.agent,
        &mut trial_sources,
        args.trials,
    )?;
    println!("  brute force to WebSocket alert: {}", latencies.summary());

    let mut sources = Sources::new(THROUGHPUT_V4, THROUGHPUT_V6);
    let per_copy: usize = captures.iter().map(|c| c.sessions).sum();
    let captures_count = captures.len();
    let mut throughput = |copies| {
        measure::throughput(
            rt,
            &mut pipeline,
            captures,
            &settings.agent,
            &mut sources,
            THROUGHPUT_BLOCKS,
            copies,
        )
    };
    // Copies are sized up from one until a run takes most of the wanted time; the last run
    // counts. The first runs also absorb any start-up of the stages.
    let mut copies = args.copies.unwrap_or(1).max(1);
    let mut run = throughput(copies)?;
    for _ in 0..MAX_SIZING_RUNS {
        if args.copies.is_some() || run.elapsed.as_secs_f64() >= 0.75 * args.seconds {
            break;
        }
        println!(
            "  sizing: captures ×{copies}, {} sessions complete after {:.2} s",
            run.sessions,
            run.elapsed.as_secs_f64()
        );
        let wanted = args.seconds * run.sessions_per_second() / per_copy as f64;
        copies = (wanted.ceil() as usize).max(2 * copies);
        run = throughput(copies)?;
    }
    println!(
        "  throughput: {} captures ×{}, {} sessions; packets handed to the agent in {:.2} s, every session an ended and scored row after {:.2} s: {:.0} sessions/s",
        captures_count,
        run.copies,
        run.sessions,
        run.fed.as_secs_f64(),
        run.elapsed.as_secs_f64(),
        run.sessions_per_second()
    );
    let published = pipeline.stop(rt)?;
    println!(
        "  the agent published {} records ({} failed sends retried)",
        published.published, published.failures
    );
    Ok(vec![
        format!(
            "REPORT|end_to_end|sessions/s, packets to scored Postgres rows, {label}|{:.0} sessions/s|-|-",
            run.sessions_per_second()
        ),
        format!(
            "REPORT|end_to_end|brute force to WebSocket alert, {label}|{}|-|-",
            latencies.summary()
        ),
    ])
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    let rt = Runtime::new().context("tokio runtime")?;
    let agent = AgentConfig {
        agent_id: "e2e-bench".to_string(),
        ..AgentConfig::default()
    };

    let mut captures = load_captures(&args.pcaps, &agent)?;
    let per_copy: usize = captures.iter().map(|c| c.sessions).sum();
    let packets: usize = captures.iter().map(|c| c.frames().len()).sum();
    println!(
        "captures: {} files from {}, {per_copy} sessions and {packets} packets per copy",
        captures.len(),
        args.pcaps.display()
    );
    let max_retry = args.risk.rules.brute_force_max_retry;
    let capture = Capture::load(&args.pcaps.join(&args.brute_force), &agent)?;
    let completing = capture.brute_force_completion(&agent, max_retry)?;
    println!(
        "brute force: {}, packet {} of {} completes it ({max_retry} failed logins)",
        capture.name,
        completing + 1,
        capture.frames().len()
    );
    let mut brute_force = BruteForce {
        capture,
        completing,
    };
    let settings = Settings {
        geoip_city_db: args.geoip_city_db.clone(),
        geoip_asn_db: args.geoip_asn_db.clone(),
        risk: args.risk.clone(),
        agent,
    };

    let systems: Vec<Start> = match args.systems {
        Systems::Both => vec![Pipeline::in_process, Pipeline::kafka],
        Systems::InProcess => vec![Pipeline::in_process],
        Systems::Kafka => vec![Pipeline::kafka],
    };
    let mut reports = Vec::new();
    let mut failures = 0;
    for start in systems {
        match measure_system(
            &rt,
            start,
            &args,
            &settings,
            &mut captures,
            &mut brute_force,
        ) {
            Ok(lines) => reports.extend(lines),
            Err(e) => {
                eprintln!("error: {e:#}");
                failures += 1;
            }
        }
    }
    for line in &reports {
        println!("{line}");
    }
    if failures > 0 {
        bail!("{failures} of the systems could not be measured (see above)");
    }
    Ok(())
}
