//! `vncguard analyze FILE...`: offline forensics, like `zeek -r` or `suricata -r`. The capture
//! files are replayed through the capture agent onto an in-process bus, and the enricher and the
//! scorer run on it as in the embedded mode (the same wiring, [`crate::spawn_scoring`]); the
//! sessions and threats they produce go to a [`Findings`] writer ([`output`]). Nothing listens on
//! the network and no database is needed; with a database URL the sink also stores the results.
//!
//! Every session ends in the capture (at the end of its file at the latest), and its final
//! scored record is written then. A threat can be raised again with a higher score while its
//! session goes on, so threats are written at the end of the run, each in its latest state.
//!
//! A file that cannot be read to its end (truncated, corrupt) is reported with its byte offset;
//! what was read before the error was analysed like the rest, and the run goes on with the next
//! file.

pub mod output;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bus::memory::MemoryBus;
use bus::{Bus, Consumer, Record};
use capture_agent::capture::file::CaptureFile;
use capture_agent::{AgentConfig, EventSink, ReplayOptions};
use indicatif::{ProgressBar, ProgressStyle};
use schemas::{topics, ScoredSession, SessionEventKind, SessionSummary, Threat};
use scorer::risk::RiskConfig;
use tokio::sync::watch;

pub use output::{Findings, Lines, Table};

/// Threats held for their latest state until the end of the run (as the scorer's own memory of
/// published threats, `scorer::stage::DEFAULT_THREAT_MEMORY`). Past it, the oldest is written
/// at once: memory stays bounded and nothing is lost, and a threat raised again after that is
/// written again in its new state.
pub const MAX_HELD_THREATS: usize = 100_000;

/// Session summaries kept so that each threat's alert can name its session's client port,
/// sensor and time; past it the oldest session is forgotten and its threats go out without them.
pub const MAX_HELD_SUMMARIES: usize = 100_000;

/// Captures from this total size on show a progress bar (on a terminal): smaller ones are read
/// in about a second, where a bar would only flicker.
pub const PROGRESS_MIN_BYTES: u64 = 16 << 20;

/// What an analysis needs.
#[derive(Debug, Clone)]
pub struct AnalyzeConfig {
    pub files: Vec<PathBuf>,
    /// The capture agent's configuration; its `agent_id` is part of every session id, so the
    /// same files and agent id give the same session ids as the capture agent does.
    pub agent: AgentConfig,
    pub geoip_city_db: String,
    pub geoip_asn_db: String,
    pub risk: RiskConfig,
    /// Records each in-process topic holds before producers wait.
    pub bus_capacity: usize,
    /// Also store the results in this Postgres database (created and migrated if missing).
    pub database_url: Option<String>,
    /// Show a progress bar on stderr (when it is a terminal and the captures are large).
    pub progress: bool,
}

/// A capture file that could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFailure {
    pub file: PathBuf,
    /// Why, with the byte offset where reading stopped when the file was readable at all.
    pub error: String,
}

/// What one analysis read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisReport {
    pub files: usize,
    pub packets: u64,
    pub sessions: u64,
    pub threats: u64,
    pub failures: Vec<FileFailure>,
}

/// Analyses `config.files` and writes what is found to `findings`.
pub async fn analyze(config: AnalyzeConfig, findings: &mut dyn Findings) -> Result<AnalysisReport> {
    let bus = MemoryBus::new(config.bus_capacity);
    bus.ensure_topics(topics::ALL).await?;
    let (stop, stopped) = watch::channel(false);
    // No model and no learning: an offline run scores with the rules alone, the same on every
    // run of the same files.
    let scoring = scorer::stage::ScoringStage::new(
        scorer::model::ModelStore::new(scorer::model::DEFAULT_MODEL_NAME),
        config.risk.clone(),
        scorer::stage::DEFAULT_THREAT_MEMORY,
    );
    let mut stages = crate::spawn_scoring(
        &bus,
        &config.geoip_city_db,
        &config.geoip_asn_db,
        scoring,
        &stopped,
    )?;
    if let Some(url) = &config.database_url {
        let pool = crate::migrated_pool(url).await?;
        stages.push(crate::spawn_sink(&bus, pool, stopped)?);
    }
    let consumer = bus.consumer(
        "analyze",
        &[topics::SESSIONS_SCORED.name, topics::THREATS.name],
    )?;

    let replayed = Arc::new(AtomicBool::new(false));
    let replay = {
        let bus = bus.clone();
        let replayed = replayed.clone();
        let files = config.files.clone();
        let agent = config.agent.clone();
        let progress = config.progress;
        async move {
            let outcome = crate::publish_events(&bus, move |events| {
                replay_files(&files, &agent, events, progress)
            })
            .await;
            replayed.store(true, Ordering::Release);
            outcome
        }
    };
    let mut collector = Collector::new(findings);
    let (replay, collected) = tokio::join!(replay, collector.run(consumer, &bus, &replayed));
    let _ = stop.send(true);
    for stage in stages {
        let _ = stage.await;
    }
    let ((packets, failures), _published) = replay?;
    collected?;
    collector.finish()?;
    let report = AnalysisReport {
        files: config.files.len(),
        packets,
        sessions: collector.sessions,
        threats: collector.threats_written,
        failures,
    };
    collector.findings.finish(&report)?;
    Ok(report)
}

/// Reads every file through the capture agent into `events`; returns the packets read and the
/// files that could not be read to their end.
fn replay_files(
    files: &[PathBuf],
    agent: &AgentConfig,
    events: &mut dyn EventSink,
    progress: bool,
) -> (u64, Vec<FileFailure>) {
    let total: u64 = files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|meta| meta.len())
        .sum();
    let bar = if progress && total >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut packets = 0;
    let mut failures = Vec::new();
    for file in files {
        // The file's name alone keeps the bar on one line of a narrow terminal.
        let name = file.file_name().unwrap_or(file.as_os_str());
        bar.set_message(name.to_string_lossy().into_owned());
        match replay_file(file, agent, events, &bar) {
            Ok(read) => packets += read,
            Err(error) => failures.push(FileFailure {
                file: file.clone(),
                error,
            }),
        }
    }
    bar.finish_and_clear();
    (packets, failures)
}

/// One file through the capture agent; the error names the file and, for a file that was
/// readable at all, the byte offset where reading stopped.
fn replay_file(
    file: &Path,
    agent: &AgentConfig,
    events: &mut dyn EventSink,
    bar: &ProgressBar,
) -> Result<u64, String> {
    let name = file.display();
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot open {name}: {e}"))?;
    let capture = CaptureFile::new(bar.wrap_read(opened)).map_err(|e| format!("{name}: {e}"))?;
    match capture_agent::analyze_capture(capture, agent, events, ReplayOptions::default()) {
        Ok(stats) => {
            tracing::info!(file = %name, ?stats, "analysed capture");
            Ok(stats.packets)
        }
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// Takes the scored sessions and threats off the bus as the stages publish them.
struct Collector<'a> {
    findings: &'a mut dyn Findings,
    /// Held threats by first sight, and each threat id's place among them.
    threats: BTreeMap<u64, Threat>,
    threat_index: HashMap<String, u64>,
    next_threat: u64,
    summaries: HashMap<String, SessionSummary>,
    summary_order: VecDeque<String>,
    sessions: u64,
    threats_written: u64,
}

impl<'a> Collector<'a> {
    fn new(findings: &'a mut dyn Findings) -> Self {
        Collector {
            findings,
            threats: BTreeMap::new(),
            threat_index: HashMap::new(),
            next_threat: 0,
            summaries: HashMap::new(),
            summary_order: VecDeque::new(),
            sessions: 0,
            threats_written: 0,
        }
    }

    /// Until the replay is done and every stage has taken everything off the bus: the memory
    /// bus trims a record once every group reading its topic has stored it, and each stage
    /// stores its input only after its outputs are published, so empty topics mean nothing is
    /// left in flight.
    async fn run(
        &mut self,
        mut consumer: impl Consumer,
        bus: &MemoryBus,
        replayed: &AtomicBool,
    ) -> Result<()> {
        loop {
            let batch = consumer
                .next_batch(1000, Duration::from_millis(100))
                .await
                .context("reading the in-process bus")?;
            for record in &batch {
                self.take(record)?;
            }
            consumer.store(&batch);
            let drained = || {
                [
                    topics::SESSIONS_RAW,
                    topics::SESSIONS_ENRICHED,
                    topics::SESSIONS_SCORED,
                    topics::THREATS,
                ]
                .iter()
                .all(|topic| bus.is_empty(topic.name))
            };
            if batch.is_empty() && replayed.load(Ordering::Acquire) && drained() {
                return Ok(());
            }
        }
    }

    fn take(&mut self, record: &Record) -> Result<()> {
        if record.topic == topics::SESSIONS_SCORED.name {
            let scored: ScoredSession = schemas::decode(&record.payload)
                .context("decoding a scored session from the scorer")?;
            self.remember(&scored.enriched.event.summary);
            if scored.enriched.event.kind == SessionEventKind::Ended {
                self.sessions += 1;
                self.findings.session(&scored)?;
            }
        } else if record.topic == topics::THREATS.name {
            let threat: Threat =
                schemas::decode(&record.payload).context("decoding a threat from the scorer")?;
            self.hold(threat)?;
        }
        Ok(())
    }

    fn remember(&mut self, summary: &SessionSummary) {
        if self
            .summaries
            .insert(summary.session_id.clone(), summary.clone())
            .is_none()
        {
            self.summary_order.push_back(summary.session_id.clone());
        }
        while self.summaries.len() > MAX_HELD_SUMMARIES {
            let Some(oldest) = self.summary_order.pop_front() else {
                break;
            };
            self.summaries.remove(&oldest);
        }
    }

    fn hold(&mut self, threat: Threat) -> Result<()> {
        match self.threat_index.get(&threat.threat_id) {
            Some(&place) => {
                self.threats.insert(place, threat);
            }
            None => {
                self.next_threat += 1;
                self.threat_index
                    .insert(threat.threat_id.clone(), self.next_threat);
                self.threats.insert(self.next_threat, threat);
            }
        }
        while self.threats.len() > MAX_HELD_THREATS {
            let Some((_, oldest)) = self.threats.pop_first() else {
                break;
            };
            self.threat_index.remove(&oldest.threat_id);
            self.write_threat(&oldest)?;
        }
        Ok(())
    }

    fn write_threat(&mut self, threat: &Threat) -> Result<()> {
        self.threats_written += 1;
        let session = self.summaries.get(&threat.session_id);
        self.findings.threat(threat, session)?;
        Ok(())
    }

    /// Writes the held threats, in the order they were first raised.
    fn finish(&mut self) -> Result<()> {
        let threats = std::mem::take(&mut self.threats);
        self.threat_index.clear();
        for threat in threats.values() {
            self.write_threat(threat)?;
        }
        Ok(())
    }
}
