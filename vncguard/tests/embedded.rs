//! The whole pipeline in one process on the in-process bus, against a real Postgres: a replayed
//! brute-force capture becomes stored sessions, risk scores and a brute-force threat naming its
//! source, and replaying it again changes nothing; replayed shifted in time it is new sessions;
//! live capture on an interface stores the sessions of a real VNC client. The embedded scorer
//! learns a model from normal sessions replayed until its learning period is over, swaps to a
//! model announced while it runs (hot swap), and a restart scores with the stored model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bus::{Bus, Output, Producer};
use scorer::learn::LearnConfig;
use scorer::model::DEFAULT_MODEL_NAME;
use vncguard::{Embedded, EmbeddedConfig};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/pcaps")
        .join(name)
}

async fn counts(embedded: &Embedded) -> (i64, i64, i64) {
    let client = embedded.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM vnc_sessions),
                    (SELECT count(*) FROM vnc_sessions WHERE model_version IS NOT NULL),
                    (SELECT count(*) FROM threat_logs)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Waits until every stored session is scored and the counts stop moving.
async fn settled(embedded: &Embedded) -> (i64, i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (-1, -1, -1);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counts(embedded).await;
        if now == last && now.0 > 0 && now.0 == now.1 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline did not settle: {now:?}"
        );
        last = now;
    }
}

async fn start(database: &testkit::TestDatabase) -> Embedded {
    start_learning(database, LearnConfig::default()).await
}

async fn start_learning(database: &testkit::TestDatabase, learn: LearnConfig) -> Embedded {
    Embedded::start(EmbeddedConfig {
        database_url: database.url().to_string(),
        geoip_city_db: String::new(),
        geoip_asn_db: String::new(),
        risk: scorer::risk::RiskConfig::default(),
        learn,
        bus_capacity: 1000,
        agent: capture_agent::config::AgentConfig::default(),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_capture_becomes_sessions_scores_and_a_threat() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let embedded = start(&database).await;

    let published = embedded
        .replay(&[sample("c_bruteforce_vncauth.pcap")])
        .await
        .unwrap();
    assert!(published > 0);
    let (sessions, scored, threats) = settled(&embedded).await;
    // The capture holds 8 RFB connections from one client: 5 failed logins and 3 refusals.
    assert_eq!(sessions, 8);
    assert_eq!(scored, 8);
    assert!(threats > 0);

    let client = embedded.pool().get().await.unwrap();
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM vnc_sessions WHERE auth_result = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 5);
    let brute_force = client
        .query(
            "SELECT host(source_ip), severity FROM threat_logs WHERE threat_type = 'brute_force'",
            &[],
        )
        .await
        .unwrap();
    assert!(!brute_force.is_empty(), "no brute-force threat stored");
    for row in &brute_force {
        assert_eq!(row.get::<_, String>(0), "127.0.0.1");
    }

    // The same capture again: deterministic ids and idempotent writes leave every count as it was.
    embedded
        .replay(&[sample("c_bruteforce_vncauth.pcap")])
        .await
        .unwrap();
    assert_eq!(settled(&embedded).await, (sessions, scored, threats));
    embedded.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_replayed_with_a_time_shift_are_new_sessions() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let embedded = start(&database).await;
    let capture = [sample("c_bruteforce_vncauth.pcap")];
    embedded.replay(&capture).await.unwrap();
    let (first, _, _) = settled(&embedded).await;
    // What `--replay-every` does: the same packets an hour later are other sessions.
    let first_packet = capture_agent::first_packet_time(&capture[0])
        .unwrap()
        .unwrap();
    let hour = 3_600_000_000_000;
    embedded
        .replay_at(&capture, first_packet + hour)
        .await
        .unwrap();
    let (sessions, scored, _) = settled(&embedded).await;
    assert_eq!((sessions, scored), (2 * first, 2 * first));
    let client = embedded.pool().get().await.unwrap();
    let span: f64 = client
        .query_one(
            "SELECT extract(epoch FROM max(start_time) - min(start_time))::float8 FROM vnc_sessions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        span >= 3600.0,
        "shifted sessions start an hour later: {span}"
    );
    embedded.stop().await;
}

/// `vncguard --interface`: a real VNC server and client in two network namespaces on a bridge,
/// the embedded mode capturing on the bridge; a failed and a successful login become stored,
/// scored sessions of that client. Needs root, Xvnc, vncpasswd and vncdo (see `testkit::netns`).
#[test]
fn live_capture_stores_the_sessions_of_a_real_client() {
    use testkit::netns::{Lab, VncSession, VncTools};
    let tools = match VncTools::find() {
        Ok(tools) => tools,
        Err(reason) => panic!("the live embedded test needs the VNC tools: {reason}"),
    };
    let mut lab = Lab::create(79, 2).expect("network namespaces (run as root)");
    let (server_ip, client_ip) = (lab.ip(0), lab.ip(1));
    let password_file = lab.vnc_password_file(&tools.vncpasswd, "secret12");
    lab.start_vnc_server(
        0,
        &tools.xvnc,
        &password_file,
        700 + std::process::id() % 200,
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let database = rt.block_on(testkit::TestDatabase::create()).unwrap();
    let mut embedded = rt.block_on(start(&database));
    rt.block_on(async { embedded.capture_live(lab.bridge()) })
        .expect("live capture on the lab bridge");

    for password in ["wrong-password", "secret12"] {
        let session = VncSession {
            server: &server_ip,
            password,
            limit: Duration::from_secs(20),
        };
        let _ = lab.vnc_client(1, &tools.vncdo, session, &["pause", "0.3"]);
    }

    let results = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let client = embedded.pool().get().await.unwrap();
            let rows = client
                .query(
                    "SELECT auth_result FROM vnc_sessions
                     WHERE host(client_ip) = $1 AND host(server_ip) = $2 AND model_version IS NOT NULL
                     ORDER BY start_time",
                    &[&client_ip, &server_ip],
                )
                .await
                .unwrap();
            let results: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            if results.len() >= 2 || Instant::now() > deadline {
                return results;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    assert_eq!(results, ["failed", "ok"]);
    rt.block_on(embedded.stop());
}

/// The learning period of this test: small, so a few replays end it.
const LEARN_MIN_SESSIONS: usize = 6;

fn learning_config() -> LearnConfig {
    LearnConfig {
        min_sessions: LEARN_MIN_SESSIONS,
        ..LearnConfig::default()
    }
}

/// Polls `query` (one row, one text-or-null column) until `ready` holds for its value.
async fn wait_for_value<T>(
    embedded: &Embedded,
    what: &str,
    query: &str,
    ready: impl Fn(&T) -> bool,
) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    let client = embedded.pool().get().await.unwrap();
    loop {
        if let Some(row) = client.query_opt(query, &[]).await.unwrap() {
            let value: T = row.get(0);
            if ready(&value) {
                return value;
            }
        }
        assert!(Instant::now() < deadline, "{what} not within 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replays the normal sample as new sessions, `hours` hours after its recording.
async fn replay_later(embedded: &Embedded, hours: i64) {
    let file = sample("a2_normal_tigervnc_viewer.pcap");
    let first = capture_agent::first_packet_time(&file).unwrap().unwrap();
    embedded
        .replay_at(&[file], first + hours * 3_600_000_000_000)
        .await
        .unwrap();
}

/// The model version of the newest session, once it is scored.
async fn newest_session_model(embedded: &Embedded, not: &str) -> String {
    wait_for_value::<Option<String>>(
        embedded,
        "the newest session scored",
        "SELECT model_version FROM vnc_sessions ORDER BY start_time DESC LIMIT 1",
        |version| version.as_deref().is_some_and(|v| v != not),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_scorer_learns_a_model_and_swaps_to_an_announced_one() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let embedded = start_learning(&database, learning_config()).await;

    // Replays until the scorer has fitted its first model and the sink stored it.
    let mut hours = 0;
    let learned = loop {
        hours += 1;
        replay_later(&embedded, hours).await;
        let client = embedded.pool().get().await.unwrap();
        let stored = client
            .query_opt(
                "SELECT version FROM models ORDER BY created_at DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = stored {
            break row.get::<_, String>(0);
        }
        assert!(hours < 40, "no model after {hours} replays");
        if hours > LEARN_MIN_SESSIONS as i64 {
            // Every replay is a normal session; give the pipeline time to reach the sink.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let client = embedded.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT training_rows, metrics FROM models WHERE version = $1",
            &[&learned],
        )
        .await
        .unwrap();
    let training_rows: i64 = row.get(0);
    let metrics: serde_json::Value = row.get(1);
    assert!(training_rows > 0 && training_rows <= LEARN_MIN_SESSIONS as i64 + hours);
    assert!(
        metrics.get("validation_normal_sessions").is_some(),
        "{metrics}"
    );

    // The sessions before it said they were learning; a session after it is scored by it.
    let learning: Option<String> = client
        .query_one(
            "SELECT risk_components->>'anomaly_status' FROM vnc_sessions ORDER BY start_time LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        learning.as_deref(),
        Some(format!("learning (0 of {LEARN_MIN_SESSIONS} sessions)").as_str())
    );
    replay_later(&embedded, hours + 1).await;
    assert_eq!(newest_session_model(&embedded, "none").await, learned);

    // Hot swap: a model announced on the bus (as `scorer train` would) scores what follows.
    let body: String = client
        .query_one(
            "SELECT model_json FROM models WHERE version = $1",
            &[&learned],
        )
        .await
        .unwrap()
        .get(0);
    let announcement = schemas::ModelAnnouncement {
        model_name: DEFAULT_MODEL_NAME.into(),
        version: "announced-while-running".into(),
        created_at: chrono::Utc::now(),
        feature_names: schemas::features::model_names()
            .map(str::to_string)
            .collect(),
        training_rows,
        training_window_start: None,
        training_window_end: None,
        metrics: Default::default(),
        model_json: body,
    };
    embedded
        .bus()
        .producer()
        .unwrap()
        .send(vec![Output::encode(
            &schemas::topics::MODELS,
            DEFAULT_MODEL_NAME.to_string(),
            &announcement,
        )
        .unwrap()])
        .await
        .unwrap();
    wait_for_value::<i64>(
        &embedded,
        "the announced model stored",
        "SELECT count(*) FROM models WHERE version = 'announced-while-running'",
        |n| *n == 1,
    )
    .await;
    replay_later(&embedded, hours + 2).await;
    assert_eq!(
        newest_session_model(&embedded, &learned).await,
        "announced-while-running"
    );
    embedded.stop().await;

    // A restart loads the newest stored model: a new session is scored by it at once.
    let embedded = start_learning(&database, learning_config()).await;
    replay_later(&embedded, hours + 3).await;
    assert_eq!(
        newest_session_model(&embedded, "none").await,
        "announced-while-running"
    );
    embedded.stop().await;
}
