//! Acceptance: the API's list statements (`api::queries`, built from the request filters and
//! sorts) and its wrappers of `sink::queries` use indexes on tables of 200,000 rows and never
//! scan a whole table; their counts are capped.

use api::queries::{self, Conditions};
use api::routes::sessions::SessionFilters;
use api::routes::threats::ThreatFilters;
use tokio_postgres::types::ToSql;

const FILL: &str = "
INSERT INTO vnc_sessions (id, client_ip, server_ip, client_port, server_port, start_time, status, risk_score, agent_id)
SELECT 's-' || g, ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet,
       '192.0.2.1', 40000 + g % 20000, 5900, now() - g * interval '1 minute',
       (ARRAY['active', 'terminated', 'terminated', 'terminated', 'blocked'])[1 + g % 5], (g % 10000) / 100.0, 'agent-' || g % 7
FROM generate_series(1, 200000) g;
INSERT INTO threat_logs (id, session_id, threat_type, severity, description, source_ip, timestamp, status)
SELECT 't-' || g, 's-' || g, 'brute_force', (ARRAY['low', 'medium', 'high', 'critical'])[1 + g % 4], 'threat ' || g,
       ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet, now() - g * interval '1 minute',
       (ARRAY['open', 'acknowledged', 'closed', 'closed', 'closed', 'closed'])[1 + g % 6]
FROM generate_series(1, 200000) g;
ANALYZE vnc_sessions;
ANALYZE threat_logs;
";

fn sessions(query: &str) -> Conditions {
    let filters: SessionFilters = serde_urlencoded_like(query);
    filters.conditions().unwrap()
}

fn threats(query: &str) -> Conditions {
    let filters: ThreatFilters = serde_urlencoded_like(query);
    filters.conditions().unwrap()
}

/// `a=1&b=2` into a filter struct (values as strings, as the query extractor gives them).
fn serde_urlencoded_like<T: serde::de::DeserializeOwned>(query: &str) -> T {
    let map: serde_json::Map<String, serde_json::Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_string(), serde_json::Value::String(v.to_string()))
        })
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap()
}

async fn plan(
    client: &tokio_postgres::Client,
    name: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> String {
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    plan.join("\n")
}

async fn assert_indexed(
    client: &tokio_postgres::Client,
    name: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) {
    let plan = plan(client, name, sql, params).await;
    assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
    assert!(
        !plan.contains("Seq Scan"),
        "{name} scans a whole table:\n{plan}"
    );
}

#[tokio::test]
async fn the_api_lists_use_indexes() {
    let db = testkit::TestDatabase::create().await.unwrap();
    let (mut client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    sink::migrate::migrate(&mut client).await.unwrap();
    client.batch_execute(FILL).await.unwrap();

    let limit = 100_i64;
    let offset = 0_i64;
    let lists = [
        (
            "newest sessions",
            "vnc_sessions",
            sessions(""),
            queries::SESSION_ITEM_COLUMNS,
            "start_time DESC",
        ),
        (
            "sessions by status",
            "vnc_sessions",
            sessions("status=active"),
            queries::SESSION_ITEM_COLUMNS,
            "start_time DESC",
        ),
        (
            "sessions of a client",
            "vnc_sessions",
            sessions("client_ip=10.0.4.1"),
            queries::SESSION_ITEM_COLUMNS,
            "start_time DESC",
        ),
        (
            "sessions of a network",
            "vnc_sessions",
            sessions("client_ip=10.0.4.0/24"),
            queries::SESSION_ITEM_COLUMNS,
            "start_time DESC",
        ),
        (
            "sessions in a time range",
            "vnc_sessions",
            sessions("from=2020-01-01T00:00:00Z&status=blocked"),
            queries::SESSION_ITEM_COLUMNS,
            "start_time DESC",
        ),
        (
            "newest threats",
            "threat_logs",
            threats(""),
            queries::THREAT_COLUMNS,
            "timestamp DESC",
        ),
        (
            "threats by severity",
            "threat_logs",
            threats("severity=high"),
            queries::THREAT_COLUMNS,
            "timestamp DESC",
        ),
        (
            "threats by status",
            "threat_logs",
            threats("status=open"),
            queries::THREAT_COLUMNS,
            "timestamp DESC",
        ),
        (
            "threats of a source",
            "threat_logs",
            threats("source_ip=10.0.4.1"),
            queries::THREAT_COLUMNS,
            "timestamp DESC",
        ),
    ];
    for (name, table, conditions, columns, order) in &lists {
        let page = queries::page_sql(columns, table, conditions, order);
        assert_indexed(&client, name, &page, &conditions.params(&[&limit, &offset])).await;
        let count = queries::capped_count_sql(table, conditions);
        // A count stops at COUNT_CAP + 1 rows: the planner may rather read them from the table
        // when it expects that many matches, which is as cheap as an index.
        let plan = plan(&client, name, &count, &conditions.params(&[])).await;
        assert!(
            plan.contains("Limit"),
            "{name} count is not capped:\n{plan}"
        );
    }
    // Every sort a session list offers, alone and under the dashboard's commonest filter.
    for (sort, order) in api::routes::sessions::SESSION_ORDERS {
        for filter in ["", "status=active"] {
            let conditions = sessions(filter);
            let page = queries::page_sql(
                queries::SESSION_ITEM_COLUMNS,
                "vnc_sessions",
                &conditions,
                order,
            );
            let name = format!("sessions sorted by {sort} ({filter})");
            assert_indexed(
                &client,
                &name,
                &page,
                &conditions.params(&[&limit, &offset]),
            )
            .await;
        }
    }
    assert_indexed(
        &client,
        "session detail",
        &queries::session_detail_sql(),
        &[&"s-1234"],
    )
    .await;
    assert_indexed(
        &client,
        "threats of a session",
        &queries::threats_of_session_sql(),
        &[&"s-1234"],
    )
    .await;
    assert_indexed(
        &client,
        "firewall rules",
        queries::ACTIVE_RULES,
        &[&limit, &offset],
    )
    .await;
}
