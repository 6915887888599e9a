//! `sink`: writes what the pipeline publishes to Postgres. `sink migrate` applies the schema and
//! exits; `sink run` (the default) migrates, then consumes every sink topic until SIGINT/SIGTERM,
//! enforcing retention on the side.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, PipelineOptions};
use clap::{Parser, Subcommand};
use sink::retention::RetentionPolicy;
use sink::SinkStage;

#[derive(Debug, Parser)]
#[command(name = "sink", version, about = "Writes vncguard's topics to Postgres")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/vncguard",
        global = true
    )]
    database_url: String,
    /// Most Postgres connections the sink holds.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 4, global = true)]
    database_pool_size: usize,
    /// Seconds to wait for a Postgres connection before the batch is retried.
    #[arg(
        long,
        env = "DATABASE_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    database_timeout_secs: u64,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the schema migrations and exit.
    Migrate,
    /// Migrate, then write every sink topic to Postgres (the default).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Consumer group of the sink.
    #[arg(long, env = "SINK_GROUP", default_value = "vncguard-sink")]
    group: String,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9103")]
    metrics_addr: SocketAddr,
    /// Days a session is kept after it started.
    #[arg(long, env = "RETENTION_DAYS_SESSIONS", default_value_t = 90)]
    retention_days_sessions: i64,
    /// Days a threat is kept after it was detected.
    #[arg(long, env = "RETENTION_DAYS_THREATS", default_value_t = 365)]
    retention_days_threats: i64,
    /// Seconds between retention passes.
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    retention_interval_secs: u64,
    /// Rows one retention statement deletes.
    #[arg(long, env = "RETENTION_BATCH_SIZE", default_value_t = 5000)]
    retention_batch_size: i64,
}

fn default_run_args() -> RunArgs {
    // Parsing an empty command line gives every flag its env var or default value.
    #[derive(Parser)]
    struct OnlyRun {
        #[command(flatten)]
        run: RunArgs,
    }
    OnlyRun::parse_from(["sink"]).run
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let pool = sink::connect_pool(
        &args.database_url,
        args.database_pool_size,
        Duration::from_secs(args.database_timeout_secs),
    )?;
    let mut client = pool
        .get()
        .await
        .with_context(|| format!("connecting to {}", args.database_url))?;
    let applied = sink::migrate::migrate(&mut client)
        .await
        .context("migrating the schema")?;
    drop(client);
    tracing::info!(?applied, "schema up to date");
    let run = match args.command {
        Some(Command::Migrate) => return Ok(()),
        Some(Command::Run(run)) => run,
        None => default_run_args(),
    };

    let metrics = tokio::spawn(telemetry::serve_metrics(run.metrics_addr));
    let retention = tokio::spawn(sink::retention::run_periodically(
        pool.clone(),
        RetentionPolicy {
            sessions: chrono::Duration::days(run.retention_days_sessions),
            threats: chrono::Duration::days(run.retention_days_threats),
            batch_size: run.retention_batch_size,
        },
        Duration::from_secs(run.retention_interval_secs.max(1)),
        std::future::pending::<()>(),
    ));

    let bus = KafkaBus::new(&run.bus).context("configuring Kafka")?;
    let mut topics = sink::INPUT_TOPICS.to_vec();
    topics.push(schemas::topics::DEAD_LETTERS);
    bus.ensure_topics(&topics)
        .await
        .context("creating the sink's topics")?;
    let names: Vec<&str> = sink::INPUT_TOPICS.iter().map(|t| t.name).collect();
    let consumer = bus.consumer(&run.group, &names)?;
    let producer = bus.producer()?;
    bus::pipeline::run(
        consumer,
        producer,
        SinkStage::new(pool),
        PipelineOptions::from(&run.bus),
        bus::pipeline::shutdown_signal(),
    )
    .await;
    retention.abort();
    metrics.abort();
    Ok(())
}
