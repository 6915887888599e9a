use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("sink configuration: {0}")]
    Config(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: tokio_postgres::Error,
    },
}

impl SinkError {
    /// Whether the same work may succeed later: the database is down, restarting, overloaded or
    /// the transaction lost a race. Anything else (bad data, bad SQL) fails again on retry.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Postgres(e) | SinkError::Migration { source: e, .. } => {
                is_transient_postgres(e)
            }
            SinkError::Pool(deadpool_postgres::PoolError::Backend(e)) => is_transient_postgres(e),
            SinkError::Pool(_) => true,
            SinkError::Config(_) => false,
        }
    }
}

/// SQLSTATE classes 08 (connection exception), 53 (insufficient resources) and 57P (operator
/// intervention: shutdown, starting up), serialization failures and deadlocks; and errors
/// without a SQLSTATE that come from the connection itself (closed, I/O).
pub(crate) fn is_transient_postgres(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let state = code.code();
            state.starts_with("08")
                || state.starts_with("53")
                || state.starts_with("57P")
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
        None => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().contains("connection")
        }
    }
}
