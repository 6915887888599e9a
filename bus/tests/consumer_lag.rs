//! `vncguard_bus_consumer_lag` reports, per group and partition, the records between the group's
//! committed offset and the end of the partition: what the "stage falls behind" alert reads.

use std::time::Duration;

use bus::{Bus, Consumer, Output, Producer};
use schemas::topics::{Retention, Topic};

const TOPIC: Topic = Topic {
    name: "bus.test.lag",
    key: "client IP",
    retention: Retention::Hours(1),
};

/// The gauge's value for `group` on partition 0 of the topic, if it has been reported.
fn lag(group: &str) -> Option<i64> {
    telemetry::render().lines().find_map(|line| {
        let rest = line.strip_prefix("vncguard_bus_consumer_lag{")?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains(&format!("group=\"{group}\""))
            && labels.contains(&format!("topic=\"{}\"", TOPIC.name))
            && labels.contains("partition=\"0\""))
        .then(|| value.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_what_the_group_has_not_committed() {
    let (_broker, bus) = testkit::broker_with_topics(1, &[TOPIC]).await;
    let producer = bus.producer().unwrap();
    let outputs = (0..20)
        .map(|i| {
            Output::new(
                TOPIC.name,
                b"k".to_vec(),
                format!("record {i}").into_bytes(),
            )
        })
        .collect();
    producer.send(outputs).await.unwrap();

    let fast_stats = bus.with_properties(&[("statistics.interval.ms", "100")]);
    let mut consumer = fast_stats.consumer("lag-test", &[TOPIC.name]).unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read.len() < 5 && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .next_batch(5 - read.len(), Duration::from_millis(200))
            .await
            .unwrap();
        read.extend(batch);
    }
    assert_eq!(read.len(), 5);
    consumer.store(&read);
    consumer.commit().await.unwrap();

    // Fetching goes on in the background, but only the committed offset counts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while lag("lag-test") != Some(15) && tokio::time::Instant::now() < deadline {
        // Statistics reach the context while the consumer is polled; what it reads here is
        // neither stored nor committed.
        let _ = consumer.next_batch(1, Duration::from_millis(100)).await;
    }
    assert_eq!(lag("lag-test"), Some(15), "{}", telemetry::render());
}
