//! Guardrails: what no decision may block, however well it is signed. The API refuses such a
//! block with 422 before it is published; every agent refuses it again where it would be applied
//! (counted and logged), so a leaked signing key or a bad policy cannot aim the firewall at the
//! network's own infrastructure or at everyone.
//!
//! A block's value is first normalised ([`Guardrails::target`]): an IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, `::ffff:192.0.2.0/120`) becomes the IPv4 one, host bits are cleared, and an
//! IPv6 address or narrow network is folded to its /64 (`DECISION_FOLD_V6`, default 64): a host
//! typically gets a whole /64 (RFC 6177), so an attacker walks through a /64 freely and a /128 ban
//! holds nothing. Then a block is refused ([`Refusal`]) when
//!
//! - its prefix is shorter than /24 for IPv4 (`DECISION_MIN_PREFIX_V4`) or /48 for IPv6
//!   (`DECISION_MIN_PREFIX_V6`): a /24 is the smallest network routed on the Internet and a /48
//!   the usual end-site assignment (RFC 6177), so a block wider than one site's network is an
//!   operator's deliberate choice, set here, never something a decision may do on its own;
//! - it covers loopback (127.0.0.0/8, ::1), the agent's own addresses, a management network
//!   (`MANAGEMENT_NETWORKS`) or an allow-listed network (`RESPONSE_ALLOW`): overlapping counts,
//!   so a /24 around a management host is refused as the host is;
//! - as many blocks as the cap (`DECISION_MAX_ACTIVE_BLOCKS`, default 10,000) are in force.
//!   A policy blocks one attacking source at a time for 30 min or more, so a site's automatic
//!   blocks stay in the hundreds; 10,000 leaves room for a large incident, yet stops a runaway
//!   rule or a leaked key from turning the firewall against a whole population. nftables
//!   interval sets hold far more, so the cap is about blast radius, not capacity.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The defaults (see the module documentation for where each comes from).
pub const DEFAULT_MIN_PREFIX_V4: u8 = 24;
pub const DEFAULT_MIN_PREFIX_V6: u8 = 48;
pub const DEFAULT_FOLD_V6: u8 = 64;
pub const DEFAULT_MAX_ACTIVE_BLOCKS: usize = 10_000;

/// Why a block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0:?} is not an address or a network")]
    NotAnAddress(String),
    #[error("{network} is wider than /{min}, the widest block allowed for {family} (DECISION_MIN_PREFIX_{env})", family = if network.addr().is_ipv4() { "IPv4" } else { "IPv6" }, env = if network.addr().is_ipv4() { "V4" } else { "V6" })]
    PrefixTooShort { network: IpNet, min: u8 },
    #[error("{network} covers loopback")]
    Loopback { network: IpNet },
    #[error("{network} covers {address}, an address of this host")]
    OwnAddress { network: IpNet, address: IpAddr },
    #[error("{network} covers the management network {protected} (MANAGEMENT_NETWORKS)")]
    ManagementNetwork { network: IpNet, protected: IpNet },
    #[error("{network} covers {protected}, on the allow-list (RESPONSE_ALLOW)")]
    AllowListed { network: IpNet, protected: IpNet },
    #[error("{active} blocks are in force, the most allowed (DECISION_MAX_ACTIVE_BLOCKS={max})")]
    AtCapacity { active: usize, max: usize },
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAnAddress(_) => "invalid_value",
            Refusal::PrefixTooShort { .. } => "prefix_too_short",
            Refusal::Loopback { .. } => "loopback",
            Refusal::OwnAddress { .. } => "own_address",
            Refusal::ManagementNetwork { .. } => "management_network",
            Refusal::AllowListed { .. } => "allow_listed",
            Refusal::AtCapacity { .. } => "block_cap",
        }
    }
}

/// The guardrails of one API or agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// IPv6 blocks narrower than this are widened to it; 128 keeps them as they are.
    pub fold_v6: u8,
    pub allow: Vec<IpNet>,
    pub management: Vec<IpNet>,
    /// This host's addresses (agents fill it from their interfaces).
    pub own_addresses: Vec<IpAddr>,
    pub max_active_blocks: usize,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            min_prefix_v4: DEFAULT_MIN_PREFIX_V4,
            min_prefix_v6: DEFAULT_MIN_PREFIX_V6,
            fold_v6: DEFAULT_FOLD_V6,
            allow: Vec::new(),
            management: Vec::new(),
            own_addresses: Vec::new(),
            max_active_blocks: DEFAULT_MAX_ACTIVE_BLOCKS,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn unmap(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `text` as a network: an address (a /32 or /128) or a CIDR, IPv4-mapped IPv6 as IPv4, host
/// bits cleared.
pub fn normalise(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let network = match text.parse::<IpNet>() {
        Ok(network) => network,
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    let network = match network {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => network,
        },
        _ => network,
    };
    Some(network.trunc())
}

/// Whether `network` is one host (a /32 or /128).
pub fn is_host(network: &IpNet) -> bool {
    network.prefix_len() == network.max_prefix_len()
}

/// `network` as a decision's value: the bare address for one host, else the CIDR.
pub fn value_of(network: &IpNet) -> String {
    if is_host(network) {
        network.addr().to_string()
    } else {
        network.to_string()
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn loopback_networks() -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("/8").trunc()),
        IpNet::V6(Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).expect("/128")),
    ]
}

impl Guardrails {
    /// The network a block of `value` applies to: normalised, IPv6 folded to `fold_v6`.
    pub fn target(&self, value: &str) -> Option<IpNet> {
        match normalise(value)? {
            IpNet::V6(v6) if v6.prefix_len() > self.fold_v6 => Some(IpNet::V6(
                Ipv6Net::new(v6.addr(), self.fold_v6).ok()?.trunc(),
            )),
            network => Some(network),
        }
    }

    /// The network a block of `value` applies to, or why it may not be blocked. The number of
    /// blocks in force is checked apart ([`Self::check_capacity`]), since only a new block
    /// adds one.
    pub fn check_block(&self, value: &str) -> Result<IpNet, Refusal> {
        let network = self
            .target(value)
            .ok_or_else(|| Refusal::NotAnAddress(value.to_string()))?;
        let min = match network {
            IpNet::V4(_) => self.min_prefix_v4,
            IpNet::V6(_) => self.min_prefix_v6,
        };
        if network.prefix_len() < min {
            return Err(Refusal::PrefixTooShort { network, min });
        }
        self.check_protected(network)?;
        Ok(network)
    }

    /// Whether connections of `address` may be cut (a quarantine): not when it is loopback,
    /// this host, a management or an allow-listed network.
    pub fn check_address(&self, address: IpAddr) -> Result<(), Refusal> {
        self.check_protected(IpNet::from(unmap(address)))
    }

    fn check_protected(&self, network: IpNet) -> Result<(), Refusal> {
        if loopback_networks().iter().any(|lo| overlaps(lo, &network)) {
            return Err(Refusal::Loopback { network });
        }
        if let Some(&address) = self
            .own_addresses
            .iter()
            .map(|a| unmap(*a))
            .find(|a| network.contains(a))
            .as_ref()
        {
            return Err(Refusal::OwnAddress { network, address });
        }
        if let Some(&protected) = self.management.iter().find(|m| overlaps(m, &network)) {
            return Err(Refusal::ManagementNetwork { network, protected });
        }
        if let Some(&protected) = self.allow.iter().find(|m| overlaps(m, &network)) {
            return Err(Refusal::AllowListed { network, protected });
        }
        Ok(())
    }

    /// Whether one more block may come into force while `active` are.
    pub fn check_capacity(&self, active: usize) -> Result<(), Refusal> {
        if active >= self.max_active_blocks {
            return Err(Refusal::AtCapacity {
                active,
                max: self.max_active_blocks,
            });
        }
        Ok(())
    }
}

/// An address or CIDR of a list option.
fn parse_network(text: &str) -> Result<IpNet, String> {
    normalise(text).ok_or_else(|| format!("{text:?} is not an address or CIDR"))
}

/// The guardrail options, the same on the API and every agent.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardrailArgs {
    /// Addresses and CIDRs no decision may block (comma-separated); the responder's allow-list.
    #[arg(long = "allow", env = "RESPONSE_ALLOW", value_delimiter = ',', value_parser = parse_network)]
    pub allow: Vec<IpNet>,
    /// Management networks no decision may block (comma-separated addresses and CIDRs).
    #[arg(long, env = "MANAGEMENT_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub management_networks: Vec<IpNet>,
    /// Shortest IPv4 prefix a decision may block (a /24 is one site's network).
    #[arg(long, env = "DECISION_MIN_PREFIX_V4", default_value_t = DEFAULT_MIN_PREFIX_V4, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix a decision may block (a /48 is one site's assignment).
    #[arg(long, env = "DECISION_MIN_PREFIX_V6", default_value_t = DEFAULT_MIN_PREFIX_V6, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub min_prefix_v6: u8,
    /// IPv6 blocks narrower than this prefix are widened to it (128: blocks stay as given).
    #[arg(long, env = "DECISION_FOLD_V6", default_value_t = DEFAULT_FOLD_V6, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub fold_v6: u8,
    /// Most blocks in force at once; past it new blocks are refused and an alert raised.
    #[arg(long, env = "DECISION_MAX_ACTIVE_BLOCKS", default_value_t = DEFAULT_MAX_ACTIVE_BLOCKS)]
    pub max_active_blocks: usize,
}

impl GuardrailArgs {
    pub fn guardrails(&self) -> Guardrails {
        Guardrails {
            min_prefix_v4: self.min_prefix_v4,
            min_prefix_v6: self.min_prefix_v6,
            fold_v6: self.fold_v6,
            allow: self.allow.clone(),
            management: self.management_networks.clone(),
            own_addresses: Vec::new(),
            max_active_blocks: self.max_active_blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn values_are_normalised_and_ipv6_folded_to_a_64() {
        let g = Guardrails::default();
        assert_eq!(g.target("192.0.2.7"), Some(net("192.0.2.7/32")));
        assert_eq!(g.target("192.0.2.7/24"), Some(net("192.0.2.0/24")));
        assert_eq!(g.target("::ffff:192.0.2.7"), Some(net("192.0.2.7/32")));
        assert_eq!(g.target("::ffff:192.0.2.7/120"), Some(net("192.0.2.0/24")));
        assert_eq!(
            g.target("2001:db8:1:2:3:4:5:6"),
            Some(net("2001:db8:1:2::/64"))
        );
        assert_eq!(
            g.target("2001:db8:1:2:3::/80"),
            Some(net("2001:db8:1:2::/64"))
        );
        assert_eq!(g.target("2001:db8:1::/48"), Some(net("2001:db8:1::/48")));
        let exact = Guardrails {
            fold_v6: 128,
            ..Guardrails::default()
        };
        assert_eq!(exact.target("2001:db8::6"), Some(net("2001:db8::6/128")));
        assert_eq!(g.target("session-1"), None);
        assert_eq!(g.target("10.0.0.1/33"), None);
    }

    #[test]
    fn prefixes_wider_than_a_site_are_refused_unless_configured() {
        let g = Guardrails::default();
        for value in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "192.0.2.0/23",
            "::/0",
            "2001:db8::/32",
            "::ffff:0.0.0.0/96",
        ] {
            let refusal = g.check_block(value).unwrap_err();
            assert_eq!(refusal.reason(), "prefix_too_short", "{value}: {refusal}");
        }
        assert_eq!(g.check_block("192.0.2.0/24"), Ok(net("192.0.2.0/24")));
        assert_eq!(g.check_block("2001:db8:1::/48"), Ok(net("2001:db8:1::/48")));
        let wide = Guardrails {
            min_prefix_v4: 16,
            ..Guardrails::default()
        };
        assert_eq!(wide.check_block("10.1.0.0/16"), Ok(net("10.1.0.0/16")));
        assert!(wide.check_block("10.0.0.0/15").is_err());
        let message = g.check_block("0.0.0.0/0").unwrap_err().to_string();
        assert!(
            message.contains("/24") && message.contains("DECISION_MIN_PREFIX_V4"),
            "{message}"
        );
    }

    #[test]
    fn loopback_is_never_blocked_in_any_spelling() {
        let g = Guardrails::default();
        for value in [
            "127.0.0.1",
            "127.9.9.9",
            "127.0.0.0/24",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(
                g.check_block(value).unwrap_err().reason(),
                "loopback",
                "{value}"
            );
        }
        assert_eq!(
            g.check_address("::ffff:127.0.0.1".parse().unwrap())
                .unwrap_err()
                .reason(),
            "loopback"
        );
        assert!(g.check_block("128.0.0.1").is_ok());
    }

    #[test]
    fn own_addresses_management_networks_and_the_allow_list_are_protected() {
        let g = Guardrails {
            own_addresses: vec![
                "198.51.100.5".parse().unwrap(),
                "2001:db8:5::9".parse().unwrap(),
            ],
            management: vec![net("10.20.0.0/16")],
            allow: vec![net("203.0.113.7/32")],
            ..Guardrails::default()
        };
        let reason = |v: &str| g.check_block(v).map_err(|r| r.reason());
        assert_eq!(reason("198.51.100.5"), Err("own_address"));
        // The /24 around this host would cut it off as well.
        assert_eq!(reason("198.51.100.0/24"), Err("own_address"));
        assert_eq!(reason("::ffff:198.51.100.5"), Err("own_address"));
        // Folded to the host's /64.
        assert_eq!(reason("2001:db8:5::77"), Err("own_address"));
        assert_eq!(reason("10.20.30.40"), Err("management_network"));
        assert_eq!(reason("10.20.30.0/24"), Err("management_network"));
        assert_eq!(reason("203.0.113.7"), Err("allow_listed"));
        assert_eq!(reason("203.0.113.0/24"), Err("allow_listed"));
        assert_eq!(reason("203.0.113.8"), Ok(net("203.0.113.8/32")));
        assert_eq!(reason("10.21.0.1"), Ok(net("10.21.0.1/32")));
        assert_eq!(
            g.check_address("10.20.1.1".parse().unwrap())
                .unwrap_err()
                .reason(),
            "management_network"
        );
        assert!(g.check_address("10.21.1.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_cap_refuses_the_block_past_it() {
        let g = Guardrails {
            max_active_blocks: 3,
            ..Guardrails::default()
        };
        assert!(g.check_capacity(0).is_ok());
        assert!(g.check_capacity(2).is_ok());
        let refusal = g.check_capacity(3).unwrap_err();
        assert_eq!(refusal, Refusal::AtCapacity { active: 3, max: 3 });
        assert_eq!(refusal.reason(), "block_cap");
    }

    #[test]
    fn the_options_parse_lists_and_ranges() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            guard: GuardrailArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--allow",
            "192.0.2.1,::ffff:10.0.0.1",
            "--management-networks",
            "10.20.0.0/16",
            "--fold-v6",
            "128",
        ])
        .unwrap();
        let g = cli.guard.guardrails();
        assert_eq!(g.allow, vec![net("192.0.2.1/32"), net("10.0.0.1/32")]);
        assert_eq!(g.management, vec![net("10.20.0.0/16")]);
        assert_eq!(g.fold_v6, 128);
        assert_eq!(g.min_prefix_v4, 24);
        assert!(Cli::try_parse_from(["x", "--allow", "nope"]).is_err());
        assert!(Cli::try_parse_from(["x", "--min-prefix-v4", "33"]).is_err());
    }
}
