//! Session events and heartbeats onto the bus: [`BusSink`] is the [`EventSink`] the capture
//! loop writes to, and [`Publisher`] the task that sends what it queued through any
//! [`bus::Producer`] (Kafka, or the in-process bus of the embedded mode).
//!
//! The two meet through a bounded queue, so a slow or unreachable broker never stalls packet
//! capture: live, a full queue drops the event (counted); reading a file, the reader waits
//! instead, since a file can be read at the publisher's pace. The publisher sends batches,
//! awaits the acknowledgements and retries a failed batch with exponential backoff, so delivery
//! is at least once; consumers deduplicate on `event_id`.

use std::time::Duration;

use bus::{Output, Producer};
use schemas::topics::{AGENT_HEARTBEATS, SESSIONS_RAW};
use schemas::{AgentHeartbeat, SessionEvent};
use telemetry::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::output::{EventSink, SinkError};

/// What [`BusSink`] does when the queue to the publisher is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the record and count it (live capture: packets do not wait).
    Drop,
    /// Wait for room (capture files). Blocks the calling thread, so it must not be called from
    /// inside an async task.
    Wait,
}

/// How the publisher batches and retries.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Records queued between capture and publisher.
    pub queue_capacity: usize,
    /// Most records in one send.
    pub batch_size: usize,
    pub overflow: Overflow,
    /// First retry delay; doubled after every failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// After the sink is closed, how long the publisher keeps retrying what is left.
    pub drain_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            queue_capacity: 10_000,
            batch_size: 500,
            overflow: Overflow::Drop,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a publisher did over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Records acknowledged by the bus.
    pub published: u64,
    /// Sends that failed (each retried).
    pub failures: u64,
    /// Records still unsent when the drain timeout ran out at shutdown.
    pub abandoned: u64,
}

/// Counters shared by the sink and the publisher, on `/metrics`.
#[derive(Clone, Copy)]
struct Metrics {
    queued: &'static Counter,
    dropped: &'static Counter,
    encode_errors: &'static Counter,
    published: &'static Counter,
    failures: &'static Counter,
    abandoned: &'static Counter,
}

impl Metrics {
    fn register() -> Metrics {
        Metrics {
            queued: telemetry::counter(
                "vncguard_agent_records_queued_total",
                "Session events and heartbeats queued for the publisher.",
                &[],
            ),
            dropped: telemetry::counter(
                "vncguard_agent_records_dropped_total",
                "Records dropped because the queue to the publisher was full (broker slow or down).",
                &[("reason", "queue_full")],
            ),
            encode_errors: telemetry::counter(
                "vncguard_agent_encode_errors_total",
                "Records that could not be encoded with their Avro schema.",
                &[],
            ),
            published: telemetry::counter(
                "vncguard_agent_records_published_total",
                "Records acknowledged by the bus.",
                &[],
            ),
            failures: telemetry::counter(
                "vncguard_agent_publish_failures_total",
                "Batch sends that failed and were retried after a backoff.",
                &[],
            ),
            abandoned: telemetry::counter(
                "vncguard_agent_records_abandoned_total",
                "Records still unsent when the shutdown drain timeout ran out.",
                &[],
            ),
        }
    }
}

/// The capture side: encodes events and heartbeats and queues them for the [`Publisher`].
pub struct BusSink {
    queue: mpsc::Sender<Output>,
    overflow: Overflow,
    metrics: Metrics,
}

/// The publishing side: drains the queue into a [`bus::Producer`].
pub struct Publisher<P: Producer> {
    queue: mpsc::Receiver<Output>,
    producer: P,
    options: PublishOptions,
    metrics: Metrics,
}

/// A sink and the publisher behind it, joined by a queue of `options.queue_capacity`.
pub fn channel<P: Producer>(producer: P, options: PublishOptions) -> (BusSink, Publisher<P>) {
    let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
    let metrics = Metrics::register();
    (
        BusSink {
            queue: tx,
            overflow: options.overflow,
            metrics,
        },
        Publisher {
            queue: rx,
            producer,
            options,
            metrics,
        },
    )
}

/// [`channel`] with the publisher spawned on `runtime`; drop or [`BusSink::close`] the sink and
/// await the handle to wait for the last acknowledgement.
pub fn spawn<P: Producer>(
    producer: P,
    options: PublishOptions,
    runtime: &tokio::runtime::Handle,
) -> (BusSink, JoinHandle<PublishReport>) {
    let (sink, publisher) = channel(producer, options);
    (sink, runtime.spawn(publisher.run()))
}

/// The record of a session event: raw topic, keyed by client IP.
pub fn session_event_record(event: &SessionEvent) -> Result<Output, schemas::CodecError> {
    Output::encode(&SESSIONS_RAW, event.summary.client_ip.clone(), event)
}

/// The record of a heartbeat: heartbeat topic, keyed by agent id.
pub fn heartbeat_record(heartbeat: &AgentHeartbeat) -> Result<Output, schemas::CodecError> {
    Output::encode(&AGENT_HEARTBEATS, heartbeat.agent_id.clone(), heartbeat)
}

impl BusSink {
    fn enqueue(&mut self, record: Result<Output, schemas::CodecError>) -> Result<(), SinkError> {
        let record = record.inspect_err(|_| self.metrics.encode_errors.inc())?;
        match self.overflow {
            Overflow::Drop => match self.queue.try_send(record) {
                Ok(()) => self.metrics.queued.inc(),
                Err(mpsc::error::TrySendError::Full(dropped)) => {
                    self.metrics.dropped.inc();
                    tracing::debug!(topic = %dropped.topic, "publisher queue full; record dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err("the publisher has stopped".into())
                }
            },
            Overflow::Wait => {
                self.queue
                    .blocking_send(record)
                    .map_err(|_| "the publisher has stopped")?;
                self.metrics.queued.inc();
            }
        }
        Ok(())
    }

    /// Records dropped so far because the queue was full (all sinks of the process).
    pub fn dropped(&self) -> u64 {
        self.metrics.dropped.get()
    }

    /// Closes the queue: the publisher sends what is left and finishes.
    pub fn close(self) {}
}

impl EventSink for BusSink {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError> {
        self.enqueue(session_event_record(event))
    }

    fn heartbeat(&mut self, heartbeat: &AgentHeartbeat) -> Result<(), SinkError> {
        self.enqueue(heartbeat_record(heartbeat))
    }
}

impl<P: Producer> Publisher<P> {
    /// Sends batches until the sink is closed and the queue is empty (or, at that point, the
    /// drain timeout runs out while the bus keeps failing).
    pub async fn run(mut self) -> PublishReport {
        let mut report = PublishReport::default();
        let mut batch = Vec::with_capacity(self.options.batch_size);
        let mut drain_deadline = None;
        loop {
            if self
                .queue
                .recv_many(&mut batch, self.options.batch_size)
                .await
                == 0
            {
                break;
            }
            let len = batch.len() as u64;
            if self
                .send_with_retry(&mut batch, &mut report, &mut drain_deadline)
                .await
            {
                report.published += len;
                self.metrics.published.add(len);
            } else {
                report.abandoned += len;
                break;
            }
        }
        // Give up on whatever is left only when the drain timeout ran out.
        self.queue.close();
        while let Ok(_record) = self.queue.try_recv() {
            report.abandoned += 1;
        }
        self.metrics.abandoned.add(report.abandoned);
        if report.abandoned > 0 {
            tracing::error!(
                abandoned = report.abandoned,
                "bus unreachable at shutdown; records not published"
            );
        }
        report
    }

    /// Sends `batch` until it is acknowledged; false once the sink is closed and the drain
    /// timeout has run out.
    async fn send_with_retry(
        &mut self,
        batch: &mut Vec<Output>,
        report: &mut PublishReport,
        drain_deadline: &mut Option<tokio::time::Instant>,
    ) -> bool {
        let mut backoff = self.options.initial_backoff;
        loop {
            let attempt = batch.clone();
            match self.producer.send(attempt).await {
                Ok(()) => {
                    batch.clear();
                    return true;
                }
                Err(e) => {
                    report.failures += 1;
                    self.metrics.failures.inc();
                    tracing::warn!(error = %e, records = batch.len(), retry_in = ?backoff, "publishing failed");
                }
            }
            if self.queue.is_closed() {
                let deadline = *drain_deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + self.options.drain_timeout
                });
                if tokio::time::Instant::now() + backoff > deadline {
                    return false;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }
}
