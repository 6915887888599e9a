//! The same stage code on Kafka (tansu) and on the in-process bus: valid events pass, a record of
//! garbage bytes goes to the dead-letter topic with its reason and origin headers, and the loop
//! goes on with the records after it.

use std::time::Duration;

use bus::kafka::KafkaBus;
use bus::memory::MemoryBus;
use bus::{
    pipeline, Bus, BusArgs, Consumer, Outcome, Output, PipelineOptions, Producer, Record,
    RetryableError, Stage,
};
use schemas::topics::{Retention, Topic, DEAD_LETTERS};
use schemas::{SessionEvent, SessionEventKind, SessionSummary};

const INPUT: Topic = Topic {
    name: "bus.test.stage.in",
    key: "client IP",
    retention: Retention::Hours(1),
};
const OUTPUT: Topic = Topic {
    name: "bus.test.stage.out",
    key: "client IP",
    retention: Retention::Hours(1),
};

/// Decodes session events and re-publishes their summaries' session ids.
struct SessionIdStage;

impl Stage for SessionIdStage {
    fn name(&self) -> &str {
        "session-id"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        Ok(batch
            .iter()
            .map(
                |record| match schemas::decode::<SessionEvent>(&record.payload) {
                    Ok(event) => Outcome::Emit(vec![Output::new(
                        OUTPUT.name,
                        event.summary.client_ip.clone(),
                        event.summary.session_id.into_bytes(),
                    )]),
                    Err(e) => Outcome::DeadLetter(e.to_string()),
                },
            )
            .collect())
    }
}

fn event(n: u32) -> SessionEvent {
    let summary = SessionSummary::new(
        format!("session-{n}"),
        "agent-1".into(),
        "192.0.2.7:40000".parse().unwrap(),
        "198.51.100.1:5900".parse().unwrap(),
        chrono::Utc::now(),
    );
    SessionEvent::new(SessionEventKind::Started, 0, chrono::Utc::now(), summary)
}

async fn read(consumer: &mut impl Consumer, want: usize) -> Vec<Record> {
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < want && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .next_batch(100, Duration::from_millis(200))
            .await
            .unwrap();
        consumer.store(&batch);
        records.extend(batch);
    }
    records
}

async fn garbage_goes_to_dead_letters_and_the_loop_goes_on<B: Bus>(bus: B) {
    bus.ensure_topics(&[INPUT, OUTPUT, DEAD_LETTERS])
        .await
        .unwrap();
    let producer = bus.producer().unwrap();
    let key = b"192.0.2.7".to_vec();
    producer
        .send(vec![
            Output::encode(&INPUT, key.clone(), &event(1)).unwrap(),
            Output::new(
                INPUT.name,
                key.clone(),
                b"\xde\xad\xbe\xef not avro".to_vec(),
            ),
            Output::encode(&INPUT, key.clone(), &event(2)).unwrap(),
        ])
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = bus.consumer("stage-test", &[INPUT.name]).unwrap();
    let options = PipelineOptions {
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    let loop_task = tokio::spawn(pipeline::run(
        consumer,
        producer,
        SessionIdStage,
        options,
        async {
            let _ = stopped.await;
        },
    ));

    let mut outputs = bus.consumer("stage-test-out", &[OUTPUT.name]).unwrap();
    let out = read(&mut outputs, 2).await;
    let ids: Vec<&[u8]> = out.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(ids, vec![b"session-1".as_slice(), b"session-2".as_slice()]);

    let mut dead = bus
        .consumer("stage-test-dlq", &[DEAD_LETTERS.name])
        .unwrap();
    let letters = read(&mut dead, 1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.payload, b"\xde\xad\xbe\xef not avro");
    let header = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", letter.headers))
    };
    assert!(
        header("dlq.reason").contains("single-object marker"),
        "{}",
        header("dlq.reason")
    );
    assert_eq!(header("dlq.source_topic"), INPUT.name);
    assert_eq!(header("dlq.source_offset"), "1");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), loop_task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka() {
    let broker = testkit::Broker::start().expect("tansu");
    let mut args = BusArgs::for_brokers(&broker.brokers());
    args.kafka_partitions = 1;
    garbage_goes_to_dead_letters_and_the_loop_goes_on(KafkaBus::new(&args).unwrap()).await;
}

#[tokio::test]
async fn on_the_in_process_bus() {
    garbage_goes_to_dead_letters_and_the_loop_goes_on(MemoryBus::new(1000)).await;
}

#[tokio::test]
async fn in_process_bus_applies_back_pressure_instead_of_growing() {
    let bus = MemoryBus::new(10);
    let mut consumer = bus.consumer("slow", &["bp"]).unwrap();
    let producer = bus.producer().unwrap();
    let outputs: Vec<Output> = (0..25).map(|i| Output::new("bp", "k", vec![i])).collect();
    let send = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(outputs).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !send.is_finished(),
        "a full topic must hold the producer back"
    );
    assert_eq!(bus.len("bp"), 10);
    let mut got = Vec::new();
    while got.len() < 25 {
        let batch = consumer
            .next_batch(4, Duration::from_millis(200))
            .await
            .unwrap();
        consumer.store(&batch);
        got.extend(batch.into_iter().map(|r| r.payload[0]));
        assert!(bus.len("bp") <= 10);
    }
    send.await.unwrap().unwrap();
    assert_eq!(got, (0..25).collect::<Vec<u8>>());
}
