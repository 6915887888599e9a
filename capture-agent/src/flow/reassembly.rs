//! Reassembly of one direction of a TCP connection.
//!
//! In-order payload is handed to the consumer where it lies (no copy). Only segments that arrive
//! ahead of a hole are copied, into a per-direction map bounded by a per-flow and a global
//! memory budget. A hole is given up as a gap (and reported to the consumer) when the receiver's
//! acknowledgements show the missing bytes were delivered past the capture, when a budget is
//! exhausted, or when the connection ends.
//!
//! The budgets count what buffering allocates, not payload bytes: a segment costs its copy
//! rounded up to the allocator's 16-byte granularity plus [`SEGMENT_OVERHEAD`], and a direction
//! holding any segment pays [`TREE_OVERHEAD`] for its map. Counting payload alone let a sender
//! of one-byte segments ahead of a hole hold about a hundred times the budget.

use std::collections::BTreeMap;

/// What the consumer receives, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// This many bytes are missing from the capture.
    Gap(u64),
}

/// Memory held by out-of-order segments across all flows, shared by every [`HalfStream`].
#[derive(Debug, Default)]
pub struct BufferBudget {
    pub used: usize,
    pub limit: usize,
    /// Holes given up early because one direction reached its own cap.
    pub flow_cap_hits: u64,
    /// Holes given up early because the global budget was full.
    pub global_cap_hits: u64,
}

/// What one buffered segment costs beyond its (rounded) payload: its key and `Vec` header in
/// the B-tree (8 + 24 bytes in a node of up to 11 entries that is at least half full, so up to
/// 64 bytes with the node's share of its header) and the allocator's chunk header of the copy
/// (16 bytes with glibc). Over-counting by a few bytes only gives holes up a little earlier.
pub const SEGMENT_OVERHEAD: usize = 96;
/// The root node a map allocates with its first entry (11 keys and values of 32 bytes, links
/// and lengths), freed when the map empties.
pub const TREE_OVERHEAD: usize = 400;

/// The memory a buffered copy of `payload` bytes takes.
fn segment_cost(payload: usize) -> usize {
    payload.next_multiple_of(16) + SEGMENT_OVERHEAD
}

/// Counters of one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounters {
    /// Payload bytes delivered in order (each byte once).
    pub delivered: u64,
    /// Bytes missing from the capture.
    pub gap: u64,
    /// Payload bytes seen again (retransmissions, overlaps).
    pub duplicate: u64,
    /// Segments that arrived ahead of a hole.
    pub out_of_order: u64,
}

/// Segments further ahead than this are not part of this stream (or are garbage).
const MAX_AHEAD: i64 = 1 << 30;

#[derive(Debug, Default)]
pub struct HalfStream {
    /// Sequence number of the next byte expected; meaningful once `synced`.
    next_seq: u32,
    /// Stream offset of that byte.
    offset: u64,
    synced: bool,
    /// The stream's start was seen (SYN).
    pub saw_syn: bool,
    /// Out-of-order segments by stream offset.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// Memory charged for `ahead` (segments and the map itself).
    ahead_bytes: usize,
    /// Stream offset just past the FIN, once seen.
    fin_offset: Option<u64>,
    /// Highest offset the receiver acknowledged.
    acked: Option<u64>,
    pub counters: StreamCounters,
}

impl HalfStream {
    /// Whether data has been seen (or the start is known).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The sequence number of the next byte expected, once the stream is synced.
    pub fn next_seq(&self) -> Option<u32> {
        self.synced.then_some(self.next_seq)
    }

    /// Whether the stream's FIN has been reached.
    pub fn fin_reached(&self) -> bool {
        self.fin_offset.is_some_and(|f| self.offset >= f)
    }

    /// Memory currently held by out-of-order segments.
    pub fn buffered(&self) -> usize {
        self.ahead_bytes
    }

    /// Offset of `seq` relative to the next expected byte.
    fn position(&self, seq: u32) -> i64 {
        self.offset as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32)
    }

    /// Takes one segment of this direction. `missing` is the number of payload bytes the
    /// capture cut off the end of the segment (snap length).
    #[allow(clippy::too_many_arguments)]
    pub fn accept<F: FnMut(Chunk<'_>)>(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        missing: u32,
        max_buffered: usize,
        budget: &mut BufferBudget,
        out: &mut F,
    ) {
        let mut seq = seq;
        if syn {
            if !self.synced || !self.saw_syn {
                self.next_seq = seq.wrapping_add(1);
                self.offset = 0;
                self.synced = true;
                self.saw_syn = true;
            }
            seq = seq.wrapping_add(1);
        }
        if !self.synced {
            if payload.is_empty() && !fin {
                return;
            }
            self.next_seq = seq;
            self.synced = true;
        }
        let start = self.position(seq);
        if start - (self.offset as i64) > MAX_AHEAD || (self.offset as i64) - start > MAX_AHEAD {
            return;
        }
        let end = start + payload.len() as i64 + i64::from(missing);
        if fin && self.fin_offset.is_none() && end >= 0 {
            self.fin_offset = Some(end as u64);
        }
        if payload.is_empty() {
            return;
        }
        let offset = self.offset as i64;
        if end <= offset {
            self.counters.duplicate += payload.len() as u64;
            return;
        }
        if start <= offset {
            let skip = (offset - start) as usize;
            self.counters.duplicate += skip.min(payload.len()) as u64;
            if skip < payload.len() {
                self.deliver(&payload[skip..], out);
            }
            if missing > 0 {
                let lost = (end - self.offset as i64).max(0) as u64;
                self.skip_to(self.offset + lost, out);
            }
            self.drain(budget, out);
            return;
        }
        // Ahead of a hole: keep a copy (truncated segments are left to the gap logic).
        self.counters.out_of_order += 1;
        let key = start as u64;
        let cost = segment_cost(payload.len())
            + if self.ahead.is_empty() {
                TREE_OVERHEAD
            } else {
                0
            };
        if cost > max_buffered {
            // Cannot wait for the hole: give it up now.
            budget.flow_cap_hits += 1;
            self.skip_to(key, out);
            self.drain(budget, out);
            self.deliver(payload, out);
            self.drain(budget, out);
            return;
        }
        while self.ahead_bytes + cost > max_buffered || budget.used + cost > budget.limit {
            if self.ahead.is_empty() {
                break;
            }
            if self.ahead_bytes + cost > max_buffered {
                budget.flow_cap_hits += 1;
            } else {
                budget.global_cap_hits += 1;
            }
            self.give_up_hole(budget, out);
        }
        if key <= self.offset {
            // Giving up holes caught up with this segment.
            let skip = (self.offset - key) as usize;
            if skip < payload.len() {
                self.deliver(&payload[skip..], out);
            }
            self.drain(budget, out);
            return;
        }
        let cost = segment_cost(payload.len())
            + if self.ahead.is_empty() {
                TREE_OVERHEAD
            } else {
                0
            };
        if budget.used + cost > budget.limit {
            // No room anywhere: skip to this segment.
            budget.global_cap_hits += 1;
            self.skip_to(key, out);
            self.deliver(payload, out);
            self.drain(budget, out);
            return;
        }
        match self.ahead.get(&key) {
            Some(existing) if existing.len() >= payload.len() => {
                self.counters.duplicate += payload.len() as u64;
            }
            _ => {
                if self.ahead.is_empty() {
                    self.charge(TREE_OVERHEAD, budget);
                }
                if let Some(old) = self.ahead.insert(key, payload.to_vec()) {
                    self.uncharge(segment_cost(old.len()), budget);
                }
                self.charge(segment_cost(payload.len()), budget);
            }
        }
        self.resolve_acked_holes(budget, out);
    }

    /// The other direction acknowledged `ack`: bytes before it reached the receiver, so a hole
    /// below it will never be filled by the capture.
    pub fn acknowledged<F: FnMut(Chunk<'_>)>(
        &mut self,
        ack: u32,
        budget: &mut BufferBudget,
        out: &mut F,
    ) {
        if !self.synced {
            return;
        }
        let pos = self.position(ack);
        if pos <= self.offset as i64 || pos - (self.offset as i64) > MAX_AHEAD {
            return;
        }
        let mut pos = pos as u64;
        if let Some(fin) = self.fin_offset {
            pos = pos.min(fin);
        }
        if self.acked.is_none_or(|a| pos > a) {
            self.acked = Some(pos);
            self.resolve_acked_holes(budget, out);
        }
    }

    fn resolve_acked_holes<F: FnMut(Chunk<'_>)>(&mut self, budget: &mut BufferBudget, out: &mut F) {
        let Some(acked) = self.acked else { return };
        while acked > self.offset {
            let Some((&first, _)) = self.ahead.first_key_value() else {
                return;
            };
            if first <= self.offset {
                self.drain(budget, out);
                continue;
            }
            self.skip_to(first.min(acked), out);
            self.drain(budget, out);
        }
    }

    /// The connection is over: every hole is a gap now, and so are bytes missing before a FIN.
    pub fn flush<F: FnMut(Chunk<'_>)>(&mut self, budget: &mut BufferBudget, out: &mut F) {
        while !self.ahead.is_empty() {
            self.give_up_hole(budget, out);
        }
        if let Some(fin) = self.fin_offset {
            if fin > self.offset {
                self.skip_to(fin, out);
            }
        }
    }

    fn give_up_hole<F: FnMut(Chunk<'_>)>(&mut self, budget: &mut BufferBudget, out: &mut F) {
        if let Some((&first, _)) = self.ahead.first_key_value() {
            if first > self.offset {
                self.skip_to(first, out);
            }
            self.drain(budget, out);
        }
    }

    fn deliver<F: FnMut(Chunk<'_>)>(&mut self, data: &[u8], out: &mut F) {
        self.offset += data.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        self.counters.delivered += data.len() as u64;
        out(Chunk::Data(data));
    }

    fn skip_to<F: FnMut(Chunk<'_>)>(&mut self, target: u64, out: &mut F) {
        if target <= self.offset {
            return;
        }
        let lost = target - self.offset;
        self.offset = target;
        self.next_seq = self.next_seq.wrapping_add(lost as u32);
        self.counters.gap += lost;
        out(Chunk::Gap(lost));
    }

    fn charge(&mut self, cost: usize, budget: &mut BufferBudget) {
        self.ahead_bytes += cost;
        budget.used += cost;
    }

    fn uncharge(&mut self, cost: usize, budget: &mut BufferBudget) {
        self.ahead_bytes -= cost;
        budget.used -= cost;
    }

    /// Delivers buffered segments that the stream has caught up with.
    fn drain<F: FnMut(Chunk<'_>)>(&mut self, budget: &mut BufferBudget, out: &mut F) {
        while let Some(entry) = self.ahead.first_entry() {
            let start = *entry.key();
            if start > self.offset {
                break;
            }
            let data = entry.remove();
            self.uncharge(segment_cost(data.len()), budget);
            if self.ahead.is_empty() {
                // An emptied map keeps its root node: free it with the charge.
                self.ahead = BTreeMap::new();
                self.uncharge(TREE_OVERHEAD, budget);
            }
            let end = start + data.len() as u64;
            if end <= self.offset {
                self.counters.duplicate += data.len() as u64;
                continue;
            }
            let skip = (self.offset - start) as usize;
            self.counters.duplicate += skip as u64;
            self.deliver(&data[skip..], out);
        }
    }

    /// Drops everything buffered (the flow is going away), returning its memory to the budget.
    pub fn release(&mut self, budget: &mut BufferBudget) {
        budget.used -= self.ahead_bytes;
        self.ahead_bytes = 0;
        self.ahead = BTreeMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(stream: &mut HalfStream, segs: &[(u32, &[u8])]) -> (Vec<u8>, u64) {
        let mut budget = BufferBudget {
            limit: 1 << 20,
            ..BufferBudget::default()
        };
        let mut data = Vec::new();
        let mut gaps = 0;
        for (seq, payload) in segs {
            stream.accept(
                *seq,
                false,
                false,
                payload,
                0,
                1 << 16,
                &mut budget,
                &mut |c| match c {
                    Chunk::Data(d) => data.extend_from_slice(d),
                    Chunk::Gap(n) => gaps += n,
                },
            );
        }
        stream.flush(&mut budget, &mut |c| match c {
            Chunk::Data(d) => data.extend_from_slice(d),
            Chunk::Gap(n) => gaps += n,
        });
        assert_eq!(budget.used, 0);
        (data, gaps)
    }

    #[test]
    fn reorders_overlaps_and_retransmissions() {
        let mut s = HalfStream::default();
        let (data, gaps) = collect(
            &mut s,
            &[
                (100, b"abc"),
                (106, b"ghi"),
                (103, b"def"),
                (101, b"bcdefg"),
                (108, b"ijkl"),
                (104, b"ef"),
            ],
        );
        assert_eq!(data, b"abcdefghijkl");
        assert_eq!(gaps, 0);
        assert_eq!(s.counters.delivered, 12);
    }

    #[test]
    fn the_budget_counts_allocation_not_payload() {
        // One-byte segments ahead of a hole: each costs far more than its byte.
        let limit = 64 * 1024;
        let mut budget = BufferBudget {
            limit,
            ..BufferBudget::default()
        };
        let mut s = HalfStream::default();
        let mut out = |_: Chunk<'_>| {};
        s.accept(1000, false, false, b"a", 0, 1 << 20, &mut budget, &mut out);
        for n in 0..10_000u32 {
            s.accept(
                1002 + 2 * n,
                false,
                false,
                b"x",
                0,
                1 << 20,
                &mut budget,
                &mut out,
            );
            assert!(budget.used <= limit, "{} over {limit}", budget.used);
        }
        assert!(budget.global_cap_hits > 0);
        // 10,000 payload bytes would have fitted a payload-only budget of 64 KiB.
        assert!(
            s.counters.gap > 0,
            "holes were given up to stay within the budget"
        );
        s.release(&mut budget);
        assert_eq!(budget.used, 0);
    }

    #[test]
    fn sequence_wraps() {
        let mut s = HalfStream::default();
        let (data, _) = collect(&mut s, &[(u32::MAX - 1, b"ab"), (1, b"de"), (0, b"c")]);
        assert_eq!(data, b"abcde");
    }

    #[test]
    fn hole_becomes_a_gap_when_acknowledged() {
        let mut s = HalfStream::default();
        let mut budget = BufferBudget {
            limit: 1 << 20,
            ..BufferBudget::default()
        };
        let mut seen = Vec::new();
        let mut out = |c: Chunk<'_>| {
            seen.push(match c {
                Chunk::Data(d) => format!("d{}", d.len()),
                Chunk::Gap(n) => format!("g{n}"),
            })
        };
        s.accept(
            1000,
            false,
            false,
            b"12345",
            0,
            1 << 16,
            &mut budget,
            &mut out,
        );
        s.accept(
            1010,
            false,
            false,
            b"abc",
            0,
            1 << 16,
            &mut budget,
            &mut out,
        );
        s.acknowledged(1013, &mut budget, &mut out);
        assert_eq!(seen, ["d5", "g5", "d3"]);
        assert_eq!(s.counters.gap, 5);
    }
}
