//! The bus on Kafka through rdkafka: consumer groups with manual offset storing, an idempotent
//! producer (`acks=all`), and topic creation with the admin API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, Statistics};
use schemas::topics::{Retention, Topic};
use telemetry::Counter;

use crate::{BusArgs, BusError, Output, Record};

/// Offsets this member committed, by (topic, partition): the next offset the group will read.
pub type CommittedOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

#[derive(Clone)]
pub struct KafkaBus {
    brokers: String,
    properties: Vec<(String, String)>,
    partitions: i32,
    replication_factor: i32,
}

impl KafkaBus {
    pub fn new(args: &BusArgs) -> Result<Self, BusError> {
        Ok(KafkaBus {
            brokers: args.kafka_brokers.clone(),
            properties: args.passthrough_properties()?,
            partitions: args.kafka_partitions,
            replication_factor: args.kafka_replication_factor,
        })
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// This bus with librdkafka `properties` added after the pass-through ones, so they win:
    /// one client tuned differently from the rest (a producer's batching, say).
    pub fn with_properties(&self, properties: &[(&str, &str)]) -> KafkaBus {
        let mut bus = self.clone();
        bus.properties.extend(
            properties
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string())),
        );
        bus
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // An alert crosses three consumers between packet and dashboard. Apache Kafka answers
            // a fetch as soon as a record is there; tansu 0.6 waits out part of this bound even
            // then, which made each hop cost ~250 ms at librdkafka's default of 500.
            .set("fetch.wait.max.ms", "100")
            // Feeds vncguard_bus_consumer_lag; parsing the JSON every 5 s costs nothing
            // measurable, and an alert on lag looks at minutes.
            .set("statistics.interval.ms", "5000");
        // Pass-through properties win over our defaults.
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    fn subscribe(
        &self,
        config: ClientConfig,
        group: &str,
        topics: &[&str],
    ) -> Result<KafkaConsumer, BusError> {
        let committed = CommittedOffsets::default();
        let next_offsets = NextOffsets::default();
        let context = GroupContext {
            group: group.to_string(),
            committed: committed.clone(),
            next_offsets: next_offsets.clone(),
        };
        let consumer: StreamConsumer<GroupContext> = config.create_with_context(context)?;
        consumer.subscribe(topics)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            committed,
            next_offsets,
            compacted: schemas::topics::ALL
                .iter()
                .filter(|topic| matches!(topic.retention, Retention::Compacted))
                .map(|topic| topic.name.to_string())
                .collect(),
            skipped: telemetry::counter(
                "vncguard_bus_skipped_offsets_total",
                "Offsets the broker never delivered (records accepted and never processed); see the warning logs.",
                &[("group", group)],
            ),
            store_errors: telemetry::counter(
                "vncguard_bus_offset_store_errors_total",
                "Offsets that could not be stored (partition revoked meanwhile); the records are redelivered.",
                &[("group", group)],
            ),
            receive_errors: telemetry::counter(
                "vncguard_bus_receive_errors_total",
                "Errors returned by the Kafka consumer.",
                &[("group", group)],
            ),
        })
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

impl crate::Bus for KafkaBus {
    type Consumer = KafkaConsumer;
    type Producer = KafkaProducer;

    fn consumer(&self, group: &str, topics: &[&str]) -> Result<KafkaConsumer, BusError> {
        self.subscribe(self.consumer_config(group), group, topics)
    }

    fn tail_consumer(&self, topics: &[&str]) -> Result<KafkaConsumer, BusError> {
        let group = format!("vncguard-tail-{}", unique_suffix());
        let mut config = self.consumer_config(&group);
        config.set("auto.offset.reset", "latest");
        config.set("enable.auto.commit", "false");
        // It commits nothing, so it has no lag to report.
        config.set("statistics.interval.ms", "0");
        self.subscribe(config, &group, topics)
    }

    fn producer(&self) -> Result<KafkaProducer, BusError> {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        Ok(KafkaProducer {
            producer: Arc::new(config.create_with_context(AckContext)?),
        })
    }

    async fn ensure_topics(&self, topics: &[Topic]) -> Result<(), BusError> {
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|topic| TopicSpec {
                name: topic.name.to_string(),
                // A compacted topic holds the latest record per key; one partition keeps its
                // readers simple and its ordering total.
                partitions: match topic.retention {
                    Retention::Compacted => 1,
                    Retention::Hours(_) => self.partitions,
                },
                configs: topic.configs(),
            })
            .collect();
        self.create_topics(&specs).await
    }
}

/// A topic to create.
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(&'static str, String)>,
}

impl KafkaBus {
    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub async fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topics: Vec<NewTopic> = specs
            .iter()
            .map(|spec| {
                spec.configs.iter().fold(
                    NewTopic::new(
                        &spec.name,
                        spec.partitions,
                        TopicReplication::Fixed(self.replication_factor),
                    ),
                    |new, (k, v)| new.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Config(format!(
                        "cannot create topic {name}: {code}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The partition count this bus gives the topics it creates.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }
}

/// The offset each partition's next record should have, to notice offsets the broker did not
/// deliver (see [`KafkaConsumer::skipped_offsets`]).
type NextOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Commits stored offsets when partitions are revoked, so the next owner starts after what this
/// member finished, and remembers what was committed.
struct GroupContext {
    group: String,
    committed: CommittedOffsets,
    next_offsets: NextOffsets,
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): each partition's lag, the
    /// records between its committed offset and the broker's end, as a gauge. Lag is what an
    /// alert on a stage falling behind reads; a partition this member does not own (lag -1)
    /// reads 0 here and its real lag on the member that owns it.
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 {
                    continue;
                }
                telemetry::gauge(
                    "vncguard_bus_consumer_lag",
                    "Records between the group's committed offset and the end of the partition.",
                    &[
                        ("group", &self.group),
                        ("topic", topic),
                        ("partition", &partition.to_string()),
                    ],
                )
                .set(p.consumer_lag.max(0));
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(group = %self.group, partitions = partitions.count(), "partitions revoked; committing stored offsets");
            // A partition assigned again starts from its committed offset, checked anew.
            let mut next_offsets = self.next_offsets.lock().unwrap_or_else(|e| e.into_inner());
            for element in partitions.elements() {
                next_offsets.remove(&(element.topic().to_string(), element.partition()));
            }
            drop(next_offsets);
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "commit on revoke failed")
                }
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if result.is_err() {
            return;
        }
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for element in offsets.elements() {
            if let Offset::Offset(offset) = element.offset() {
                committed.insert((element.topic().to_string(), element.partition()), offset);
            }
        }
    }
}

pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    committed: CommittedOffsets,
    next_offsets: NextOffsets,
    /// Compacted topics, where offsets missing between records are the compaction's doing.
    compacted: HashSet<String>,
    skipped: &'static Counter,
    store_errors: &'static Counter,
    receive_errors: &'static Counter,
}

impl KafkaConsumer {
    /// Offsets this member has committed so far.
    pub fn committed_offsets(&self) -> CommittedOffsets {
        self.committed.clone()
    }

    /// Offsets of a non-compacted topic that the broker never delivered to this process's
    /// members of the group: between a partition's committed offset and the first record
    /// served after it was assigned, or between two records. Each was a record accepted by the broker and never processed: the
    /// bus cannot get it back, so it says so (a warning and `vncguard_bus_skipped_offsets_total`)
    /// rather than lose it in silence. Seen on tansu 0.6, which answers a fetch from inside a
    /// record batch with the batches after it; retention deleting records before they were
    /// read shows up here too. The bus's producers are idempotent, not transactional, so no
    /// control records occupy offsets.
    pub fn skipped_offsets(&self) -> u64 {
        self.skipped.get()
    }

    /// Counts the offsets `batch` skips, per partition, against the record before or, for a
    /// partition new to this member, against the group's committed offset.
    async fn check_continuity(&self, batch: &[Record]) {
        let mut first_of_new: HashMap<(String, i32), i64> = HashMap::new();
        {
            let mut next_offsets = self.next_offsets.lock().unwrap_or_else(|e| e.into_inner());
            // A batch holds runs of one partition's records: the map is touched once a run.
            let runs = batch.chunk_by(|a, b| a.topic == b.topic && a.partition == b.partition);
            for run in runs {
                let (first, last) = (&run[0], &run[run.len() - 1]);
                if self.compacted.contains(&first.topic) {
                    continue;
                }
                let key = (first.topic.clone(), first.partition);
                match next_offsets.get(&key) {
                    Some(&next) if first.offset > next => {
                        self.report_skipped(&key, next, first.offset)
                    }
                    Some(_) => {}
                    None => {
                        first_of_new.entry(key.clone()).or_insert(first.offset);
                    }
                }
                for pair in run.windows(2) {
                    if pair[1].offset > pair[0].offset + 1 {
                        self.report_skipped(&key, pair[0].offset + 1, pair[1].offset);
                    }
                }
                next_offsets.insert(key, last.offset + 1);
            }
        }
        if first_of_new.is_empty() {
            return;
        }
        let mut partitions = TopicPartitionList::new();
        for (topic, partition) in first_of_new.keys() {
            partitions.add_partition(topic, *partition);
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(partitions, Duration::from_secs(5))
        })
        .await;
        match committed {
            Ok(Ok(committed)) => {
                for element in committed.elements() {
                    let key = (element.topic().to_string(), element.partition());
                    if let (Offset::Offset(committed), Some(&first)) =
                        (element.offset(), first_of_new.get(&key))
                    {
                        if first > committed {
                            self.report_skipped(&key, committed, first);
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "committed offsets unknown; not checked"),
            Err(e) => tracing::debug!(error = %e, "committed offsets query failed; not checked"),
        }
    }

    fn report_skipped(&self, (topic, partition): &(String, i32), expected: i64, served: i64) {
        let missing = u64::try_from(served - expected).unwrap_or(0);
        self.skipped.add(missing);
        tracing::warn!(
            topic,
            partition,
            expected,
            served,
            missing,
            "the broker did not deliver these offsets: their records were never processed"
        );
    }
}

fn owned_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis(),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl crate::Consumer for KafkaConsumer {
    async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<Record>, BusError> {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            // After the first record, take only what is already buffered.
            let wait_until = if batch.is_empty() {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_millis(1)
            };
            match tokio::time::timeout_at(wait_until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(message)) => batch.push(owned_record(&message)),
                Ok(Err(e)) => {
                    self.receive_errors.inc();
                    if batch.is_empty() {
                        return Err(e.into());
                    }
                    break;
                }
            }
        }
        self.check_continuity(&batch).await;
        Ok(batch)
    }

    fn store(&mut self, records: &[Record]) {
        let mut highest: HashMap<(&str, i32), i64> = HashMap::new();
        for record in records {
            let entry = highest
                .entry((record.topic.as_str(), record.partition))
                .or_insert(record.offset);
            *entry = (*entry).max(record.offset);
        }
        for ((topic, partition), offset) in highest {
            // librdkafka stores offset + 1, the next record to read.
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                self.store_errors.inc();
                tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .map_err(|e| BusError::Config(format!("commit task failed: {e}")))?;
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The acknowledgements one `send` call waits for: librdkafka's delivery callback counts them
/// down, so a batch costs one wake-up instead of one future per record.
struct BatchAcks {
    pending: AtomicUsize,
    failure: Mutex<Option<BusError>>,
    done: tokio::sync::Notify,
}

/// Routes delivery reports to the batch that sent the record.
struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAcks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<BatchAcks>) {
        if let Err((error, message)) = result {
            let mut failure = acks.failure.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert_with(|| BusError::Delivery {
                topic: message.topic().to_string(),
                reason: error.to_string(),
            });
        }
        if acks.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            acks.done.notify_one();
        }
    }
}

#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<ThreadedProducer<AckContext>>,
}

impl crate::Producer for KafkaProducer {
    async fn send(&self, outputs: Vec<Output>) -> Result<(), BusError> {
        if outputs.is_empty() {
            return Ok(());
        }
        let acks = Arc::new(BatchAcks {
            pending: AtomicUsize::new(outputs.len()),
            failure: Mutex::new(None),
            done: tokio::sync::Notify::new(),
        });
        for output in &outputs {
            let mut record = BaseRecord::with_opaque_to(&output.topic, acks.clone())
                .key(&output.key)
                .payload(&output.payload);
            // Most records carry no headers; librdkafka allocates a header list even when empty.
            if !output.headers.is_empty() {
                record = record.headers(output.headers.iter().fold(
                    OwnedHeaders::new_with_capacity(output.headers.len()),
                    |headers, (key, value)| {
                        headers.insert(Header {
                            key,
                            value: Some(value),
                        })
                    },
                ));
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: let the broker thread drain it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        return Err(BusError::Delivery {
                            topic: output.topic.clone(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        while acks.pending.load(Ordering::Acquire) > 0 {
            acks.done.notified().await;
        }
        let failure = acks
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        failure.map_or(Ok(()), Err)
    }
}
