//! `responder`: turns threats into block decisions by policy and publishes them for the
//! enforcing capture agents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, PipelineOptions};
use clap::Parser;
use responder::policy::parse_cidr_list;
use responder::{restore_history, Policy, Responder, ResponderStage};
use schemas::topics::{DEAD_LETTERS, DECISIONS, THREATS};

/// vncguard responder: block decisions from threats (policy, escalation, allow-list, dry run).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    bus: BusArgs,
    /// Policy file (TOML): rules, increment, allow, dry_run (see the crate documentation).
    #[arg(long, env = "RESPONSE_POLICY")]
    policy: Option<PathBuf>,
    /// Addresses and CIDRs no automatic decision may touch (comma-separated), added to the
    /// policy file's allow-list.
    #[arg(long, env = "RESPONSE_ALLOW", value_delimiter = ',')]
    allow: Vec<String>,
    /// Record decisions (dry_run = true) without agents enforcing them.
    #[arg(long, env = "RESPONSE_DRY_RUN")]
    dry_run: bool,
    /// Consumer group of the responders.
    #[arg(long, env = "RESPONDER_GROUP", default_value = "vncguard-responder")]
    group: String,
    /// How long the decisions topic must be quiet at start before threats are read, in
    /// milliseconds (ban histories are rebuilt from it first).
    #[arg(long, env = "RESPONDER_RESTORE_IDLE_MS", default_value_t = 5_000)]
    restore_idle_ms: u64,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9105")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let mut policy = match &args.policy {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    };
    policy
        .allow
        .extend(parse_cidr_list(&args.allow.join(",")).context("RESPONSE_ALLOW")?);
    policy.dry_run |= args.dry_run;
    tracing::info!(
        rules = policy.rules.len(),
        allow = policy.allow.len(),
        dry_run = policy.dry_run,
        "response policy"
    );

    let bus = KafkaBus::new(&args.bus).context("connecting to Kafka")?;
    bus.ensure_topics(&[THREATS, DECISIONS, DEAD_LETTERS])
        .await
        .context("creating topics")?;
    tokio::spawn(telemetry::serve_metrics(args.metrics_addr));
    let mut responder = Responder::new(policy);
    let restored = restore_history(
        &bus,
        &mut responder,
        Duration::from_millis(args.restore_idle_ms),
    )
    .await
    .context("rebuilding ban histories from the decisions topic")?;
    tracing::info!(decisions = restored, "ban histories rebuilt");
    let consumer = bus
        .consumer(&args.group, &[THREATS.name, DECISIONS.name])
        .context("subscribing")?;
    let producer = bus.producer().context("creating the producer")?;
    bus::pipeline::run(
        consumer,
        producer,
        ResponderStage::new(responder),
        PipelineOptions::from(&args.bus),
        bus::pipeline::shutdown_signal(),
    )
    .await;
    Ok(())
}
