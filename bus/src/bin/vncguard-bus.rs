//! Operator tool for the bus: create topics, produce and consume test payloads, relay one topic
//! to another through the pipeline loop. Used by the bus tests and the kcat bench.

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
    /// Consume COUNT records with a consumer group and report the rate.
    Consume {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "vncguard-bus-consume")]
        group: String,
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
        } => {
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

fn report(what: &str, count: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{what} {count} records in {secs:.3} s: {:.0} records/s",
        count as f64 / secs
    );
}
