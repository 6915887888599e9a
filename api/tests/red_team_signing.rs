//! Red team at the API: an analyst (or a stolen analyst token) tries to aim the firewall.
//!
//! - **Short prefix**: blocks of `0.0.0.0/0`, `::/0` and other networks wider than /24 or /48
//!   get 422 naming the limit, and nothing is published;
//! - **Protected addresses**: loopback in any spelling, a management network, an allow-listed
//!   address, and the quarantine of a management host's session get 422;
//! - **Block cap**: past the cap of blocks in force the next block gets 422 and dashboards get a
//!   `system_alert`;
//! - what the API does publish is signed with its key and normalised (IPv4-mapped to IPv4,
//!   IPv6 folded to its /64), and without a key it publishes nothing (503).

mod support;

use std::time::Duration;

use api::auth::Role;
use bus::memory::MemoryBus;
use bus::{Bus, Consumer};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::TestApi;
use tokio_tungstenite::tungstenite::Message;

async fn seeded(config: api::ApiConfig) -> (TestApi, MemoryBus) {
    let bus = MemoryBus::new(10_000);
    let api = support::start(bus.clone(), config).await;
    api.seed().await;
    (api, bus)
}

async fn block(api: &TestApi, address: &str) -> (u16, Value) {
    api.call(
        Some(Role::Analyst),
        "POST",
        "/api/firewall/block",
        Some(json!({"ip_address": address, "duration": "1h", "reason": "red team"})),
    )
    .await
}

/// Every decision published so far.
async fn published(decisions: &mut impl Consumer) -> Vec<schemas::Decision> {
    decisions
        .next_batch(100, Duration::from_millis(500))
        .await
        .unwrap()
        .iter()
        .map(|r| schemas::decode(&r.payload).unwrap())
        .collect()
}

fn refused_total(reason: &str) -> u64 {
    let needle = format!("vncguard_api_decisions_refused_total{{reason=\"{reason}\"}} ");
    telemetry::render()
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn short_prefixes_get_422_and_nothing_is_published() {
    let (api, bus) = seeded(support::config()).await;
    let mut decisions = bus
        .consumer("red-team", &[schemas::topics::DECISIONS.name])
        .unwrap();
    for (network, limit) in [
        ("0.0.0.0/0", "/24"),
        ("::/0", "/48"),
        ("10.0.0.0/8", "/24"),
        ("198.51.100.0/23", "/24"),
        ("2001:db8::/32", "/48"),
        ("::ffff:0.0.0.0/96", "/24"),
    ] {
        let (status, body) = block(&api, network).await;
        assert_eq!(status, 422, "{network}: {body}");
        assert_eq!(body["error"]["field"], "ip_address", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(limit), "{network}: {message}");
    }
    assert!(refused_total("prefix_too_short") >= 6);
    assert!(published(&mut decisions).await.is_empty());
    assert_eq!(
        api.get(Role::Viewer, "/api/firewall/rules").await["total"],
        0
    );
}

#[tokio::test]
async fn loopback_management_networks_and_the_allow_list_get_422() {
    let mut config = support::config();
    // The seeded sessions' clients are 10.0.x.y: s-260 comes from 10.0.1.4.
    config.guardrails.management = vec!["10.0.1.0/24".parse().unwrap()];
    config.guardrails.allow = vec!["192.0.2.44/32".parse().unwrap()];
    let (api, bus) = seeded(config).await;
    let mut decisions = bus
        .consumer("red-team", &[schemas::topics::DECISIONS.name])
        .unwrap();
    for (address, reason) in [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.1.9", "management network"),
        ("10.0.1.0/24", "management network"),
        ("192.0.2.44", "allow-list"),
        ("192.0.2.0/24", "allow-list"),
    ] {
        let (status, body) = block(&api, address).await;
        assert_eq!(status, 422, "{address}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{address}: {message}");
    }
    let (status, body) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/sessions/s-260/quarantine",
            Some(json!({"reason": "red team"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(published(&mut decisions).await.is_empty());
    // Outside them, the same analyst blocks and quarantines as before.
    assert_eq!(block(&api, "10.0.2.9").await.0, 201);
    let (status, _) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/sessions/s-5/quarantine",
            Some(json!({"reason": "red team"})),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn published_decisions_are_signed_and_normalised() {
    let (api, bus) = seeded(support::config()).await;
    let mut decisions = bus
        .consumer("red-team", &[schemas::topics::DECISIONS.name])
        .unwrap();
    let (status, mapped) = block(&api, "::ffff:203.0.113.9").await;
    assert_eq!(status, 201, "{mapped}");
    assert_eq!(mapped["value"], "203.0.113.9");
    assert_eq!(mapped["scope"], "ip");
    let (status, v6) = block(&api, "2001:db8:1:2::5").await;
    assert_eq!(status, 201, "{v6}");
    assert_eq!(v6["value"], "2001:db8:1:2::/64");
    assert_eq!(v6["scope"], "cidr");
    // The unblock of the address finds its folded block.
    let (status, lifted) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/firewall/unblock",
            Some(json!({"ip_address": "2001:db8:1:2::77"})),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");

    let verifier = support::SIGNER.verifier();
    let published = published(&mut decisions).await;
    assert_eq!(published.len(), 3);
    for decision in &published {
        assert_eq!(verifier.verify(decision), Ok("api-test"), "{decision:?}");
    }
    assert_eq!(published[2].action, schemas::DecisionAction::Unblock);
    assert_eq!(
        published[2].target_decision_id.as_deref(),
        v6["decision_id"].as_str()
    );
}

#[tokio::test]
async fn past_the_cap_a_block_gets_422_and_a_system_alert() {
    let mut config = support::config();
    config.guardrails.max_active_blocks = 2;
    let (api, _bus) = seeded(config).await;
    let token = api.tokens[&Role::Viewer].clone();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", api.addr))
        .await
        .unwrap();
    socket
        .send(Message::Text(
            json!({"type": "auth", "token": token}).to_string().into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let mut next_event = async || loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str::<Value>(&text).unwrap();
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no event: {other:?}"),
        }
    };
    assert_eq!(next_event().await["type"], "pong");

    assert_eq!(block(&api, "203.0.113.1").await.0, 201);
    assert_eq!(block(&api, "203.0.113.2").await.0, 201);
    let (status, body) = block(&api, "203.0.113.3").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DECISION_MAX_ACTIVE_BLOCKS"),
        "{body}"
    );
    let alert = loop {
        let event = next_event().await;
        if event["type"] == "system_alert" {
            break event;
        }
    };
    assert_eq!(alert["payload"]["alert"], "block_cap_reached", "{alert}");
    assert_eq!(alert["payload"]["active_blocks"], 2);
    assert!(refused_total("block_cap") >= 1);

    // Lifting one makes room again.
    let (status, _) = api
        .call(
            Some(Role::Analyst),
            "POST",
            "/api/firewall/unblock",
            Some(json!({"ip_address": "203.0.113.1"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(block(&api, "203.0.113.3").await.0, 201);
}

#[tokio::test]
async fn without_a_signing_key_no_decision_is_made() {
    let mut config = support::config();
    config.decision_signer = None;
    let (api, bus) = seeded(config).await;
    let mut decisions = bus
        .consumer("red-team", &[schemas::topics::DECISIONS.name])
        .unwrap();
    let (status, body) = block(&api, "203.0.113.20").await;
    assert_eq!(status, 503, "{body}");
    assert!(published(&mut decisions).await.is_empty());
}
