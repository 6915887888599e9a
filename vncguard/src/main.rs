//! `vncguard`: the whole product in one process — capture replay, enricher, scorer, sink and the
//! API with its dashboard on the in-process bus, writing the local Postgres.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capture_agent::config::parse_duration;
use capture_agent::live;
use capture_agent::PortSet;
use clap::Parser;
use vncguard::{capture_files, Embedded, EmbeddedConfig};

#[derive(Parser)]
#[command(about = "vncguard embedded mode: every stage in one process on the in-process bus")]
struct Args {
    /// Postgres database (created and migrated if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/vncguard"
    )]
    database_url: String,
    /// Folder of sample captures replayed at start.
    #[arg(long, env = "VNCGUARD_SAMPLES", default_value = "samples/pcaps")]
    samples: PathBuf,
    /// Replay the sample captures again this often (e.g. 5m), as new sessions happening now,
    /// so the dashboard keeps moving. Off by default.
    #[arg(long, env = "VNCGUARD_REPLAY_EVERY", value_parser = parse_duration)]
    replay_every: Option<Duration>,
    /// Also capture live on this interface (e.g. lo, eth0); needs root or CAP_NET_RAW. Without
    /// the privilege the embedded mode says so and goes on with the samples.
    #[arg(long, env = "AGENT_INTERFACE", value_name = "IF")]
    interface: Option<String>,
    /// TCP ports where VNC servers listen, for live capture: a list of ports and ranges.
    #[arg(long, env = "VNC_PORTS", default_value = "5900-5905")]
    vnc_ports: PortSet,
    /// City geo databases (see `enricher --help`).
    #[arg(long, env = "GEOIP_CITY_DB", default_value = ".data/geo")]
    geoip_city_db: String,
    /// ASN databases (see `enricher --help`).
    #[arg(long, env = "GEOIP_ASN_DB", default_value = ".data/geo")]
    geoip_asn_db: String,
    /// Records each in-process topic holds before producers wait.
    #[arg(long, env = "BUS_CAPACITY", default_value_t = 100_000)]
    bus_capacity: usize,
    /// Identity of the embedded capture agent.
    #[arg(long, env = "AGENT_ID", default_value = "embedded")]
    agent_id: String,
    /// Address of the API and dashboard.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Key of the API's access tokens; without it a random key is kept in `.data/jwt-secret`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Name of the admin created when the database has none (its password is printed once).
    #[arg(long, env = "VNCGUARD_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9100")]
    metrics_addr: std::net::SocketAddr,
    #[command(flatten)]
    risk: scorer::risk::RiskConfig,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(flatten)]
    forest_kernel: scorer::forest::KernelArgs,
}

/// Where the embedded mode keeps its decision signing key.
const DECISION_KEY_FILE: &str = ".data/decision-signing.key";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    args.log.init();
    args.forest_kernel
        .apply()
        .context("choosing the forest scoring kernel (--forest-kernel, FOREST_KERNEL)")?;
    tokio::spawn(telemetry::serve_metrics(args.metrics_addr));
    let agent = capture_agent::config::AgentConfig {
        agent_id: args.agent_id.clone(),
        ports: args.vnc_ports.clone(),
        ..Default::default()
    };
    let mut embedded = Embedded::start(EmbeddedConfig {
        database_url: args.database_url.clone(),
        geoip_city_db: args.geoip_city_db,
        geoip_asn_db: args.geoip_asn_db,
        risk: args.risk,
        bus_capacity: args.bus_capacity,
        agent,
    })
    .await?;

    let secret = match args.jwt_secret {
        Some(secret) => secret,
        None => local_secret()?,
    };
    let address = std::net::SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (PORT sets another port)"))?;
    let mut api_config = api::ApiConfig::new(secret);
    // The installation's decision key, made 0600 at first start; its public key
    // (`.data/decision-signing.key.pub`) is what an enforcing agent is given.
    let signer = trust::signing::local_signer(std::path::Path::new(DECISION_KEY_FILE))
        .with_context(|| format!("keeping the decision signing key in {DECISION_KEY_FILE}"))?;
    tracing::info!(key_id = signer.key_id(), public_key = %signer.public_key_line(), "signing analysts' decisions");
    api_config.decision_signer = Some(signer);
    embedded.serve_api(api_config, listener)?;
    let admin_password = embedded.ensure_admin(&args.admin_user).await?;

    let files = capture_files(&args.samples)?;
    // Moved to the first start's time, so a new installation shows them as today's traffic.
    let samples = std::fs::canonicalize(&args.samples).unwrap_or(args.samples.clone());
    let replay_at = embedded
        .sample_replay_time(&samples.display().to_string())
        .await?;
    let published = embedded.replay_at(&files, replay_at).await?;
    tracing::info!(
        files = files.len(),
        events = published,
        replay_at_ns = replay_at,
        "sample captures replayed"
    );
    settle(&embedded).await?;
    print_summary(&embedded, &args.database_url).await?;
    if let Some(interface) = &args.interface {
        match embedded.capture_live(interface) {
            Ok(()) => println!(
                "  capturing live on {interface} (VNC ports {})",
                args.vnc_ports
            ),
            Err(e) => println!("  NOT capturing live: {e:#}"),
        }
    }
    if let Some(every) = args.replay_every {
        println!("  replaying the samples every {every:?} as new sessions");
    }
    println!("\n  dashboard: http://{address}/");
    match admin_password {
        Some(password) => println!(
            "  first admin: {}  password: {password}  (shown once; change it on the dashboard)",
            args.admin_user
        ),
        None => println!("  log in with an existing account (`api create-admin` adds one)"),
    }
    println!("  Ctrl-C stops it.");

    let shutdown = bus::pipeline::shutdown_signal();
    match args.replay_every {
        Some(every) => replay_until(&embedded, &files, every, shutdown).await?,
        None => shutdown.await,
    }
    embedded.stop().await;
    Ok(())
}

/// Replays `files` every `every`, each moved so its first packet is now, until `shutdown`.
async fn replay_until(
    embedded: &Embedded,
    files: &[PathBuf],
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(every) => {
                let events = embedded.replay_at(files, live::wall_clock_ns()).await?;
                tracing::info!(events, "sample captures replayed again");
            }
        }
    }
}

/// The API key of this installation: `.data/jwt-secret`, made on first start.
fn local_secret() -> Result<String> {
    let path = PathBuf::from(".data/jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        if secret.trim().len() >= 32 {
            return Ok(secret.trim().to_string());
        }
    }
    let secret = vncguard::random_token(32)?;
    std::fs::create_dir_all(".data")?;
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// Waits until the stages have taken everything the replay (and the heartbeat after it) produced
/// off the bus and the sink's
/// row counts stop moving (at most 30 s, for a very large sample folder).
async fn settle(embedded: &Embedded) -> Result<()> {
    let client = embedded.pool().get().await?;
    let mut last = (-1, -1);
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM vnc_sessions), (SELECT count(*) FROM threat_logs)",
                &[],
            )
            .await?;
        let now: (i64, i64) = (row.get(0), row.get(1));
        let drained = [
            schemas::topics::SESSIONS_RAW,
            schemas::topics::SESSIONS_ENRICHED,
            schemas::topics::SESSIONS_SCORED,
            schemas::topics::THREATS,
            schemas::topics::AGENT_HEARTBEATS,
        ]
        .iter()
        .all(|topic| embedded.bus().is_empty(topic.name));
        if now == last && drained {
            return Ok(());
        }
        last = now;
    }
    Ok(())
}

async fn print_summary(embedded: &Embedded, database_url: &str) -> Result<()> {
    let client = embedded
        .pool()
        .get()
        .await
        .context("connecting to Postgres")?;
    let sessions: i64 = client
        .query_one("SELECT count(*) FROM vnc_sessions", &[])
        .await?
        .get(0);
    println!("\nvncguard is running (embedded mode, in-process bus, {database_url})");
    println!("  sessions stored: {sessions}");
    println!("  threats by type:");
    for row in client
        .query(
            "SELECT threat_type, severity, count(*) FROM threat_logs GROUP BY 1, 2 ORDER BY 3 DESC, 1",
            &[],
        )
        .await?
    {
        let (kind, severity, count): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        println!("    {kind:<26} {severity:<9} {count}");
    }
    Ok(())
}
