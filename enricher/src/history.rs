//! Reading back the input topic, to rebuild a partition's windows when this instance starts
//! processing it (at start, after a rebalance, after an offset jump).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{BusArgs, Record};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("bus configuration: {0}")]
    Config(#[from] bus::BusError),
    #[error("reading {topic}/{partition} offsets {from}..{to} timed out at offset {reached}")]
    Timeout {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        reached: i64,
    },
    #[error("history reader task failed: {0}")]
    Task(String),
}

/// Where past input records come from.
pub trait InputHistory: Send {
    /// The oldest offset `topic` still holds in `partition`.
    fn earliest_offset(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Result<i64, HistoryError>> + Send;

    /// The records of `partition` with offsets in `[from, to)`, in offset order.
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<Record>, HistoryError>> + Send;
}

/// No history: for the embedded mode, where the one enricher instance has read its in-process
/// topic from the start, and for benches. Every partition reads as starting where it is.
pub struct NoHistory;

impl InputHistory for NoHistory {
    async fn earliest_offset(
        &mut self,
        _topic: &str,
        _partition: i32,
    ) -> Result<i64, HistoryError> {
        Ok(i64::MAX)
    }

    async fn read(
        &mut self,
        _topic: &str,
        _partition: i32,
        _from: i64,
        _to: i64,
    ) -> Result<Vec<Record>, HistoryError> {
        Ok(Vec::new())
    }
}

/// Reads partitions of a Kafka topic directly (assigned, outside any consumer group, committing
/// nothing).
pub struct KafkaHistory {
    consumer: Arc<BaseConsumer>,
    timeout: Duration,
}

impl KafkaHistory {
    pub fn new(args: &BusArgs) -> Result<Self, HistoryError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &args.kafka_brokers)
            .set("group.id", "vncguard-enricher-history")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        for (key, value) in args.passthrough_properties()? {
            config.set(key, value);
        }
        Ok(KafkaHistory {
            consumer: Arc::new(config.create()?),
            timeout: Duration::from_secs(30),
        })
    }
}

impl InputHistory for KafkaHistory {
    async fn earliest_offset(&mut self, topic: &str, partition: i32) -> Result<i64, HistoryError> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            let (low, _high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            Ok(low)
        })
        .await
        .map_err(|e| HistoryError::Task(e.to_string()))?
    }

    async fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<Record>, HistoryError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            read_range(&consumer, &topic, partition, from, to, timeout)
        })
        .await
        .map_err(|e| HistoryError::Task(e.to_string()))?
    }
}

fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    timeout: Duration,
) -> Result<Vec<Record>, HistoryError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut records = Vec::with_capacity((to - from) as usize);
    let mut reached = from;
    while reached < to {
        let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
            return Err(HistoryError::Timeout {
                topic: topic.to_string(),
                partition,
                from,
                to,
                reached,
            });
        };
        match consumer.poll(remaining.min(Duration::from_millis(500))) {
            Some(Ok(message)) => {
                reached = message.offset() + 1;
                if message.offset() < to {
                    records.push(Record {
                        topic: topic.to_string(),
                        partition,
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        timestamp_ms: message.timestamp().to_millis(),
                        headers: Vec::new(),
                    });
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    consumer.unassign()?;
    Ok(records)
}
