//! The systems under measurement, each with a throwaway Postgres database, an API with an admin,
//! and the capture agent's publisher in this process:
//! - in-process: `vncguard::Embedded` (enricher, scorer, sink and API on the in-process bus);
//! - Kafka: a tansu broker and the `sink`, `enricher`, `scorer` and `api` binaries, each its
//!   own process, as a distributed install runs them.
//!
//! tansu 0.6 answers a fetch only after sleeping part of the consumer's `fetch.wait.max.ms`
//! (librdkafka's default 500 ms) even when records are waiting, so each consumer hop of the
//! alert path (raw → enricher, enriched → scorer, threats → API) adds 250-500 ms that Apache
//! Kafka, which answers as soon as `fetch.min.bytes` are there, does not. The processes take
//! this environment, so `KAFKA_FETCH_WAIT_MAX_MS` shortens the wait in every one of them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs, Producer};
use capture_agent::publish::{self, BusSink, Overflow, PublishOptions, PublishReport};
use capture_agent::AgentConfig;
use schemas::topics;
use testkit::{Broker, TestDatabase};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use vncguard::{Embedded, EmbeddedConfig};

const ADMIN: &str = "bench-admin";
/// Longest wait for the API to log its admin in after start.
const API_START_LIMIT: Duration = Duration::from_secs(90);

/// What both systems are started from.
pub struct Settings {
    pub geoip_city_db: String,
    pub geoip_asn_db: String,
    pub risk: scorer::risk::RiskConfig,
    pub agent: AgentConfig,
}

/// One stage binary, killed when dropped.
struct StageProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of `log`.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

enum Running {
    InProcess(Embedded),
    Kafka {
        /// Stopped before the broker they read.
        stages: Vec<StageProcess>,
        _broker: Broker,
        logs: PathBuf,
    },
}

/// A running system and the capture agent's way into it.
pub struct Pipeline {
    pub label: &'static str,
    /// host:port of the API.
    pub api: String,
    pub database_url: String,
    /// The publisher's queue: the capture agent's events go here.
    pub events: BusSink,
    publisher: JoinHandle<PublishReport>,
    running: Running,
    admin_password: String,
    /// Dropped last, after every user of the database stopped.
    _database: TestDatabase,
}

/// The capture agent's publisher on `producer`; it waits for room instead of dropping, as it
/// does for capture files, so every packet handed over becomes events on the bus.
fn agent_publisher<P: Producer>(producer: P, rt: &Runtime) -> (BusSink, JoinHandle<PublishReport>) {
    let options = PublishOptions {
        overflow: Overflow::Wait,
        ..PublishOptions::default()
    };
    publish::spawn(producer, options, rt.handle())
}

impl Pipeline {
    pub fn in_process(rt: &Runtime, settings: &Settings) -> Result<Pipeline> {
        let _context = rt.enter();
        let database = rt.block_on(TestDatabase::create())?;
        let mut embedded = rt.block_on(Embedded::start(EmbeddedConfig {
            database_url: database.url().to_string(),
            geoip_city_db: settings.geoip_city_db.clone(),
            geoip_asn_db: settings.geoip_asn_db.clone(),
            risk: settings.risk.clone(),
            learn: scorer::learn::LearnConfig::default(),
            bus_capacity: 100_000,
            agent: settings.agent.clone(),
        }))?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let api = listener.local_addr()?.to_string();
        embedded.serve_api(
            api::ApiConfig::new(api::secrets::random_secret(32)),
            listener,
        )?;
        let admin_password = rt
            .block_on(embedded.ensure_admin(ADMIN))?
            .context("the fresh database already had an admin")?;
        let (events, publisher) = agent_publisher(embedded.bus().producer()?, rt);
        Ok(Pipeline {
            label: "in-process bus",
            api,
            database_url: database.url().to_string(),
            events,
            publisher,
            running: Running::InProcess(embedded),
            admin_password,
            _database: database,
        })
    }

    pub fn kafka(rt: &Runtime, settings: &Settings) -> Result<Pipeline> {
        let _context = rt.enter();
        let broker = Broker::start().context("starting tansu (installed by ./dev test)")?;
        let brokers = broker.brokers();
        let bus = KafkaBus::new(&BusArgs::for_brokers(&brokers))?;
        rt.block_on(bus.ensure_topics(topics::ALL))?;
        let database = rt.block_on(TestDatabase::create())?;
        let logs = std::env::temp_dir().join(format!("vncguard-e2e-bench-{}", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let admin_password = api::secrets::random_secret(12);
        let api_port = testkit::free_port()?;
        let metrics = || -> Result<(&'static str, String)> {
            Ok((
                "METRICS_ADDR",
                format!("127.0.0.1:{}", testkit::free_port()?),
            ))
        };
        let common = [
            ("KAFKA_BROKERS", brokers.clone()),
            ("DATABASE_URL", database.url().to_string()),
            ("LOG_FORMAT", "pretty".to_string()),
            ("RUST_LOG", "info".to_string()),
            (
                "BRUTE_FORCE_MAX_RETRY",
                settings.risk.rules.brute_force_max_retry.to_string(),
            ),
        ];
        let stages = vec![
            spawn_stage("sink", &["run"], &common, &[metrics()?], &logs)?,
            spawn_stage(
                "enricher",
                &[],
                &common,
                &[
                    metrics()?,
                    ("GEOIP_CITY_DB", settings.geoip_city_db.clone()),
                    ("GEOIP_ASN_DB", settings.geoip_asn_db.clone()),
                ],
                &logs,
            )?,
            // Without a model on the topic the scorer starts scoring after this idle time.
            spawn_stage(
                "scorer",
                &["run"],
                &common,
                &[metrics()?, ("MODEL_LOAD_IDLE_MS", "500".to_string())],
                &logs,
            )?,
            spawn_stage(
                "api",
                &["serve"],
                &common,
                &[
                    ("HOST", "127.0.0.1".to_string()),
                    ("PORT", api_port.to_string()),
                    ("JWT_SECRET", api::secrets::random_secret(32)),
                    ("VNCGUARD_ADMIN_USER", ADMIN.to_string()),
                    ("VNCGUARD_ADMIN_PASSWORD", admin_password.clone()),
                ],
                &logs,
            )?,
        ];
        let (events, publisher) = agent_publisher(bus.producer()?, rt);
        Ok(Pipeline {
            label: "Kafka (tansu)",
            api: format!("127.0.0.1:{api_port}"),
            database_url: database.url().to_string(),
            events,
            publisher,
            running: Running::Kafka {
                stages,
                _broker: broker,
                logs,
            },
            admin_password,
            _database: database,
        })
    }

    /// An error naming the stage and its last log lines when a stage process has exited.
    pub fn check(&mut self) -> Result<()> {
        if let Running::Kafka { stages, .. } = &mut self.running {
            for stage in stages {
                if let Some(status) = stage.child.try_wait()? {
                    bail!(
                        "the {} process exited ({status}); its log {}:\n{}",
                        stage.name,
                        stage.log.display(),
                        log_tail(&stage.log)
                    );
                }
            }
        }
        Ok(())
    }

    /// An access token of the admin, once the API answers.
    pub fn login(&mut self, rt: &Runtime) -> Result<String> {
        let started = Instant::now();
        loop {
            self.check()?;
            match rt.block_on(testkit::live::login(&self.api, ADMIN, &self.admin_password)) {
                Ok(token) => return Ok(token),
                Err(e) if started.elapsed() > API_START_LIMIT => {
                    return Err(e.context(format!(
                        "the API at {} did not log its admin in within {API_START_LIMIT:?}",
                        self.api
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Where the stage processes log, if they are processes.
    pub fn logs(&self) -> Option<&Path> {
        match &self.running {
            Running::Kafka { logs, .. } => Some(logs),
            Running::InProcess(_) => None,
        }
    }

    /// Publishes what the agent handed over, then stops every stage; the stage logs of a
    /// clean run are removed.
    pub fn stop(self, rt: &Runtime) -> Result<PublishReport> {
        let Pipeline {
            events,
            publisher,
            running,
            _database,
            ..
        } = self;
        events.close();
        let report = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), publisher).await })
            .context("the agent's publisher did not finish within 60 s")??;
        match running {
            Running::InProcess(embedded) => rt.block_on(embedded.stop()),
            Running::Kafka { stages, logs, .. } => {
                drop(stages);
                std::fs::remove_dir_all(&logs)
                    .with_context(|| format!("removing {}", logs.display()))?;
            }
        }
        Ok(report)
    }
}

fn spawn_stage(
    name: &'static str,
    args: &[&str],
    common: &[(&str, String)],
    own: &[(&str, String)],
    logs: &Path,
) -> Result<StageProcess> {
    let program = testkit::workspace_binary(name);
    let log = logs.join(format!("{name}.log"));
    let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(&program)
        .args(args)
        .envs(common.iter().chain(own).map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(StageProcess { name, child, log })
}
