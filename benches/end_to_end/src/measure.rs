//! The two measurements, the same on either system:
//! - [`alert_latency`]: a brute force fed packet by packet; from handing over the packet that
//!   completes it to its `threat_detected` event on a WebSocket client of the API;
//! - [`throughput`]: copies of the shared captures fed to the agent; sessions per second until
//!   every session is a Postgres row that has taken its `ended` event and its score.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use capture_agent::{Agent, AgentConfig};
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::captures::{hand_over, now_ns, Capture, Sources};
use crate::pipelines::Pipeline;
use testkit::live::LiveFeed;

/// How long the first brute force may take to reach the WebSocket: consumer groups join, the
/// API's tail consumer gets its partitions.
const WARM_UP_LIMIT: Duration = Duration::from_secs(120);
const WARM_UP_ATTEMPT: Duration = Duration::from_secs(5);
/// Brute forces after the first delivered one that are not counted (caches, connections).
const WARM_UP_TRIALS: usize = 3;
/// Longest wait for one trial's alert.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);
/// Quiet time after each trial, so each brute force meets an idle pipeline as an attacker's
/// logins seconds apart do.
const BETWEEN_TRIALS: Duration = Duration::from_millis(50);
/// Longest the row count may stand still before the throughput run is declared stalled.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// A brute-force capture and the index of the frame that completes the brute force.
pub struct BruteForce {
    pub capture: Capture,
    pub completing: usize,
}

/// Alert latencies of the counted trials.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// `p50 12.3 ms, p99 45.6 ms, max 50.1 ms (200 trials)`.
    pub fn summary(&self) -> String {
        let mut sorted = self.0.clone();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match sorted.last() {
            None => "no trials".to_string(),
            Some(max) => format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} trials)",
                ms(Self::percentile(&sorted, 50.0)),
                ms(Self::percentile(&sorted, 99.0)),
                ms(*max),
                sorted.len()
            ),
        }
    }
}

/// One brute force from `source`, fed packet by packet with the wall clock as capture time, the
/// rest of the capture after the alert; the alert's latency, None when none came within
/// `limit`.
fn trial(
    pipeline: &mut Pipeline,
    agent: &mut Agent,
    brute_force: &mut BruteForce,
    feed: &mut LiveFeed,
    source: IpAddr,
    limit: Duration,
) -> Result<Option<Duration>> {
    brute_force.capture.rewrite(&[source]);
    let source = source.to_string();
    let names_source = |e: &Value| {
        e["type"] == "threat_detected"
            && e["payload"]["threat_type"] == "brute_force"
            && e["payload"]["source_ip"] == source.as_str()
    };
    let mut latency = None;
    for (index, frame) in brute_force.capture.frames().iter().enumerate() {
        let handed = Instant::now();
        hand_over(agent, frame, now_ns(), &mut pipeline.events)?;
        if index == brute_force.completing {
            latency = feed
                .find(limit, names_source)
                .map(|(arrived, _)| arrived.saturating_duration_since(handed));
        }
    }
    std::thread::sleep(BETWEEN_TRIALS);
    Ok(latency)
}

/// Warm-up brute forces until one reaches the WebSocket, then `trials` counted ones, each from
/// a fresh source.
pub fn alert_latency(
    rt: &Runtime,
    pipeline: &mut Pipeline,
    brute_force: &mut BruteForce,
    config: &AgentConfig,
    sources: &mut Sources,
    trials: usize,
) -> Result<Latencies> {
    ensure!(
        brute_force.capture.clients().len() == 1,
        "{} has {} client addresses; a brute-force capture has one attacker",
        brute_force.capture.name,
        brute_force.capture.clients().len()
    );
    let token = pipeline.login(rt)?;
    let mut feed = rt.block_on(LiveFeed::connect(
        &pipeline.api,
        &token,
        Some("threat_detected"),
    ))?;
    // One long-running agent, as on a VNC host: its flows end by capture time.
    let mut agent = Agent::new(config.clone());

    let started = Instant::now();
    let mut attempts = 0;
    loop {
        pipeline.check()?;
        attempts += 1;
        let source = sources.fresh_for(brute_force.capture.clients())[0];
        if trial(
            pipeline,
            &mut agent,
            brute_force,
            &mut feed,
            source,
            WARM_UP_ATTEMPT,
        )?
        .is_some()
        {
            break;
        }
        if started.elapsed() > WARM_UP_LIMIT {
            bail!(
                "no brute-force alert reached the WebSocket within {WARM_UP_LIMIT:?} ({attempts} attempts){}",
                logs_hint(pipeline)
            );
        }
    }
    println!(
        "  first alert after {attempts} warm-up brute force(s), {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut latencies = Vec::with_capacity(trials);
    for number in 0..WARM_UP_TRIALS + trials {
        pipeline.check()?;
        let source = sources.fresh_for(brute_force.capture.clients())[0];
        let latency = trial(
            pipeline,
            &mut agent,
            brute_force,
            &mut feed,
            source,
            TRIAL_LIMIT,
        )?
        .with_context(|| {
            format!(
                "trial {number}: no brute-force alert naming {source} within {TRIAL_LIMIT:?}{}",
                logs_hint(pipeline)
            )
        })?;
        if number >= WARM_UP_TRIALS {
            latencies.push(latency);
        }
    }
    Ok(Latencies(latencies))
}

fn logs_hint(pipeline: &Pipeline) -> String {
    pipeline
        .logs()
        .map(|dir| format!("; stage logs in {}", dir.display()))
        .unwrap_or_default()
}

/// A throughput run: `sessions` became complete rows `elapsed` after the first packet, and
/// feeding the agent took `fed`.
pub struct Throughput {
    pub copies: usize,
    pub sessions: i64,
    pub fed: Duration,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn sessions_per_second(&self) -> f64 {
        self.sessions as f64 / self.elapsed.as_secs_f64()
    }
}

/// Rows of the throughput sources that took their session's `ended` event and its score.
fn complete_rows(rt: &Runtime, db: &tokio_postgres::Client, source_blocks: &[&str]) -> Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM vnc_sessions WHERE last_event_ended AND scored_event_ended AND ({})",
        source_blocks
            .iter()
            .map(|block| format!("client_ip << '{block}'"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    Ok(rt
        .block_on(db.query_one(&sql, &[]))
        .context("counting session rows")?
        .get(0))
}

/// Feeds `copies` copies of every capture, each from fresh sources, with capture times moved
/// to now, then waits until every session they hold is a complete row.
pub fn throughput(
    rt: &Runtime,
    pipeline: &mut Pipeline,
    captures: &mut [Capture],
    config: &AgentConfig,
    sources: &mut Sources,
    source_blocks: &[&str],
    copies: usize,
) -> Result<Throughput> {
    let (db, connection) = rt
        .block_on(tokio_postgres::connect(
            &pipeline.database_url,
            tokio_postgres::NoTls,
        ))
        .context("connecting to the bench database")?;
    let connection = rt.spawn(connection);
    let before = complete_rows(rt, &db, source_blocks)?;
    let per_copy: usize = captures.iter().map(|c| c.sessions).sum();
    let sessions = (copies * per_copy) as i64;

    let started = Instant::now();
    for _ in 0..copies {
        for capture in captures.iter_mut() {
            let fresh = sources.fresh_for(capture.clients());
            capture.rewrite(&fresh);
            capture.replay(config, now_ns() - capture.first_ts(), &mut pipeline.events)?;
        }
    }
    let fed = started.elapsed();

    let mut done = before;
    let mut progressed = Instant::now();
    while done - before < sessions {
        pipeline.check()?;
        if progressed.elapsed() > STALL_LIMIT {
            bail!(
                "{} of {sessions} sessions complete in Postgres, no progress for {STALL_LIMIT:?}{}",
                done - before,
                logs_hint(pipeline)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = complete_rows(rt, &db, source_blocks)?;
        if now > done {
            done = now;
            progressed = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    drop(db);
    connection.abort();
    ensure!(
        done - before == sessions,
        "{} complete rows for {sessions} sessions: sessions stored twice or from elsewhere",
        done - before
    );
    Ok(Throughput {
        copies,
        sessions,
        fed,
        elapsed,
    })
}
