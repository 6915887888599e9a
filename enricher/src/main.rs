//! `enricher`: reads raw session events, adds geo, reputation, window context and features, and
//! publishes enriched sessions. See the library docs for how state scales out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bus::kafka::KafkaBus;
use bus::{pipeline, Bus, BusArgs, PipelineOptions};
use clap::Parser;
use enricher::{
    Enricher, EnricherConfig, EnricherStage, GeoDatabases, KafkaHistory, Reputation, WindowConfig,
};
use schemas::topics::{DEAD_LETTERS, SESSIONS_ENRICHED, SESSIONS_RAW};
use telemetry::LogArgs;

/// Adds geo, ASN, reputation, per-source window context and the feature vector to raw VNC
/// session events.
#[derive(Debug, Parser)]
#[command(name = "enricher", version)]
struct Args {
    /// City databases (MaxMind format): comma-separated files, or a directory of `*city*.mmdb`.
    #[arg(long, env = "GEOIP_CITY_DB", default_value = ".data/geo")]
    geoip_city_db: String,
    /// ASN data: `@ip-location-db/asn` CSV files or GeoLite2-ASN MMDB files, comma-separated, or
    /// a directory of them.
    #[arg(long, env = "GEOIP_ASN_DB", default_value = ".data/geo")]
    geoip_asn_db: String,
    /// File of known-bad addresses and CIDRs, one a line; reloaded when it changes.
    #[arg(long, env = "REPUTATION_BAD")]
    reputation_bad: Option<PathBuf>,
    /// File of allow-listed addresses and CIDRs, one a line; reloaded when it changes.
    #[arg(long, env = "REPUTATION_ALLOW")]
    reputation_allow: Option<PathBuf>,
    /// IANA time zone of the watched servers, for hour of day and weekday.
    #[arg(long, env = "SERVER_TIMEZONE", default_value = "UTC")]
    server_timezone: chrono_tz::Tz,
    /// Window of auth outcomes, banner-only connections and session rates, seconds.
    #[arg(long, env = "ENRICHER_AUTH_WINDOW_SECS", default_value_t = 600)]
    auth_window_secs: i64,
    /// Window of distinct servers and ports contacted, seconds.
    #[arg(long, env = "ENRICHER_CONTACT_WINDOW_SECS", default_value_t = 3600)]
    contact_window_secs: i64,
    /// How far back (event time) a partition's input is replayed at assignment, seconds
    /// (default: the longest window).
    #[arg(long, env = "ENRICHER_REPLAY_HORIZON_SECS")]
    replay_horizon_secs: Option<i64>,
    /// Most records replayed for one partition.
    #[arg(long, env = "ENRICHER_MAX_REPLAY_RECORDS", default_value_t = 200_000)]
    max_replay_records: usize,
    /// Sources tracked per input partition (least recently seen evicted first).
    #[arg(long, env = "ENRICHER_MAX_SOURCES", default_value_t = 100_000)]
    max_sources: usize,
    /// Servers whose client countries are tracked per input partition.
    #[arg(long, env = "ENRICHER_MAX_SERVERS", default_value_t = 10_000)]
    max_servers: usize,
    /// Consumer group of the enricher instances.
    #[arg(long, env = "ENRICHER_GROUP", default_value = "vncguard-enricher")]
    group: String,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    log: LogArgs,
}

impl Args {
    fn config(&self) -> EnricherConfig {
        let windows = WindowConfig {
            auth_window: chrono::Duration::seconds(self.auth_window_secs.max(1)),
            contact_window: chrono::Duration::seconds(self.contact_window_secs.max(1)),
            max_sources: self.max_sources,
            max_servers: self.max_servers,
            ..WindowConfig::default()
        };
        EnricherConfig {
            replay_horizon: self
                .replay_horizon_secs
                .map(chrono::Duration::seconds)
                .unwrap_or_else(|| windows.longest_window()),
            windows,
            server_timezone: self.server_timezone,
            max_replay_records: self.max_replay_records,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    if let Some(addr) = args.metrics_addr {
        tokio::spawn(telemetry::serve_metrics(addr));
    }
    let geo = Arc::new(GeoDatabases::load(&args.geoip_city_db, &args.geoip_asn_db));
    let reputation = Reputation::new(
        args.reputation_bad.as_deref(),
        args.reputation_allow.as_deref(),
    );
    let enricher = Enricher::new(geo, reputation, args.config());

    let bus = KafkaBus::new(&args.bus).context("Kafka configuration")?;
    bus.ensure_topics(&[SESSIONS_RAW, SESSIONS_ENRICHED, DEAD_LETTERS])
        .await
        .context("creating topics")?;
    let consumer = bus
        .consumer(&args.group, &[SESSIONS_RAW.name])
        .context("joining the consumer group")?;
    let producer = bus.producer().context("creating the producer")?;
    let history = KafkaHistory::new(&args.bus).context("creating the history reader")?;
    tracing::info!(group = %args.group, "enricher started");
    pipeline::run(
        consumer,
        producer,
        EnricherStage::new(enricher, history),
        PipelineOptions::from(&args.bus),
        pipeline::shutdown_signal(),
    )
    .await;
    Ok(())
}
