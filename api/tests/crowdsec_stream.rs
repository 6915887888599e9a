//! Acceptance: the CrowdSec decision stream (`/v1/decisions/stream`) against a real Postgres.
//! Bouncer keys are made by admins, shown once, stored as hashes, refused and counted when wrong
//! (then rate limited), and revoked at once. `startup=true` lists the bans in force (one per
//! address, the longest) in CrowdSec's shapes; each later poll lists what changed since the
//! bouncer's previous one: new blocks, unblocks and expiries, even from a writer whose
//! transaction began before the poll and committed after it, with a clock a minute behind.
//! Filters select scopes, origins and scenarios; unknown parameters are refused.

mod support;

use std::time::{Duration, Instant};

use api::auth::Role;
use api::routes::crowdsec::go_duration;
use bus::memory::MemoryBus;
use serde_json::{json, Value};
use support::TestApi;

async fn started() -> TestApi {
    support::start(MemoryBus::new(10_000), support::config()).await
}

/// The decisions of `list` (`new` or `deleted`) for `value`.
fn entries<'a>(answer: &'a Value, list: &str, value: &str) -> Vec<&'a Value> {
    answer[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} list in {answer}"))
        .iter()
        .filter(|d| d["value"] == value)
        .collect()
}

/// Polls (without startup) until `done` holds for an answer, within 30 s; that answer.
async fn poll_until(api: &TestApi, key: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = api.stream(Some(key), "").await;
        assert_eq!(status, 200, "{answer}");
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "not within 30 s: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter's value on `/metrics` (0 before it is first counted).
async fn metric(api: &TestApi, series: &str) -> u64 {
    let text = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn bouncer_keys_are_shown_once_stored_hashed_refused_and_revoked_at_once() {
    let mut config = support::config();
    // Three logins of the test users, then a few refused keys.
    config.auth_rate = "8/600".parse().unwrap();
    let api = support::start(MemoryBus::new(10_000), config).await;
    let key = api.create_bouncer("fw-edge-1").await;
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let (status, body) = api
        .call(
            Some(Role::Admin),
            "POST",
            "/api/bouncers",
            Some(json!({"name": "fw-edge-1"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = api
        .call(
            Some(Role::Admin),
            "POST",
            "/api/bouncers",
            Some(json!({"name": "bad name"})),
        )
        .await;
    assert_eq!(status, 400);

    let client = api.pool.get().await.unwrap();
    let stored: String = client
        .query_one(
            "SELECT key_hash FROM bouncers WHERE name = 'fw-edge-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, api::auth::hash_secret_token(&key));
    assert_ne!(stored, key);
    let audited: Vec<(String, i32, Option<String>)> = client
        .query(
            "SELECT method, status, body_summary FROM api_audit_log WHERE path = '/api/bouncers' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert_eq!((audited[0].0.as_str(), audited[0].1), ("POST", 201));
    assert!(audited
        .iter()
        .all(|(_, _, body)| !body.as_deref().unwrap_or("").contains(&key)));

    // The key reads the stream, and the list shows who polled from where, never the key.
    let (status, answer) = api.stream(Some(&key), "startup=true").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"new": [], "deleted": []}));
    let list = api.get(Role::Admin, "/api/bouncers").await;
    let bouncer = &list["bouncers"][0];
    assert_eq!(bouncer["name"], "fw-edge-1");
    assert_eq!(bouncer["created_by"], "admin");
    assert_eq!(bouncer["pulls"], 1);
    assert_eq!(bouncer["last_ip"], "127.0.0.1");
    assert_eq!(bouncer["user_agent"], "vncguard-test/1");
    assert!(bouncer["last_pull"].is_string());
    assert!(!list.to_string().contains(&key) && !list.to_string().contains(&stored));

    // A key is no user token, and a user token is no key.
    let (status, _) = api
        .call(Some(Role::Admin), "GET", "/v1/decisions/stream", None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call_with_token(Some(&key), "GET", "/api/sessions", None)
        .await;
    assert_eq!(status, 401);

    // Revoked: refused at the very next poll.
    let id = bouncer["id"].as_i64().unwrap();
    let (status, body) = api.revoke_bouncer(id).await;
    assert_eq!(status, 200, "{body}");
    let unknown = r#"vncguard_api_bouncer_keys_refused_total{reason="unknown"}"#;
    let before = metric(&api, unknown).await;
    let (status, body) = api.stream(Some(&key), "").await;
    assert_eq!(status, 403, "{body}");
    assert!(metric(&api, unknown).await > before);
    let (status, _) = api.revoke_bouncer(id).await;
    assert_eq!(status, 404);

    // Refusals spend the address's auth budget: past it, 429, even for a good key.
    let good = api.create_bouncer("fw-edge-2").await;
    let mut refused = 0;
    let limited = loop {
        let (status, _) = api.stream(Some("guess"), "").await;
        if status == 429 {
            break true;
        }
        assert_eq!(status, 403);
        refused += 1;
        if refused > 8 {
            break false;
        }
    };
    assert!(limited, "guessing was never rate limited");
    let (status, _) = api.stream(Some(&good), "").await;
    assert_eq!(status, 429);
    assert!(
        metric(
            &api,
            r#"vncguard_api_bouncer_keys_refused_total{reason="rate_limited"}"#
        )
        .await
            > 0
    );
}

#[tokio::test]
async fn the_stream_answers_startup_then_what_changed_since_each_poll() {
    let api = started().await;
    let key = api.create_bouncer("fw-stream").await;
    let long = api.block("203.0.113.7", "1h").await;
    api.block("198.51.100.0/24", "2h").await;
    // A shorter ban of an address banned longer, and one that ends in a moment.
    let short = api.block("203.0.113.7", "3").await;
    let brief = api.block("192.0.2.60", "2").await;
    let client = api.pool.get().await.unwrap();
    // The responder's automatic block (as the sink writes it) and a dry run that must never show.
    client
        .batch_execute(
            "INSERT INTO decisions (decision_id, action, origin, scope, value, value_cidr, duration_secs, created_at, until, reason, created_by, dry_run)
             VALUES ('auto-1', 'block', 'automatic', 'ip', '192.0.2.9', '192.0.2.9/32', 600, now(), now() + interval '10 minutes', 'brute_force', 'policy:brute_force', false),
                    ('auto-dry', 'block', 'automatic', 'ip', '192.0.2.10', '192.0.2.10/32', 600, now(), now() + interval '10 minutes', 'brute_force', 'policy:brute_force', true)",
        )
        .await
        .unwrap();

    let (status, startup) = api.stream(Some(&key), "startup=true").await;
    assert_eq!(status, 200, "{startup}");
    let ip = entries(&startup, "new", "203.0.113.7");
    assert_eq!(ip.len(), 1, "one entry per address: {startup}");
    let ip = ip[0];
    assert_eq!(ip["uuid"], long.as_str());
    assert_eq!(ip["scope"], "Ip");
    assert_eq!(ip["type"], "ban");
    assert_eq!(ip["origin"], "analyst");
    assert_eq!(ip["scenario"], "vncguard/manual");
    assert!(ip["id"].is_i64());
    let left = (3590..=3600).map(go_duration).collect::<Vec<_>>();
    assert!(
        left.contains(&ip["duration"].as_str().unwrap().to_string()),
        "{ip}"
    );
    let range = entries(&startup, "new", "198.51.100.0/24");
    assert_eq!(range[0]["scope"], "Range");
    let auto = entries(&startup, "new", "192.0.2.9");
    assert_eq!(auto[0]["origin"], "automatic");
    assert_eq!(auto[0]["scenario"], "vncguard/brute_force");
    assert!(
        entries(&startup, "new", "192.0.2.10").is_empty(),
        "dry runs are never enforced"
    );
    // On a slow machine the two-second ban may have ended before this first poll.
    let mut seen_deleted: Vec<String> = startup["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uuid"].as_str().unwrap().to_string())
        .collect();

    // Nothing changed: nothing new.
    let (_, quiet) = api.stream(Some(&key), "").await;
    assert_eq!(quiet["new"], json!([]), "{quiet}");

    // A new block, an unblock; a HEAD in between moves nothing on.
    api.block("192.0.2.77", "1h").await;
    let head = api
        .http
        .head(api.url("/v1/decisions/stream"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    api.unblock(json!({"ip_address": "198.51.100.0/24"})).await;
    let (_, delta) = api.stream(Some(&key), "").await;
    assert_eq!(entries(&delta, "new", "192.0.2.77").len(), 1, "{delta}");
    let lifted = entries(&delta, "deleted", "198.51.100.0/24");
    assert_eq!(lifted.len(), 1, "{delta}");
    assert_eq!(lifted[0]["scope"], "Range");
    assert!(
        lifted[0]["duration"].as_str().unwrap().starts_with('-') || lifted[0]["duration"] == "0s"
    );

    // The two-second ban expires and is deleted; the three-second one on 203.0.113.7 expires
    // too, but a longer ban still holds that address, so it is never deleted.
    poll_until(&api, &key, |answer| {
        for d in answer["deleted"].as_array().unwrap() {
            seen_deleted.push(d["uuid"].as_str().unwrap().to_string());
        }
        seen_deleted.contains(&brief)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let expired = "SELECT until < now() FROM decisions WHERE decision_id = $1";
    while !client
        .query_one(expired, &[&short])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(Instant::now() < deadline, "the short ban never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, after) = api.stream(Some(&key), "").await;
    seen_deleted.extend(
        after["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["uuid"].as_str().unwrap().to_string()),
    );
    assert!(
        !seen_deleted.contains(&short) && !seen_deleted.contains(&long),
        "a longer ban still holds 203.0.113.7: {seen_deleted:?}"
    );

    // A bouncer starting again gets what ended recently as deleted, and the bans in force.
    let (_, again) = api.stream(Some(&key), "startup=true").await;
    assert_eq!(entries(&again, "deleted", "192.0.2.60").len(), 1, "{again}");
    assert_eq!(entries(&again, "deleted", "198.51.100.0/24").len(), 1);
    assert!(entries(&again, "deleted", "203.0.113.7").is_empty());
    assert_eq!(entries(&again, "new", "203.0.113.7").len(), 1);
}

#[tokio::test]
async fn a_write_committed_after_a_poll_began_is_in_the_next_one() {
    let api = started().await;
    let key = api.create_bouncer("fw-late").await;
    api.block("192.0.2.30", "1h").await;
    let (status, _) = api.stream(Some(&key), "startup=true").await;
    assert_eq!(status, 200);
    let mut writer = api.pool.get().await.unwrap();
    // A writer a minute behind (its created_at and revoked_at), committing after a poll.
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO decisions (decision_id, action, origin, scope, value, value_cidr, duration_secs, created_at, until, reason, created_by)
         VALUES ('late-1', 'block', 'automatic', 'ip', '192.0.2.31', '192.0.2.31/32', 3600, now() - interval '1 minute', now() + interval '59 minutes', 'scan', 'policy:scan');
         UPDATE decisions SET revoked_at = now() - interval '1 minute', revoked_by = 'late' WHERE value = '192.0.2.30'",
    )
    .await
    .unwrap();
    let (_, during) = api.stream(Some(&key), "").await;
    assert!(entries(&during, "new", "192.0.2.31").is_empty(), "{during}");
    assert!(
        entries(&during, "deleted", "192.0.2.30").is_empty(),
        "{during}"
    );
    tx.commit().await.unwrap();
    let (_, after) = api.stream(Some(&key), "").await;
    assert_eq!(entries(&after, "new", "192.0.2.31").len(), 1, "{after}");
    assert_eq!(
        entries(&after, "new", "192.0.2.31")[0]["scenario"],
        "vncguard/scan"
    );
    assert_eq!(entries(&after, "deleted", "192.0.2.30").len(), 1, "{after}");
}

#[tokio::test]
async fn filters_select_scopes_origins_and_scenarios_and_unknown_parameters_are_refused() {
    let api = started().await;
    let key = api.create_bouncer("fw-filters").await;
    api.block("203.0.113.20", "1h").await;
    api.block("203.0.113.0/28", "1h").await;
    let client = api.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO decisions (decision_id, action, origin, scope, value, value_cidr, duration_secs, created_at, until, reason, created_by)
             VALUES ('auto-bf', 'block', 'automatic', 'ip', '192.0.2.40', '192.0.2.40/32', 600, now(), now() + interval '10 minutes', 'bf', 'policy:brute_force'),
                    ('auto-scan', 'block', 'automatic', 'ip', '192.0.2.41', '192.0.2.41/32', 600, now(), now() + interval '10 minutes', 'scan', 'policy:scan')",
        )
        .await
        .unwrap();
    let values = |answer: &Value| {
        let mut values: Vec<String> = answer["new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["value"].as_str().unwrap().to_string())
            .collect();
        values.sort();
        values
    };
    for (query, expected) in [
        ("scopes=Range", vec!["203.0.113.0/28"]),
        ("scopes=ip&origins=analyst", vec!["203.0.113.20"]),
        ("origins=automatic", vec!["192.0.2.40", "192.0.2.41"]),
        ("scenarios_containing=BRUTE", vec!["192.0.2.40"]),
        (
            "scopes=ip&scenarios_not_containing=brute,manual",
            vec!["192.0.2.41"],
        ),
        ("scopes=country", vec![]),
        (
            "community_pull=false&additional_pull=false",
            vec!["192.0.2.40", "192.0.2.41", "203.0.113.0/28", "203.0.113.20"],
        ),
    ] {
        let (status, answer) = api
            .stream(Some(&key), &format!("startup=true&{query}"))
            .await;
        assert_eq!(status, 200, "{query}: {answer}");
        assert_eq!(values(&answer), expected, "{query}");
    }
    // Errors in CrowdSec's shape: its clients read `message`.
    for query in ["startup=yes", "startup=true&limit=10", "dedup=false"] {
        let (status, answer) = api.stream(Some(&key), query).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    // Without a key, a refusal comes before any look at the parameters.
    let (status, answer) = api.stream(None, "startup=yes").await;
    assert_eq!(status, 403);
    assert!(
        answer["message"].as_str().unwrap().contains("forbidden"),
        "{answer}"
    );
}
