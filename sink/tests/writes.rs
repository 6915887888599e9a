//! What the writer makes of records in Postgres: monotonic session rows, kept statuses and
//! triage, decisions revoked in either order, bad records dead-lettered alone, migrations that
//! apply once under concurrency, and retention in batches.

mod support;

use schemas::{Decision, DecisionAction, DecisionOrigin, DecisionScope, SessionEventKind};
use sink::{SinkRecord, Writer};
use support::*;

fn raw(n: u32, kind: SessionEventKind, seq: i64) -> SinkRecord {
    SinkRecord::Session(session_event(n, kind, seq))
}

#[tokio::test]
async fn an_ended_session_is_not_reopened_by_a_late_stats_event() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    writer
        .write(&[
            raw(1, SessionEventKind::Started, 0),
            raw(1, SessionEventKind::Ended, 4),
        ])
        .await
        .unwrap();
    let refused = writer
        .write(&[
            raw(1, SessionEventKind::Stats, 3),
            raw(1, SessionEventKind::Stats, 9),
        ])
        .await
        .unwrap();
    assert_eq!(refused, vec![None, None]);
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT status, last_event_seq, bytes_s2c, end_reason, screenshots_count FROM vnc_sessions WHERE id = 's-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "terminated");
    assert_eq!(row.get::<_, i64>(1), 4);
    assert_eq!(row.get::<_, i64>(2), 4 * 50_000);
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("fin"));
    assert_eq!(row.get::<_, i32>(4), 28);
}

#[tokio::test]
async fn within_a_batch_the_newest_event_of_a_session_wins_whatever_its_position() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    writer
        .write(&[
            raw(2, SessionEventKind::Auth, 1),
            raw(2, SessionEventKind::Stats, 3),
            raw(2, SessionEventKind::Stats, 2),
        ])
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT last_event_seq, status, auth_method, user_agent, data_transferred::float8 FROM vnc_sessions WHERE id = 's-2'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, String>(1), "active");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("VNC Authentication")
    );
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("RFB 003.008")
    );
    let expected_mb = ((3 * 1000 + 2 + 3 * 50_000) as f64 / 1_048_576.0 * 100.0).round() / 100.0;
    assert_eq!(row.get::<_, f64>(4), expected_mb);
}

#[tokio::test]
async fn scores_fill_risk_columns_in_either_order_and_blocked_status_is_kept() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    // The score of the stats event arrives before any raw event.
    writer
        .write(&[SinkRecord::Scored(scored(
            session_event(3, SessionEventKind::Stats, 2),
            40.0,
        ))])
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE vnc_sessions SET status = 'blocked' WHERE id = 's-3'",
            &[],
        )
        .await
        .unwrap();
    writer
        .write(&[
            raw(3, SessionEventKind::Ended, 4),
            SinkRecord::Scored(scored(session_event(3, SessionEventKind::Ended, 4), 75.25)),
            // A stale score of an older event, after the newer one.
            SinkRecord::Scored(scored(session_event(3, SessionEventKind::Auth, 1), 10.0)),
        ])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT risk_score::float8, anomaly_score::float8, status, last_event_seq, scored_event_seq, client_country, risk_reasons->0->>'rule' FROM vnc_sessions WHERE id = 's-3'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 75.25);
    assert_eq!(row.get::<_, f64>(1), 37.63);
    assert_eq!(row.get::<_, String>(2), "blocked");
    assert_eq!(row.get::<_, i64>(3), 4);
    assert_eq!(row.get::<_, i64>(4), 4);
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("DE"));
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("anomaly"));
}

#[tokio::test]
async fn a_replayed_threat_keeps_its_triage() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    writer
        .write(&[SinkRecord::Threat(threat(7))])
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE threat_logs SET status = 'acknowledged', assignee = 'ana' WHERE id = 't-7'",
            &[],
        )
        .await
        .unwrap();
    let mut newer = threat(7);
    newer.detected_at = at(100);
    newer.description = "updated".into();
    writer
        .write(&[SinkRecord::Threat(threat(7)), SinkRecord::Threat(newer)])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT status, assignee, description, severity, source_ip::text, metadata->>'failures', ml_confidence::float8 FROM threat_logs WHERE id = 't-7'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "acknowledged");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("ana"));
    assert_eq!(row.get::<_, String>(2), "updated");
    assert_eq!(row.get::<_, String>(3), "critical");
    assert_eq!(row.get::<_, String>(4), "10.0.0.7/32");
    assert_eq!(row.get::<_, Option<String>>(5).as_deref(), Some("12"));
    assert_eq!(row.get::<_, f64>(6), 0.9);
}

fn decision(id: &str, action: DecisionAction, target: Option<&str>) -> Decision {
    Decision {
        decision_id: id.into(),
        action,
        origin: DecisionOrigin::Analyst,
        scope: DecisionScope::Cidr,
        value: "203.0.113.77/24".into(),
        duration_secs: 3600,
        created_at: at(50),
        until: at(3650),
        reason: "brute force".into(),
        threat_id: Some("t-1".into()),
        target_decision_id: target.map(str::to_string),
        created_by: Some("ana".into()),
        dry_run: false,
        key_id: None,
        signature: None,
    }
}

#[tokio::test]
async fn an_unblock_revokes_its_block_whichever_arrives_first() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    writer
        .write(&[
            SinkRecord::Decision(decision("d-1", DecisionAction::Block, None)),
            SinkRecord::Decision(decision("u-2", DecisionAction::Unblock, Some("d-2"))),
        ])
        .await
        .unwrap();
    writer
        .write(&[
            SinkRecord::Decision(decision("u-1", DecisionAction::Unblock, Some("d-1"))),
            SinkRecord::Decision(decision("d-2", DecisionAction::Block, None)),
        ])
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT decision_id, revoked_at IS NOT NULL, value_cidr::text FROM decisions WHERE action = 'block' ORDER BY decision_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("d-1".into(), true, Some("203.0.113.0/24".into())),
            ("d-2".into(), true, Some("203.0.113.0/24".into())),
        ]
    );
}

#[tokio::test]
async fn a_record_postgres_refuses_is_dead_lettered_alone() {
    let (_db, pool) = migrated_database().await;
    let writer = Writer::new(pool.clone());
    let mut nul = session_event(11, SessionEventKind::Auth, 1);
    nul.summary.desktop_name = Some("bad\0name".into());
    let mut bad_ip = session_event(12, SessionEventKind::Auth, 1);
    bad_ip.summary.client_ip = "not-an-ip".into();
    let refused = writer
        .write(&[
            raw(10, SessionEventKind::Auth, 1),
            SinkRecord::Session(nul),
            SinkRecord::Session(bad_ip),
            SinkRecord::Threat(threat(10)),
        ])
        .await
        .unwrap();
    assert!(refused[0].is_none() && refused[3].is_none(), "{refused:?}");
    assert!(
        refused[1].as_deref().unwrap().contains("Postgres"),
        "{refused:?}"
    );
    assert!(
        refused[2].as_deref().unwrap().contains("client_ip"),
        "{refused:?}"
    );
    let client = pool.get().await.unwrap();
    let ids: Vec<String> = client
        .query(
            "SELECT id FROM vnc_sessions UNION ALL SELECT id FROM threat_logs ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec!["s-10", "t-10"]);
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let database = testkit::TestDatabase::create().await.unwrap();
    let pool = sink::connect_pool(database.url(), 4, std::time::Duration::from_secs(5)).unwrap();
    let runs = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.unwrap();
            sink::migrate::migrate(&mut client).await.unwrap()
        })
    });
    let mut applied: Vec<i64> = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap());
    }
    applied.sort();
    let all: Vec<i64> = sink::migrate::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, all);
    let client = pool.get().await.unwrap();
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, all.len() as i64);
}

#[tokio::test]
async fn retention_deletes_only_old_rows() {
    let (_db, pool) = migrated_database().await;
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time)
             SELECT 'old-' || g, '10.0.0.1', '10.0.0.2', 1, 5900, now() - interval '40 days'
             FROM generate_series(1, 250) g;
             INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time)
             SELECT 'new-' || g, '10.0.0.1', '10.0.0.2', 1, 5900, now() - interval '1 day'
             FROM generate_series(1, 30) g;
             INSERT INTO threat_logs (id, threat_type, severity, description, source_ip, timestamp)
             SELECT 't-' || g, 'x', 'low', 'd', '10.0.0.1', now() - g * interval '1 day' - interval '1 hour'
             FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let policy = sink::retention::RetentionPolicy {
        sessions: chrono::Duration::days(30),
        threats: chrono::Duration::days(60),
        batch_size: 40,
    };
    let report = sink::retention::enforce(&pool, &policy).await.unwrap();
    assert_eq!(report.sessions, 250);
    assert_eq!(report.threats, 41);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM vnc_sessions WHERE id LIKE 'new-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 30);
}
