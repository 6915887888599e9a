//! The sink: everything the pipeline publishes, written to Postgres.
//!
//! - [`migrate`]: the schema as versioned SQL files embedded in the binary
//!   (`sink/migrations/*.sql`, documented table by table in `sink/SCHEMA.md`), applied in order,
//!   one transaction per migration, under an advisory lock so concurrent sinks do not race.
//! - [`writer`]: [`SinkStage`], a [`bus::Stage`] that decodes every topic it reads and writes each
//!   batch in one transaction of multi-row upserts. Writes are idempotent (keyed on the records'
//!   own ids) and monotonic (an older or replayed event never overwrites newer state), so the
//!   bus's at-least-once delivery yields every event exactly once in the tables.
//! - [`retention`]: deletes sessions and threats past their age in small batches.
//! - [`queries`]: the API's main queries, whose plans the sink's indexes are built for.

pub mod migrate;
pub mod queries;
pub mod retention;
pub mod writer;

mod error;
mod rows;

use std::time::Duration;

pub use error::SinkError;
pub use writer::{SinkRecord, SinkStage, Writer};

/// Topics the sink reads.
pub const INPUT_TOPICS: &[schemas::topics::Topic] = &[
    schemas::topics::SESSIONS_RAW,
    schemas::topics::SESSIONS_SCORED,
    schemas::topics::THREATS,
    schemas::topics::DECISIONS,
    schemas::topics::AGENT_HEARTBEATS,
    schemas::topics::MODELS,
];

/// A connection pool to `url` that reconnects after Postgres restarts: every connection is
/// checked with a round trip before reuse, and waiting for or opening one gives up after
/// `timeout` so an outage surfaces as a retryable error instead of a hang.
pub fn connect_pool(
    url: &str,
    max_size: usize,
    timeout: Duration,
) -> Result<deadpool_postgres::Pool, SinkError> {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_string());
    config.manager = Some(deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Verified,
    });
    let mut pool = deadpool_postgres::PoolConfig::new(max_size.max(1));
    pool.timeouts = deadpool_postgres::Timeouts {
        wait: Some(timeout),
        create: Some(timeout),
        recycle: Some(timeout),
    };
    config.pool = Some(pool);
    config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .map_err(|e| SinkError::Config(e.to_string()))
}
