//! Deletes sessions and threats past their age, a small batch per statement so no statement
//! holds its locks for long and the writer's upserts interleave with the deletes.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use telemetry::Counter;

use crate::SinkError;

/// How long rows are kept and how many one statement deletes.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    pub sessions: chrono::Duration,
    pub threats: chrono::Duration,
    pub batch_size: i64,
}

/// Rows one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub sessions: u64,
    pub threats: u64,
}

const DELETE_OLD_SESSIONS: &str = "DELETE FROM vnc_sessions WHERE ctid IN \
     (SELECT ctid FROM vnc_sessions WHERE start_time < $1 LIMIT $2)";
const DELETE_OLD_THREATS: &str = "DELETE FROM threat_logs WHERE ctid IN \
     (SELECT ctid FROM threat_logs WHERE timestamp < $1 LIMIT $2)";

/// Deletes everything older than the policy's ages, batch after batch, until none is left.
pub async fn enforce(pool: &Pool, policy: &RetentionPolicy) -> Result<RetentionReport, SinkError> {
    let now = chrono::Utc::now();
    Ok(RetentionReport {
        sessions: delete_in_batches(
            pool,
            DELETE_OLD_SESSIONS,
            now - policy.sessions,
            policy.batch_size,
        )
        .await?,
        threats: delete_in_batches(
            pool,
            DELETE_OLD_THREATS,
            now - policy.threats,
            policy.batch_size,
        )
        .await?,
    })
}

async fn delete_in_batches(
    pool: &Pool,
    statement: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
    batch_size: i64,
) -> Result<u64, SinkError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(statement).await?;
    let mut total = 0;
    loop {
        let deleted = client
            .execute(&statement, &[&cutoff, &batch_size.max(1)])
            .await?;
        total += deleted;
        if deleted < batch_size.max(1) as u64 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Enforces `policy` every `interval` until `shutdown` resolves; failures are logged and counted
/// and the next pass tries again.
pub async fn run_periodically(
    pool: Pool,
    policy: RetentionPolicy,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let deleted: [&'static Counter; 2] = [
        telemetry::counter(
            "vncguard_sink_retention_deleted_total",
            "Rows deleted for age.",
            &[("table", "vnc_sessions")],
        ),
        telemetry::counter(
            "vncguard_sink_retention_deleted_total",
            "Rows deleted for age.",
            &[("table", "threat_logs")],
        ),
    ];
    let failures = telemetry::counter(
        "vncguard_sink_retention_failures_total",
        "Retention passes that failed.",
        &[],
    );
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        match enforce(&pool, &policy).await {
            Ok(report) => {
                deleted[0].add(report.sessions);
                deleted[1].add(report.threats);
                if report != RetentionReport::default() {
                    tracing::info!(
                        sessions = report.sessions,
                        threats = report.threats,
                        "retention deleted old rows"
                    );
                }
            }
            Err(e) => {
                failures.inc();
                tracing::warn!(error = %e, "retention pass failed");
            }
        }
    }
}
