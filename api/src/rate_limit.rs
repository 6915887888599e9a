//! Per-client-address rate limiting: a fixed window of `max` requests per `window`, in a table
//! bounded to `capacity` addresses (expired windows go first, then the oldest).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `MAX/SECONDS`, e.g. `100/900`; `off` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub max: u32,
    pub window: Duration,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(RateSpec {
                max: u32::MAX,
                window: Duration::from_secs(1),
            });
        }
        let (max, secs) = text
            .split_once('/')
            .ok_or_else(|| format!("expected MAX/SECONDS (e.g. 100/900) or off, got {text:?}"))?;
        let max: u32 = max
            .trim()
            .parse()
            .map_err(|_| format!("bad request count in {text:?}"))?;
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("bad window in {text:?}"))?;
        if max == 0 || secs == 0 {
            return Err(format!("both parts of {text:?} must be positive"));
        }
        Ok(RateSpec {
            max,
            window: Duration::from_secs(secs),
        })
    }
}

/// The key a client address is counted under: an IPv4-mapped IPv6 address as the IPv4 address it
/// is, any other IPv6 address by its /64. A host or a subscriber line is usually given a whole
/// /64 and can pick any address in it, so counting single IPv6 addresses would limit nothing.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

struct Window {
    started: Instant,
    count: u32,
}

pub struct RateLimiter {
    name: &'static str,
    spec: RateSpec,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Window>>,
}

impl RateLimiter {
    pub fn new(name: &'static str, spec: RateSpec, capacity: usize) -> Self {
        RateLimiter {
            name,
            spec,
            capacity: capacity.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `client` (under its [`address_key`]); `Err(seconds)` when it is over
    /// its limit.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self.spec.max == u32::MAX {
            return Ok(());
        }
        let client = address_key(client);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&client) && table.len() >= self.capacity {
            self.evict(&mut table, now);
        }
        let window = table.entry(client).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.duration_since(window.started) >= self.spec.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        if window.count >= self.spec.max {
            telemetry::counter(
                "api_rate_limited_total",
                "Requests refused by a rate limit",
                &[("limit", self.name)],
            )
            .inc();
            let left = self
                .spec
                .window
                .saturating_sub(now.duration_since(window.started));
            return Err(left.as_secs().max(1));
        }
        window.count += 1;
        Ok(())
    }

    /// Seconds until `client` may try again when it is over its limit now, without counting a
    /// request (a caller that counts only failures asks this before trying).
    pub fn blocked_for(&self, client: IpAddr) -> Option<u64> {
        if self.spec.max == u32::MAX {
            return None;
        }
        let now = Instant::now();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let window = table.get(&client)?;
        let elapsed = now.duration_since(window.started);
        (elapsed < self.spec.window && window.count >= self.spec.max)
            .then(|| self.spec.window.saturating_sub(elapsed).as_secs().max(1))
    }

    fn evict(&self, table: &mut HashMap<IpAddr, Window>, now: Instant) {
        let window = self.spec.window;
        let before = table.len();
        table.retain(|_, w| now.duration_since(w.started) < window);
        if table.len() >= self.capacity {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(ip, _)| *ip)
            {
                table.remove(&oldest);
            }
        }
        telemetry::counter(
            "api_rate_limit_evictions_total",
            "Client addresses evicted from a full rate-limit table",
            &[("limit", self.name)],
        )
        .add((before - table.len()) as u64);
    }

    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_limit_waits_and_others_do_not() {
        let limiter = RateLimiter::new("test", "3/60".parse().unwrap(), 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            limiter.check(a).unwrap();
        }
        assert_eq!(limiter.blocked_for(a), None);
        limiter.check(a).unwrap();
        assert!(limiter
            .blocked_for(a)
            .is_some_and(|secs| (1..=60).contains(&secs)));
        let retry = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&retry));
        limiter.check(b).unwrap();
        assert_eq!(limiter.blocked_for(b), None);
    }

    #[test]
    fn ipv6_clients_share_the_limit_of_their_64() {
        let limiter = RateLimiter::new("test", "2/60".parse().unwrap(), 10);
        limiter.check("2001:db8:a:b::1".parse().unwrap()).unwrap();
        limiter
            .check("2001:db8:a:b:1234::99".parse().unwrap())
            .unwrap();
        assert!(limiter
            .check("2001:db8:a:b:ffff:ffff:ffff:ffff".parse().unwrap())
            .is_err());
        limiter.check("2001:db8:a:c::1".parse().unwrap()).unwrap();
        // The same IPv4 client, mapped or not, is one client.
        limiter.check("203.0.113.5".parse().unwrap()).unwrap();
        limiter
            .check("::ffff:203.0.113.5".parse().unwrap())
            .unwrap();
        assert!(limiter.check("203.0.113.5".parse().unwrap()).is_err());
    }

    #[test]
    fn the_table_stays_within_its_capacity() {
        let limiter = RateLimiter::new("test", "5/60".parse().unwrap(), 100);
        for i in 0..1000u32 {
            limiter.check(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        assert!(limiter.tracked() <= 100);
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            "100/900".parse::<RateSpec>().unwrap(),
            RateSpec {
                max: 100,
                window: Duration::from_secs(900)
            }
        );
        assert!("100".parse::<RateSpec>().is_err());
        assert!("0/10".parse::<RateSpec>().is_err());
        assert_eq!("off".parse::<RateSpec>().unwrap().max, u32::MAX);
    }
}
