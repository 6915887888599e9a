//! Acceptance 3: the same input through 1 enricher instance and through 3 instances of one
//! consumer group (one of them stopped mid-way and replaced) on a real tansu broker gives the
//! same set of enriched records (compared decoded, `enriched_at` aside). The replacement and
//! the members taking over partitions rebuild their windows by replaying the input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::kafka::KafkaBus;
use bus::{pipeline, Bus, BusArgs, Consumer, Output, PipelineOptions, Producer};
use enricher::{Enricher, EnricherConfig, EnricherStage, GeoDatabases, KafkaHistory, Reputation};
use schemas::topics::{DEAD_LETTERS, SESSIONS_ENRICHED, SESSIONS_RAW};
use schemas::{EnrichedSession, SessionEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CAPTURES: &[&str] = &[
    "c_bruteforce_vncauth.pcap",
    "c2_bruteforce_nmap_success.pcap",
    "e_scanner.pcap",
    "a_normal_vncauth.pcap",
    "g1_rfb33_server.pcap",
];
const CLIENTS: &[&str] = &[
    "8.8.8.8",
    "81.2.69.142",
    "1.1.1.1",
    "2001:4860:4860::8888",
    "45.33.32.156",
    "91.198.174.192",
    "151.101.1.69",
    "185.199.108.153",
    "104.16.132.229",
    "77.88.55.242",
    "193.0.6.139",
    "31.13.72.36",
];
const SERVERS: &[&str] = &["81.2.69.160", "8.8.4.4", "192.168.1.20"];

/// The lab captures replayed by several public sources against a few servers, interleaved
/// capture by capture so sources' windows overlap in event time.
fn input() -> Vec<SessionEvent> {
    let mut events = Vec::new();
    for (round, capture) in CAPTURES.iter().enumerate() {
        let template = common::capture_events(capture);
        for (i, client) in CLIENTS.iter().enumerate() {
            if (i + round) % 3 == 0 {
                continue;
            }
            let shift = chrono::Duration::seconds((round * 40 + i) as i64);
            for mut event in template.iter().cloned() {
                event.summary.client_ip = client.to_string();
                event.summary.server_ip = SERVERS[(i + round) % SERVERS.len()].to_string();
                event.summary.session_id = format!("{}-{client}", event.summary.session_id);
                event.event_id = format!("{}-{client}", event.event_id);
                event.summary.start_time += shift;
                event.time += shift;
                events.push(event);
            }
        }
    }
    events
}

fn geo() -> Arc<GeoDatabases> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.data/geo");
    let dir = dir.to_str().unwrap();
    Arc::new(GeoDatabases::load(dir, dir))
}

struct Member {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start_member(bus: &KafkaBus, args: &BusArgs, geo: &Arc<GeoDatabases>, group: &str) -> Member {
    let consumer = bus.consumer(group, &[SESSIONS_RAW.name]).unwrap();
    let producer = bus.producer().unwrap();
    let enricher = Enricher::new(
        geo.clone(),
        Reputation::default(),
        EnricherConfig::default(),
    );
    let stage = EnricherStage::new(enricher, KafkaHistory::new(args).unwrap());
    let options = PipelineOptions {
        batch_size: 40,
        linger: Duration::from_millis(20),
        ..PipelineOptions::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(pipeline::run(consumer, producer, stage, options, async {
        let _ = stopped.await;
    }));
    Member { stop, task }
}

async fn stop_member(member: Member) {
    let _ = member.stop.send(());
    tokio::time::timeout(Duration::from_secs(60), member.task)
        .await
        .expect("member stops")
        .unwrap();
}

async fn publish(bus: &KafkaBus, events: &[SessionEvent]) {
    let outputs = events
        .iter()
        .map(|e| Output::encode(&SESSIONS_RAW, e.summary.client_ip.clone(), e).unwrap())
        .collect();
    bus.producer().unwrap().send(outputs).await.unwrap();
}

/// Distinct enriched records (as canonical JSON without `enriched_at`) by event id, read until
/// every one of `want` event ids is there and nothing new came for a while.
struct OutputReader {
    consumer: bus::kafka::KafkaConsumer,
    records: BTreeMap<String, BTreeSet<String>>,
}

impl OutputReader {
    fn new(bus: &KafkaBus) -> Self {
        OutputReader {
            consumer: bus
                .consumer("scale-out-reader", &[SESSIONS_ENRICHED.name])
                .unwrap(),
            records: BTreeMap::new(),
        }
    }

    async fn read_until(&mut self, want: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut quiet_since = Instant::now();
        loop {
            let batch = self
                .consumer
                .next_batch(500, Duration::from_millis(200))
                .await
                .unwrap();
            self.consumer.store(&batch);
            if !batch.is_empty() {
                quiet_since = Instant::now();
            }
            for record in batch {
                let mut enriched: EnrichedSession = schemas::decode(&record.payload).unwrap();
                enriched.enriched_at = chrono::DateTime::UNIX_EPOCH;
                self.records
                    .entry(enriched.event.event_id.clone())
                    .or_default()
                    .insert(serde_json::to_string(&enriched).unwrap());
            }
            if self.records.len() >= want && quiet_since.elapsed() > Duration::from_secs(2) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {want} events enriched in {limit:?}",
                self.records.len()
            );
        }
    }
}

fn broker_bus() -> (testkit::Broker, KafkaBus, BusArgs) {
    let broker = testkit::Broker::start().expect("tansu");
    let mut args = BusArgs::for_brokers(&broker.brokers());
    args.kafka_partitions = 3;
    let bus = KafkaBus::new(&args).unwrap();
    (broker, bus, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_a_restart_enrich_like_one() {
    let events = input();
    let total = events.len();
    let geo = geo();

    // One instance over everything.
    let single = {
        let (_broker, bus, args) = broker_bus();
        bus.ensure_topics(&[SESSIONS_RAW, SESSIONS_ENRICHED, DEAD_LETTERS])
            .await
            .unwrap();
        publish(&bus, &events).await;
        let member = start_member(&bus, &args, &geo, "enricher-one");
        let mut reader = OutputReader::new(&bus);
        reader.read_until(total, Duration::from_secs(120)).await;
        stop_member(member).await;
        reader.records
    };
    assert_eq!(single.len(), total);
    assert!(single.values().all(|versions| versions.len() == 1));

    // Three instances; the input arrives in two halves and one member is replaced between.
    let replayed_before = replayed_records();
    let (_broker, bus, args) = broker_bus();
    bus.ensure_topics(&[SESSIONS_RAW, SESSIONS_ENRICHED, DEAD_LETTERS])
        .await
        .unwrap();
    let mut members: Vec<Member> = (0..3)
        .map(|_| start_member(&bus, &args, &geo, "enricher-three"))
        .collect();
    // Let the members join before records flow.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (first_half, second_half) = events.split_at(total / 2);
    publish(&bus, first_half).await;
    let mut reader = OutputReader::new(&bus);
    reader
        .read_until(first_half.len(), Duration::from_secs(120))
        .await;
    stop_member(members.remove(0)).await;
    publish(&bus, &second_half[..second_half.len() / 2]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    members.push(start_member(&bus, &args, &geo, "enricher-three"));
    publish(&bus, &second_half[second_half.len() / 2..]).await;
    reader.read_until(total, Duration::from_secs(180)).await;
    for member in members {
        stop_member(member).await;
    }
    let scaled = reader.records;

    assert!(
        replayed_records() > replayed_before,
        "no partition was rebuilt from the input: the test did not exercise a hand-over"
    );
    let differing: Vec<&String> = single
        .iter()
        .filter(|(id, versions)| scaled.get(*id) != Some(versions))
        .map(|(id, _)| id)
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {total} events enriched differently by 3 instances, e.g. {:?}:\n1: {:?}\n3: {:?}",
        differing.len(),
        differing[0],
        single[differing[0]],
        scaled.get(differing[0])
    );
    assert_eq!(scaled.len(), single.len());
    println!("{total} events, identical through 1 and 3 instances");
}

fn replayed_records() -> u64 {
    telemetry::counter("vncguard_enricher_replayed_records_total", "", &[]).get()
}
