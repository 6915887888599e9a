//! A compact table of address ranges, sorted by start and searched by binary search: the ASN
//! table and the reputation lists. IPv4 ranges are kept as `u32` and IPv6 as `u128`, so the
//! large IPv4 half costs 12 bytes a range plus its value.

use std::net::IpAddr;

/// Ranges `[start, end]` of one address family with a value each, sorted by start.
#[derive(Debug, Clone)]
pub struct RangeTable<K, V> {
    ranges: Vec<(K, K, V)>,
}

impl<K: Ord + Copy, V> Default for RangeTable<K, V> {
    fn default() -> Self {
        RangeTable { ranges: Vec::new() }
    }
}

impl<K: Ord + Copy, V> RangeTable<K, V> {
    pub fn push(&mut self, start: K, end: K, value: V) {
        self.ranges.push((start, end, value));
    }

    /// Sorts the ranges by start; call once after the last push.
    pub fn sort(&mut self) {
        self.ranges.sort_by_key(|r| r.0);
    }

    /// The value of the range holding `key`: the last range starting at or before it, if it
    /// reaches that far. Ranges must not overlap (see [`RangeTable::merge_overlaps`]).
    pub fn find(&self, key: K) -> Option<&V> {
        let after = self.ranges.partition_point(|r| r.0 <= key);
        let (_, end, value) = self.ranges.get(after.checked_sub(1)?)?;
        (key <= *end).then_some(value)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl<K: Ord + Copy> RangeTable<K, ()> {
    /// Sorts and joins overlapping ranges, for sets where only membership matters.
    pub fn merge_overlaps(&mut self) {
        self.sort();
        let mut merged: Vec<(K, K, ())> = Vec::with_capacity(self.ranges.len());
        for &(start, end, ()) in &self.ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end, ())),
            }
        }
        self.ranges = merged;
    }
}

/// IPv4 and IPv6 ranges with values, looked up by address.
#[derive(Debug, Clone)]
pub struct AddressRanges<V> {
    pub v4: RangeTable<u32, V>,
    pub v6: RangeTable<u128, V>,
}

impl<V> Default for AddressRanges<V> {
    fn default() -> Self {
        AddressRanges {
            v4: RangeTable::default(),
            v6: RangeTable::default(),
        }
    }
}

impl<V> AddressRanges<V> {
    /// Adds `[start, end]`; false when the two ends are of different families or reversed.
    pub fn push(&mut self, start: IpAddr, end: IpAddr, value: V) -> bool {
        match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => self.v4.push(s.into(), e.into(), value),
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => self.v6.push(s.into(), e.into(), value),
            _ => return false,
        }
        true
    }

    pub fn sort(&mut self) {
        self.v4.sort();
        self.v6.sort();
    }

    pub fn find(&self, address: IpAddr) -> Option<&V> {
        match address.to_canonical() {
            IpAddr::V4(a) => self.v4.find(a.into()),
            IpAddr::V6(a) => self.v6.find(a.into()),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AddressRanges<()> {
    pub fn merge_overlaps(&mut self) {
        self.v4.merge_overlaps();
        self.v6.merge_overlaps();
    }
}

/// Parses `a.b.c.d/len`, `v6::/len` or a bare address into its first and last address.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, IpAddr)> {
    let (address, prefix) = match text.split_once('/') {
        Some((a, p)) => (
            a.trim().parse::<IpAddr>().ok()?,
            Some(p.trim().parse::<u32>().ok()?),
        ),
        None => (text.trim().parse::<IpAddr>().ok()?, None),
    };
    match address {
        IpAddr::V4(a) => {
            let prefix = prefix.unwrap_or(32);
            let host_bits = 32u32.checked_sub(prefix)?;
            let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
            let start = u32::from(a) & mask;
            Some((IpAddr::V4(start.into()), IpAddr::V4((start | !mask).into())))
        }
        IpAddr::V6(a) => {
            let prefix = prefix.unwrap_or(128);
            let host_bits = 128u32.checked_sub(prefix)?;
            let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
            let start = u128::from(a) & mask;
            Some((IpAddr::V6(start.into()), IpAddr::V6((start | !mask).into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_range_holding_an_address_and_nothing_in_gaps() {
        let mut table = AddressRanges::default();
        for (cidr, v) in [
            ("10.0.0.0/8", 1),
            ("192.168.1.0/24", 2),
            ("2001:db8::/32", 3),
        ] {
            let (s, e) = parse_cidr(cidr).unwrap();
            assert!(table.push(s, e, v));
        }
        table.sort();
        let find = |a: &str| table.find(a.parse().unwrap()).copied();
        assert_eq!(find("10.255.255.255"), Some(1));
        assert_eq!(find("11.0.0.0"), None);
        assert_eq!(find("192.168.1.77"), Some(2));
        assert_eq!(find("192.168.2.1"), None);
        assert_eq!(find("::ffff:10.1.2.3"), Some(1));
        assert_eq!(find("2001:db8:ffff::1"), Some(3));
        assert_eq!(find("2001:db9::1"), None);
    }

    #[test]
    fn overlapping_set_ranges_merge() {
        let mut set = AddressRanges::default();
        for cidr in ["10.0.0.0/8", "10.1.0.0/16", "10.2.3.4"] {
            let (s, e) = parse_cidr(cidr).unwrap();
            set.push(s, e, ());
        }
        set.merge_overlaps();
        assert_eq!(set.len(), 1);
        assert!(set.find("10.200.0.1".parse().unwrap()).is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
    }
}
