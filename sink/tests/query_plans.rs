//! Acceptance: the API's main queries (`sink::queries`) use indexes on tables of 200,000 rows,
//! and never scan the whole table.

mod support;

use std::net::IpAddr;

use sink::queries;
use tokio_postgres::types::ToSql;

const FILL: &str = "
INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time, status, risk_score, agent_id)
SELECT 's-' || g,
       ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet,
       '192.0.2.1', 40000 + g % 20000, 5900,
       now() - g * interval '1 minute',
       (ARRAY['active', 'terminated', 'terminated', 'terminated', 'blocked'])[1 + g % 5],
       (g % 10000) / 100.0,
       'agent-' || g % 7
FROM generate_series(1, 200000) g;
INSERT INTO threat_logs (id, session_id, threat_type, severity, description, source_ip, timestamp, status)
SELECT 't-' || g, 's-' || g, 'brute_force',
       (ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4],
       'threat ' || g,
       ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet,
       now() - g * interval '1 minute',
       (ARRAY['open', 'acknowledged', 'closed', 'closed', 'closed', 'closed'])[1 + g % 6]
FROM generate_series(1, 200000) g;
ANALYZE vnc_sessions;
ANALYZE threat_logs;
";

#[tokio::test]
async fn the_api_queries_use_indexes() {
    let (_db, pool) = support::migrated_database().await;
    let client = pool.get().await.unwrap();
    client.batch_execute(FILL).await.unwrap();

    let ip: IpAddr = "10.0.4.1".parse().unwrap();
    let min_risk = 99.5_f64;
    let cases: Vec<(&str, &str, Vec<&(dyn ToSql + Sync)>)> = vec![
        (
            "newest sessions",
            queries::SESSIONS_NEWEST,
            vec![&100_i64, &0_i64],
        ),
        (
            "sessions by status",
            queries::SESSIONS_BY_STATUS,
            vec![&"active", &100_i64, &0_i64],
        ),
        (
            "sessions by client ip",
            queries::SESSIONS_BY_CLIENT_IP,
            vec![&ip, &100_i64],
        ),
        (
            "riskiest sessions",
            queries::SESSIONS_BY_MIN_RISK,
            vec![&min_risk, &100_i64],
        ),
        ("session by id", queries::SESSION_BY_ID, vec![&"s-1234"]),
        (
            "threats of a session",
            queries::THREATS_OF_SESSION,
            vec![&"s-1234"],
        ),
        (
            "newest threats",
            queries::THREATS_NEWEST,
            vec![&50_i64, &0_i64],
        ),
        (
            "threats by severity",
            queries::THREATS_BY_SEVERITY,
            vec![&"high", &50_i64, &0_i64],
        ),
        (
            "threats by status",
            queries::THREATS_BY_STATUS,
            vec![&"open", &50_i64, &0_i64],
        ),
        (
            "threats by source ip",
            queries::THREATS_BY_SOURCE_IP,
            vec![&ip, &50_i64],
        ),
    ];
    for (name, query, params) in cases {
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {query}"), &params)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans a whole table:\n{plan}"
        );
    }
}
