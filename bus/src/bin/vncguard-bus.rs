//! Operator tool for the bus: create topics, produce and consume test payloads, relay one topic
//! to another through the pipeline loop, tail the scored sessions and threats as SIEM documents
//! (`consume --format eve|ecs|json`). Used by the bus tests and the kcat bench.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bus::kafka::{KafkaBus, TopicSpec};
use bus::{
    pipeline, Bus, BusArgs, Consumer, Outcome, Output, PipelineOptions, Producer, Record,
    RetryableError, Stage,
};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use schemas::topics::{SESSIONS_SCORED, THREATS};
use schemas::{ScoredSession, SessionEventKind, Threat};
use siem_formats::RecordFormat;

#[derive(Parser)]
#[command(about = "vncguard bus tool: topics, test payloads, relay through the pipeline loop")]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create every vncguard topic that is missing.
    CreateTopics,
    /// Produce COUNT records whose payload is the record number padded to SIZE bytes, creating
    /// the topic if it is missing.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Records handed to the producer at once.
        #[arg(long, default_value_t = 10_000)]
        chunk: usize,
    },
    /// Consume COUNT records with a consumer group and report the rate; with --format, tail
    /// the scored-session and threat topics as SIEM documents on stdout instead.
    Consume {
        /// The topic to read; with --format, default: vnc.sessions.scored and vnc.threats.
        #[arg(long)]
        topic: Option<String>,
        /// Records to read; with --format, documents to print (default: until SIGINT/SIGTERM).
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value = "vncguard-bus-consume")]
        group: String,
        /// Print each ended session and each threat (again when the scorer updates it) as a
        /// JSON line: `json` (vncguard's own), `eve` (Suricata EVE rfb/alert) or `ecs`.
        #[arg(long, value_enum)]
        format: Option<RecordFormat>,
    },
    /// Copy records from one topic to another through the pipeline loop, printing the offsets it
    /// processed and committed (`processed TOPIC PARTITION FIRST LAST`, `committed TOPIC
    /// PARTITION NEXT`).
    Relay {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "vncguard-bus-relay")]
        group: String,
    },
}

/// Passes every record through unchanged and reports what it processed.
struct RelayStage {
    to: String,
}

impl Stage for RelayStage {
    fn name(&self) -> &str {
        "relay"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for record in batch {
            let range = ranges
                .entry((record.topic.as_str(), record.partition))
                .or_insert((record.offset, record.offset));
            range.0 = range.0.min(record.offset);
            range.1 = range.1.max(record.offset);
        }
        for ((topic, partition), (first, last)) in ranges {
            println!("processed {topic} {partition} {first} {last}");
        }
        Ok(batch
            .iter()
            .map(|r| {
                Outcome::Emit(vec![Output::new(
                    &self.to,
                    r.key.clone().unwrap_or_default(),
                    r.payload.clone(),
                )])
            })
            .collect())
    }
}

fn payload(n: u64, size: usize) -> Vec<u8> {
    let mut bytes = n.to_string().into_bytes();
    bytes.resize(size.max(bytes.len()), b' ');
    bytes
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    let bus = KafkaBus::new(&cli.bus)?;
    match cli.command {
        Command::CreateTopics => bus.ensure_topics(schemas::topics::ALL).await?,
        Command::Produce {
            topic,
            count,
            size,
            chunk,
        } => {
            bus.create_topics(&[TopicSpec {
                name: topic.clone(),
                partitions: bus.partitions(),
                configs: Vec::new(),
            }])
            .await?;
            let producer = bus.producer()?;
            let start = Instant::now();
            let chunk = chunk.max(1) as u64;
            // Several chunks in flight keep the producer's queue full while acks come back.
            futures::stream::iter((0..count).step_by(chunk as usize))
                .map(|first| {
                    let outputs = (first..(first + chunk).min(count))
                        .map(|i| Output::new(&topic, i.to_string(), payload(i, size)))
                        .collect();
                    producer.send(outputs)
                })
                .buffer_unordered(8)
                .try_collect::<Vec<()>>()
                .await
                .context("producing")?;
            report("produced", count, start.elapsed());
        }
        Command::Consume {
            topic,
            count,
            group,
            format: Some(format),
        } => {
            let topics = match &topic {
                Some(topic) => vec![topic.as_str()],
                None => vec![SESSIONS_SCORED.name, THREATS.name],
            };
            let consumer = bus.consumer(&group, &topics)?;
            tail(consumer, format, count, pipeline::shutdown_signal()).await?;
        }
        Command::Consume {
            topic,
            count,
            group,
            format: None,
        } => {
            let (Some(topic), Some(count)) = (topic, count) else {
                anyhow::bail!(
                    "consume needs --topic and --count (or --format to tail as SIEM documents)"
                );
            };
            let mut consumer = bus.consumer(&group, &[&topic])?;
            let mut seen = 0u64;
            let mut start = None;
            while seen < count {
                let batch = consumer
                    .next_batch(10_000, Duration::from_millis(500))
                    .await?;
                if !batch.is_empty() {
                    start.get_or_insert_with(Instant::now);
                }
                seen += batch.len() as u64;
                consumer.store(&batch);
            }
            consumer.commit().await?;
            report(
                "consumed",
                seen,
                start.map_or(Duration::ZERO, |s| s.elapsed()),
            );
        }
        Command::Relay { from, to, group } => {
            let consumer = bus.consumer(&group, &[&from])?;
            let committed = consumer.committed_offsets();
            let reporter = tokio::spawn(async move {
                let mut reported = BTreeMap::new();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now: BTreeMap<_, _> = committed
                        .lock()
                        .map(|m| m.clone().into_iter().collect())
                        .unwrap_or_default();
                    for ((topic, partition), next) in &now {
                        if reported.get(&(topic.clone(), *partition)) != Some(next) {
                            println!("committed {topic} {partition} {next}");
                        }
                    }
                    reported = now;
                }
            });
            let producer = bus.producer()?;
            pipeline::run(
                consumer,
                producer,
                RelayStage { to },
                PipelineOptions::from(&cli.bus),
                pipeline::shutdown_signal(),
            )
            .await;
            reporter.abort();
        }
    }
    Ok(())
}

/// Prints the scored sessions (each once, when it ended) and threats `consumer` reads as
/// `format` documents, one per line, until `count` are printed or `shutdown`; offsets are
/// stored after the lines are written and committed at the end. A record that does not decode
/// is counted and logged, and the tail goes on.
async fn tail(
    mut consumer: impl Consumer,
    format: RecordFormat,
    count: Option<u64>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use std::io::Write;
    let undecodable = telemetry::counter(
        "vncguard_bus_tail_undecodable_total",
        "Records the SIEM tail (vncguard-bus consume --format) could not decode.",
        &[],
    );
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    tokio::pin!(shutdown);
    while count.is_none_or(|count| printed < count) {
        let batch = tokio::select! {
            _ = &mut shutdown => break,
            batch = consumer.next_batch(1000, Duration::from_millis(500)) => batch?,
        };
        for record in &batch {
            let document = match document(record, format) {
                Ok(Some(document)) => document,
                Ok(None) => continue,
                Err(e) => {
                    undecodable.inc();
                    tracing::warn!(topic = %record.topic, offset = record.offset, error = %e, "record not decodable, skipped");
                    continue;
                }
            };
            serde_json::to_writer(&mut out, &document)?;
            out.write_all(b"\n")?;
            printed += 1;
        }
        out.flush()?;
        consumer.store(&batch);
    }
    consumer.commit().await?;
    if undecodable.get() > 0 {
        tracing::warn!(
            skipped = undecodable.get(),
            "records skipped because they did not decode"
        );
    }
    Ok(())
}

/// The document of one record: a scored session once it ended (its earlier states are not
/// sessions yet), every threat; None for what is not printed.
fn document(record: &Record, format: RecordFormat) -> Result<Option<serde_json::Value>> {
    if record.topic == THREATS.name {
        let threat: Threat = schemas::decode(&record.payload)?;
        return Ok(Some(format.threat(&threat, None)));
    }
    if record.topic == SESSIONS_SCORED.name {
        let scored: ScoredSession = schemas::decode(&record.payload)?;
        let ended = scored.enriched.event.kind == SessionEventKind::Ended;
        return Ok(ended.then(|| format.session(&scored)));
    }
    anyhow::bail!("{} holds neither scored sessions nor threats", record.topic)
}

fn report(what: &str, count: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{what} {count} records in {secs:.3} s: {:.0} records/s",
        count as f64 / secs
    );
}
