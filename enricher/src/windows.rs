//! Per-source context over sliding windows of event time, for the sources of one input
//! partition ([`PartitionWindows`]).
//!
//! Everything is counted by session: a session's auth outcome is counted once, from the first
//! `auth` or `ended` event that carries it, however many events of the session arrive. Window
//! time is capture (event) time, never the wall clock, so a replay gives the same numbers. A
//! source's clock is its watermark, the latest event time seen from it: an event that arrives
//! late (agents emit `ended` of a short session after later sessions' events) is counted at the
//! watermark, which keeps each window a queue in arrival order.
//!
//! Every table is bounded ([`WindowConfig`]) and evicts its least recently used entry, counted
//! in `vncguard_enricher_evictions_total{table}`.
//!
//! What rules act on is counted twice: over every session, and over the handshake-verified
//! sessions alone (`SessionSummary::handshake_verified`), whose client address cannot have been
//! forged off-path. A session counts as verified by the state its event carries when the mark
//! or contact is counted.

use std::collections::{HashMap, VecDeque};

use schemas::{AuthResult, SessionEvent, SessionEventKind, Timestamp};
use telemetry::Counter;

use crate::lru::LruMap;

/// Window sizes and table capacities (per input partition).
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Window of auth outcomes, banner-only/abandoned connections and session counts.
    pub auth_window: chrono::Duration,
    /// Window of distinct servers and ports contacted.
    pub contact_window: chrono::Duration,
    /// Sources tracked per partition.
    pub max_sources: usize,
    /// Sessions remembered per source (so each is counted once).
    pub max_sessions_per_source: usize,
    /// Distinct servers (and, separately, ports) tracked per source in the contact window, and
    /// servers remembered per source for "first time this source reached this server".
    pub max_servers_per_source: usize,
    /// Servers whose client countries are tracked per partition.
    pub max_servers: usize,
    /// Countries remembered per server.
    pub max_countries_per_server: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            auth_window: chrono::Duration::minutes(10),
            contact_window: chrono::Duration::hours(1),
            max_sources: 100_000,
            max_sessions_per_source: 1_024,
            max_servers_per_source: 1_024,
            max_servers: 10_000,
            max_countries_per_server: 256,
        }
    }
}

impl WindowConfig {
    /// The longest window: how far back state must be rebuilt after a rebalance.
    pub fn longest_window(&self) -> chrono::Duration {
        self.auth_window.max(self.contact_window)
    }
}

/// What the windows say about an event's source, after counting the event.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceContext {
    pub failed_auths: u32,
    pub ok_auths: u32,
    /// Connections the server refused for too many failures.
    pub refused_auths: u32,
    /// Connections that read the server's banner and left without answering.
    pub banner_only: u32,
    /// Connections that ended during the handshake (banner-only ones included).
    pub abandoned: u32,
    pub sessions: u32,
    /// `sessions` over the auth window, per minute.
    pub sessions_per_min: f64,
    pub distinct_servers: u32,
    pub distinct_ports: u32,
    /// `failed_auths`, `banner_only`, `distinct_servers` and `distinct_ports` over the
    /// handshake-verified sessions alone.
    pub verified: VerifiedCounts,
    pub first_seen: Timestamp,
    /// The event's session is the first from this source to its server.
    pub new_to_server: bool,
    /// The client's country was new among the server's clients when the session was first
    /// seen; None without a country.
    pub server_new_country: Option<bool>,
}

/// A source's counts over its handshake-verified sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifiedCounts {
    pub failed_auths: u32,
    pub banner_only: u32,
    pub distinct_servers: u32,
    pub distinct_ports: u32,
}

/// What one session contributes to its source's auth window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Session,
    AuthOk,
    AuthFailed,
    AuthRefused,
    Abandoned,
    BannerOnly,
    VerifiedAuthFailed,
    VerifiedBannerOnly,
}

const MARKS: usize = 8;

/// Contexts remembered per session, so an event seen again gets the answer it got the first time.
const REMEMBERED_CONTEXTS: usize = 8;

/// What has been counted for one session already.
#[derive(Debug, Default)]
struct SessionMarks {
    auth_counted: bool,
    end_counted: bool,
    new_to_server: bool,
    server_new_country: Option<bool>,
    /// The context returned for the session's latest events, by (kind, seq). A replayed event
    /// (a rebalance, an operator's replay) must not see the later events of its source that the
    /// first pass had not seen yet, or a replay would raise threats the first pass did not.
    contexts: VecDeque<(SessionEventKind, i64, SourceContext)>,
}

#[derive(Debug)]
struct SourceState {
    first_seen: Timestamp,
    watermark: Timestamp,
    sessions: LruMap<String, SessionMarks>,
    marks: VecDeque<(Timestamp, Mark)>,
    counts: [u32; MARKS],
    /// Last contact time per server and per port, within the contact window.
    servers: HashMap<String, Timestamp>,
    ports: HashMap<i32, Timestamp>,
    /// The same, by handshake-verified sessions only.
    verified_servers: HashMap<String, Timestamp>,
    verified_ports: HashMap<i32, Timestamp>,
    /// Servers this source has reached, for novelty.
    reached: LruMap<String, ()>,
}

struct Evictions {
    sources: &'static Counter,
    sessions: &'static Counter,
    contacts: &'static Counter,
    reached: &'static Counter,
    servers: &'static Counter,
}

impl Evictions {
    fn get() -> Evictions {
        let counter = |table| {
            telemetry::counter(
                "vncguard_enricher_evictions_total",
                "Entries evicted from a full enricher table (least recently used first).",
                &[("table", table)],
            )
        };
        Evictions {
            sources: counter("sources"),
            sessions: counter("sessions"),
            contacts: counter("contacts"),
            reached: counter("servers_reached"),
            servers: counter("server_countries"),
        }
    }
}

impl SourceState {
    fn new(time: Timestamp, config: &WindowConfig, evictions: &Evictions) -> Self {
        SourceState {
            first_seen: time,
            watermark: time,
            sessions: LruMap::new(config.max_sessions_per_source, evictions.sessions),
            marks: VecDeque::new(),
            counts: [0; MARKS],
            servers: HashMap::new(),
            ports: HashMap::new(),
            verified_servers: HashMap::new(),
            verified_ports: HashMap::new(),
            reached: LruMap::new(config.max_servers_per_source, evictions.reached),
        }
    }

    fn mark(&mut self, mark: Mark) {
        self.marks.push_back((self.watermark, mark));
        self.counts[mark as usize] += 1;
    }

    fn count(&self, mark: Mark) -> u32 {
        self.counts[mark as usize]
    }

    /// Drops what fell out of the windows at the current watermark.
    fn expire(&mut self, config: &WindowConfig) {
        let auth_floor = self.watermark - config.auth_window;
        while let Some(&(time, mark)) = self.marks.front() {
            if time >= auth_floor {
                break;
            }
            self.marks.pop_front();
            self.counts[mark as usize] -= 1;
        }
        let contact_floor = self.watermark - config.contact_window;
        self.servers.retain(|_, t| *t >= contact_floor);
        self.ports.retain(|_, t| *t >= contact_floor);
        self.verified_servers.retain(|_, t| *t >= contact_floor);
        self.verified_ports.retain(|_, t| *t >= contact_floor);
    }

    fn contact(
        &mut self,
        server: &str,
        port: i32,
        verified: bool,
        config: &WindowConfig,
        evictions: &Evictions,
    ) {
        let now = self.watermark;
        remember_contact(
            &mut self.servers,
            server.to_string(),
            now,
            config,
            evictions,
        );
        remember_contact(&mut self.ports, port, now, config, evictions);
        if verified {
            remember_contact(
                &mut self.verified_servers,
                server.to_string(),
                now,
                config,
                evictions,
            );
            remember_contact(&mut self.verified_ports, port, now, config, evictions);
        }
    }
}

/// Records a contact at `now`, evicting the oldest contact when the table is full.
fn remember_contact<K: std::hash::Hash + Eq + Clone>(
    table: &mut HashMap<K, Timestamp>,
    key: K,
    now: Timestamp,
    config: &WindowConfig,
    evictions: &Evictions,
) {
    if !table.contains_key(&key) && table.len() >= config.max_servers_per_source.max(1) {
        if let Some(oldest) = table
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
            evictions.contacts.inc();
        }
    }
    table.insert(key, now);
}

/// The window state of the sources of one input partition, and the client countries of the
/// servers they reached.
pub struct PartitionWindows {
    config: WindowConfig,
    sources: LruMap<String, SourceState>,
    server_countries: LruMap<String, Vec<String>>,
    evictions: Evictions,
}

impl PartitionWindows {
    pub fn new(config: WindowConfig) -> Self {
        let evictions = Evictions::get();
        PartitionWindows {
            sources: LruMap::new(config.max_sources, evictions.sources),
            server_countries: LruMap::new(config.max_servers, evictions.servers),
            config,
            evictions,
        }
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Counts `event` (whose client is in `client_country`, if known) and returns its source's
    /// context.
    pub fn observe(&mut self, event: &SessionEvent, client_country: Option<&str>) -> SourceContext {
        let summary = &event.summary;
        let config = &self.config;
        let evictions = &self.evictions;
        let (source, _) = self
            .sources
            .touch_or_insert_with(summary.client_ip.as_str(), || {
                SourceState::new(event.time, config, evictions)
            });
        source.first_seen = source.first_seen.min(event.time);
        source.watermark = source.watermark.max(event.time);
        source.expire(config);

        let (marks, first_event) = source
            .sessions
            .touch_or_insert_with(summary.session_id.as_str(), SessionMarks::default);
        if let Some((_, _, context)) = marks
            .contexts
            .iter()
            .find(|(kind, seq, _)| *kind == event.kind && *seq == event.seq)
        {
            return context.clone();
        }
        let mut counted = Vec::with_capacity(2);
        if first_event {
            let (_, new_server) = source
                .reached
                .touch_or_insert_with(summary.server_ip.as_str(), || ());
            marks.new_to_server = new_server;
            marks.server_new_country = client_country.map(|country| {
                let (countries, _) = self
                    .server_countries
                    .touch_or_insert_with(summary.server_ip.as_str(), Vec::new);
                let new = !countries.iter().any(|c| c == country);
                if new {
                    if countries.len() >= config.max_countries_per_server.max(1) {
                        countries.remove(0);
                        evictions.servers.inc();
                    }
                    countries.push(country.to_string());
                }
                new
            });
            counted.push(Mark::Session);
        } else {
            source
                .reached
                .touch_or_insert_with(summary.server_ip.as_str(), || ());
        }
        let verified = summary.handshake_verified;
        let final_outcome = !matches!(summary.auth_result, AuthResult::Unknown);
        let carries_outcome =
            matches!(event.kind, SessionEventKind::Auth | SessionEventKind::Ended);
        if carries_outcome && final_outcome && !marks.auth_counted {
            marks.auth_counted = true;
            counted.extend(match summary.auth_result {
                AuthResult::Ok | AuthResult::NoneRequired => Some(Mark::AuthOk),
                AuthResult::Failed => Some(Mark::AuthFailed),
                AuthResult::TooMany => Some(Mark::AuthRefused),
                AuthResult::Abandoned | AuthResult::Unknown => None,
            });
            if verified && summary.auth_result == AuthResult::Failed {
                counted.push(Mark::VerifiedAuthFailed);
            }
        }
        if event.kind == SessionEventKind::Ended && !marks.end_counted {
            marks.end_counted = true;
            if summary.auth_result == AuthResult::Abandoned {
                counted.push(Mark::Abandoned);
                if summary.client_version.is_none() {
                    counted.push(Mark::BannerOnly);
                    if verified {
                        counted.push(Mark::VerifiedBannerOnly);
                    }
                }
            }
        }
        let new_to_server = marks.new_to_server;
        let server_new_country = marks.server_new_country;
        for mark in counted {
            source.mark(mark);
        }
        source.contact(
            &summary.server_ip,
            summary.server_port,
            verified,
            config,
            evictions,
        );

        let sessions = source.count(Mark::Session);
        let window_minutes = config.auth_window.num_milliseconds().max(1) as f64 / 60_000.0;
        let context = SourceContext {
            failed_auths: source.count(Mark::AuthFailed),
            ok_auths: source.count(Mark::AuthOk),
            refused_auths: source.count(Mark::AuthRefused),
            banner_only: source.count(Mark::BannerOnly),
            abandoned: source.count(Mark::Abandoned),
            sessions,
            sessions_per_min: f64::from(sessions) / window_minutes,
            distinct_servers: source.servers.len() as u32,
            distinct_ports: source.ports.len() as u32,
            verified: VerifiedCounts {
                failed_auths: source.count(Mark::VerifiedAuthFailed),
                banner_only: source.count(Mark::VerifiedBannerOnly),
                distinct_servers: source.verified_servers.len() as u32,
                distinct_ports: source.verified_ports.len() as u32,
            },
            first_seen: source.first_seen,
            new_to_server,
            server_new_country,
        };
        let (marks, _) = source
            .sessions
            .touch_or_insert_with(summary.session_id.as_str(), SessionMarks::default);
        if marks.contexts.len() >= REMEMBERED_CONTEXTS {
            marks.contexts.pop_front();
        }
        marks
            .contexts
            .push_back((event.kind, event.seq, context.clone()));
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::SessionSummary;

    fn event(session: &str, kind: SessionEventKind, secs: i64, auth: AuthResult) -> SessionEvent {
        let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut summary = SessionSummary::new(
            session.into(),
            "agent".into(),
            "203.0.113.5:40000".parse().unwrap(),
            "198.51.100.1:5900".parse().unwrap(),
            start,
        );
        summary.auth_result = auth;
        summary.client_version = Some("3.8".into());
        SessionEvent::new(kind, 0, start + chrono::Duration::seconds(secs), summary)
    }

    #[test]
    fn an_outcome_repeated_by_later_events_counts_once_and_leaves_the_window() {
        let mut windows = PartitionWindows::new(WindowConfig::default());
        windows.observe(
            &event("s1", SessionEventKind::Started, 0, AuthResult::Unknown),
            Some("FR"),
        );
        windows.observe(
            &event("s1", SessionEventKind::Auth, 1, AuthResult::Failed),
            Some("FR"),
        );
        let ctx = windows.observe(
            &event("s1", SessionEventKind::Ended, 2, AuthResult::Failed),
            Some("FR"),
        );
        assert_eq!((ctx.sessions, ctx.failed_auths, ctx.ok_auths), (1, 1, 0));
        assert!(ctx.new_to_server);
        assert_eq!(ctx.server_new_country, Some(true));

        let ctx = windows.observe(
            &event("s2", SessionEventKind::Ended, 60, AuthResult::Ok),
            Some("FR"),
        );
        assert_eq!((ctx.sessions, ctx.failed_auths, ctx.ok_auths), (2, 1, 1));
        assert!(!ctx.new_to_server);
        assert_eq!(ctx.server_new_country, Some(false));

        // Eleven minutes later the first session's marks have left the 10-minute window.
        let ctx = windows.observe(
            &event("s3", SessionEventKind::Started, 661, AuthResult::Unknown),
            None,
        );
        assert_eq!((ctx.sessions, ctx.failed_auths, ctx.ok_auths), (1, 0, 0));
        assert_eq!(ctx.distinct_servers, 1);
        assert_eq!(ctx.server_new_country, None);
    }

    #[test]
    fn verified_counts_take_only_handshake_verified_sessions() {
        let mut windows = PartitionWindows::new(WindowConfig::default());
        let mut context = None;
        for (n, verified) in [true, false, false, true, false].into_iter().enumerate() {
            let mut e = event(
                &format!("s{n}"),
                SessionEventKind::Ended,
                n as i64,
                AuthResult::Failed,
            );
            e.summary.server_port = 5900 + n as i32;
            e.summary.handshake_verified = verified;
            context = Some(windows.observe(&e, None));
        }
        let context = context.unwrap();
        assert_eq!((context.failed_auths, context.distinct_ports), (5, 5));
        assert_eq!(
            context.verified,
            VerifiedCounts {
                failed_auths: 2,
                banner_only: 0,
                distinct_servers: 1,
                distinct_ports: 2,
            }
        );
    }

    #[test]
    fn a_replayed_event_gets_the_context_it_got_the_first_time() {
        let mut windows = PartitionWindows::new(WindowConfig::default());
        let first = event("s1", SessionEventKind::Ended, 1, AuthResult::Failed);
        let first_context = windows.observe(&first, None);
        for (i, secs) in [10, 20, 30].into_iter().enumerate() {
            let later = event(
                &format!("s{}", i + 2),
                SessionEventKind::Ended,
                secs,
                AuthResult::Failed,
            );
            windows.observe(&later, None);
        }
        let replayed = windows.observe(&first, None);
        assert_eq!(replayed, first_context);
        assert_eq!(replayed.failed_auths, 1);
        let fresh = windows.observe(
            &event("s5", SessionEventKind::Ended, 40, AuthResult::Failed),
            None,
        );
        assert_eq!(fresh.failed_auths, 5);
    }

    #[test]
    fn sources_past_the_cap_are_evicted_least_recent_first() {
        let config = WindowConfig {
            max_sources: 2,
            ..WindowConfig::default()
        };
        let mut windows = PartitionWindows::new(config);
        for (i, ip) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
            .iter()
            .enumerate()
        {
            let mut e = event(
                &format!("s{i}"),
                SessionEventKind::Started,
                i as i64,
                AuthResult::Unknown,
            );
            e.summary.client_ip = ip.to_string();
            windows.observe(&e, None);
        }
        assert_eq!(windows.sources(), 2);
    }
}
