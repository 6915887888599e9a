//! Enforcement (`--enforce`): the agent applies the decisions of `vnc.decisions` to its host
//! with nftables.
//!
//! The agent owns the table `inet vncguard`: sets `blocked_v4`/`blocked_v6` (addresses and
//! CIDRs, `flags interval, timeout`), `quarantine_v4`/`quarantine_v6` (exact client→server
//! 4-tuples) and a chain hooked at `input` priority -10 that drops packets to the VNC ports from
//! blocked sources — established connections included — and packets of quarantined
//! connections. Every element carries `timeout` = the decision's remaining time, so bans expire
//! in the kernel even when the agent is gone. After a block the blocked source's VNC sockets are
//! killed (`ss -K`, and `conntrack -D` when installed); a quarantine kills that one connection.
//!
//! The agent reads `vnc.decisions` (compacted) from its beginning at every start, in a consumer
//! group of its own that never commits: a restarted agent re-applies what is still in force with
//! the time that remains. Expired and dry-run decisions are skipped; an unblock removes its
//! target's element. Without the privilege to use nftables the agent says so and keeps
//! monitoring.
//!
//! Nothing on the topic is trusted: anyone who can write to it could otherwise block everything
//! or lift real bans. Every decision must carry an Ed25519 signature that verifies under one of
//! the configured public keys (`DECISION_PUBLIC_KEYS`, [`trust::signing`]), and a block must pass
//! the guardrails ([`trust::guardrails`]: no loopback, no address of this host, no management or
//! allow-listed network, no prefix wider than /24 or /48, at most so many blocks in force). What
//! fails is refused, counted (`vncguard_agent_enforce_refused_total{reason}`) and logged.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use schemas::{Decision, DecisionAction, DecisionScope, SessionEvent, SessionEventKind, Timestamp};
use telemetry::Counter;
use trust::{DecisionVerifier, Guardrails, Refusal, SignatureError};

use crate::config::PortSet;
use crate::output::{EventSink, SinkError};

/// The nftables table the agent owns.
pub const TABLE: &str = "vncguard";

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("no privilege to use nftables (`nft list tables` failed: {0})")]
    NotPermitted(String),
}

/// Runs the host's commands (`nft`, `ss`, `conntrack`), optionally inside a network namespace
/// (`ip netns exec NS`), the way the tests use it.
#[derive(Debug, Clone, Default)]
pub struct HostCommands {
    prefix: Vec<String>,
}

impl HostCommands {
    /// Commands on this host.
    pub fn local() -> Self {
        HostCommands::default()
    }

    /// Commands inside network namespace `namespace`.
    pub fn in_namespace(namespace: &str) -> Self {
        HostCommands {
            prefix: ["ip", "netns", "exec", namespace]
                .map(String::from)
                .to_vec(),
        }
    }

    /// Runs `program args`, feeding `stdin`; its standard output on success.
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, EnforceError> {
        let mut line: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        line.push(program);
        line.extend_from_slice(args);
        let spawn_error = |source| EnforceError::Spawn {
            program: line[0].to_string(),
            source,
        };
        let mut child = Command::new(line[0])
            .args(&line[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(EnforceError::Failed {
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// `nft -f -` with `script`: one transaction, all or nothing.
    pub fn nft_script(&self, script: &str) -> Result<(), EnforceError> {
        self.run("nft", &["-f", "-"], Some(script)).map(|_| ())
    }

    fn has_program(&self, program: &str) -> bool {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        })
    }
}

/// An address or network in a blocked set, as nft writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    set: &'static str,
    text: String,
}

/// The element blocking `network`: a bare address for a single host, else the network.
fn element_of(network: IpNet) -> Element {
    let text = trust::guardrails::value_of(&network);
    let set = match network {
        IpNet::V4(_) => "blocked_v4",
        IpNet::V6(_) => "blocked_v6",
    };
    Element { set, text }
}

/// The client and server address of every open session of this agent, for quarantine.
/// Bounded: past `capacity` sessions the oldest is forgotten.
#[derive(Debug, Clone)]
pub struct SessionIndex {
    inner: Arc<Mutex<SessionTable>>,
}

#[derive(Debug)]
struct SessionTable {
    capacity: usize,
    addresses: HashMap<String, (SocketAddr, SocketAddr)>,
    order: VecDeque<String>,
}

impl SessionIndex {
    pub fn new(capacity: usize) -> Self {
        SessionIndex {
            inner: Arc::new(Mutex::new(SessionTable {
                capacity: capacity.max(1),
                addresses: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    /// Follows one session event: `started` adds the session, `ended` removes it.
    pub fn track(&self, event: &SessionEvent) {
        let s = &event.summary;
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event.kind {
            SessionEventKind::Ended => {
                table.addresses.remove(&s.session_id);
            }
            _ if table.addresses.contains_key(&s.session_id) => {}
            _ => {
                let (Ok(client), Ok(server)) =
                    (s.client_ip.parse::<IpAddr>(), s.server_ip.parse::<IpAddr>())
                else {
                    return;
                };
                let port = |p: i32| u16::try_from(p).unwrap_or(0);
                table.addresses.insert(
                    s.session_id.clone(),
                    (
                        SocketAddr::new(client, port(s.client_port)),
                        SocketAddr::new(server, port(s.server_port)),
                    ),
                );
                table.order.push_back(s.session_id.clone());
                while table.order.len() > table.capacity {
                    if let Some(oldest) = table.order.pop_front() {
                        table.addresses.remove(&oldest);
                    }
                }
            }
        }
        if table.order.len() > 2 * table.addresses.len() + 64 {
            let SessionTable {
                order, addresses, ..
            } = &mut *table;
            order.retain(|id| addresses.contains_key(id));
        }
    }

    /// (client, server) of an open session.
    pub fn lookup(&self, session_id: &str) -> Option<(SocketAddr, SocketAddr)> {
        let table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        table.addresses.get(session_id).copied()
    }
}

/// An event sink that keeps a [`SessionIndex`] current and passes everything on.
pub struct SessionTracking {
    inner: Box<dyn EventSink>,
    index: SessionIndex,
}

impl SessionTracking {
    pub fn new(inner: Box<dyn EventSink>, index: SessionIndex) -> Self {
        SessionTracking { inner, index }
    }
}

impl EventSink for SessionTracking {
    fn session_event(&mut self, event: &SessionEvent) -> Result<(), SinkError> {
        self.index.track(event);
        self.inner.session_event(event)
    }

    fn heartbeat(&mut self, heartbeat: &schemas::AgentHeartbeat) -> Result<(), SinkError> {
        self.inner.heartbeat(heartbeat)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }
}

/// What applying one decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The source's element is in the blocked set with the remaining time.
    Blocked,
    /// The target's element is gone.
    Unblocked,
    /// The connection is cut and its 4-tuple dropped for the remaining time.
    Quarantined,
    Skipped(Skip),
    /// Not trusted: counted and logged, never applied.
    Refused(Refused),
}

/// Why a decision is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Unsigned, signed by a key not configured, or a signature that does not verify.
    Signature(SignatureError),
    /// Signed, but what it would block is protected or too wide, or the cap is reached.
    Guardrail(Refusal),
}

impl Refused {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Signature(e) => e.reason(),
            Refused::Guardrail(r) => r.reason(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Signature(e) => e.fmt(f),
            Refused::Guardrail(r) => r.fmt(f),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Recorded, not to be enforced.
    DryRun,
    /// Its `until` has passed.
    Expired,
    /// An unblock lifted this block before.
    Lifted,
    /// An unblock whose value is no address or network, or a block of a session.
    InvalidValue,
    /// Quarantine of a session this agent does not have open.
    UnknownSession,
}

impl Skip {
    fn label(self) -> &'static str {
        match self {
            Skip::DryRun => "dry_run",
            Skip::Expired => "expired",
            Skip::Lifted => "lifted",
            Skip::InvalidValue => "invalid_value",
            Skip::UnknownSession => "unknown_session",
        }
    }
}

fn rules_counter(result: &'static str) -> &'static Counter {
    telemetry::counter(
        "vncguard_agent_enforce_rules_total",
        "nftables changes for decisions: applied (block, quarantine), removed (unblock), failed.",
        &[("result", result)],
    )
}

fn skipped_counter(skip: Skip) -> &'static Counter {
    telemetry::counter(
        "vncguard_agent_enforce_skipped_total",
        "Decisions not enforced, by reason.",
        &[("reason", skip.label())],
    )
}

fn refused_counter(refused: &Refused) -> &'static Counter {
    telemetry::counter(
        "vncguard_agent_enforce_refused_total",
        "Decisions refused as untrusted, by reason: unsigned, unknown_key, forged (signature); prefix_too_short, loopback, own_address, management_network, allow_listed, block_cap, invalid_value (guardrails).",
        &[("reason", refused.reason())],
    )
}

fn active_blocks_gauge() -> &'static telemetry::Gauge {
    telemetry::gauge(
        "vncguard_agent_enforce_active_blocks",
        "Blocks this agent applied that are in force (DECISION_MAX_ACTIVE_BLOCKS caps them).",
        &[],
    )
}

/// Unblocks remembered, so a block read after its unblock (the compacted topic keeps the
/// latest record per key, not the order between keys) is not applied again.
const LIFTED_MEMORY: usize = 10_000;

/// What decides whether a decision is trusted: the keys it must be signed with and the
/// guardrails a block must pass.
#[derive(Debug, Clone)]
pub struct DecisionTrust {
    pub verifier: DecisionVerifier,
    pub guardrails: Guardrails,
}

/// A block this agent applied.
#[derive(Debug, Clone)]
struct AppliedBlock {
    element: Element,
    until: Timestamp,
}

/// Applies decisions to the host's nftables.
pub struct Enforcer {
    host: HostCommands,
    ports: Vec<(u16, u16)>,
    /// Blocks applied by this agent, by decision id; bounded by the guardrails' cap (expired
    /// ones are dropped before it is checked).
    blocks: HashMap<String, AppliedBlock>,
    lifted: VecDeque<String>,
    sessions: SessionIndex,
    conntrack: bool,
    trust: DecisionTrust,
}

/// The addresses of this host (or namespace), from `ip -j address show`.
fn own_addresses(host: &HostCommands) -> Result<Vec<IpAddr>, EnforceError> {
    let text = host.run("ip", &["-j", "address", "show"], None)?;
    let interfaces: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EnforceError::Failed {
            command: "ip -j address show".into(),
            stderr: format!("unreadable JSON: {e}"),
        })?;
    Ok(interfaces
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|interface| {
            interface["addr_info"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|address| address["local"].as_str()?.parse().ok())
        .collect())
}

impl Enforcer {
    /// Checks the privilege (`nft list tables`) and installs the agent's table, sets and chain.
    /// Elements already in the sets (bans of an earlier run still in force) are kept. The
    /// host's own addresses join the guardrails' protected ones.
    pub fn start(
        host: HostCommands,
        ports: &PortSet,
        sessions: SessionIndex,
        mut trust: DecisionTrust,
    ) -> Result<Enforcer, EnforceError> {
        host.run("nft", &["list", "tables"], None)
            .map_err(|e| EnforceError::NotPermitted(e.to_string()))?;
        trust.guardrails.own_addresses.extend(own_addresses(&host)?);
        tracing::info!(
            keys = ?trust.verifier.key_ids().collect::<Vec<_>>(),
            own_addresses = ?trust.guardrails.own_addresses,
            management = ?trust.guardrails.management,
            allow = ?trust.guardrails.allow,
            min_prefix_v4 = trust.guardrails.min_prefix_v4,
            min_prefix_v6 = trust.guardrails.min_prefix_v6,
            fold_v6 = trust.guardrails.fold_v6,
            max_active_blocks = trust.guardrails.max_active_blocks,
            "decisions must be signed by one of these keys and pass the guardrails"
        );
        let enforcer = Enforcer {
            conntrack: host.has_program("conntrack"),
            host,
            ports: ports.ranges().collect(),
            blocks: HashMap::new(),
            lifted: VecDeque::new(),
            sessions,
            trust,
        };
        enforcer.host.nft_script(&enforcer.ruleset())?;
        Ok(enforcer)
    }

    fn port_match(&self) -> String {
        if self.ports.is_empty() {
            return "meta l4proto tcp".to_string();
        }
        let ranges: Vec<String> = self
            .ports
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        format!("tcp dport {{ {} }}", ranges.join(", "))
    }

    fn ruleset(&self) -> String {
        let ports = self.port_match();
        format!(
            "add table inet {TABLE}
add set inet {TABLE} blocked_v4 {{ type ipv4_addr; flags interval, timeout; }}
add set inet {TABLE} blocked_v6 {{ type ipv6_addr; flags interval, timeout; }}
add set inet {TABLE} quarantine_v4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; flags timeout; }}
add set inet {TABLE} quarantine_v6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; flags timeout; }}
add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}
flush chain inet {TABLE} input
add rule inet {TABLE} input {ports} ip saddr @blocked_v4 drop
add rule inet {TABLE} input {ports} ip6 saddr @blocked_v6 drop
add rule inet {TABLE} input ip saddr . tcp sport . ip daddr . tcp dport @quarantine_v4 drop
add rule inet {TABLE} input ip6 saddr . tcp sport . ip6 daddr . tcp dport @quarantine_v6 drop
"
        )
    }

    /// Applies `decision` at `now`. Errors are counted as failed rules.
    pub fn apply(&mut self, decision: &Decision, now: Timestamp) -> Result<Applied, EnforceError> {
        let result = self.apply_uncounted(decision, now);
        match &result {
            Ok(Applied::Blocked | Applied::Quarantined) => rules_counter("applied").inc(),
            Ok(Applied::Unblocked) => rules_counter("removed").inc(),
            Ok(Applied::Skipped(skip)) => skipped_counter(*skip).inc(),
            Ok(Applied::Refused(refused)) => {
                refused_counter(refused).inc();
                tracing::warn!(
                    decision_id = %decision.decision_id,
                    action = ?decision.action,
                    value = %decision.value,
                    key_id = ?decision.key_id,
                    reason = refused.reason(),
                    error = %refused,
                    "decision refused"
                );
            }
            Err(_) => rules_counter("failed").inc(),
        }
        result
    }

    fn apply_uncounted(
        &mut self,
        decision: &Decision,
        now: Timestamp,
    ) -> Result<Applied, EnforceError> {
        if let Err(e) = self.trust.verifier.verify(decision) {
            return Ok(Applied::Refused(Refused::Signature(e)));
        }
        if decision.dry_run {
            return Ok(Applied::Skipped(Skip::DryRun));
        }
        match decision.action {
            DecisionAction::Unblock => self.unblock(decision),
            _ if decision.until <= now => {
                self.blocks.remove(&decision.decision_id);
                Ok(Applied::Skipped(Skip::Expired))
            }
            DecisionAction::Block if self.lifted.contains(&decision.decision_id) => {
                Ok(Applied::Skipped(Skip::Lifted))
            }
            DecisionAction::Block => self.block(decision, now),
            DecisionAction::Quarantine => self.quarantine(decision, remaining_ms(decision, now)),
        }
    }

    fn block(&mut self, decision: &Decision, now: Timestamp) -> Result<Applied, EnforceError> {
        if decision.scope == DecisionScope::Session {
            return Ok(Applied::Skipped(Skip::InvalidValue));
        }
        let network = match self.trust.guardrails.check_block(&decision.value) {
            Ok(network) => network,
            Err(refusal) => return Ok(Applied::Refused(Refused::Guardrail(refusal))),
        };
        // An extension of a block in force adds none; a new one must fit under the cap.
        self.blocks.retain(|_, block| block.until > now);
        if !self.blocks.contains_key(&decision.decision_id) {
            if let Err(refusal) = self.trust.guardrails.check_capacity(self.blocks.len()) {
                tracing::error!(
                    active = self.blocks.len(),
                    max = self.trust.guardrails.max_active_blocks,
                    "ALERT: the cap of active blocks is reached; new blocks are refused"
                );
                return Ok(Applied::Refused(Refused::Guardrail(refusal)));
            }
        }
        let element = element_of(network);
        let timeout_ms = remaining_ms(decision, now);
        // Add, delete, add in one transaction: the element exists afterwards with exactly this
        // timeout, whether it was there (an earlier run, an extension) or not.
        let Element { set, text } = &element;
        let add = format!("add element inet {TABLE} {set} {{ {text} timeout {timeout_ms}ms }}\n");
        let script = format!("{add}delete element inet {TABLE} {set} {{ {text} }}\n{add}");
        self.host.nft_script(&script)?;
        tracing::info!(decision_id = %decision.decision_id, element = %text, timeout_ms, key_id = ?decision.key_id, "blocked");
        self.kill_sockets(&element);
        self.blocks.insert(
            decision.decision_id.clone(),
            AppliedBlock {
                element,
                until: decision.until,
            },
        );
        active_blocks_gauge().set(i64::try_from(self.blocks.len()).unwrap_or(i64::MAX));
        Ok(Applied::Blocked)
    }

    /// Ends the blocked source's VNC connections that the input drop would only starve.
    fn kill_sockets(&self, element: &Element) {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|(lo, hi)| format!("( sport >= :{lo} and sport <= :{hi} )"))
            .collect();
        let filter = format!("dst {} and ( {} )", element.text, ports.join(" or "));
        let mut args = vec!["-K"];
        args.extend(filter.split_whitespace());
        if let Err(e) = self.host.run("ss", &args, None) {
            tracing::debug!(error = %e, "ss -K failed");
        }
        if self.conntrack {
            if let Err(e) = self
                .host
                .run("conntrack", &["-D", "-s", &element.text], None)
            {
                tracing::debug!(error = %e, "conntrack -D found nothing to delete");
            }
        }
    }

    fn unblock(&mut self, decision: &Decision) -> Result<Applied, EnforceError> {
        let target = decision.target_decision_id.as_deref();
        let element = target
            .and_then(|id| self.blocks.remove(id))
            .map(|block| block.element)
            .or_else(|| {
                self.trust
                    .guardrails
                    .target(&decision.value)
                    .map(element_of)
            });
        active_blocks_gauge().set(i64::try_from(self.blocks.len()).unwrap_or(i64::MAX));
        if let Some(id) = target {
            if !self.lifted.iter().any(|known| known == id) {
                self.lifted.push_back(id.to_string());
                if self.lifted.len() > LIFTED_MEMORY {
                    self.lifted.pop_front();
                }
            }
        }
        let Some(Element { set, text }) = element else {
            return Ok(Applied::Skipped(Skip::InvalidValue));
        };
        // Add then delete: succeeds whether or not the element is (still) there.
        let script = format!(
            "add element inet {TABLE} {set} {{ {text} timeout 1s }}\ndelete element inet {TABLE} {set} {{ {text} }}\n"
        );
        self.host.nft_script(&script)?;
        tracing::info!(decision_id = %decision.decision_id, target = ?target, element = %text, "unblocked");
        Ok(Applied::Unblocked)
    }

    fn quarantine(
        &mut self,
        decision: &Decision,
        timeout_ms: i64,
    ) -> Result<Applied, EnforceError> {
        let Some((client, server)) = self.sessions.lookup(&decision.value) else {
            return Ok(Applied::Skipped(Skip::UnknownSession));
        };
        if let Err(refusal) = self.trust.guardrails.check_address(client.ip()) {
            return Ok(Applied::Refused(Refused::Guardrail(refusal)));
        }
        let set = if client.is_ipv4() {
            "quarantine_v4"
        } else {
            "quarantine_v6"
        };
        let tuple = format!(
            "{} . {} . {} . {}",
            client.ip(),
            client.port(),
            server.ip(),
            server.port()
        );
        self.host.nft_script(&format!(
            "add element inet {TABLE} {set} {{ {tuple} timeout {timeout_ms}ms }}\n"
        ))?;
        let (src, dst) = (format!("{server}"), format!("{client}"));
        if let Err(e) = self.host.run("ss", &["-K", "src", &src, "dst", &dst], None) {
            tracing::debug!(error = %e, "ss -K failed");
        }
        tracing::info!(decision_id = %decision.decision_id, session_id = %decision.value, %client, %server, "quarantined");
        Ok(Applied::Quarantined)
    }
}

fn remaining_ms(decision: &Decision, now: Timestamp) -> i64 {
    (decision.until - now).num_milliseconds().max(1)
}

/// Applies decisions from `consumer` (reading `vnc.decisions`) until `stop` resolves. Offsets
/// are never stored: every start reads the compacted topic from its beginning and restores
/// what is still in force.
pub async fn run<C: bus::Consumer>(
    mut consumer: C,
    mut enforcer: Enforcer,
    stop: impl Future<Output = ()>,
) {
    let undecodable = telemetry::counter(
        "vncguard_agent_enforce_undecodable_total",
        "Records of vnc.decisions that do not decode as a decision.",
        &[],
    );
    let mut read_before_idle = 0u64;
    let mut caught_up = false;
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            _ = &mut stop => return,
            batch = consumer.next_batch(500, Duration::from_millis(500)) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "reading decisions failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() && !caught_up && read_before_idle > 0 {
            caught_up = true;
            tracing::info!(
                decisions = read_before_idle,
                "decisions restored; following vnc.decisions"
            );
        }
        for record in &batch {
            let decision = match schemas::decode::<Decision>(&record.payload) {
                Ok(decision) => decision,
                Err(e) => {
                    undecodable.inc();
                    tracing::warn!(error = %e, offset = record.offset, "skipping an undecodable decision");
                    continue;
                }
            };
            read_before_idle += 1;
            let result =
                tokio::task::block_in_place(|| enforcer.apply(&decision, chrono::Utc::now()));
            match result {
                Ok(applied) => {
                    tracing::debug!(decision_id = %decision.decision_id, ?applied, "decision handled")
                }
                Err(e) => {
                    tracing::error!(decision_id = %decision.decision_id, error = %e, "decision not enforced")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_addresses_or_networks_without_host_bits() {
        let guardrails = Guardrails::default();
        let element = |v: &str| {
            guardrails
                .target(v)
                .map(element_of)
                .map(|e| (e.set, e.text))
        };
        assert_eq!(element("10.1.2.3"), Some(("blocked_v4", "10.1.2.3".into())));
        assert_eq!(
            element("10.1.2.3/24"),
            Some(("blocked_v4", "10.1.2.0/24".into()))
        );
        assert_eq!(
            element("::ffff:10.1.2.3"),
            Some(("blocked_v4", "10.1.2.3".into()))
        );
        assert_eq!(
            element("2001:db8::7"),
            Some(("blocked_v6", "2001:db8::/64".into()))
        );
        assert_eq!(element("10.1.2.3/40"), None);
        assert_eq!(element("session-1"), None);
    }
}
