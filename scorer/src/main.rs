//! `scorer`: scores enriched sessions and learns its own model of normal use (`run`, the
//! default), and retrains the model by replay (`train`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, PipelineOptions};
use clap::{Parser, Subcommand};
use schemas::topics::{DEAD_LETTERS, MODELS, SESSIONS_ENRICHED, SESSIONS_SCORED, THREATS};
use scorer::forest::KernelArgs;
use scorer::learn::{LearnConfig, Learner};
use scorer::model::{self, ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::RiskConfig;
use scorer::stage::{ScoringStage, DEFAULT_THREAT_MEMORY};
use scorer::train::{self, TrainArgs};

/// vncguard scorer: risk scores, threat rules and Isolation Forest models for VNC sessions.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(flatten)]
    forest_kernel: KernelArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Score enriched sessions and publish scored sessions and threats (the default).
    Run(RunArgs),
    /// Fit a model on a replay of the enriched topic and announce it to running scorers.
    Train {
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        bus: BusArgs,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    risk: RiskConfig,
    /// Consumer group of the scorers.
    #[arg(long, env = "SCORER_GROUP", default_value = "vncguard-scorer")]
    group: String,
    /// Name of the model to follow on the model topic.
    #[arg(long, env = "MODEL_NAME", default_value = DEFAULT_MODEL_NAME)]
    model_name: String,
    /// How long the model topic must be quiet at start before scoring begins, in
    /// milliseconds (the newest model is loaded first).
    #[arg(long, env = "MODEL_LOAD_IDLE_MS", default_value_t = 5_000)]
    model_load_idle_ms: u64,
    #[command(flatten)]
    learn: LearnConfig,
    /// Postgres whose triaged threats name the sessions the scorer's own fits leave out
    /// (optional: without it only the rules decide what is normal use).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Threats remembered so that a threat is republished only when it changes.
    #[arg(long, env = "THREAT_MEMORY", default_value_t = DEFAULT_THREAT_MEMORY)]
    threat_memory: usize,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9102")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    cli.forest_kernel
        .apply()
        .context("choosing the forest scoring kernel (--forest-kernel, FOREST_KERNEL)")?;
    match cli.command {
        Some(Command::Train { train, bus }) => {
            let bus = KafkaBus::new(&bus).context("connecting to Kafka")?;
            let trained = train::train(&bus, &train).await.context("training")?;
            println!("{}", trained.announcement.version);
            Ok(())
        }
        Some(Command::Run(run_args)) => run(run_args).await,
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let bus = KafkaBus::new(&args.bus).context("connecting to Kafka")?;
    bus.ensure_topics(&[
        SESSIONS_ENRICHED,
        SESSIONS_SCORED,
        THREATS,
        MODELS,
        DEAD_LETTERS,
    ])
    .await
    .context("creating topics")?;
    let metrics_addr = args.metrics_addr;
    tokio::spawn(telemetry::serve_metrics(metrics_addr));
    let mut models = ModelStore::new(&args.model_name);
    model::load_latest(
        &bus,
        &mut models,
        Duration::from_millis(args.model_load_idle_ms),
    )
    .await
    .context("loading the newest model")?;
    tracing::info!(model_version = models.version(), "scoring");
    let consumer = bus
        .consumer(&args.group, &[SESSIONS_ENRICHED.name, MODELS.name])
        .context("subscribing")?;
    let producer = bus.producer().context("creating the producer")?;
    let learner = Learner::new(args.learn, &args.model_name);
    let stage = ScoringStage::new(models, args.risk, args.threat_memory)
        .with_learner(learner, args.database_url);
    bus::pipeline::run(
        consumer,
        producer,
        stage,
        PipelineOptions::from(&args.bus),
        bus::pipeline::shutdown_signal(),
    )
    .await;
    Ok(())
}
