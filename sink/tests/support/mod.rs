//! Records and databases shared by the sink's integration tests.
#![allow(dead_code)] // each test binary uses its own part of the support module

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use schemas::{
    AuthResult, EnrichedSession, GeoInfo, RiskComponents, RiskReason, ScoredSession, SessionEvent,
    SessionEventKind, SessionSummary, Severity, Threat,
};

pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

/// Event `seq` of session `n`: started (0), auth (1), stats (2..), or ended; counters grow with
/// the sequence so the newest event is recognisable in the row.
pub fn session_event(n: u32, kind: SessionEventKind, seq: i64) -> SessionEvent {
    let client = format!(
        "10.{}.{}.{}:{}",
        n >> 16 & 255,
        n >> 8 & 255,
        n & 255,
        40000 + n % 1000
    );
    let mut summary = SessionSummary::new(
        format!("s-{n}"),
        "agent-1".into(),
        client.parse().unwrap(),
        "192.0.2.1:5900".parse().unwrap(),
        at(i64::from(n)),
    );
    summary.client_version = Some("RFB 003.008".into());
    summary.server_version = Some("RFB 003.008".into());
    summary.security_types_offered = vec![2, 16];
    if seq >= 1 {
        summary.security_type = Some(2);
        summary.auth_result = AuthResult::Ok;
        summary.vnc_auth_challenge = true;
        summary.desktop_name = Some(format!("desk {n}"));
        summary.width = Some(1024);
        summary.height = Some(768);
        summary.encodings = vec![0, 1, -223];
    }
    summary.bytes_c2s = seq * 1000 + i64::from(n);
    summary.bytes_s2c = seq * 50_000;
    summary.packets_c2s = seq * 10;
    summary.packets_s2c = seq * 40;
    summary.key_events = seq * 3;
    summary.framebuffer_updates = seq * 7;
    if kind == SessionEventKind::Ended {
        summary.end_time = Some(at(i64::from(n) + 600));
        summary.end_reason = Some("fin".into());
    }
    SessionEvent::new(kind, seq, at(i64::from(n) + seq), summary)
}

/// The five raw events of one session, in order.
pub fn session_lifecycle(n: u32) -> Vec<SessionEvent> {
    vec![
        session_event(n, SessionEventKind::Started, 0),
        session_event(n, SessionEventKind::Auth, 1),
        session_event(n, SessionEventKind::Stats, 2),
        session_event(n, SessionEventKind::Stats, 3),
        session_event(n, SessionEventKind::Ended, 4),
    ]
}

pub fn scored(event: SessionEvent, risk: f64) -> ScoredSession {
    let seq = event.seq;
    ScoredSession {
        enriched: EnrichedSession {
            event,
            client_geo: GeoInfo {
                address_class: "private".into(),
                country: Some("DE".into()),
                city: Some("Berlin".into()),
                latitude: Some(52.5),
                longitude: Some(13.4),
                asn: Some(64500),
                as_org: Some("Example".into()),
            },
            server_geo: GeoInfo::default(),
            distance_km: Some(12.5),
            reputation: None,
            features: BTreeMap::from([("bytes_c2s".to_string(), 1.0)]),
            enriched_at: at(seq),
        },
        risk_score: risk,
        anomaly_score: risk / 2.0,
        components: RiskComponents {
            anomaly: risk,
            threat: 0.0,
            behavioral: 0.0,
            geographic: 0.0,
            temporal: 0.0,
            weights: vec![0.3, 0.25, 0.2, 0.15, 0.1],
            ..RiskComponents::default()
        },
        reasons: vec![RiskReason {
            rule: "anomaly".into(),
            component: "anomaly".into(),
            score: risk,
            reason: "unusual".into(),
        }],
        model_version: "m1".into(),
        scored_at: at(seq + 1),
    }
}

pub fn threat(n: u32) -> Threat {
    Threat {
        threat_id: format!("t-{n}"),
        session_id: format!("s-{n}"),
        threat_type: "brute_force".into(),
        severity: [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][n as usize % 4],
        description: format!("threat {n}"),
        source_ip: format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
        target_ip: Some("192.0.2.1".into()),
        target_port: Some(5900),
        risk_score: 80.5,
        ml_confidence: Some(0.9),
        evidence: BTreeMap::from([("failures".to_string(), "12".to_string())]),
        model_version: "m1".into(),
        detected_at: at(i64::from(n)),
        verified: n.is_multiple_of(2),
    }
}

/// A migrated database of its own on the shared server, and a pool to it.
pub async fn migrated_database() -> (testkit::TestDatabase, deadpool_postgres::Pool) {
    let database = testkit::TestDatabase::create()
        .await
        .expect("test database");
    let pool = sink::connect_pool(database.url(), 4, Duration::from_secs(5)).unwrap();
    let mut client = pool.get().await.unwrap();
    sink::migrate::migrate(&mut client).await.unwrap();
    (database, pool)
}

/// A digest of every row of `table` in id order, to compare a table's content before and after.
pub async fn table_digest(
    client: &tokio_postgres::Client,
    table: &str,
    key: &str,
) -> (i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {key})), '') FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A Postgres cluster of its own in a temporary directory, on a free port, which a test may stop
/// and start at will; removed when dropped. Runs as the `postgres` user when the test is root.
pub struct ThrowawayCluster {
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
}

impl ThrowawayCluster {
    pub fn create() -> ThrowawayCluster {
        let dir = std::env::temp_dir().join(format!(
            "vncguard-sink-pg-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = ThrowawayCluster {
            dir,
            port: testkit::free_port().unwrap(),
            server: None,
        };
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir));
        }
        run(cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(cluster.dir.join("data")));
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let program = Path::new(PG_BIN).join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn start(&mut self) {
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k", "/tmp"])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the throwaway Postgres did not become ready");
    }

    /// `pg_ctl -m fast stop`: connections are cut, open transactions roll back.
    pub fn stop(&mut self) {
        run(self
            .command("pg_ctl")
            .args(["-m", "fast", "-w", "stop", "-D"])
            .arg(self.dir.join("data")));
        if let Some(mut server) = self.server.take() {
            let _ = server.wait();
        }
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a Postgres tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A raw session event as published by an agent (keyed by client address).
pub fn raw_output(event: &SessionEvent) -> bus::Output {
    bus::Output::encode(
        &schemas::topics::SESSIONS_RAW,
        event.summary.client_ip.clone(),
        event,
    )
    .unwrap()
}

/// A scored session as published by the scorer (keyed by client address).
pub fn scored_output(scored: &ScoredSession) -> bus::Output {
    let key = scored.enriched.event.summary.client_ip.clone();
    bus::Output::encode(&schemas::topics::SESSIONS_SCORED, key, scored).unwrap()
}

/// A threat as published by the scorer (keyed by source address).
pub fn threat_output(threat: &Threat) -> bus::Output {
    bus::Output::encode(&schemas::topics::THREATS, threat.source_ip.clone(), threat).unwrap()
}
