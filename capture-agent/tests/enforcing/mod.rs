//! Shared by the tests that run an enforcing agent in a network namespace: the lab, the agent
//! with `--enforce` trusting one signer's key, and what its nftables sets hold.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::time::Duration;

use testkit::netns::{Lab, SetElement};
use testkit::wait_for;

/// The elements of the agent's set `set` (`blocked_v4`, `blocked_v6`) in namespace `i`.
pub fn elements(lab: &Lab, i: usize, set: &str) -> Vec<SetElement> {
    lab.nft_set(i, "inet", "vncguard", set)
}

/// The elements of the agent's set of blocked IPv4 sources in namespace `i`.
pub fn blocked(lab: &Lab, i: usize) -> Vec<SetElement> {
    elements(lab, i, "blocked_v4")
}

pub fn is_blocked(lab: &Lab, i: usize, source: &str) -> bool {
    blocked(lab, i).iter().any(|e| e.address == source)
}

/// The agent with `--enforce` inside namespace `i`, trusting `signer`'s decisions, with the
/// further environment `extra`; its pid, once it enforces.
pub fn start_agent(
    lab: &mut Lab,
    i: usize,
    brokers: &str,
    signer: &trust::DecisionSigner,
    extra: &[(&str, &str)],
    log: &str,
) -> u32 {
    let mut agent = lab.command(Some(i), Path::new(env!("CARGO_BIN_EXE_capture-agent")));
    agent
        .args([
            "--interface",
            &lab.interface(i),
            "--sink",
            "kafka",
            "--enforce",
        ])
        .args(["--agent-id", "enforce-test", "--heartbeat-interval", "1s"])
        .env("KAFKA_BROKERS", brokers)
        .env("DECISION_PUBLIC_KEYS", signer.public_key_line())
        .env("LOG_FORMAT", "json")
        .envs(extra.iter().copied());
    let pid = lab.spawn(agent, log);
    wait_for("the agent enforcing", Duration::from_secs(60), || {
        lab.log(log).contains("enforcing decisions")
    });
    pid
}

/// A lab of `count` namespaces in `10.200.NET.0/24` where `nft` works, or `None` (and why).
pub fn privileged_lab(net: u8, count: usize) -> Option<Lab> {
    let lab = Lab::create_or_skip(net, count)?;
    if let Err(e) = lab.run_in(0, &["nft", "list", "tables"]) {
        println!("SKIPPED: nft unusable (apt: nftables): {e}");
        return None;
    }
    Some(lab)
}
