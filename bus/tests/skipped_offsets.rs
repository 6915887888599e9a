//! Nothing a broker fails to deliver disappears in silence: a member that resumes a partition
//! from its group's committed offset counts every offset between that commit and the first
//! record the broker serves. tansu 0.6 serves a fetch from inside a record batch with the batches
//! after it, so resuming from the middle of a 100-record batch skips the rest of it there;
//! a broker that serves the batch holding the offset (Apache Kafka, Redpanda) skips nothing. The
//! test holds either way: every offset from the commit on is delivered or counted.

use std::time::Duration;

use bus::{Bus, Consumer, Output, Producer};
use schemas::topics::{Retention, Topic};

const TOPIC: Topic = Topic {
    name: "bus.test.skipped",
    key: "n",
    retention: Retention::Hours(1),
};
const GROUP: &str = "bus-test-skipped";
const BATCH: i64 = 100;
const COMMITTED: i64 = 30;

/// Sends records `first..first + BATCH` in one send; with a long linger they make one batch.
async fn produce_batch(producer: &impl Producer, first: i64) {
    let outputs = (first..first + BATCH)
        .map(|n| Output::new(TOPIC.name, n.to_string(), n.to_string().into_bytes()))
        .collect();
    producer.send(outputs).await.unwrap();
}

/// Reads until `wanted` records arrived or the topic stays quiet.
async fn read(consumer: &mut impl Consumer, wanted: usize) -> Vec<bus::Record> {
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while records.len() < wanted && tokio::time::Instant::now() < deadline {
        records.extend(
            consumer
                .next_batch(1000, Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_the_broker_skips_on_resume_are_counted() {
    let (_broker, bus) = testkit::broker_with_topics(1, &[TOPIC]).await;

    let producer = bus
        .with_properties(&[("linger.ms", "500")])
        .producer()
        .unwrap();
    produce_batch(&producer, 0).await;

    // The first member processes 30 records of the batch, commits, and leaves.
    let mut first = bus.consumer(GROUP, &[TOPIC.name]).unwrap();
    let records = read(&mut first, BATCH as usize).await;
    assert_eq!(records.len() as i64, BATCH);
    first.store(&records[..COMMITTED as usize]);
    first.commit().await.unwrap();
    assert_eq!(first.skipped_offsets(), 0, "a first read skips nothing");
    drop(first);

    produce_batch(&producer, BATCH).await;
    // The next member resumes from offset 30.
    let mut next = bus.consumer(GROUP, &[TOPIC.name]).unwrap();
    let resumed = read(&mut next, (2 * BATCH - COMMITTED) as usize).await;
    let delivered: Vec<i64> = resumed.iter().map(|r| r.offset).collect();
    let skipped = next.skipped_offsets() as i64;
    let first_served = delivered
        .first()
        .copied()
        .expect("records after the commit");
    eprintln!(
        "resumed from the commit at {COMMITTED}: served from {first_served}, {skipped} offsets counted as skipped"
    );
    assert_eq!(
        skipped,
        first_served - COMMITTED,
        "every offset between the commit and the first record served is counted"
    );
    assert!(
        delivered.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "the rest arrives in order"
    );
    assert_eq!(
        delivered.len() as i64 + skipped,
        2 * BATCH - COMMITTED,
        "every offset from the commit on is delivered or counted (served from {first_served})"
    );
}
