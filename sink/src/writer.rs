//! [`SinkStage`]: every topic the sink reads, written in one transaction per batch.
//!
//! Each table is written with one multi-row upsert per batch, after keeping only the newest
//! record per key within the batch (rows sorted by key, so concurrent sinks lock rows in the same
//! order). Every upsert is idempotent and monotonic:
//! - `vnc_sessions` from raw events: the row takes an event only if `(ended, seq)` is greater than
//!   the one it holds, so a replay changes nothing and a late `stats` never reopens an `ended`
//!   session; a status set by a response (`blocked`, `quarantined`) is kept.
//! - `vnc_sessions` from scored sessions: the risk, geo and feature columns take a score only if
//!   `(ended, seq, scored_at)` of the scored event is greater; the summary columns follow the raw
//!   rule (the scored record carries its raw event too, so a session seen only scored is whole).
//! - `threat_logs`: detection columns take a newer detection of the same threat id; triage
//!   columns belong to the API and are never touched.
//! - `decisions` and `models` are immutable per id; an unblock decision sets `revoked_at` on the
//!   decision it names, whichever of the two arrives first.
//! - `agents`: the newest heartbeat wins.
//!
//! A transient Postgres failure fails the whole batch with [`bus::RetryableError`] (nothing is
//! committed; the loop retries the same batch and stores offsets only after the commit). A data
//! error Postgres raises despite the checks in `rows` sends the batch through again one record per
//! savepoint, so only the offending record is dead-lettered.

use std::collections::BTreeMap;

use bus::{Outcome, Record, RetryableError, Stage};
use deadpool_postgres::{Pool, Transaction};
use schemas::topics;
use schemas::{AgentHeartbeat, Decision, ModelAnnouncement, ScoredSession, SessionEvent, Threat};
use telemetry::Counter;

use crate::error::is_transient_postgres;
use crate::rows::{
    scored_columns, session_columns, DecisionRow, HeartbeatRow, ModelRow, Row, ScoredRow,
    SessionRow, ThreatRow, Unnest,
};
use crate::SinkError;

/// A decoded record of one of the sink's topics.
// Records live only for one batch, in one Vec: boxing the large variants would cost an
// allocation per record for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SinkRecord {
    Session(SessionEvent),
    Scored(ScoredSession),
    Threat(Threat),
    Decision(Decision),
    Heartbeat(AgentHeartbeat),
    Model(ModelAnnouncement),
}

impl SinkRecord {
    /// Decodes a record by its topic; the error is the dead-letter reason.
    pub fn decode(record: &Record) -> Result<SinkRecord, String> {
        let payload = &record.payload;
        let decoded = match record.topic.as_str() {
            t if t == topics::SESSIONS_RAW.name => schemas::decode(payload).map(Self::Session),
            t if t == topics::SESSIONS_SCORED.name => schemas::decode(payload).map(Self::Scored),
            t if t == topics::THREATS.name => schemas::decode(payload).map(Self::Threat),
            t if t == topics::DECISIONS.name => schemas::decode(payload).map(Self::Decision),
            t if t == topics::AGENT_HEARTBEATS.name => {
                schemas::decode(payload).map(Self::Heartbeat)
            }
            t if t == topics::MODELS.name => schemas::decode(payload).map(Self::Model),
            other => return Err(format!("the sink does not read topic {other}")),
        };
        decoded.map_err(|e| e.to_string())
    }

    fn to_row(&self) -> Result<Row<'_>, String> {
        Ok(match self {
            SinkRecord::Session(event) => Row::Session(SessionRow::new(event)?),
            SinkRecord::Scored(scored) => Row::Scored(ScoredRow::new(scored)?),
            SinkRecord::Threat(threat) => Row::Threat(ThreatRow::new(threat)?),
            SinkRecord::Decision(decision) => Row::Decision(DecisionRow::new(decision)?),
            SinkRecord::Heartbeat(heartbeat) => Row::Heartbeat(HeartbeatRow::new(heartbeat)?),
            SinkRecord::Model(model) => Row::Model(ModelRow::new(model)?),
        })
    }
}

struct WriterCounters {
    rows_written: &'static Counter,
    batches: &'static Counter,
    transient_failures: &'static Counter,
    isolations: &'static Counter,
    rejected: &'static Counter,
}

impl WriterCounters {
    fn new() -> Self {
        WriterCounters {
            rows_written: telemetry::counter(
                "vncguard_sink_rows_written_total",
                "Rows inserted or updated by committed batches.",
                &[],
            ),
            batches: telemetry::counter(
                "vncguard_sink_batches_committed_total",
                "Batches committed to Postgres.",
                &[],
            ),
            transient_failures: telemetry::counter(
                "vncguard_sink_transient_failures_total",
                "Batches that failed on a transient Postgres error and will be retried.",
                &[],
            ),
            isolations: telemetry::counter(
                "vncguard_sink_isolated_batches_total",
                "Batches rewritten one record at a time after a data error.",
                &[],
            ),
            rejected: telemetry::counter(
                "vncguard_sink_rejected_records_total",
                "Records refused (invalid or rejected by Postgres) and dead-lettered.",
                &[],
            ),
        }
    }
}

/// Writes decoded records to Postgres.
pub struct Writer {
    pool: Pool,
    counters: WriterCounters,
}

impl Writer {
    pub fn new(pool: Pool) -> Self {
        Writer {
            pool,
            counters: WriterCounters::new(),
        }
    }

    /// Writes `records` in one transaction; returns, per record, why it was refused (None when
    /// written). An Err means nothing was committed and the same records may be written again.
    pub async fn write(&self, records: &[SinkRecord]) -> Result<Vec<Option<String>>, SinkError> {
        let mut refused: Vec<Option<String>> = vec![None; records.len()];
        let mut rows: Vec<(usize, Row<'_>)> = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match record.to_row() {
                Ok(row) => rows.push((i, row)),
                Err(reason) => refused[i] = Some(reason),
            }
        }
        let result = self.write_rows(&rows, &mut refused).await;
        if let Err(e) = &result {
            if e.is_transient() {
                self.counters.transient_failures.inc();
            }
        }
        result?;
        self.counters
            .rejected
            .add(refused.iter().filter(|r| r.is_some()).count() as u64);
        Ok(refused)
    }

    async fn write_rows(
        &self,
        rows: &[(usize, Row<'_>)],
        refused: &mut [Option<String>],
    ) -> Result<(), SinkError> {
        let mut client = self.pool.get().await?;
        let all: Vec<&Row<'_>> = rows.iter().map(|(_, row)| row).collect();
        let outcome = {
            let tx = client.transaction().await?;
            match write_tables(&tx, &all).await {
                Ok(written) => tx.commit().await.map(|()| written),
                // Dropping the transaction rolls it back.
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(written) => {
                self.counters.rows_written.add(written);
                self.counters.batches.inc();
                return Ok(());
            }
            Err(e) if is_transient_postgres(&e) => return Err(e.into()),
            Err(e) => {
                self.counters.isolations.inc();
                tracing::warn!(error = %e, records = rows.len(), "batch refused by Postgres; writing its records one by one");
            }
        }
        let mut tx = client.transaction().await?;
        let mut written = 0;
        for (i, row) in rows {
            let savepoint = tx.savepoint("record").await?;
            match write_tables(&savepoint, &[row]).await {
                Ok(n) => {
                    savepoint.commit().await?;
                    written += n;
                }
                Err(e) if is_transient_postgres(&e) => return Err(e.into()),
                Err(e) => {
                    savepoint.rollback().await?;
                    refused[*i] = Some(format!("refused by Postgres: {e}"));
                }
            }
        }
        tx.commit().await?;
        self.counters.rows_written.add(written);
        self.counters.batches.inc();
        Ok(())
    }
}

/// The newest row per key: greatest rank, the later one on a tie; sorted by key.
fn newest_per_key<'r, T, K: Ord, R: PartialOrd>(
    rows: impl Iterator<Item = &'r T>,
    key: impl Fn(&T) -> K,
    rank: impl Fn(&T) -> R,
) -> Vec<&'r T> {
    let mut newest: BTreeMap<K, &'r T> = BTreeMap::new();
    for row in rows {
        let k = key(row);
        match newest.get(&k) {
            Some(kept) if rank(kept) > rank(row) => {}
            _ => {
                newest.insert(k, row);
            }
        }
    }
    newest.into_values().collect()
}

/// Summary columns follow the raw event rule.
const NEWER_EVENT: &str =
    "(excluded.last_event_ended, excluded.last_event_seq) > (t.last_event_ended, t.last_event_seq)";
/// Score columns follow the scored event rule.
const NEWER_SCORE: &str =
    "(excluded.scored_event_ended, excluded.scored_event_seq, excluded.scored_at) \
     > (t.scored_event_ended, t.scored_event_seq, COALESCE(t.scored_at, '-infinity'))";
/// A status a response set outlives the session's own events.
const KEPT_STATUS: &str =
    "CASE WHEN t.status IN ('blocked', 'quarantined') THEN t.status ELSE excluded.status END";

async fn write_tables(
    tx: &Transaction<'_>,
    rows: &[&Row<'_>],
) -> Result<u64, tokio_postgres::Error> {
    let mut written = 0;

    let sessions = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Session(s) => Some(s),
            _ => None,
        }),
        |s| s.id(),
        |s| s.rank(),
    );
    if !sessions.is_empty() {
        let mut unnest = Unnest::new();
        session_columns(&mut unnest, &sessions);
        let updates: Vec<String> = unnest
            .names()
            .iter()
            .filter(|c| !matches!(**c, "id" | "status"))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "{insert} ON CONFLICT (id) DO UPDATE SET {updates}, status = {KEPT_STATUS}, updated_at = now() WHERE {NEWER_EVENT}",
            insert = unnest.insert_into("vnc_sessions"),
            updates = updates.join(", "),
        );
        written += execute(tx, &sql, &unnest).await?;
    }

    let scored = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Scored(s) => Some(s),
            _ => None,
        }),
        |s| s.session.id(),
        |s| s.rank(),
    );
    if !scored.is_empty() {
        let sessions: Vec<&SessionRow<'_>> = scored.iter().map(|s| &s.session).collect();
        let mut unnest = Unnest::new();
        session_columns(&mut unnest, &sessions);
        let summary: Vec<&str> = unnest.names().to_vec();
        scored_columns(&mut unnest, &scored);
        let updates: Vec<String> = unnest
            .names()
            .iter()
            .filter(|c| **c != "id")
            .map(|c| match *c {
                "status" => {
                    format!("status = CASE WHEN {NEWER_EVENT} THEN {KEPT_STATUS} ELSE t.status END")
                }
                c if summary.contains(&c) => {
                    format!("{c} = CASE WHEN {NEWER_EVENT} THEN excluded.{c} ELSE t.{c} END")
                }
                c => format!("{c} = CASE WHEN {NEWER_SCORE} THEN excluded.{c} ELSE t.{c} END"),
            })
            .collect();
        let sql = format!(
            "{insert} ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now() WHERE {NEWER_EVENT} OR {NEWER_SCORE}",
            insert = unnest.insert_into("vnc_sessions"),
            updates = updates.join(", "),
        );
        written += execute(tx, &sql, &unnest).await?;
    }

    let threats = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Threat(t) => Some(t),
            _ => None,
        }),
        |t| t.threat.threat_id.as_str(),
        |t| t.threat.detected_at,
    );
    if !threats.is_empty() {
        let unnest = ThreatRow::columns(&threats);
        let updates: Vec<String> = unnest
            .names()
            .iter()
            .filter(|c| **c != "id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "{insert} ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now() WHERE excluded.timestamp > t.timestamp",
            insert = unnest.insert_into("threat_logs"),
            updates = updates.join(", "),
        );
        written += execute(tx, &sql, &unnest).await?;
    }

    let decisions = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Decision(d) => Some(d),
            _ => None,
        }),
        |d| d.decision.decision_id.as_str(),
        |_| (),
    );
    if !decisions.is_empty() {
        let unnest = DecisionRow::columns(&decisions);
        // A decision whose unblock arrived first is stored already revoked.
        let sql = format!(
            "WITH inserted AS ({insert} ON CONFLICT (decision_id) DO NOTHING RETURNING t.decision_id) \
             SELECT count(*) FROM inserted",
            insert = unnest.insert_into("decisions"),
        );
        let row = tx.query_one(&sql, &unnest.params()).await?;
        written += row.get::<_, i64>(0) as u64;
        written += tx
            .execute(
                "UPDATE decisions d SET revoked_at = u.created_at, revoked_by = u.created_by
                 FROM decisions u
                 WHERE u.action = 'unblock' AND u.target_decision_id = d.decision_id
                   AND d.revoked_at IS NULL
                   AND (d.decision_id = ANY($1) OR u.decision_id = ANY($1))",
                &[&decisions
                    .iter()
                    .map(|d| d.decision.decision_id.as_str())
                    .collect::<Vec<_>>()],
            )
            .await?;
    }

    let heartbeats = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Heartbeat(h) => Some(h),
            _ => None,
        }),
        |h| h.heartbeat.agent_id.as_str(),
        |h| h.heartbeat.time,
    );
    if !heartbeats.is_empty() {
        let unnest = HeartbeatRow::columns(&heartbeats);
        let updates: Vec<String> = unnest
            .names()
            .iter()
            .filter(|c| **c != "agent_id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "{insert} ON CONFLICT (agent_id) DO UPDATE SET {updates} WHERE excluded.last_heartbeat > t.last_heartbeat",
            insert = unnest.insert_into("agents"),
            updates = updates.join(", "),
        );
        written += execute(tx, &sql, &unnest).await?;
    }

    let models = newest_per_key(
        rows.iter().filter_map(|r| match r {
            Row::Model(m) => Some(m),
            _ => None,
        }),
        |m| (m.model.model_name.as_str(), m.model.version.as_str()),
        |_| (),
    );
    if !models.is_empty() {
        let unnest = ModelRow::columns(&models);
        let sql = format!(
            "{insert} ON CONFLICT (name, version) DO NOTHING",
            insert = unnest.insert_into("models"),
        );
        written += execute(tx, &sql, &unnest).await?;
    }

    Ok(written)
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    unnest: &Unnest<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, &unnest.params()).await
}

/// The sink as a stage of the bus loop.
pub struct SinkStage {
    writer: Writer,
    undecodable: &'static Counter,
}

impl SinkStage {
    pub fn new(pool: Pool) -> Self {
        SinkStage {
            writer: Writer::new(pool),
            undecodable: telemetry::counter(
                "vncguard_sink_undecodable_records_total",
                "Records the sink could not decode, dead-lettered.",
                &[],
            ),
        }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }
}

impl Stage for SinkStage {
    fn name(&self) -> &str {
        "sink"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        for record in batch {
            match SinkRecord::decode(record) {
                Ok(r) => {
                    decoded.push(r);
                    outcomes.push(None);
                }
                Err(reason) => {
                    self.undecodable.inc();
                    outcomes.push(Some(Outcome::DeadLetter(reason)));
                }
            }
        }
        let refused = self.writer.write(&decoded).await.map_err(|e| {
            tracing::warn!(error = %e, records = batch.len(), "sink batch failed");
            RetryableError(e.to_string())
        })?;
        let mut refused = refused.into_iter();
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| match refused.next().flatten() {
                    Some(reason) => Outcome::DeadLetter(reason),
                    None => Outcome::Emit(Vec::new()),
                })
            })
            .collect())
    }
}
