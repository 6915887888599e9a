//! Writes N distinct session records, already decoded, through the sink's batch write path
//! (`sink::Writer::write`, one transaction per batch, as `SinkStage` does) into a freshly
//! migrated database, and prints the rate. `run.sh` compares it with `psql \copy` of the same
//! rows into an identical table.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use clap::Parser;
use schemas::{AuthResult, SessionEvent, SessionEventKind, SessionSummary};
use sink::{SinkRecord, Writer};

#[derive(Debug, Parser)]
struct Args {
    /// Database to migrate and write to (empty, created by run.sh).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Session records to write.
    #[arg(long, default_value_t = 200_000)]
    rows: u32,
    /// Records per transaction (the bus loop's default batch size).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

/// The ended event of session `n`, with the fields a real VNC session fills.
fn ended_session(n: u32) -> SinkRecord {
    let start = Utc.timestamp_opt(1_700_000_000 + i64::from(n), 0).unwrap();
    let client = format!(
        "10.{}.{}.{}:{}",
        n >> 16 & 255,
        n >> 8 & 255,
        n & 255,
        40_000 + n % 20_000
    );
    let mut s = SessionSummary::new(
        format!("bench-{n:08}"),
        "agent-1".into(),
        client.parse().unwrap(),
        "192.0.2.1:5900".parse().unwrap(),
        start,
    );
    s.end_time = Some(start + chrono::Duration::seconds(600));
    s.client_version = Some("RFB 003.008".into());
    s.server_version = Some("RFB 003.008".into());
    s.security_types_offered = vec![2, 16, 19];
    s.security_type = Some(2);
    s.auth_result = AuthResult::Ok;
    s.vnc_auth_challenge = true;
    s.shared_flag = Some(true);
    s.width = Some(1920);
    s.height = Some(1080);
    s.pixel_format = Some("32bpp depth 24 little-endian true-colour".into());
    s.desktop_name = Some(format!("workstation-{}", n % 500));
    s.bytes_c2s = 20_000 + i64::from(n % 5000);
    s.bytes_s2c = 4_000_000 + i64::from(n);
    s.packets_c2s = 400;
    s.packets_s2c = 3_000;
    s.key_events = i64::from(n % 300);
    s.pointer_events = i64::from(n % 2000);
    s.client_cut_text_count = i64::from(n % 3);
    s.client_cut_text_bytes = i64::from(n % 3) * 40;
    s.clipboard_sha256 = (!n.is_multiple_of(3)).then(|| format!("{:064x}", n));
    s.framebuffer_updates = 1_500;
    s.framebuffer_update_requests = 1_500;
    s.encodings = vec![7, 16, 5, 1, 0, -223, -224, -239];
    s.end_reason = Some("fin".into());
    SinkRecord::Session(SessionEvent::new(SessionEventKind::Ended, 12, start, s))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = sink::connect_pool(&args.database_url, 2, Duration::from_secs(10))?;
    let mut client = pool.get().await.context("connecting")?;
    sink::migrate::migrate(&mut client).await?;
    drop(client);
    let records: Vec<SinkRecord> = (0..args.rows).map(ended_session).collect();
    let writer = Writer::new(pool);

    let start = Instant::now();
    for batch in records.chunks(args.batch_size.max(1)) {
        let refused = writer.write(batch).await?;
        anyhow::ensure!(
            refused.iter().all(Option::is_none),
            "records refused: {refused:?}"
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("{:.0}", f64::from(args.rows) / elapsed);
    Ok(())
}
