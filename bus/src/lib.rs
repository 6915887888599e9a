//! The bus: one consume → process → produce loop ([`pipeline::run`]) shared by every stage, over
//! two implementations of the same interface — Kafka through rdkafka ([`kafka`]) and an
//! in-process log for the embedded mode ([`memory`]). A stage implements [`Stage`] and cannot
//! tell which bus it runs on.
//!
//! Delivery is at least once: a record's offset is stored only after every output it produced
//! was acknowledged (by the broker, or for the sink by its database commit inside
//! [`Stage::process`]); stored offsets are committed periodically, on partition revoke and at
//! shutdown. Records a stage cannot decode go to the dead-letter topic with headers naming the
//! reason and origin, and the loop goes on.

pub mod config;
pub mod kafka;
pub mod memory;
pub mod pipeline;

use std::future::Future;
use std::time::Duration;

pub use config::BusArgs;
pub use pipeline::{run, PipelineOptions};

/// A record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Broker or producer timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    pub fn new(topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) -> Self {
        Output {
            topic: topic.to_string(),
            key: key.into(),
            payload,
            headers: Vec::new(),
        }
    }

    /// Encodes `event` with the schema registry into an output record.
    pub fn encode<T: schemas::Event>(
        topic: &schemas::topics::Topic,
        key: impl Into<Vec<u8>>,
        event: &T,
    ) -> Result<Self, schemas::CodecError> {
        Ok(Output::new(topic.name, key, schemas::encode(event)?))
    }

    /// The dead-letter record for `record`, which a stage could not process for `reason`.
    pub fn dead_letter(record: &Record, reason: &str) -> Self {
        let mut headers = record.headers.clone();
        headers.push(("dlq.reason".into(), reason.as_bytes().to_vec()));
        headers.push(("dlq.source_topic".into(), record.topic.as_bytes().to_vec()));
        headers.push((
            "dlq.source_partition".into(),
            record.partition.to_string().into_bytes(),
        ));
        headers.push((
            "dlq.source_offset".into(),
            record.offset.to_string().into_bytes(),
        ));
        Output {
            topic: schemas::topics::DEAD_LETTERS.name.to_string(),
            key: record.key.clone().unwrap_or_default(),
            payload: record.payload.clone(),
            headers,
        }
    }
}

/// What a stage made of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish these records (possibly none); the input is done once they are acknowledged.
    Emit(Vec<Output>),
    /// The record cannot be processed (undecodable, invalid): send it to the dead-letter topic.
    DeadLetter(String),
}

/// A failure of a whole batch that may pass on retry (database down, broker unavailable): the
/// loop backs off and offers the same batch again, so stage writes must be idempotent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RetryableError(pub String);

/// The logic of a stage: one outcome per input record, in order.
pub trait Stage: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    fn process(
        &mut self,
        batch: &[Record],
    ) -> impl Future<Output = Result<Vec<Outcome>, RetryableError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("bus configuration: {0}")]
    Config(String),
    #[error("delivery to {topic} failed: {reason}")]
    Delivery { topic: String, reason: String },
    #[error("the in-process bus is closed")]
    Closed,
}

/// Reads records for one member of a consumer group.
pub trait Consumer: Send {
    /// Waits up to `linger` for the first record, then returns what is ready, at most `max`.
    /// An empty batch means nothing arrived in time.
    fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, BusError>> + Send;

    /// Marks `records` as processed; their offsets are committed with the next commit.
    fn store(&mut self, records: &[Record]);

    /// Commits stored offsets now (shutdown).
    fn commit(&mut self) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// Publishes records.
pub trait Producer: Clone + Send + Sync + 'static {
    /// Resolves once every output is acknowledged.
    fn send(&self, outputs: Vec<Output>) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A bus: where consumers and producers come from.
pub trait Bus: Clone + Send + Sync + 'static {
    type Consumer: Consumer + 'static;
    type Producer: Producer;

    /// A member of consumer group `group` reading `topics`.
    fn consumer(&self, group: &str, topics: &[&str]) -> Result<Self::Consumer, BusError>;

    /// A consumer of its own that starts at the end of `topics` and commits nothing: for live
    /// fan-out, where every reader (each API instance) sees every new event.
    fn tail_consumer(&self, topics: &[&str]) -> Result<Self::Consumer, BusError>;

    fn producer(&self) -> Result<Self::Producer, BusError>;

    /// Creates the topics that do not exist yet.
    fn ensure_topics(
        &self,
        topics: &[schemas::topics::Topic],
    ) -> impl Future<Output = Result<(), BusError>> + Send;
}
