//! IPv4 and IPv6 fragment reassembly, bounded in memory, with the overlap policy of the
//! receivers we protect.
//!
//! A datagram is keyed as its RFC says (IPv4, RFC 791: source, destination, protocol,
//! identification; IPv6, RFC 8200: source, destination, identification) and collects its
//! fragments' bytes in one buffer with the byte ranges received so far. It is handed on whole
//! once the last fragment (no more-fragments flag) and every byte before it are in.
//!
//! **Overlaps.** A fragment that lies wholly inside bytes already received and carries the same
//! bytes is a duplicate (a retransmitted datagram) and is ignored. Any other overlap, a partial
//! one or one whose bytes differ, discards the whole datagram and is counted. Linux (since the
//! FragmentSmack fixes of 2018, 4.19) and RFC 5722 for IPv6 discard a datagram on a partial
//! overlap, so there the refusal matches what the server does. For a contained copy with
//! different bytes the receivers disagree (Linux keeps the first copy, BSD-style stacks and
//! Suricata's `last` policy the later one); the agent cannot know which the server kept, so it
//! guesses neither: honest senders repeat a datagram byte for byte, so differing copies are an
//! evasion attempt, and the counter (`overlaps`) is the alarm.
//!
//! **Bounds.** A datagram ends at 65,535 bytes (the IP length fields' limit; beyond it is the
//! ping-of-death pattern, counted as `oversize`), so it has at most 8,191 fragments that do not
//! overlap (8-byte pieces, the smallest there are). No lower cap: a server's stack takes them
//! all, so a cap would be a way to hide a datagram from the agent, and with the received ranges
//! in a B-tree each fragment costs O(log n) whatever the order they come in. All
//! datagrams together hold at most `limits.max_bytes` of real allocation (buffers' capacity,
//! range lists and a per-datagram overhead); past it the oldest datagrams are evicted, since
//! honest fragments of a datagram arrive within milliseconds of each other and what lingers is
//! the likeliest garbage. A datagram not complete `limits.timeout` after its first fragment is
//! dropped (`timed_out`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::decode::Fragment;
use crate::session::Nanos;

/// The largest datagram payload an IP length field can describe.
pub const MAX_DATAGRAM: usize = 65_535;

/// What a datagram in the table costs beyond its buffers: the table entry, the age index entry
/// and the allocator's headers, rounded up.
const DATAGRAM_OVERHEAD: usize = 160;

/// What one received range costs in the B-tree: 16 bytes of key and value, and a node's
/// share (a node holds up to 11 entries and its header and edges), rounded up.
const RANGE_COST: usize = 48;

/// How much reassembly may hold and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentLimits {
    /// Bytes (real allocation) all incomplete datagrams together may hold.
    pub max_bytes: usize,
    /// A datagram not complete this long after its first fragment is dropped.
    pub timeout: Nanos,
}

impl Default for FragmentLimits {
    /// 4 MiB, Linux's `ipfrag_high_thresh`: fragmented traffic is rare, and a flood of
    /// incomplete fragments costs no more than this. 60 s, RFC 8200's reassembly time and
    /// Linux's `ip6frag_time` (its IPv4 `ipfrag_time` is 30 s, Windows uses 60 s for both): at
    /// least as long as the servers we watch wait, so a fragment they still take is not lost to
    /// us; garbage held longer is bounded by `max_bytes`.
    fn default() -> Self {
        FragmentLimits {
            max_bytes: 4 * 1024 * 1024,
            timeout: 60_000_000_000,
        }
    }
}

/// Counters of reassembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentCounters {
    /// Fragments taken in.
    pub fragments: u64,
    /// Datagrams completed and handed on.
    pub reassembled: u64,
    /// Fragments ignored as exact duplicates of bytes held.
    pub duplicates: u64,
    /// Datagrams discarded for a conflicting or partial overlap.
    pub overlaps: u64,
    /// Datagrams discarded for ending past 65,535 bytes or disagreeing about their end.
    pub oversize: u64,
    /// Fragments dropped because the capture cut them (snap length) or, IPv6, their length is
    /// not a multiple of 8 though more follow.
    pub malformed: u64,
    /// Datagrams dropped incomplete at the timeout.
    pub timed_out: u64,
    /// Datagrams evicted incomplete to stay within the memory budget.
    pub evicted: u64,
}

/// A datagram made whole again.
#[derive(Debug)]
pub struct Reassembled {
    /// The first header of the fragmentable part (IPv4: the protocol; IPv6: the fragment
    /// header's next header of the first fragment).
    pub protocol: u8,
    pub bytes: Vec<u8>,
}

/// What became of one fragment.
#[derive(Debug)]
pub enum Outcome {
    /// Kept until the rest arrives (or ignored as a duplicate).
    Held,
    /// It completed its datagram.
    Complete(Reassembled),
    /// It, and for most reasons its datagram, were dropped (counted).
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DatagramKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    /// IPv4's protocol; 0 for IPv6, whose key has none.
    protocol: u8,
}

#[derive(Debug)]
struct Datagram {
    /// Position in the age index.
    serial: u64,
    started: Nanos,
    data: Vec<u8>,
    /// Byte ranges received (start to end), merged where they touch.
    ranges: BTreeMap<usize, usize>,
    /// The fragmentable part's length, once its last fragment came.
    total: Option<usize>,
    /// The first header of the fragmentable part, from the fragment at offset 0.
    protocol: Option<u8>,
}

impl Datagram {
    fn cost(&self) -> usize {
        DATAGRAM_OVERHEAD + self.data.capacity() + self.ranges.len() * RANGE_COST
    }

    fn is_complete(&self) -> bool {
        self.total.is_some_and(|total| {
            self.ranges.len() == 1 && self.ranges.first_key_value() == Some((&0, &total))
        })
    }
}

/// Where a new fragment stands against the bytes a datagram holds.
enum Placement {
    New,
    Duplicate,
    Conflict,
}

fn place(datagram: &Datagram, start: usize, bytes: &[u8]) -> Placement {
    let end = start + bytes.len();
    // Ranges are disjoint and merged: only the last one starting before `end` can hold the
    // fragment whole, and if it does no other range touches it.
    let Some((&lo, &hi)) = datagram.ranges.range(..end).next_back() else {
        return Placement::New;
    };
    if hi <= start {
        Placement::New
    } else if lo <= start && end <= hi && datagram.data[start..end] == *bytes {
        Placement::Duplicate
    } else {
        Placement::Conflict
    }
}

/// Adds `[start, end)` to the ranges, merging the ones it touches.
fn merge_range(ranges: &mut BTreeMap<usize, usize>, start: usize, end: usize) {
    let (mut lo, mut hi) = (start, end);
    if let Some((&before, &before_end)) = ranges.range(..start).next_back() {
        if before_end >= start {
            lo = before;
            hi = hi.max(before_end);
            ranges.remove(&before);
        }
    }
    while let Some((&next, &next_end)) = ranges.range(lo..=hi).next() {
        hi = hi.max(next_end);
        ranges.remove(&next);
    }
    ranges.insert(lo, hi);
}

/// The reassembly table of one capture.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: FragmentLimits,
    table: HashMap<DatagramKey, Datagram>,
    /// Datagrams by age (serial numbers increase with each new datagram).
    ages: BTreeMap<u64, DatagramKey>,
    next_serial: u64,
    used: usize,
    counters: FragmentCounters,
}

impl Reassembler {
    pub fn new(limits: FragmentLimits) -> Reassembler {
        Reassembler {
            limits,
            ..Reassembler::default()
        }
    }

    pub fn counters(&self) -> FragmentCounters {
        self.counters
    }

    /// Bytes held for incomplete datagrams (real allocation).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Incomplete datagrams held.
    pub fn datagrams(&self) -> usize {
        self.table.len()
    }

    fn remove(&mut self, key: &DatagramKey) -> Option<Datagram> {
        let datagram = self.table.remove(key)?;
        self.ages.remove(&datagram.serial);
        self.used -= datagram.cost();
        Some(datagram)
    }

    /// Drops datagrams whose time is up at capture time `now`.
    pub fn expire(&mut self, now: Nanos) {
        while let Some((_, key)) = self.ages.first_key_value() {
            let key = *key;
            let started = self.table.get(&key).map_or(Nanos::MIN, |d| d.started);
            if now.saturating_sub(started) < self.limits.timeout {
                return;
            }
            self.remove(&key);
            self.counters.timed_out += 1;
        }
    }

    /// Takes one fragment from `src` to `dst` (`protocol` is the IP header's: IPv4's protocol,
    /// or IPv6's next header after the fragment header). `missing` bytes of it were cut off by
    /// the capture.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        now: Nanos,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        fragment: Fragment,
        bytes: &[u8],
        missing: usize,
    ) -> Outcome {
        self.expire(now);
        self.counters.fragments += 1;
        let key = DatagramKey {
            src,
            dst,
            id: fragment.id,
            protocol: if src.is_ipv4() { protocol } else { 0 },
        };
        let mut bytes = bytes;
        if fragment.more && !bytes.len().is_multiple_of(8) {
            if src.is_ipv4() {
                // RFC 791 has every fragment but the last end on an 8-byte boundary; Linux
                // trims an IPv4 fragment to it and goes on, so the agent does too.
                bytes = &bytes[..bytes.len() & !7];
            } else {
                // RFC 8200 §4.5: the receiver discards such a fragment (ICMP parameter problem).
                self.counters.malformed += 1;
                return Outcome::Dropped;
            }
        }
        let start = fragment.offset;
        let end = start + bytes.len();
        if missing > 0 {
            // The capture lost part of it: the datagram can never be whole here.
            self.counters.malformed += 1;
            self.remove(&key);
            return Outcome::Dropped;
        }
        let datagram = match self.table.get(&key) {
            Some(datagram) => datagram,
            None => {
                let serial = self.next_serial;
                self.next_serial += 1;
                self.ages.insert(serial, key);
                let datagram = Datagram {
                    serial,
                    started: now,
                    data: Vec::new(),
                    ranges: BTreeMap::new(),
                    total: None,
                    protocol: None,
                };
                self.used += datagram.cost();
                self.table.entry(key).or_insert(datagram)
            }
        };
        // The datagram's end: past the IP limit, or two fragments disagreeing about it, or
        // bytes past an end already known; Linux discards the datagram for each.
        let held_end = datagram.ranges.last_key_value().map_or(0, |(_, &hi)| hi);
        let bad_end = end > MAX_DATAGRAM
            || match (fragment.more, datagram.total) {
                (false, Some(total)) => total != end,
                (false, None) => held_end > end,
                (true, Some(total)) => end > total,
                (true, None) => false,
            };
        if bad_end {
            self.counters.oversize += 1;
            self.remove(&key);
            return Outcome::Dropped;
        }
        match place(datagram, start, bytes) {
            Placement::Duplicate => {
                self.counters.duplicates += 1;
                return Outcome::Held;
            }
            Placement::Conflict => {
                self.counters.overlaps += 1;
                self.remove(&key);
                return Outcome::Dropped;
            }
            Placement::New => {}
        }
        let datagram = self.table.get_mut(&key).expect("datagram just found");
        let before = datagram.cost();
        if !fragment.more {
            datagram.total = Some(end);
        }
        if start == 0 {
            datagram.protocol = Some(protocol);
        }
        if datagram.data.len() < end {
            // Grow once to the known end when the last fragment came, else to this fragment's.
            let target = datagram.total.unwrap_or(end);
            datagram.data.reserve_exact(target - datagram.data.len());
            datagram.data.resize(end, 0);
        }
        datagram.data[start..end].copy_from_slice(bytes);
        merge_range(&mut datagram.ranges, start, end);
        let after = datagram.cost();
        self.used = self.used + after - before;

        if datagram.is_complete() {
            let datagram = self.remove(&key).expect("complete datagram");
            self.counters.reassembled += 1;
            return Outcome::Complete(Reassembled {
                protocol: datagram.protocol.unwrap_or(protocol),
                bytes: datagram.data,
            });
        }
        self.make_room(&key);
        if self.table.contains_key(&key) {
            Outcome::Held
        } else {
            Outcome::Dropped
        }
    }

    /// Evicts the oldest datagrams until the budget holds, `keep` last of all.
    fn make_room(&mut self, keep: &DatagramKey) {
        while self.used > self.limits.max_bytes {
            let oldest = self
                .ages
                .values()
                .find(|key| *key != keep)
                .or_else(|| self.ages.values().next())
                .copied();
            let Some(key) = oldest else { return };
            self.remove(&key);
            self.counters.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const SEC: Nanos = 1_000_000_000;

    fn frag(id: u32, offset: usize, more: bool) -> Fragment {
        Fragment { id, offset, more }
    }

    /// The datagram `data` cut into pieces of `size` bytes (a multiple of 8), in order.
    fn pieces(data: &[u8], size: usize) -> Vec<(Fragment, &[u8])> {
        data.chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i * size;
                (frag(7, offset, offset + chunk.len() < data.len()), chunk)
            })
            .collect()
    }

    fn feed(r: &mut Reassembler, now: Nanos, pieces: &[(Fragment, &[u8])]) -> Vec<Outcome> {
        pieces
            .iter()
            .map(|(f, bytes)| r.add(now, A, B, 6, *f, bytes, 0))
            .collect()
    }

    fn completed(outcomes: &[Outcome]) -> Vec<&[u8]> {
        outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Complete(d) => Some(d.bytes.as_slice()),
                _ => None,
            })
            .collect()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn in_order_fragments_make_the_datagram() {
        let data = data(1000);
        let mut r = Reassembler::new(FragmentLimits::default());
        let outcomes = feed(&mut r, 0, &pieces(&data, 96));
        assert_eq!(completed(&outcomes), [&data[..]]);
        assert!(matches!(outcomes[0], Outcome::Held));
        assert_eq!(r.counters().reassembled, 1);
        assert_eq!(r.counters().fragments, 11);
        assert_eq!((r.used(), r.datagrams()), (0, 0));
    }

    #[test]
    fn out_of_order_fragments_make_the_datagram() {
        let data = data(1000);
        let mut parts = pieces(&data, 64);
        // Last first, then the rest backwards, with one duplicate thrown in.
        parts.reverse();
        parts.insert(5, parts[2]);
        let mut r = Reassembler::new(FragmentLimits::default());
        let outcomes = feed(&mut r, 0, &parts);
        assert_eq!(completed(&outcomes), [&data[..]]);
        assert_eq!(r.counters().duplicates, 1);
        assert_eq!(r.used(), 0);
    }

    #[test]
    fn datagrams_of_different_ids_and_hosts_stay_apart() {
        let (one, two) = (data(48), vec![9u8; 48]);
        let mut r = Reassembler::new(FragmentLimits::default());
        assert!(matches!(
            r.add(0, A, B, 6, frag(1, 0, true), &one[..24], 0),
            Outcome::Held
        ));
        assert!(matches!(
            r.add(0, A, B, 6, frag(2, 0, true), &two[..24], 0),
            Outcome::Held
        ));
        // Same id, other direction: another datagram.
        assert!(matches!(
            r.add(0, B, A, 6, frag(1, 24, false), &two[24..], 0),
            Outcome::Held
        ));
        let Outcome::Complete(d) = r.add(0, A, B, 6, frag(1, 24, false), &one[24..], 0) else {
            panic!("datagram 1 is whole");
        };
        assert_eq!((d.bytes, d.protocol), (one, 6));
        assert_eq!(r.datagrams(), 2);
    }

    #[test]
    fn a_conflicting_overlap_discards_the_datagram() {
        let data = data(64);
        let mut r = Reassembler::new(FragmentLimits::default());
        r.add(0, A, B, 6, frag(7, 0, true), &data[..32], 0);
        // The same range again with other bytes (an evasion: which copy does the server keep?).
        let forged = vec![0xee; 16];
        assert!(matches!(
            r.add(0, A, B, 6, frag(7, 8, true), &forged, 0),
            Outcome::Dropped
        ));
        assert_eq!(r.counters().overlaps, 1);
        assert_eq!((r.datagrams(), r.used()), (0, 0));
        // The rest alone makes nothing.
        assert!(matches!(
            r.add(0, A, B, 6, frag(7, 32, false), &data[32..], 0),
            Outcome::Held
        ));

        // A partial overlap, even with the right bytes, discards too (Linux, RFC 5722).
        let mut r = Reassembler::new(FragmentLimits::default());
        r.add(0, A, B, 6, frag(8, 0, true), &data[..32], 0);
        assert!(matches!(
            r.add(0, A, B, 6, frag(8, 24, false), &data[24..], 0),
            Outcome::Dropped
        ));
        assert_eq!(r.counters().overlaps, 1);
    }

    #[test]
    fn incomplete_datagrams_time_out() {
        let data = data(64);
        let limits = FragmentLimits::default();
        let mut r = Reassembler::new(limits);
        r.add(0, A, B, 6, frag(7, 0, true), &data[..32], 0);
        r.expire(limits.timeout - 1);
        assert_eq!(r.datagrams(), 1);
        r.expire(limits.timeout);
        assert_eq!((r.datagrams(), r.used()), (0, 0));
        assert_eq!(r.counters().timed_out, 1);
        // The late fragment starts a datagram of its own, which never completes.
        let late = r.add(
            limits.timeout + SEC,
            A,
            B,
            6,
            frag(7, 32, false),
            &data[32..],
            0,
        );
        assert!(matches!(late, Outcome::Held));
    }

    #[test]
    fn the_memory_budget_evicts_the_oldest() {
        let data = data(4096);
        let limits = FragmentLimits {
            max_bytes: 3 * (4096 + DATAGRAM_OVERHEAD + RANGE_COST),
            ..FragmentLimits::default()
        };
        let mut r = Reassembler::new(limits);
        // Each datagram's last fragment first: its whole buffer is allocated at once.
        for id in 0..10 {
            let outcome = r.add(
                id as Nanos,
                A,
                B,
                6,
                frag(id, 4088, false),
                &data[4088..],
                0,
            );
            assert!(matches!(outcome, Outcome::Held));
            assert!(
                r.used() <= limits.max_bytes,
                "{} > {}",
                r.used(),
                limits.max_bytes
            );
        }
        assert_eq!(r.datagrams(), 3);
        assert_eq!(r.counters().evicted, 7);
        // The newest survived and still completes.
        let Outcome::Complete(d) = r.add(10, A, B, 6, frag(9, 0, true), &data[..4088], 0) else {
            panic!("the newest datagram completes");
        };
        assert_eq!(d.bytes, data);
    }

    #[test]
    fn caps_on_size_count_and_shape() {
        let mut r = Reassembler::new(FragmentLimits::default());
        // Ping of death: a fragment ending past 65,535.
        let big = vec![0u8; 1024];
        assert!(matches!(
            r.add(0, A, B, 6, frag(1, 65_000, false), &big, 0),
            Outcome::Dropped
        ));
        assert_eq!(r.counters().oversize, 1);
        // Two fragments that disagree about the end.
        r.add(0, A, B, 6, frag(2, 64, false), &big[..8], 0);
        assert!(matches!(
            r.add(0, A, B, 6, frag(2, 128, false), &big[..8], 0),
            Outcome::Dropped
        ));
        assert_eq!(r.counters().oversize, 2);
        // The most pieces there can be (8,191 of 8 bytes, every other one first, then the
        // rest) make the datagram; one more byte past the end is oversize.
        let data = data(8191 * 8);
        let offsets = (0..8191).step_by(2).chain((1..8191).step_by(2));
        let mut last = Outcome::Held;
        for i in offsets {
            let piece = &data[i * 8..i * 8 + 8];
            last = r.add(0, A, B, 6, frag(3, i * 8, i < 8190), piece, 0);
        }
        assert!(matches!(last, Outcome::Complete(ref d) if d.bytes == data));
        // A fragment the capture cut short.
        assert!(matches!(
            r.add(0, A, B, 6, frag(4, 0, true), &big[..8], 100),
            Outcome::Dropped
        ));
        // IPv6: a non-last fragment whose length is no multiple of 8.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(matches!(
            r.add(0, v6, v6, 6, frag(5, 0, true), &big[..12], 0),
            Outcome::Dropped
        ));
        assert_eq!(r.counters().malformed, 2);
        // IPv4 trims it to 8 bytes, as Linux does: the rest from byte 8 completes it.
        let data = self::data(20);
        r.add(0, A, B, 6, frag(6, 0, true), &data[..12], 0);
        let Outcome::Complete(d) = r.add(0, A, B, 6, frag(6, 8, false), &data[8..], 0) else {
            panic!("trimmed fragment and the rest complete the datagram");
        };
        assert_eq!(d.bytes, data);
        assert_eq!(r.datagrams(), 0, "every failed datagram was dropped");
        assert_eq!(r.used(), 0);
    }

    #[test]
    fn ranges_merge() {
        let mut ranges = BTreeMap::new();
        for (lo, hi) in [(16, 24), (0, 8), (40, 48), (8, 16), (24, 40)] {
            merge_range(&mut ranges, lo, hi);
        }
        assert_eq!(ranges.into_iter().collect::<Vec<_>>(), [(0, 48)]);
        let mut ranges = BTreeMap::from([(0, 8), (16, 24)]);
        merge_range(&mut ranges, 32, 40);
        assert_eq!(
            ranges.into_iter().collect::<Vec<_>>(),
            [(0, 8), (16, 24), (32, 40)]
        );
    }
}
