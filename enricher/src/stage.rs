//! The enricher stage: `vnc.sessions.raw` → `vnc.sessions.enriched`, keyed by client IP.
//!
//! [`Enricher`] is the pure part (decode, look up, count, compute features, encode) with the
//! window state of every input partition it processes; [`EnricherStage`] adds the rebuild of a
//! partition's state from the input history when this instance starts processing it.

use std::collections::HashMap;
use std::sync::Arc;

use bus::{Outcome, Output, Record, RetryableError, Stage};
use chrono_tz::Tz;
use schemas::topics::SESSIONS_ENRICHED;
use schemas::{EnrichedSession, SessionEvent};
use telemetry::Counter;

use crate::features::{compute_features, FeatureInputs};
use crate::geo::{distance_km, GeoDatabases};
use crate::history::InputHistory;
use crate::reputation::Reputation;
use crate::windows::{PartitionWindows, WindowConfig};

#[derive(Debug, Clone)]
pub struct EnricherConfig {
    pub windows: WindowConfig,
    /// Time zone of the watched servers, for hour of day and weekday.
    pub server_timezone: Tz,
    /// How far back in event time a partition's input is replayed to rebuild its state.
    pub replay_horizon: chrono::Duration,
    /// Most records replayed for one partition; an older tail is left out (counted).
    pub max_replay_records: usize,
}

impl Default for EnricherConfig {
    fn default() -> Self {
        let windows = WindowConfig::default();
        EnricherConfig {
            replay_horizon: windows.longest_window(),
            windows,
            server_timezone: Tz::UTC,
            max_replay_records: 200_000,
        }
    }
}

/// The state of one input partition: its windows and the next offset they expect.
struct PartitionState {
    windows: PartitionWindows,
    next_offset: i64,
}

type PartitionKey = (String, i32);

/// Decodes session events and makes enriched sessions, keeping the window state of each input
/// partition apart so that state moves with the partition.
pub struct Enricher {
    geo: Arc<GeoDatabases>,
    reputation: Reputation,
    config: EnricherConfig,
    partitions: HashMap<PartitionKey, PartitionState>,
}

impl Enricher {
    pub fn new(geo: Arc<GeoDatabases>, reputation: Reputation, config: EnricherConfig) -> Self {
        Enricher {
            geo,
            reputation,
            config,
            partitions: HashMap::new(),
        }
    }

    pub fn config(&self) -> &EnricherConfig {
        &self.config
    }

    /// Re-reads reputation lists whose files changed.
    pub fn refresh_reputation(&mut self) {
        self.reputation.refresh();
    }

    /// True when `record` does not continue the state held for its partition (none held, or
    /// records in between were processed elsewhere): the state must be rebuilt first.
    pub fn needs_restore(&self, record: &Record) -> bool {
        self.partitions
            .get(&(record.topic.clone(), record.partition))
            .is_none_or(|state| state.next_offset != record.offset)
    }

    /// Replaces the state of `record`'s partition with one rebuilt from `history`, the records
    /// of that partition just before `record`, in offset order.
    pub fn restore(&mut self, record: &Record, history: &[Record]) {
        let mut windows = PartitionWindows::new(self.config.windows.clone());
        for past in history {
            if let Ok(event) = schemas::decode::<SessionEvent>(&past.payload) {
                let country = self.geo.lookup(&event.summary.client_ip).country;
                windows.observe(&event, country.as_deref());
            }
        }
        self.partitions.insert(
            (record.topic.clone(), record.partition),
            PartitionState {
                windows,
                next_offset: record.offset,
            },
        );
    }

    /// Enriches one record: an `EnrichedSession` keyed by client IP, or a dead letter for a
    /// record that is not a session event. A partition without state (or whose state does not
    /// continue to this record) starts afresh; [`EnricherStage`] restores it before.
    pub fn enrich(&mut self, record: &Record) -> Outcome {
        let key = (record.topic.clone(), record.partition);
        let continues = self
            .partitions
            .get(&key)
            .is_some_and(|s| s.next_offset == record.offset);
        if !continues {
            self.partitions.remove(&key);
        }
        let event = match schemas::decode::<SessionEvent>(&record.payload) {
            Ok(event) => event,
            Err(e) => {
                if let Some(state) = self.partitions.get_mut(&key) {
                    state.next_offset = record.offset + 1;
                }
                return Outcome::DeadLetter(format!("not a session event: {e}"));
            }
        };
        let windows_config = &self.config.windows;
        let state = self
            .partitions
            .entry(key)
            .or_insert_with(|| PartitionState {
                windows: PartitionWindows::new(windows_config.clone()),
                next_offset: record.offset,
            });
        state.next_offset = record.offset + 1;
        let enriched = enrich_event(
            &self.geo,
            &self.reputation,
            self.config.server_timezone,
            &mut state.windows,
            event,
        );
        let client = enriched.event.summary.client_ip.clone();
        match Output::encode(&SESSIONS_ENRICHED, client, &enriched) {
            Ok(output) => Outcome::Emit(vec![output]),
            Err(e) => Outcome::DeadLetter(format!("enriched session cannot be encoded: {e}")),
        }
    }
}

/// The enriched form of `event`, counting it in `windows`.
pub fn enrich_event(
    geo: &GeoDatabases,
    reputation: &Reputation,
    server_timezone: Tz,
    windows: &mut PartitionWindows,
    event: SessionEvent,
) -> EnrichedSession {
    let client_geo = geo.lookup(&event.summary.client_ip);
    let server_geo = geo.lookup(&event.summary.server_ip);
    let context = windows.observe(&event, client_geo.country.as_deref());
    let distance = distance_km(&client_geo, &server_geo);
    let tag = reputation.tag(&event.summary.client_ip);
    let features = compute_features(&FeatureInputs {
        event: &event,
        context: &context,
        client_geo: &client_geo,
        distance_km: distance,
        reputation: tag,
        server_timezone,
    });
    EnrichedSession {
        event,
        client_geo,
        server_geo,
        distance_km: distance,
        reputation: tag.map(str::to_string),
        features,
        enriched_at: chrono::Utc::now(),
    }
}

struct ReplayCounters {
    restores: &'static Counter,
    records: &'static Counter,
    truncated: &'static Counter,
}

/// The enricher on the bus: rebuilds a partition's windows from the input history before its
/// first record here, then enriches.
pub struct EnricherStage<H> {
    enricher: Enricher,
    history: H,
    counters: ReplayCounters,
}

impl<H: InputHistory> EnricherStage<H> {
    pub fn new(enricher: Enricher, history: H) -> Self {
        EnricherStage {
            enricher,
            history,
            counters: ReplayCounters {
                restores: telemetry::counter(
                    "vncguard_enricher_partition_restores_total",
                    "Partitions whose window state was rebuilt from the input history.",
                    &[],
                ),
                records: telemetry::counter(
                    "vncguard_enricher_replayed_records_total",
                    "Input records read back to rebuild window state.",
                    &[],
                ),
                truncated: telemetry::counter(
                    "vncguard_enricher_replay_truncated_total",
                    "Replays that stopped at the record limit before reaching the horizon.",
                    &[],
                ),
            },
        }
    }

    /// Rebuilds the state of `first`'s partition from the records before it, back to the
    /// replay horizon before `since` (the event time of the partition's first event here).
    async fn restore(
        &mut self,
        first: &Record,
        since: schemas::Timestamp,
    ) -> Result<(), RetryableError> {
        const CHUNK: i64 = 1_000;
        let config = self.enricher.config();
        let floor = since - config.replay_horizon;
        let limit = config.max_replay_records;
        let retryable = |e: crate::history::HistoryError| {
            RetryableError(format!(
                "rebuilding {}/{}: {e}",
                first.topic, first.partition
            ))
        };
        let earliest = self
            .history
            .earliest_offset(&first.topic, first.partition)
            .await
            .map_err(retryable)?;
        let mut start = first.offset;
        let mut chunks: Vec<Vec<Record>> = Vec::new();
        let mut replayed = 0;
        while start > earliest {
            if replayed >= limit {
                self.counters.truncated.inc();
                tracing::warn!(topic = %first.topic, partition = first.partition, replayed, "replay stopped at its record limit");
                break;
            }
            let from = (start - CHUNK).max(earliest);
            let chunk = self
                .history
                .read(&first.topic, first.partition, from, start)
                .await
                .map_err(retryable)?;
            replayed += chunk.len();
            let reached_floor = chunk
                .iter()
                .any(|r| schemas::decode::<SessionEvent>(&r.payload).is_ok_and(|e| e.time < floor));
            chunks.push(chunk);
            start = from;
            if reached_floor {
                break;
            }
        }
        let history: Vec<Record> = chunks.into_iter().rev().flatten().collect();
        self.counters.restores.inc();
        self.counters.records.add(history.len() as u64);
        tracing::info!(topic = %first.topic, partition = first.partition, offset = first.offset, replayed = history.len(), "partition state rebuilt from the input");
        self.enricher.restore(first, &history);
        Ok(())
    }
}

impl<H: InputHistory> Stage for EnricherStage<H> {
    fn name(&self) -> &str {
        "enricher"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        self.enricher.refresh_reputation();
        // Restore every partition that needs it before touching any state, so a failed read
        // leaves the state as it was for the retry.
        let mut checked: Vec<(&str, i32)> = Vec::new();
        for record in batch {
            if checked.contains(&(record.topic.as_str(), record.partition)) {
                continue;
            }
            checked.push((record.topic.as_str(), record.partition));
            if !self.enricher.needs_restore(record) {
                continue;
            }
            let first_event_time = batch
                .iter()
                .filter(|r| r.topic == record.topic && r.partition == record.partition)
                .find_map(|r| schemas::decode::<SessionEvent>(&r.payload).ok())
                .map(|e| e.time);
            if let Some(since) = first_event_time {
                self.restore(record, since).await?;
            }
        }
        Ok(batch.iter().map(|r| self.enricher.enrich(r)).collect())
    }
}
