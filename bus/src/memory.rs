//! The in-process bus of the embedded mode: each topic is an in-memory log with one cursor per
//! consumer group, so several stages can read the same topic as they would on Kafka.
//!
//! Memory is bounded: a topic holds at most `capacity` records. Records every group has stored
//! are trimmed; a producer publishing to a full topic waits for the slowest group (back-pressure),
//! and a topic no group reads keeps only its newest `capacity` records (drops are counted). One
//! member per group: the embedded mode runs one instance of each stage.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use schemas::topics::Topic;
use tokio::sync::watch;

use crate::{BusError, Output, Record};

#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every publish, so waiting consumers wake.
    published: watch::Sender<u64>,
    /// Bumped whenever records are trimmed, so waiting producers retry.
    trimmed: watch::Sender<u64>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, TopicLog>,
    next_member: u64,
}

#[derive(Default)]
struct TopicLog {
    /// Offset of the first retained record.
    base: i64,
    records: VecDeque<Record>,
    /// Per group: the next offset to deliver and the offset below which all is stored.
    groups: HashMap<String, Cursor>,
}

struct Cursor {
    member: u64,
    next: i64,
    stored: i64,
}

impl TopicLog {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }

    fn trim(&mut self) -> bool {
        let Some(floor) = self.groups.values().map(|c| c.stored).min() else {
            return false;
        };
        let mut trimmed = false;
        while self.base < floor && self.records.pop_front().is_some() {
            self.base += 1;
            trimmed = true;
        }
        trimmed
    }
}

impl MemoryBus {
    /// A bus whose topics hold at most `capacity` records each.
    pub fn new(capacity: usize) -> Self {
        MemoryBus {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                published: watch::channel(0).0,
                trimmed: watch::channel(0).0,
                capacity: capacity.max(1),
            }),
        }
    }

    fn join(&self, group: &str, topics: &[&str], at_end: bool) -> Result<MemoryConsumer, BusError> {
        let mut state = self.shared.lock();
        state.next_member += 1;
        let member = state.next_member;
        for &name in topics {
            let log = state.topics.entry(name.to_string()).or_default();
            if log.groups.contains_key(group) {
                return Err(BusError::Config(format!(
                    "group {group} already has a member on {name}; the in-process bus runs one member per group"
                )));
            }
            let start = if at_end { log.end() } else { log.base };
            log.groups.insert(
                group.to_string(),
                Cursor {
                    member,
                    next: start,
                    stored: start,
                },
            );
        }
        Ok(MemoryConsumer {
            shared: self.shared.clone(),
            group: group.to_string(),
            member,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            published: self.shared.published.subscribe(),
        })
    }

    /// Records currently held by `topic`.
    pub fn len(&self, topic: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map_or(0, |log| log.records.len())
    }

    pub fn is_empty(&self, topic: &str) -> bool {
        self.len(topic) == 0
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::Bus for MemoryBus {
    type Consumer = MemoryConsumer;
    type Producer = MemoryProducer;

    fn consumer(&self, group: &str, topics: &[&str]) -> Result<MemoryConsumer, BusError> {
        self.join(group, topics, false)
    }

    fn tail_consumer(&self, topics: &[&str]) -> Result<MemoryConsumer, BusError> {
        let group = format!("tail-{}", self.shared.lock().next_member);
        self.join(&group, topics, true)
    }

    fn producer(&self) -> Result<MemoryProducer, BusError> {
        Ok(MemoryProducer {
            shared: self.shared.clone(),
        })
    }

    async fn ensure_topics(&self, topics: &[Topic]) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        for topic in topics {
            state.topics.entry(topic.name.to_string()).or_default();
        }
        Ok(())
    }
}

pub struct MemoryConsumer {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    topics: Vec<String>,
    published: watch::Receiver<u64>,
}

impl MemoryConsumer {
    fn take(&self, max: usize) -> Vec<Record> {
        let mut state = self.shared.lock();
        let mut batch = Vec::new();
        for name in &self.topics {
            let Some(log) = state.topics.get_mut(name) else {
                continue;
            };
            let base = log.base;
            let Some(cursor) = log.groups.get_mut(&self.group) else {
                continue;
            };
            let from = (cursor.next.max(base) - base) as usize;
            let take = (max - batch.len()).min(log.records.len().saturating_sub(from));
            batch.extend(log.records.range(from..from + take).cloned());
            cursor.next = base + (from + take) as i64;
            if batch.len() == max {
                break;
            }
        }
        batch
    }
}

impl crate::Consumer for MemoryConsumer {
    async fn next_batch(&mut self, max: usize, linger: Duration) -> Result<Vec<Record>, BusError> {
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            self.published.borrow_and_update();
            let batch = self.take(max.max(1));
            if !batch.is_empty() {
                return Ok(batch);
            }
            match tokio::time::timeout_at(deadline, self.published.changed()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(_)) => return Err(BusError::Closed),
                Ok(Ok(())) => {}
            }
        }
    }

    fn store(&mut self, records: &[Record]) {
        let mut state = self.shared.lock();
        let mut trimmed = false;
        for record in records {
            if let Some(log) = state.topics.get_mut(&record.topic) {
                if let Some(cursor) = log.groups.get_mut(&self.group) {
                    cursor.stored = cursor.stored.max(record.offset + 1);
                }
                trimmed |= log.trim();
            }
        }
        drop(state);
        if trimmed {
            self.shared.trimmed.send_modify(|n| *n += 1);
        }
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        for name in &self.topics {
            if let Some(log) = state.topics.get_mut(name) {
                if log
                    .groups
                    .get(&self.group)
                    .is_some_and(|c| c.member == self.member)
                {
                    log.groups.remove(&self.group);
                    log.trim();
                }
            }
        }
        drop(state);
        self.shared.trimmed.send_modify(|n| *n += 1);
    }
}

#[derive(Clone)]
pub struct MemoryProducer {
    shared: Arc<Shared>,
}

impl MemoryProducer {
    /// Appends `output` unless its topic is full and read by a group; gives it back then.
    fn try_append(&self, output: Output) -> Option<Output> {
        let mut state = self.shared.lock();
        let log = state.topics.entry(output.topic.clone()).or_default();
        if log.records.len() >= self.shared.capacity {
            if !log.groups.is_empty() {
                return Some(output);
            }
            log.records.pop_front();
            log.base += 1;
            telemetry::counter(
                "vncguard_bus_memory_dropped_total",
                "Records dropped from in-process topics that no group reads.",
                &[("topic", &output.topic)],
            )
            .inc();
        }
        let offset = log.end();
        log.records.push_back(Record {
            topic: output.topic,
            partition: 0,
            offset,
            key: Some(output.key),
            payload: output.payload,
            timestamp_ms: Some(now_ms()),
            headers: output.headers,
        });
        None
    }
}

impl crate::Producer for MemoryProducer {
    async fn send(&self, outputs: Vec<Output>) -> Result<(), BusError> {
        let mut trimmed = self.shared.trimmed.subscribe();
        for output in outputs {
            let mut pending = output;
            loop {
                trimmed.borrow_and_update();
                match self.try_append(pending) {
                    None => break,
                    Some(back) => {
                        pending = back;
                        // Wake consumers so the full topic drains, then wait for a trim.
                        self.shared.published.send_modify(|n| *n += 1);
                        trimmed.changed().await.map_err(|_| BusError::Closed)?;
                    }
                }
            }
        }
        self.shared.published.send_modify(|n| *n += 1);
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
