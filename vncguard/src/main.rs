//! `vncguard`: the whole product in one process — capture replay, enricher, scorer, sink and the
//! API with its dashboard on the in-process bus, writing the local Postgres; `vncguard analyze
//! FILE...` runs the same stages over capture files offline and prints what they find.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capture_agent::config::parse_duration;
use capture_agent::live;
use capture_agent::PortSet;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vncguard::analyze::{self, AnalyzeConfig, Findings, Lines, Table};
use vncguard::{capture_files, Embedded, EmbeddedConfig};

#[derive(Parser)]
#[command(
    about = "vncguard embedded mode: every stage in one process on the in-process bus \
             (`vncguard analyze FILE...`: the same stages over capture files, offline)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    embedded: Args,
}

#[derive(Subcommand)]
enum Command {
    /// Offline forensics: run every stage over capture files (pcap, pcapng) and print the
    /// sessions and threats found, without a database (like `zeek -r` or `suricata -r`). Exits
    /// with 1 when a file cannot be read to its end, after printing what was read before.
    Analyze(AnalyzeArgs),
}

/// How `analyze` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// vncguard's JSON lines: `{"type":"session",...}`, `{"type":"threat",...}`.
    Json,
    /// A readable table.
    Table,
    /// Suricata EVE JSON lines (`event_type` `rfb` and `alert`).
    Eve,
    /// Elastic Common Schema documents, one per line.
    Ecs,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files to analyse, in order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format; default: a table when stdout is a terminal, JSON lines otherwise.
    #[arg(long, value_enum)]
    format: Option<OutputFormat>,
    /// Also store the results in this Postgres database (created and migrated if missing).
    /// A flag only, not `DATABASE_URL`: an analysis writes a database only when asked to.
    #[arg(long)]
    database_url: Option<String>,
    /// Agent identity, part of every session id: the capture agent's own id gives the ids it
    /// gave the same traffic.
    #[arg(long, env = "AGENT_ID", default_value = "analyze")]
    agent_id: String,
    /// Also find RFB on any port by its banner.
    #[arg(long, env = "AGENT_ANY_PORT")]
    any_port: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    stages: StageArgs,
}

/// What the embedded mode and `analyze` both run: the capture agent's ports, the enricher's geo
/// databases, the scorer's risk settings and kernel, the in-process bus, the logs.
#[derive(clap::Args)]
struct StageArgs {
    /// TCP ports where VNC servers listen (live capture, and where a capture's RFB is looked
    /// for): a list of ports and ranges.
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
    #[command(flatten)]
    risk: scorer::risk::RiskConfig,
    #[command(flatten)]
    learn: scorer::learn::LearnConfig,
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(flatten)]
    forest_kernel: scorer::forest::KernelArgs,
}

impl StageArgs {
    /// Starts the logs and chooses the forest kernel.
    fn init(&self) -> Result<()> {
        self.log.init();
        self.forest_kernel
            .apply()
            .context("choosing the forest scoring kernel (--forest-kernel, FOREST_KERNEL)")
    }
}

#[derive(clap::Args)]
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
    /// Identity of the embedded capture agent.
    #[arg(long, env = "AGENT_ID", default_value = "embedded")]
    agent_id: String,
    /// Address of the API and dashboard.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Key of the API's access tokens; without it a random key is kept in DATA_DIR/jwt-secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Where this installation keeps its generated secrets (jwt-secret, admin-password; 0600).
    #[arg(long, env = "VNCGUARD_DATA_DIR", default_value = ".data")]
    data_dir: PathBuf,
    /// Name of the admin created when the database has none (its password goes to
    /// DATA_DIR/admin-password, readable by this user only).
    #[arg(long, env = "VNCGUARD_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// Serve Prometheus metrics on this address.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9100")]
    metrics_addr: std::net::SocketAddr,
    #[command(flatten)]
    stages: StageArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Some(Command::Analyze(mut args)) => {
            // An analysis's output is its data, on the terminal too: its logs start at warnings
            // unless a filter was asked for.
            let filter_source = matches
                .subcommand_matches("analyze")
                .and_then(|m| m.value_source("log_filter"));
            if filter_source == Some(clap::parser::ValueSource::DefaultValue) {
                args.stages.log.log_filter = "warn".into();
            }
            let clean = run_analyze(args).await?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        None => run_embedded(cli.embedded).await,
    }
}

/// `vncguard analyze`; false when a file could not be read to its end.
async fn run_analyze(args: AnalyzeArgs) -> Result<bool> {
    use std::io::IsTerminal;
    args.stages.init()?;
    let stdout = std::io::stdout().lock();
    let format = args.format.unwrap_or(if stdout.is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let stdout = std::io::BufWriter::new(stdout);
    let mut findings: Box<dyn Findings> = match format {
        OutputFormat::Table => Box::new(Table::new(stdout)),
        OutputFormat::Json => Box::new(Lines::new(stdout, siem_formats::RecordFormat::Json)),
        OutputFormat::Eve => Box::new(Lines::new(stdout, siem_formats::RecordFormat::Eve)),
        OutputFormat::Ecs => Box::new(Lines::new(stdout, siem_formats::RecordFormat::Ecs)),
    };
    let config = AnalyzeConfig {
        files: args.files,
        agent: capture_agent::config::AgentConfig {
            agent_id: args.agent_id,
            ports: args.stages.vnc_ports,
            any_port: args.any_port,
            ..Default::default()
        },
        geoip_city_db: args.stages.geoip_city_db,
        geoip_asn_db: args.stages.geoip_asn_db,
        risk: args.stages.risk,
        bus_capacity: args.stages.bus_capacity,
        database_url: args.database_url,
        progress: !args.no_progress,
    };
    let report = analyze::analyze(config, findings.as_mut()).await?;
    for failure in &report.failures {
        eprintln!("error: {}", failure.error);
    }
    Ok(report.failures.is_empty())
}

async fn run_embedded(args: Args) -> Result<()> {
    args.stages.init()?;
    tokio::spawn(telemetry::serve_metrics(args.metrics_addr));
    let agent = capture_agent::config::AgentConfig {
        agent_id: args.agent_id.clone(),
        ports: args.stages.vnc_ports.clone(),
        ..Default::default()
    };
    let mut embedded = Embedded::start(EmbeddedConfig {
        database_url: args.database_url.clone(),
        geoip_city_db: args.stages.geoip_city_db,
        geoip_asn_db: args.stages.geoip_asn_db,
        risk: args.stages.risk,
        learn: args.stages.learn,
        bus_capacity: args.stages.bus_capacity,
        agent,
    })
    .await?;

    let secret = match args.jwt_secret {
        Some(secret) => {
            api::secrets::check_jwt_secret(&secret)?;
            secret
        }
        None => {
            let path = args.data_dir.join("jwt-secret");
            api::secrets::local_secret(&path, 32)
                .with_context(|| format!("keeping the JWT key in {}", path.display()))?
        }
    };
    let address = std::net::SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (PORT sets another port)"))?;
    let mut api_config = api::ApiConfig::new(secret);
    // The installation's decision key, made 0600 at first start; its public key
    // (DATA_DIR/decision-signing.key.pub) is what an enforcing agent is given.
    let key_file = args.data_dir.join("decision-signing.key");
    let signer = trust::signing::local_signer(&key_file)
        .with_context(|| format!("keeping the decision signing key in {}", key_file.display()))?;
    tracing::info!(key_id = signer.key_id(), public_key = %signer.public_key_line(), "signing analysts' decisions");
    api_config.decision_signer = Some(signer);
    embedded.serve_api(api_config, listener)?;
    let admin_password_file = match embedded.ensure_admin(&args.admin_user).await? {
        Some(password) => {
            let path = args.data_dir.join("admin-password");
            api::secrets::write_private_file(&path, &password)
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        None => None,
    };

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
                args.stages.vnc_ports
            ),
            Err(e) => println!("  NOT capturing live: {e:#}"),
        }
    }
    if let Some(every) = args.replay_every {
        println!("  replaying the samples every {every:?} as new sessions");
    }
    println!("\n  dashboard: http://{address}/");
    // The password itself is never printed: terminals and CI logs keep what they show.
    match admin_password_file {
        Some(path) => println!(
            "  first admin: {}  password in: {}  (readable by you only; change it on the dashboard, then delete the file)",
            args.admin_user,
            path.display()
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
        if now == last && embedded.drained() {
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
