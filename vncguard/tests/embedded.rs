//! The whole pipeline in one process on the in-process bus, against a real Postgres: a replayed
//! brute-force capture becomes stored sessions, risk scores and a brute-force threat naming its
//! source, and replaying it again changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_capture_becomes_sessions_scores_and_a_threat() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let embedded = Embedded::start(EmbeddedConfig {
        database_url: database.url().to_string(),
        geoip_city_db: String::new(),
        geoip_asn_db: String::new(),
        risk: scorer::risk::RiskConfig::default(),
        bus_capacity: 1000,
        agent: capture_agent::config::AgentConfig::default(),
    })
    .await
    .unwrap();

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
