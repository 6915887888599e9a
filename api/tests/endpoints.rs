//! Acceptance: every endpoint against a real Postgres — shapes, filters, pagination, validation
//! errors, triage history and audit, decisions published on the bus, and the permission matrix
//! (every role against every endpoint).

mod support;

use api::auth::Role;
use bus::memory::MemoryBus;
use bus::{Bus, Consumer};
use serde_json::{json, Value};
use support::TestApi;

async fn seeded() -> (TestApi, MemoryBus) {
    let bus = MemoryBus::new(10_000);
    let api = support::start(bus.clone(), support::config()).await;
    api.seed().await;
    (api, bus)
}

#[tokio::test]
async fn health_status_and_docs_answer_their_shapes() {
    let (api, _bus) = seeded().await;
    let (status, health) = api.call(None, "GET", "/api/health", None).await;
    // The in-process bus always answers, so the API is healthy.
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"], "connected");
    assert_eq!(health["kafka"], "connected");
    assert!(health["timestamp"].is_string());

    let status = api.get(Role::Viewer, "/api/status").await;
    assert_eq!(status["active_sessions"], 100);
    assert_eq!(status["threats_24h"], 120);
    assert!(status["uptime"].is_u64());

    let (code, doc) = api.call(None, "GET", "/api/docs/openapi.json", None).await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/sessions",
        "/api/threats/{id}",
        "/api/firewall/block",
        "/api/users/{id}",
        "/api/bouncers",
        "/v1/decisions/stream",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
    let page = api.http.get(api.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/api/docs/docs.js") && !html.contains("http"),
        "the page must work offline"
    );
    let index = api.http.get(api.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("api_logins_total"));
}

#[tokio::test]
async fn sessions_filter_and_paginate() {
    let (api, _bus) = seeded().await;
    let all = api.get(Role::Viewer, "/api/sessions").await;
    assert_eq!(all["total"], 300);
    assert_eq!(all["limit"], 100);
    assert_eq!(all["page"], 1);
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 100);
    assert_eq!(sessions[0]["id"], "s-1", "newest first");
    for field in [
        "client_ip",
        "server_ip",
        "start_time",
        "risk_score",
        "status",
        "data_transferred",
    ] {
        assert!(sessions[0].get(field).is_some(), "{field}");
    }

    let page3 = api.get(Role::Viewer, "/api/sessions?limit=40&page=3").await;
    assert_eq!(page3["sessions"][0]["id"], "s-81");
    assert_eq!(page3["page"], 3);
    let offset = api
        .get(Role::Viewer, "/api/sessions?limit=40&offset=80")
        .await;
    assert_eq!(offset["sessions"], page3["sessions"]);

    let active = api
        .get(Role::Viewer, "/api/sessions?status=active&limit=1000")
        .await;
    assert_eq!(active["total"], 100);
    assert!(active["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "active"));

    let one = api
        .get(Role::Viewer, "/api/sessions?client_ip=10.0.0.7")
        .await;
    assert_eq!(one["total"], 1);
    assert_eq!(one["sessions"][0]["id"], "s-7");
    let net = api
        .get(Role::Viewer, "/api/sessions?client_ip=10.0.1.0/24")
        .await;
    assert_eq!(net["total"], 45, "sessions 256..300");
    let none = api
        .get(Role::Viewer, "/api/sessions?server_ip=192.0.2.2")
        .await;
    assert_eq!(none["total"], 0);

    let risky = api
        .get(
            Role::Viewer,
            "/api/sessions?min_risk=90&max_risk=95&limit=1000",
        )
        .await;
    let risks: Vec<f64> = risky["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["risk_score"].as_f64().unwrap())
        .collect();
    assert_eq!(risks.len(), 18, "6 scores x 3 hundreds");
    assert!(risks.iter().all(|r| (90.0..=95.0).contains(r)));

    let from = (chrono::Utc::now() - chrono::Duration::seconds(10 * 60 + 30)).to_rfc3339();
    let recent = api
        .get(
            Role::Viewer,
            &format!("/api/sessions?from={}", urlencode(&from)),
        )
        .await;
    assert_eq!(recent["total"], 10);

    let by_risk = api
        .get(Role::Viewer, "/api/sessions?sort=-risk_score&limit=1000")
        .await;
    let risks: Vec<f64> = by_risk["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["risk_score"].as_f64().unwrap())
        .collect();
    assert_eq!(risks.len(), 300);
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "riskiest first");
    assert!(risks[0] > risks[299]);
    let oldest = api
        .get(Role::Viewer, "/api/sessions?sort=start_time&limit=1")
        .await;
    assert_eq!(oldest["sessions"][0]["id"], "s-300", "oldest first");
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn bad_input_is_refused_with_the_offending_field() {
    let (api, _bus) = seeded().await;
    let cases: &[(&str, &str, Option<Value>, u16, &str)] = &[
        ("GET", "/api/sessions?limit=1001", None, 400, "limit"),
        ("GET", "/api/sessions?limit=0", None, 400, "limit"),
        ("GET", "/api/sessions?offset=-1", None, 400, "offset"),
        ("GET", "/api/sessions?status=sleeping", None, 400, "status"),
        (
            "GET",
            "/api/sessions?client_ip=10.0.0.0/33",
            None,
            400,
            "client_ip",
        ),
        ("GET", "/api/sessions?min_risk=101", None, 400, "min_risk"),
        (
            "GET",
            "/api/sessions?min_risk=50&max_risk=10",
            None,
            400,
            "min_risk",
        ),
        ("GET", "/api/sessions?from=yesterday", None, 400, "from"),
        ("GET", "/api/sessions?sort=id;drop", None, 400, "sort"),
        (
            "GET",
            "/api/sessions?sort=-data_transferred",
            None,
            400,
            "sort",
        ),
        ("GET", "/api/threats?severity=urgent", None, 400, "severity"),
        ("GET", "/api/threats?type=Brute%20Force", None, 400, "type"),
        ("GET", "/api/threats?source_ip=nope", None, 400, "source_ip"),
        ("GET", "/api/metrics?timeframe=2h", None, 400, "timeframe"),
        (
            "POST",
            "/api/firewall/block",
            Some(json!({"ip_address": "300.1.1.1", "duration": "1h", "reason": "x"})),
            400,
            "ip_address",
        ),
        (
            "POST",
            "/api/firewall/block",
            Some(json!({"ip_address": "203.0.113.9", "duration": "1y", "reason": "x"})),
            400,
            "duration",
        ),
        (
            "POST",
            "/api/firewall/block",
            Some(json!({"ip_address": "203.0.113.9", "duration": "1h", "reason": " "})),
            400,
            "reason",
        ),
        (
            "POST",
            "/api/firewall/block",
            Some(json!({"ip_address": "203.0.113.9", "duration": "1h"})),
            422,
            "reason",
        ),
        (
            "POST",
            "/api/firewall/block",
            Some(
                json!({"ip_address": "203.0.113.9", "duration": "1h", "reason": "x", "threat_id": "t-none"}),
            ),
            404,
            "threat_id",
        ),
        (
            "POST",
            "/api/threats",
            Some(
                json!({"threat_type": "x", "severity": "severe", "description": "d", "source_ip": "10.0.0.1"}),
            ),
            400,
            "severity",
        ),
        (
            "POST",
            "/api/threats",
            Some(json!({"threat_type": "x", "severity": "low", "description": "d"})),
            422,
            "source_ip",
        ),
        (
            "POST",
            "/api/threats",
            Some(
                json!({"threat_type": "x", "severity": "low", "description": "d", "session_id": "s-none"}),
            ),
            404,
            "session_id",
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"status": "closed"})),
            422,
            "close_reason",
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"status": "open", "close_reason": "duplicate"})),
            422,
            "close_reason",
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"status": "gone"})),
            400,
            "status",
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"assignee": "nobody"})),
            422,
            "assignee",
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"colour": "red"})),
            422,
            "colour",
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"username": "x", "password": "long enough password", "role": "viewer"})),
            400,
            "username",
        ),
        (
            "POST",
            "/api/users",
            Some(json!({"username": "newbie", "password": "short", "role": "viewer"})),
            400,
            "password",
        ),
        (
            "POST",
            "/api/users",
            Some(
                json!({"username": "viewer", "password": "long enough password", "role": "viewer"}),
            ),
            409,
            "username",
        ),
    ];
    for (method, path, body, status, field) in cases {
        let (got, answer) = api
            .call(Some(Role::Admin), method, path, body.clone())
            .await;
        assert_eq!(got, *status, "{method} {path} {body:?}: {answer}");
        assert_eq!(
            answer["error"]["field"], *field,
            "{method} {path}: {answer}"
        );
        assert!(answer["error"]["code"].is_string() && answer["error"]["message"].is_string());
    }
    for path in [
        "/api/sessions/s-none",
        "/api/threats/t-none",
        "/api/users/99999",
    ] {
        let method = if path.starts_with("/api/users") {
            "PATCH"
        } else {
            "GET"
        };
        let body = (method == "PATCH").then(|| json!({"disabled": false}));
        let (got, answer) = api.call(Some(Role::Admin), method, path, body).await;
        assert_eq!(got, 404, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
    }
    let big = "x".repeat(70 * 1024);
    let (got, _) = api
        .call(
            Some(Role::Admin),
            "POST",
            "/api/threats",
            Some(json!({"description": big})),
        )
        .await;
    assert_eq!(got, 413, "bodies are limited");
    let not_json = api
        .http
        .post(api.url("/api/firewall/block"))
        .bearer_auth(&api.tokens[&Role::Admin])
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
}

#[tokio::test]
async fn session_detail_threats_dashboard_fleet_and_models() {
    let (api, _bus) = seeded().await;
    let detail = api.get(Role::Viewer, "/api/sessions/s-4").await;
    assert_eq!(detail["id"], "s-4");
    assert_eq!(detail["threat_logs"].as_array().unwrap().len(), 1);
    assert_eq!(detail["threat_logs"][0]["id"], "t-4");
    assert!(detail["geo"].is_object() && detail["risk_reasons"].is_array());
    let timeline: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["started", "threat"]);

    let high = api
        .get(Role::Viewer, "/api/threats?severity=high&limit=1000")
        .await;
    assert_eq!(high["total"], 30);
    assert!(high["threats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["severity"] == "high"));
    let scans = api
        .get(
            Role::Viewer,
            "/api/threats?type=scan&status=open&source_ip=10.0.0.0/24",
        )
        .await;
    assert_eq!(scans["total"], 60);
    let first = api.get(Role::Viewer, "/api/threats?limit=5&page=2").await;
    assert_eq!(first["threats"][0]["id"], "t-6");

    let dashboard = api.get(Role::Viewer, "/api/analytics/dashboard").await;
    assert_eq!(dashboard["active_sessions"], 100);
    assert_eq!(dashboard["threats_24h"], 120);
    assert_eq!(dashboard["threats_24h_by_severity"]["critical"], 30);
    assert_eq!(
        dashboard["risk_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>(),
        300
    );
    assert_eq!(dashboard["threats_over_time"].as_array().unwrap().len(), 24);
    for timeframe in ["1h", "24h", "7d", "30d"] {
        let metrics = api
            .get(Role::Viewer, &format!("/api/metrics?timeframe={timeframe}"))
            .await;
        assert!(metrics["cpu_usage"].is_number() && metrics["memory_usage"].is_number());
    }
    assert_eq!(
        api.get(Role::Viewer, "/api/metrics?timeframe=1h").await["sessions"],
        59
    );

    let fleet = api.get(Role::Viewer, "/api/agents").await;
    assert_eq!(fleet["stale"], 1);
    assert_eq!(
        fleet["agents"][1]["stale"], true,
        "silent for 10 minutes, 3 x 30 s is the limit"
    );
    assert_eq!(fleet["agents"][0]["stale"], false);
    let models = api.get(Role::Viewer, "/api/models").await;
    assert_eq!(models["models"][0]["version"], "v1");
    assert!(models["models"][0].get("model_json").is_none());
}

#[tokio::test]
async fn triage_is_recorded_in_history_and_audit() {
    let (api, _bus) = seeded().await;
    let (status, threat) = api
        .call(
            Some(Role::Analyst),
            "PATCH",
            "/api/threats/t-2",
            Some(json!({"status": "acknowledged", "assignee": "analyst"})),
        )
        .await;
    assert_eq!(status, 200, "{threat}");
    assert_eq!(threat["status"], "acknowledged");
    assert_eq!(threat["assignee"], "analyst");
    let (status, threat) = api
        .call(
            Some(Role::Analyst),
            "PATCH",
            "/api/threats/t-2",
            Some(json!({"status": "closed", "close_reason": "false_positive"})),
        )
        .await;
    assert_eq!(status, 200, "{threat}");
    assert_eq!(threat["close_reason"], "false_positive");
    let (status, threat) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/threats/t-2/notes",
            Some(json!({"text": "lab scanner"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(threat["notes"][0]["text"], "lab scanner");
    assert_eq!(threat["notes"][0]["author"], "analyst");

    let (status, manual) = api
        .call(Some(Role::Analyst), "POST", "/api/threats", Some(json!({"session_id": "s-9", "threat_type": "suspicious_activity", "severity": "medium", "description": "Unusual file access pattern detected"})))
        .await;
    assert_eq!(status, 201, "{manual}");
    assert_eq!(manual["source_ip"], "10.0.0.9", "taken from the session");
    assert_eq!(manual["status"], "open");

    let client = api.pool.get().await.unwrap();
    let history = client
        .query("SELECT username, change FROM threat_triage_history WHERE threat_id = 't-2' ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    let changes: Vec<Value> = history.iter().map(|r| r.get(1)).collect();
    assert_eq!(
        changes[0]["status"],
        json!({"from": "open", "to": "acknowledged"})
    );
    assert_eq!(
        changes[0]["assignee"],
        json!({"from": null, "to": "analyst"})
    );
    assert_eq!(changes[1]["close_reason"]["to"], "false_positive");
    assert_eq!(changes[2]["note"], "lab scanner");
    assert!(history.iter().all(|r| r.get::<_, String>(0) == "analyst"));

    let audit = client
        .query("SELECT username, method, path, status, host(client_ip), body_summary FROM api_audit_log ORDER BY id", &[])
        .await
        .unwrap();
    let rows: Vec<(Option<String>, String, String, i32)> = audit
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(rows.contains(&(
        Some("analyst".into()),
        "PATCH".into(),
        "/api/threats/t-2".into(),
        200
    )));
    assert!(rows.contains(&(
        Some("analyst".into()),
        "POST".into(),
        "/api/threats".into(),
        201
    )));
    let logins: Vec<Option<String>> = audit
        .iter()
        .filter(|r| r.get::<_, String>(2) == "/api/auth/login")
        .map(|r| r.get(5))
        .collect();
    assert_eq!(logins.len(), 3);
    assert!(
        logins
            .iter()
            .all(|s| s.as_deref().unwrap().contains("\"password\":\"***\"")),
        "{logins:?}"
    );
    assert!(audit
        .iter()
        .all(|r| r.get::<_, Option<String>>(4).as_deref() == Some("127.0.0.1")));
}

#[tokio::test]
async fn blocks_and_quarantines_are_written_and_published() {
    let (api, bus) = seeded().await;
    let mut decisions = bus
        .consumer("test", &[schemas::topics::DECISIONS.name])
        .unwrap();
    let (status, block) = api
        .call(Some(Role::Analyst), "POST", "/api/firewall/block", Some(json!({"ip_address": "203.0.113.10", "duration": "24h", "reason": "Multiple failed authentication attempts", "threat_id": "t-3"})))
        .await;
    assert_eq!(status, 201, "{block}");
    let (status, cidr) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/firewall/block",
            Some(
                json!({"ip_address": "198.51.100.7/24", "duration": 600, "reason": "scanner net"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{cidr}");
    assert_eq!(cidr["value"], "198.51.100.0/24");
    assert_eq!(cidr["scope"], "cidr");
    let (status, _) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/sessions/s-5/quarantine",
            Some(json!({"reason": "exfiltration"})),
        )
        .await;
    assert_eq!(status, 201);

    let rules = api.get(Role::Viewer, "/api/firewall/rules").await;
    assert_eq!(rules["total"], 3);
    let rule = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_ip"] == "203.0.113.10")
        .unwrap()
        .clone();
    assert_eq!(rule["action"], "DROP");
    assert!((86_390..=86_400).contains(&rule["seconds_left"].as_i64().unwrap()));
    assert_eq!(rule["threat_id"], "t-3");
    assert_eq!(
        api.get(Role::Viewer, "/api/sessions/s-5").await["status"],
        "quarantined"
    );
    assert_eq!(
        api.get(Role::Viewer, "/api/analytics/dashboard").await["blocked_ips"],
        2
    );

    let (status, lifted) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/firewall/unblock",
            Some(json!({"ip_address": "203.0.113.10"})),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    let (status, _) = api
        .call(
            Some(Role::Analyst),
            "DELETE",
            &format!(
                "/api/firewall/rules/{}",
                cidr["decision_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/firewall/unblock",
            Some(json!({"ip_address": "203.0.113.10"})),
        )
        .await;
    assert_eq!(status, 404, "nothing left to lift");
    assert_eq!(
        api.get(Role::Viewer, "/api/firewall/rules").await["total"],
        1,
        "the quarantine stays"
    );

    let records = decisions
        .next_batch(100, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    let published: Vec<schemas::Decision> = records
        .iter()
        .map(|r| schemas::decode(&r.payload).unwrap())
        .collect();
    let actions: Vec<_> = published
        .iter()
        .map(|d| (d.action, d.scope, d.value.clone()))
        .collect();
    use schemas::{DecisionAction as A, DecisionScope as S};
    assert_eq!(
        actions,
        [
            (A::Block, S::Ip, "203.0.113.10".to_string()),
            (A::Block, S::Cidr, "198.51.100.0/24".to_string()),
            (A::Quarantine, S::Session, "s-5".to_string()),
            (A::Unblock, S::Ip, "203.0.113.10".to_string()),
            (A::Unblock, S::Cidr, "198.51.100.0/24".to_string()),
        ]
    );
    assert!(published
        .iter()
        .all(|d| d.created_by.as_deref() == Some("analyst")
            && d.origin == schemas::DecisionOrigin::Analyst));
    assert_eq!(
        published[3].target_decision_id.as_deref(),
        Some(block["decision_id"].as_str().unwrap())
    );
}

/// Every endpoint with a request that succeeds for a permitted role, and the least role.
fn matrix() -> Vec<(&'static str, &'static str, Option<Value>, Option<Role>)> {
    use Role::*;
    vec![
        ("GET", "/api/health", None, None),
        ("GET", "/api/docs/openapi.json", None, None),
        ("GET", "/api/status", None, Some(Viewer)),
        ("GET", "/api/sessions", None, Some(Viewer)),
        ("GET", "/api/sessions/s-1", None, Some(Viewer)),
        ("GET", "/api/threats", None, Some(Viewer)),
        ("GET", "/api/threats/t-1", None, Some(Viewer)),
        ("GET", "/api/analytics/dashboard", None, Some(Viewer)),
        ("GET", "/api/metrics?timeframe=24h", None, Some(Viewer)),
        ("GET", "/api/firewall/rules", None, Some(Viewer)),
        ("GET", "/api/agents", None, Some(Viewer)),
        ("GET", "/api/models", None, Some(Viewer)),
        (
            "POST",
            "/api/threats",
            Some(
                json!({"threat_type": "manual", "severity": "low", "description": "d", "source_ip": "10.9.9.9"}),
            ),
            Some(Analyst),
        ),
        (
            "PATCH",
            "/api/threats/t-1",
            Some(json!({"status": "acknowledged"})),
            Some(Analyst),
        ),
        (
            "POST",
            "/api/threats/t-1/notes",
            Some(json!({"text": "seen"})),
            Some(Analyst),
        ),
        (
            "POST",
            "/api/firewall/block",
            Some(json!({"ip_address": "203.0.113.50", "duration": "1h", "reason": "matrix"})),
            Some(Analyst),
        ),
        (
            "POST",
            "/api/firewall/unblock",
            Some(json!({"ip_address": "203.0.113.50"})),
            Some(Analyst),
        ),
        ("DELETE", "/api/firewall/rules/none", None, Some(Analyst)),
        (
            "POST",
            "/api/sessions/s-2/quarantine",
            Some(json!({"reason": "matrix", "duration": "1h"})),
            Some(Analyst),
        ),
        ("GET", "/api/users", None, Some(Admin)),
        (
            "POST",
            "/api/users",
            Some(
                json!({"username": "matrix-user", "password": "long enough password", "role": "viewer"}),
            ),
            Some(Admin),
        ),
        (
            "PATCH",
            "/api/users/1",
            Some(json!({"disabled": false})),
            Some(Admin),
        ),
        ("GET", "/api/bouncers", None, Some(Admin)),
        (
            "POST",
            "/api/bouncers",
            Some(json!({"name": "matrix"})),
            Some(Admin),
        ),
        ("DELETE", "/api/bouncers/0", None, Some(Admin)),
    ]
}

#[tokio::test]
async fn every_role_against_every_endpoint() {
    let (api, _bus) = seeded().await;
    for (method, path, body, least) in matrix() {
        for caller in [
            None,
            Some(Role::Viewer),
            Some(Role::Analyst),
            Some(Role::Admin),
        ] {
            let (status, answer) = api.call(caller, method, path, body.clone()).await;
            let allowed = match (least, caller) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(least), Some(role)) => role >= least,
            };
            if allowed {
                assert!(
                    ![401, 403].contains(&status) && status < 500,
                    "{caller:?} {method} {path}: {status} {answer}"
                );
            } else {
                let expected = if caller.is_none() { 401 } else { 403 };
                assert_eq!(status, expected, "{caller:?} {method} {path}: {answer}");
            }
        }
    }
    // Anonymous WebSocket upgrades are refused too.
    let ws = tokio_tungstenite::connect_async(format!("ws://{}/ws?token=garbage", api.addr)).await;
    assert!(ws.is_err());
}
