//! What every long-running vncguard binary shares for observability: structured logging
//! (`LOG_FORMAT=json|pretty`), named counters and gauges, and their Prometheus text on `/metrics`.

pub mod metrics;

use std::net::SocketAddr;

pub use metrics::{counter, gauge, render, Counter, Gauge};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Logging flags every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// Log filter, tracing-subscriber EnvFilter syntax (e.g. `info,bus=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

impl LogArgs {
    /// Installs the global subscriber; logs go to stderr so stdout stays free for data.
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        // A second init (tests, embedded mode) keeps the first subscriber.
        let _ = match self.log_format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Pretty => builder.try_init(),
        };
    }
}

/// Serves the Prometheus text of every registered metric on `GET /metrics` until the task is
/// dropped. A metrics endpoint that cannot listen is logged, not fatal: the stage goes on.
pub async fn serve_metrics(addr: SocketAddr) {
    let served = async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics endpoint listening");
        axum::serve(listener, metrics_router()).await
    };
    if let Err(e) = served.await {
        tracing::error!(%addr, error = %e, "metrics endpoint failed");
    }
}

/// A router with the `/metrics` route, for binaries that already serve HTTP.
pub fn metrics_router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [("content-type", "text/plain; version=0.0.4")],
                metrics::render(),
            )
        }),
    )
}
