//! The embedded mode: capture replay, enricher, scorer, sink and the API with its dashboard in one
//! process on the in-process bus ([`bus::memory::MemoryBus`]), writing the local Postgres. The
//! stages are the same code the distributed binaries run on Kafka. [`analyze`] runs the same
//! stages over capture files offline.

pub mod analyze;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bus::memory::MemoryBus;
use bus::Producer;
use bus::{pipeline, Bus, PipelineOptions};
use capture_agent::config::AgentConfig;
use capture_agent::live::{self, LiveOptions};
use capture_agent::publish::{self, Overflow, PublishOptions};
use capture_agent::{CaptureStats, ReplayOptions};
use deadpool_postgres::Pool;
use enricher::{Enricher, EnricherConfig, EnricherStage, GeoDatabases, NoHistory, Reputation};
use schemas::{topics, AgentHeartbeat};
use scorer::learn::{LearnConfig, Learner};
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::RiskConfig;
use scorer::stage::{ScoringStage, DEFAULT_THREAT_MEMORY};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// What the embedded mode needs to start.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub database_url: String,
    /// City databases for the enricher (see `enricher --help`); empty: no geo.
    pub geoip_city_db: String,
    pub geoip_asn_db: String,
    pub risk: RiskConfig,
    /// When the scorer fits its own models (the embedded mode has no `scorer train`).
    pub learn: LearnConfig,
    /// Records each in-process topic holds before producers wait.
    pub bus_capacity: usize,
    pub agent: AgentConfig,
}

/// How often the embedded capture agent reports to the fleet page, as a capture agent does by
/// default; well inside the API's staleness interval (`AGENT_HEARTBEAT_INTERVAL_SECS`, 30 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// The running stages.
pub struct Embedded {
    bus: MemoryBus,
    pool: Pool,
    agent: AgentConfig,
    /// What the embedded agent has replayed, for its heartbeats.
    replayed: Arc<Mutex<ReplayTotals>>,
    /// Wakes the heartbeat task after a replay, so the fleet page has its counts at once.
    replay_done: Arc<Notify>,
    stop: watch::Sender<bool>,
    stages: Vec<JoinHandle<()>>,
}

/// The replays' counters since start, summed over files.
#[derive(Debug, Default)]
struct ReplayTotals {
    stats: CaptureStats,
    sources: Vec<String>,
    /// Set once live capture runs: its own loop then speaks for the agent.
    live: bool,
}

impl ReplayTotals {
    fn add(&mut self, file: &Path, stats: &CaptureStats) {
        self.stats.packets += stats.packets;
        self.stats.bytes += stats.bytes;
        self.stats.flows_evicted += stats.flows_evicted;
        self.stats.sessions_total += stats.sessions_total;
        self.stats.parse_errors += stats.parse_errors;
        let source = format!("replay:{}", file.display());
        if !self.sources.contains(&source) {
            self.sources.push(source);
        }
    }

    fn heartbeat(
        &self,
        agent_id: &str,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> AgentHeartbeat {
        self.stats.heartbeat(
            agent_id,
            &live::hostname(),
            started_at,
            chrono::Utc::now(),
            0,
            self.sources.clone(),
        )
    }
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<()> {
    let config: tokio_postgres::Config = url.parse().context("DATABASE_URL")?;
    let name = config
        .get_dbname()
        .context("DATABASE_URL names no database")?
        .to_string();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to Postgres for {url} (is it running?)"))?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        tracing::info!(database = %name, "created database");
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

impl Embedded {
    /// Creates and migrates the database, then starts the enricher, scorer and sink.
    pub async fn start(config: EmbeddedConfig) -> Result<Embedded> {
        let pool = migrated_pool(&config.database_url).await?;

        let bus = MemoryBus::new(config.bus_capacity);
        bus.ensure_topics(topics::ALL).await?;
        let (stop, stopped) = watch::channel(false);
        let mut models = ModelStore::new(DEFAULT_MODEL_NAME);
        load_stored_model(&pool, &mut models).await?;
        let scoring_stage = ScoringStage::new(models, config.risk.clone(), DEFAULT_THREAT_MEMORY)
            .with_learner(
                Learner::new(config.learn.clone(), DEFAULT_MODEL_NAME),
                Some(config.database_url.clone()),
            );
        let mut stages = spawn_scoring(
            &bus,
            &config.geoip_city_db,
            &config.geoip_asn_db,
            scoring_stage,
            &stopped,
        )?;
        stages.push(spawn_sink(&bus, pool.clone(), stopped)?);

        let replayed = Arc::new(Mutex::new(ReplayTotals::default()));
        let replay_done = Arc::new(Notify::new());
        stages.push(tokio::spawn(report_heartbeats(
            bus.producer()?,
            config.agent.agent_id.clone(),
            replayed.clone(),
            replay_done.clone(),
            until_stopped(stop.subscribe()),
        )));

        Ok(Embedded {
            bus,
            pool,
            agent: config.agent,
            replayed,
            replay_done,
            stop,
            stages,
        })
    }

    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether the stages have taken everything published to them off the in-process bus.
    pub fn drained(&self) -> bool {
        [
            topics::SESSIONS_RAW,
            topics::SESSIONS_ENRICHED,
            topics::SESSIONS_SCORED,
            topics::THREATS,
            topics::AGENT_HEARTBEATS,
        ]
        .iter()
        .all(|topic| self.bus.is_empty(topic.name))
    }

    /// Replays capture files through the capture agent onto the bus, at their recorded times;
    /// returns how many session events were published.
    pub async fn replay(&self, files: &[PathBuf]) -> Result<u64> {
        self.replay_files(files, None).await
    }

    /// [`Self::replay`] with each file moved in time so its first packet is at `at` (ns since
    /// the Unix epoch): a time not used before replays the same files as new sessions.
    pub async fn replay_at(&self, files: &[PathBuf], at: i64) -> Result<u64> {
        self.replay_files(files, Some(at)).await
    }

    /// When this database's sample replay, named by `samples`, happens: now at the first start,
    /// and the same time at every start after, so the samples show as live traffic on a new
    /// installation and replaying them again changes nothing.
    pub async fn sample_replay_time(&self, samples: &str) -> Result<i64> {
        let client = self.pool.get().await.context("connecting to Postgres")?;
        client
            .execute(
                "INSERT INTO sample_replays (samples, replay_at_ns) VALUES ($1, $2) ON CONFLICT (samples) DO NOTHING",
                &[&samples, &live::wall_clock_ns()],
            )
            .await?;
        let at: i64 = client
            .query_one(
                "SELECT replay_at_ns FROM sample_replays WHERE samples = $1",
                &[&samples],
            )
            .await?
            .get(0);
        Ok(at)
    }

    async fn replay_files(&self, files: &[PathBuf], at: Option<i64>) -> Result<u64> {
        let files = files.to_vec();
        let agent = self.agent.clone();
        let replayed = self.replayed.clone();
        let ((), published) = publish_events(&self.bus, move |events| {
            for file in &files {
                let replay = match at {
                    None => Ok(ReplayOptions::default()),
                    Some(at) => ReplayOptions::starting_at(file, at),
                };
                let outcome = replay
                    .map_err(capture_agent::RunError::from)
                    .and_then(|replay| capture_agent::replay_file(file, &agent, events, replay));
                match outcome {
                    Ok(stats) => {
                        tracing::info!(file = %file.display(), ?stats, "replayed capture");
                        replayed.lock().unwrap_or_else(|e| e.into_inner()).add(file, &stats);
                    }
                    Err(e) => tracing::warn!(file = %file.display(), error = %e, "capture replay stopped early"),
                }
            }
        })
        .await?;
        self.replay_done.notify_one();
        Ok(published)
    }

    /// Captures live on `interface` until the embedded mode stops, publishing onto the
    /// in-process bus like a capture agent would. Fails at once, saying why, when the
    /// interface cannot be opened (libpcap needs CAP_NET_RAW).
    pub fn capture_live(&mut self, interface: &str) -> Result<()> {
        let options = LiveOptions {
            interface: interface.to_string(),
            host: live::hostname(),
            heartbeat_interval: Duration::from_secs(30),
            enforcing: false,
        };
        let capture = live::open(&options, &self.agent).with_context(|| {
            format!("live capture on {interface} (needs root or CAP_NET_RAW on the binary)")
        })?;
        // Live, a full queue drops records (counted) rather than stalling the capture.
        let (mut sink, publisher) = publish::spawn(
            self.bus.producer()?,
            PublishOptions::default(),
            &tokio::runtime::Handle::current(),
        );
        let agent = self.agent.clone();
        self.replayed.lock().unwrap_or_else(|e| e.into_inner()).live = true;
        let stop = Arc::new(AtomicBool::new(false));
        let capturing = {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = live::run(capture, &options, agent, &mut sink, &stop) {
                    tracing::error!(interface = %options.interface, error = %e, "live capture stopped");
                }
            })
        };
        let stopped = self.stop.subscribe();
        self.stages.push(tokio::spawn(async move {
            until_stopped(stopped).await;
            stop.store(true, Ordering::Relaxed);
            let _ = capturing.await;
            if let Ok(report) = publisher.await {
                tracing::info!(published = report.published, "live capture published");
            }
        }));
        Ok(())
    }

    /// Serves the REST API, the WebSocket fan-out and the dashboard on `listener` from the
    /// in-process bus, until the embedded mode stops.
    pub fn serve_api(
        &mut self,
        config: api::ApiConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<()> {
        let state = api::AppState::new(config, self.pool.clone(), &self.bus)?;
        let stopped = self.stop.subscribe();
        let bus = self.bus.clone();
        self.stages.push(tokio::spawn(async move {
            if let Err(e) = api::serve(state, bus, listener, until_stopped(stopped)).await {
                tracing::error!(error = %e, "the API stopped");
            }
        }));
        Ok(())
    }

    /// Creates the admin `username` with a fresh random password when no admin exists yet, and
    /// returns that password.
    pub async fn ensure_admin(&self, username: &str) -> Result<Option<String>> {
        let client = self.pool.get().await?;
        let admins: i64 = client
            .query_one("SELECT count(*) FROM users WHERE role = 'admin'", &[])
            .await?
            .get(0);
        if admins > 0 {
            return Ok(None);
        }
        let password = api::secrets::random_secret(12);
        api::routes::users::insert_user(&client, username, &password, api::auth::Role::Admin)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(Some(password))
    }

    /// Stops every stage after its current batch and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for stage in self.stages {
            let _ = stage.await;
        }
    }
}

/// Starts the enricher and the scorer on `bus` until `stopped`: the stages between raw session
/// events and scored sessions and threats, shared by the embedded mode and `vncguard analyze`.
pub(crate) fn spawn_scoring(
    bus: &MemoryBus,
    geoip_city_db: &str,
    geoip_asn_db: &str,
    scoring: ScoringStage,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let options = PipelineOptions::default();
    let geo = Arc::new(GeoDatabases::load(geoip_city_db, geoip_asn_db));
    let enricher = Enricher::new(geo, Reputation::new(None, None), EnricherConfig::default());
    let enricher = tokio::spawn(pipeline::run(
        bus.consumer("enricher", &[topics::SESSIONS_RAW.name])?,
        bus.producer()?,
        EnricherStage::new(enricher, NoHistory),
        options.clone(),
        until_stopped(stopped.clone()),
    ));
    let scorer = tokio::spawn(pipeline::run(
        bus.consumer(
            "scorer",
            &[topics::SESSIONS_ENRICHED.name, topics::MODELS.name],
        )?,
        bus.producer()?,
        scoring,
        options,
        until_stopped(stopped.clone()),
    ));
    Ok(vec![enricher, scorer])
}

/// Starts the sink on `bus`, writing `pool`'s database, until `stopped`.
pub(crate) fn spawn_sink(
    bus: &MemoryBus,
    pool: Pool,
    stopped: watch::Receiver<bool>,
) -> Result<JoinHandle<()>> {
    let sink_topics: Vec<&str> = sink::INPUT_TOPICS.iter().map(|t| t.name).collect();
    Ok(tokio::spawn(pipeline::run(
        bus.consumer("sink", &sink_topics)?,
        bus.producer()?,
        sink::SinkStage::new(pool),
        PipelineOptions::default(),
        until_stopped(stopped),
    )))
}

/// Connects to the database at `url`, creating and migrating it first.
pub(crate) async fn migrated_pool(url: &str) -> Result<Pool> {
    ensure_database(url).await?;
    let pool = sink::connect_pool(url, 8, Duration::from_secs(10))?;
    let mut client = pool.get().await.context("connecting to Postgres")?;
    sink::migrate::migrate(&mut client).await?;
    drop(client);
    Ok(pool)
}

/// Runs `replay` (blocking: it reads capture files) with a capture agent's event sink that
/// publishes onto `bus`, waiting at full queues rather than dropping; returns what `replay`
/// returned and how many events were published.
pub(crate) async fn publish_events<T: Send + 'static>(
    bus: &MemoryBus,
    replay: impl FnOnce(&mut dyn capture_agent::EventSink) -> T + Send + 'static,
) -> Result<(T, u64)> {
    let options = PublishOptions {
        overflow: Overflow::Wait,
        ..PublishOptions::default()
    };
    let (mut events, publisher) =
        publish::spawn(bus.producer()?, options, &tokio::runtime::Handle::current());
    let outcome = tokio::task::spawn_blocking(move || replay(&mut events)).await?;
    let report = publisher.await?;
    Ok((outcome, report.published))
}

/// The embedded agent's heartbeats: one at start, one after each replay, and one every
/// [`HEARTBEAT_INTERVAL`], until live capture takes over (it sends its own) or the embedded mode
/// stops.
async fn report_heartbeats(
    producer: impl Producer,
    agent_id: String,
    replayed: Arc<Mutex<ReplayTotals>>,
    replay_done: Arc<Notify>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let started_at = chrono::Utc::now();
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
            _ = replay_done.notified() => {}
        }
        let heartbeat = {
            let replayed = replayed.lock().unwrap_or_else(|e| e.into_inner());
            if replayed.live {
                return;
            }
            replayed.heartbeat(&agent_id, started_at)
        };
        let record = match publish::heartbeat_record(&heartbeat) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the embedded agent's heartbeat");
                return;
            }
        };
        if let Err(e) = producer.send(vec![record]).await {
            tracing::warn!(error = %e, "the embedded agent's heartbeat was not published");
        }
    }
}

/// Loads the newest model the sink stored into `models`: the in-process model topic starts
/// empty at every start, and Postgres is where the embedded mode keeps its models, so a restart
/// scores with the model it had instead of learning again. A stored model that does not load
/// is logged and skipped (the scorer then learns a new one).
async fn load_stored_model(pool: &Pool, models: &mut ModelStore) -> Result<()> {
    let client = pool.get().await.context("connecting to Postgres")?;
    let row = client
        .query_opt(
            "SELECT name, version, created_at, feature_names, training_rows, training_window_start, \
             training_window_end, metrics, model_json FROM models WHERE name = $1 \
             ORDER BY created_at DESC LIMIT 1",
            &[&DEFAULT_MODEL_NAME],
        )
        .await
        .context("reading the newest stored model")?;
    let Some(row) = row else {
        return Ok(());
    };
    let metrics: serde_json::Value = row.get(7);
    let announcement = schemas::ModelAnnouncement {
        model_name: row.get(0),
        version: row.get(1),
        created_at: row.get(2),
        feature_names: row.get(3),
        training_rows: row.get(4),
        training_window_start: row.get(5),
        training_window_end: row.get(6),
        metrics: serde_json::from_value(metrics).unwrap_or_default(),
        model_json: row.get(8),
    };
    if let Err(e) = models.apply(&announcement) {
        tracing::warn!(error = %e, "the stored model does not load; learning a new one");
    }
    Ok(())
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// The capture files in `dir`, sorted by name.
pub fn capture_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}
