//! Enriched events per second on one core through the stage's pure path ([`enricher::Enricher`]:
//! decode, geo and ASN lookups, windows, features, encode), against the peer baseline of merely
//! decoding and re-encoding the same records.
//!
//! Events come from the lab captures (`testkit::lab_capture`, `capture_agent::analyze_file`), replayed with many
//! public client addresses and shifted in time so the windows see a realistic mix of sources.
//! Usage: `enricher-bench [EVENTS] [GEO_DIR]` (defaults 200000 and `.data/geo`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bus::{Outcome, Record};
use enricher::{Enricher, EnricherConfig, GeoDatabases, Reputation};
use schemas::SessionEvent;

const CAPTURES: &[&str] = &[
    "a_normal_vncauth.pcap",
    "b_clipboard_classic.pcap",
    "c_bruteforce_vncauth.pcap",
    "c2_bruteforce_nmap_success.pcap",
    "d_noauth_session.pcap",
    "e_scanner.pcap",
    "g1_rfb33_server.pcap",
];

/// Public client addresses spread over many networks: 20 000 sources.
fn client_address(n: usize) -> String {
    let n = n % 20_000;
    format!(
        "{}.{}.{}.{}",
        [8, 31, 45, 77, 81, 91, 104, 151, 185, 193][n % 10],
        (n / 10) % 200 + 20,
        (n / 7) % 250,
        n % 250 + 1
    )
}

fn events(wanted: usize) -> anyhow::Result<Vec<Record>> {
    let mut templates: Vec<SessionEvent> = Vec::new();
    for name in CAPTURES {
        let mut sink: Vec<SessionEvent> = Vec::new();
        capture_agent::analyze_file(
            &testkit::lab_capture(name),
            &capture_agent::AgentConfig::default(),
            &mut sink,
        )
        .with_context(|| format!("analysing {name}"))?;
        templates.extend(sink);
    }
    anyhow::ensure!(!templates.is_empty(), "the lab captures gave no events");
    let mut records = Vec::with_capacity(wanted);
    let mut round = 0usize;
    while records.len() < wanted {
        let shift = chrono::Duration::seconds(round as i64 * 7);
        for template in &templates {
            if records.len() == wanted {
                break;
            }
            let mut event = template.clone();
            let client = client_address(round * 31 + records.len() % 97);
            event.summary.client_ip = client.clone();
            event.summary.server_ip = format!("93.184.{}.{}", round % 4, 10 + round % 3);
            event.summary.session_id = format!("{}-{round}", event.summary.session_id);
            event.summary.start_time += shift;
            event.time += shift;
            records.push(Record {
                topic: "vnc.sessions.raw".into(),
                partition: 0,
                offset: records.len() as i64,
                key: Some(client.into_bytes()),
                payload: schemas::encode(&event)?,
                timestamp_ms: None,
                headers: Vec::new(),
            });
        }
        round += 1;
    }
    Ok(records)
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let wanted: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let geo_dir = args.next().unwrap_or_else(|| ".data/geo".to_string());
    let records = events(wanted)?;

    let started = Instant::now();
    let mut bytes = 0usize;
    for record in &records {
        let event: SessionEvent = schemas::decode(&record.payload)?;
        bytes += schemas::encode(&event)?.len();
    }
    let baseline = started.elapsed();
    std::hint::black_box(bytes);

    let mut rows = vec![("decode + re-encode (peer baseline)", baseline)];
    let geo_variants = [
        ("enrich, no geo databases", Arc::new(GeoDatabases::empty())),
        (
            "enrich, city MMDB + ASN table",
            Arc::new(GeoDatabases::load(&geo_dir, &geo_dir)),
        ),
    ];
    for (label, geo) in geo_variants {
        if label.contains("MMDB") && !(geo.has_city() && geo.has_asn()) {
            println!(
                "skipping '{label}': no geo data in {geo_dir} (run scripts/install-geo-data.sh)"
            );
            continue;
        }
        let mut enricher = Enricher::new(geo, Reputation::default(), EnricherConfig::default());
        let started = Instant::now();
        let mut emitted = 0usize;
        for record in &records {
            if let Outcome::Emit(outputs) = enricher.enrich(record) {
                emitted += outputs.len();
            }
        }
        let elapsed = started.elapsed();
        anyhow::ensure!(
            emitted == records.len(),
            "{label}: {emitted} of {} records enriched",
            records.len()
        );
        rows.push((label, elapsed));
    }

    println!("\n{} events, one core", records.len());
    println!("| path | seconds | events/s | time vs baseline |");
    println!("|---|---:|---:|---:|");
    for (label, elapsed) in &rows {
        println!(
            "| {label} | {:.3} | {:.0} | {:.2}× |",
            elapsed.as_secs_f64(),
            rate(records.len(), *elapsed),
            elapsed.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    // The summary line benches/report.sh collects: the full enrichment against the baseline.
    if let Some((label, elapsed)) = rows.last().filter(|(_, elapsed)| *elapsed != baseline) {
        println!(
            "REPORT|enricher|events/s on one core, {}, {} events|{:.0} events/s|decode + re-encode {:.0} events/s|{:.2}x",
            label.trim_start_matches("enrich, "),
            records.len(),
            rate(records.len(), *elapsed),
            rate(records.len(), baseline),
            baseline.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    Ok(())
}
