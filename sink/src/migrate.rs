//! Versioned schema migrations embedded in the binary. Each migration runs in its own
//! transaction together with the row recording it in `schema_migrations`, under a transaction
//! advisory lock: of several sinks starting at once, one applies a migration and the others find
//! it recorded.

use tokio_postgres::Client;

use crate::SinkError;

/// One SQL file of `sink/migrations/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions_and_threats",
        sql: include_str!("../migrations/0001_sessions_and_threats.sql"),
    },
    Migration {
        version: 2,
        name: "operations",
        sql: include_str!("../migrations/0002_operations.sql"),
    },
    Migration {
        version: 3,
        name: "api_tokens",
        sql: include_str!("../migrations/0003_api_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "sample_replays",
        sql: include_str!("../migrations/0004_sample_replays.sql"),
    },
    Migration {
        version: 5,
        name: "bouncers",
        sql: include_str!("../migrations/0005_bouncers.sql"),
    },
    Migration {
        version: 6,
        name: "token_families",
        sql: include_str!("../migrations/0006_token_families.sql"),
    },
];

/// Key of the advisory lock migrations hold (the bytes of "vncmigr").
const MIGRATION_LOCK: i64 = 0x76_6e_63_6d_69_67_72;

/// Applies the migrations not yet recorded; returns the versions this call applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i64>, SinkError> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let fail = |source| SinkError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(fail)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )",
        )
        .await
        .map_err(fail)?;
        let recorded = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await
            .map_err(fail)?
            .is_some();
        if recorded {
            continue;
        }
        tx.batch_execute(migration.sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
        applied.push(migration.version);
    }
    Ok(applied)
}
