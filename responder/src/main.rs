//! `responder`: turns threats into block decisions by policy and publishes them for the
//! enforcing capture agents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, PipelineOptions};
use clap::{Parser, Subcommand};
use responder::policy::parse_cidr_list;
use responder::{restore_history, Policy, Responder, ResponderStage};
use schemas::topics::{DEAD_LETTERS, DECISIONS, THREATS};
use trust::{DecisionSigner, KeygenArgs};

/// vncguard responder: block decisions from threats (policy, escalation, allow-list, dry run).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bus: BusArgs,
    /// The Ed25519 key every decision is signed with (`responder keygen` makes one); agents
    /// enforce only decisions signed by a key they are configured with.
    #[arg(long, env = "DECISION_SIGNING_KEY_FILE", value_name = "FILE")]
    decision_signing_key_file: Option<PathBuf>,
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

#[derive(Subcommand)]
enum Command {
    /// Make a decision signing key: the private key file (0600) and its public key line
    /// (key_id:BASE64, printed, and written to KEY_FILE.pub) for the agents' DECISION_PUBLIC_KEYS.
    Keygen(KeygenArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    if let Some(Command::Keygen(keygen)) = &args.command {
        println!("{}", keygen.run()?);
        return Ok(());
    }
    let key_file = args
        .decision_signing_key_file
        .as_deref()
        .context("DECISION_SIGNING_KEY_FILE is required: agents refuse unsigned decisions (`responder keygen --key-file FILE` makes a key)")?;
    let signer = DecisionSigner::from_file(key_file)
        .with_context(|| format!("reading the decision signing key {}", key_file.display()))?;
    tracing::info!(key_id = signer.key_id(), "signing decisions");
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
        ResponderStage::new(responder, signer),
        PipelineOptions::from(&args.bus),
        bus::pipeline::shutdown_signal(),
    )
    .await;
    Ok(())
}
