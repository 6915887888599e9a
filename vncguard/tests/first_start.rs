//! `./dev up` as a new user sees it: the `vncguard` binary started on an empty database replays
//! its bundled samples as today's traffic, so the dashboard's overview (in Debian's Chromium)
//! counts them in its last-24-hours risk chart, the fleet page lists the embedded capture agent
//! and, within a minute of the start, the model the scorer learned from the samples' normal
//! sessions (version, sessions, validation); a second start on the same database replays the
//! same sessions and changes nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const AGENT_ID: &str = "embedded-first-start";

/// What the binary printed once it was ready.
struct Started {
    child: Child,
    spawned: Instant,
    base_url: String,
    sessions_stored: i64,
    /// The first admin's password, read from the file the binary named.
    admin_password: Option<String>,
    printed: String,
}

/// Starts `vncguard` on `database_url` with its secrets in `data_dir`, and reads its summary up
/// to "Ctrl-C stops it."
async fn start_vncguard(database_url: &str, data_dir: &std::path::Path) -> Started {
    let port = testkit::free_port().unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/pcaps");
    let spawned = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vncguard"))
        .env("DATABASE_URL", database_url)
        .env("VNCGUARD_SAMPLES", samples)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env(
            "METRICS_ADDR",
            format!("127.0.0.1:{}", testkit::free_port().unwrap()),
        )
        .env("JWT_SECRET", "first-start-test-secret-of-32-bytes!")
        .env("AGENT_ID", AGENT_ID)
        .env("VNCGUARD_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env("GEOIP_CITY_DB", "")
        .env("GEOIP_ASN_DB", "")
        .env_remove("VNCGUARD_REPLAY_EVERY")
        .env_remove("AGENT_INTERFACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting vncguard");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut started = Started {
        child,
        spawned,
        base_url: String::new(),
        sessions_stored: -1,
        admin_password: None,
        printed: String::new(),
    };
    let reading = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("vncguard: {line}");
            started.printed.push_str(&line);
            started.printed.push('\n');
            let line = line.trim();
            if let Some(count) = line.strip_prefix("sessions stored: ") {
                started.sessions_stored = count.parse().unwrap();
            } else if let Some(url) = line.strip_prefix("dashboard: ") {
                started.base_url = url.trim_end_matches('/').to_string();
            } else if let Some(rest) = line.strip_prefix("first admin: admin  password in: ") {
                let path = PathBuf::from(rest.split_whitespace().next().unwrap());
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path).unwrap().permissions(),
                );
                assert_eq!(mode & 0o777, 0o600, "{} is private", path.display());
                started.admin_password = Some(std::fs::read_to_string(&path).unwrap());
            } else if line == "Ctrl-C stops it." {
                return;
            }
        }
        panic!("vncguard exited before it was ready");
    };
    tokio::time::timeout(Duration::from_secs(180), reading)
        .await
        .expect("vncguard ready within 3 minutes");
    started
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_shows_the_samples_live_and_the_embedded_agent() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let data_dir = std::env::temp_dir().join(format!("vncguard-first-start-{}", database.name()));
    let first = start_vncguard(database.url(), &data_dir).await;
    assert!(first.sessions_stored > 0, "the samples were stored");
    let password = first
        .admin_password
        .clone()
        .expect("the first admin's password");
    assert!(
        !first.printed.contains(&password),
        "the password is not printed"
    );

    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let recent: i64 = client
        .query_one(
            "SELECT count(*) FROM vnc_sessions WHERE start_time > now() - interval '24 hours'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recent, first.sessions_stored,
        "every sample session started in the last 24 h"
    );

    // The scorer learned a first model from the samples' normal sessions within a minute.
    let first_model = Duration::from_secs(60);
    let version = loop {
        let row = client
            .query_opt(
                "SELECT version FROM models ORDER BY created_at LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break row.get::<_, String>(0);
        }
        assert!(
            first.spawned.elapsed() < first_model,
            "no model within {first_model:?} of the start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "first model {version} stored {:?} after the start",
        first.spawned.elapsed()
    );

    let mut scenario = testkit::browser::scenario_command(
        &first.base_url,
        "first_start",
        &[("admin", "admin", &password)],
    )
    .await;
    scenario
        .env("EXPECTED_SESSIONS", recent.to_string())
        .env("AGENT_ID", AGENT_ID)
        .env("MODEL_VERSION", &version);
    let output = tokio::time::timeout(Duration::from_secs(240), scenario.output())
        .await
        .expect("the browser scenario finishes within 4 minutes")
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser scenario first_start failed; screenshots in {}",
        testkit::browser::screenshot_dir().display()
    );
    assert!(stdout.contains("RESULT "), "the scenario reported a RESULT");

    // A second start replays the samples at the first start's time: the same sessions.
    let Started {
        mut child,
        sessions_stored,
        ..
    } = first;
    child.kill().await.unwrap();
    let second = start_vncguard(database.url(), &data_dir).await;
    assert_eq!(second.sessions_stored, sessions_stored);
    assert_eq!(second.admin_password, None, "the admin exists already");
    let total: i64 = client
        .query_one("SELECT count(*) FROM vnc_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, sessions_stored, "replaying again changed nothing");
    drop(second);
    let _ = std::fs::remove_dir_all(&data_dir);
}
