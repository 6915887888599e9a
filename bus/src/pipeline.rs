//! The one consume → process → produce loop every stage runs.

use std::future::Future;
use std::time::Duration;

use telemetry::Counter;

use crate::{Consumer, Outcome, Output, Producer, Record, Stage};

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub batch_size: usize,
    pub linger: Duration,
    /// First retry delay; doubled up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            batch_size: 500,
            linger: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl From<&crate::BusArgs> for PipelineOptions {
    fn from(args: &crate::BusArgs) -> Self {
        PipelineOptions {
            batch_size: args.batch_size.max(1),
            linger: args.linger(),
            ..PipelineOptions::default()
        }
    }
}

struct PipelineCounters {
    records_in: &'static Counter,
    records_out: &'static Counter,
    dead_letters: &'static Counter,
    stage_retries: &'static Counter,
    delivery_retries: &'static Counter,
    receive_errors: &'static Counter,
}

impl PipelineCounters {
    fn new(stage: &str) -> Self {
        let labels = &[("stage", stage)];
        PipelineCounters {
            records_in: telemetry::counter(
                "vncguard_bus_records_in_total",
                "Records handed to the stage.",
                labels,
            ),
            records_out: telemetry::counter(
                "vncguard_bus_records_out_total",
                "Records the stage published.",
                labels,
            ),
            dead_letters: telemetry::counter(
                "vncguard_bus_dead_letters_total",
                "Input records sent to the dead-letter topic.",
                labels,
            ),
            stage_retries: telemetry::counter(
                "vncguard_bus_stage_retries_total",
                "Batches the stage failed with a retryable error and was offered again.",
                labels,
            ),
            delivery_retries: telemetry::counter(
                "vncguard_bus_delivery_retries_total",
                "Batches whose outputs were not acknowledged and were published again.",
                labels,
            ),
            receive_errors: telemetry::counter(
                "vncguard_bus_consume_errors_total",
                "Errors reading from the bus.",
                labels,
            ),
        }
    }
}

/// Runs `stage` over the records of `consumer` until `shutdown` resolves, publishing its outputs
/// with `producer`. Offsets of a batch are stored only after all its outputs (and dead letters)
/// are acknowledged; stored offsets are committed at the end.
pub async fn run<C, P, S>(
    mut consumer: C,
    producer: P,
    mut stage: S,
    options: PipelineOptions,
    shutdown: impl Future<Output = ()> + Send,
) where
    C: Consumer,
    P: Producer,
    S: Stage,
{
    let counters = PipelineCounters::new(stage.name());
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(&options);
    loop {
        let batch = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            batch = consumer.next_batch(options.batch_size, options.linger) => batch,
        };
        let batch = match batch {
            Ok(batch) if batch.is_empty() => continue,
            Ok(batch) => batch,
            Err(e) => {
                counters.receive_errors.inc();
                tracing::warn!(stage = stage.name(), error = %e, "reading from the bus failed");
                if backoff.wait(&mut shutdown).await.is_err() {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        counters.records_in.add(batch.len() as u64);

        let Some(outputs) =
            process_until_done(&mut stage, &batch, &counters, &options, &mut shutdown).await
        else {
            break;
        };
        let published = outputs.len() as u64;
        if !deliver_until_done(
            &producer,
            outputs,
            stage.name(),
            &counters,
            &options,
            &mut shutdown,
        )
        .await
        {
            break;
        }
        counters.records_out.add(published);
        consumer.store(&batch);
    }
    if let Err(e) = consumer.commit().await {
        tracing::warn!(stage = stage.name(), error = %e, "final offset commit failed");
    }
    tracing::info!(stage = stage.name(), "pipeline stopped");
}

/// Offers the batch to the stage until it succeeds; returns its outputs with dead letters, or
/// None on shutdown.
async fn process_until_done<S: Stage>(
    stage: &mut S,
    batch: &[Record],
    counters: &PipelineCounters,
    options: &PipelineOptions,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<Vec<Output>> {
    let mut backoff = Backoff::new(options);
    loop {
        match stage.process(batch).await {
            Ok(outcomes) => return Some(collect_outputs(stage.name(), batch, outcomes, counters)),
            Err(e) => {
                counters.stage_retries.inc();
                tracing::warn!(stage = stage.name(), error = %e, "stage failed; retrying the batch");
                backoff.wait(shutdown).await.ok()?;
            }
        }
    }
}

fn collect_outputs(
    stage: &str,
    batch: &[Record],
    outcomes: Vec<Outcome>,
    counters: &PipelineCounters,
) -> Vec<Output> {
    let mut outputs = Vec::new();
    if outcomes.len() != batch.len() {
        // A stage that loses track of its records must not lose the records: dead-letter them.
        tracing::error!(
            stage,
            inputs = batch.len(),
            outcomes = outcomes.len(),
            "stage returned the wrong number of outcomes"
        );
        counters.dead_letters.add(batch.len() as u64);
        let reason = format!(
            "stage {stage} returned {} outcomes for {} records",
            outcomes.len(),
            batch.len()
        );
        return batch
            .iter()
            .map(|r| Output::dead_letter(r, &reason))
            .collect();
    }
    for (record, outcome) in batch.iter().zip(outcomes) {
        match outcome {
            Outcome::Emit(emitted) => outputs.extend(emitted),
            Outcome::DeadLetter(reason) => {
                counters.dead_letters.inc();
                tracing::warn!(stage, topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "record sent to the dead-letter topic");
                outputs.push(Output::dead_letter(record, &reason));
            }
        }
    }
    outputs
}

/// Publishes until every output is acknowledged; false on shutdown.
async fn deliver_until_done<P: Producer>(
    producer: &P,
    outputs: Vec<Output>,
    stage: &str,
    counters: &PipelineCounters,
    options: &PipelineOptions,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    if outputs.is_empty() {
        return true;
    }
    let mut backoff = Backoff::new(options);
    loop {
        match producer.send(outputs.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                counters.delivery_retries.inc();
                tracing::warn!(stage, error = %e, "publishing failed; retrying the batch's outputs");
                if backoff.wait(shutdown).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Exponential backoff that gives way to shutdown.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(options: &PipelineOptions) -> Self {
        Backoff {
            initial: options.initial_backoff,
            max: options.max_backoff,
            next: options.initial_backoff,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps for the next delay; Err if shutdown came first.
    pub async fn wait(
        &mut self,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(), ()> {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            biased;
            _ = shutdown => Err(()),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
