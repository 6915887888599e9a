//! Property: any re-segmentation of the real captures' TCP streams — random split points,
//! duplicated, overlapping and reordered segments — yields the same session summaries (only the
//! packet counts change, since there are more packets).

mod common;

use std::sync::OnceLock;

use common::{load_segments as load, Seg};
use proptest::prelude::*;
use schemas::SessionSummary;

struct Capture {
    name: String,
    segments: Vec<Seg>,
    baseline: Vec<SessionSummary>,
}

/// Final summaries with packet counts zeroed (re-segmenting changes them), by session id.
fn normalised(segments: &[Seg]) -> Vec<SessionSummary> {
    let mut summaries: Vec<SessionSummary> =
        common::analyse_segments(segments, &common::config(true))
            .into_iter()
            .map(|mut s| {
                s.packets_c2s = 0;
                s.packets_s2c = 0;
                s
            })
            .collect();
    summaries.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    summaries
}

/// The captures small enough to replay many times in a debug build.
fn captures() -> &'static [Capture] {
    static CAPTURES: OnceLock<Vec<Capture>> = OnceLock::new();
    CAPTURES.get_or_init(|| {
        common::all_captures()
            .into_iter()
            .filter(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) < 2_500_000)
            .map(|p| {
                let segments = load(&p);
                let baseline = normalised(&segments);
                Capture {
                    name: p.file_name().unwrap().to_string_lossy().to_string(),
                    segments,
                    baseline,
                }
            })
            .collect()
    })
}

/// Small deterministic generator driven by proptest's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Splits every payload at random points, adds duplicate and overlapping copies, and shuffles
/// the pieces of each run of consecutive same-direction data packets within a small window.
fn resegment(segments: &[Seg], seed: u64) -> Vec<Seg> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut run: Vec<Seg> = Vec::new();
    let flush = |run: &mut Vec<Seg>, out: &mut Vec<Seg>, rng: &mut Rng| {
        // Shuffle within windows of 4 so buffered bytes stay far below the per-flow cap.
        for window in run.chunks_mut(4) {
            for i in (1..window.len()).rev() {
                let j = rng.below(i + 1);
                window.swap(i, j);
            }
        }
        out.append(run);
    };
    for seg in segments {
        let same_run = run
            .last()
            .is_some_and(|r| r.src == seg.src && r.src_port == seg.src_port);
        if seg.payload.is_empty() || seg.syn || seg.rst || !same_run {
            flush(&mut run, &mut out, &mut rng);
        }
        if seg.payload.is_empty() || seg.syn || seg.rst {
            out.push(seg.clone());
            continue;
        }
        let len = seg.payload.len();
        let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| 1 + rng.below(len)).collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        cuts.dedup();
        let last = cuts.len() - 2;
        for (i, w) in cuts.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            let piece = Seg {
                seq: seg.seq.wrapping_add(a as u32),
                fin: seg.fin && i == last,
                payload: seg.payload[a..b].to_vec(),
                ..seg.clone()
            };
            if rng.chance(15) {
                run.push(piece.clone()); // retransmission
            }
            run.push(piece);
        }
        if rng.chance(20) {
            // An overlapping retransmission of part of the original segment.
            let a = rng.below(len);
            let b = a + 1 + rng.below(len - a);
            run.push(Seg {
                seq: seg.seq.wrapping_add(a as u32),
                fin: false,
                payload: seg.payload[a..b].to_vec(),
                ..seg.clone()
            });
        }
    }
    flush(&mut run, &mut out, &mut rng);
    out
}

#[test]
fn baselines_have_sessions() {
    let caps = captures();
    assert!(caps.len() >= 10, "{} captures", caps.len());
    let sessions: usize = caps.iter().map(|c| c.baseline.len()).sum();
    assert!(sessions >= 40, "{sessions} sessions");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn resegmented_streams_give_the_same_summaries(index in 0usize..64, seed in any::<u64>()) {
        let caps = captures();
        let cap = &caps[index % caps.len()];
        let changed = resegment(&cap.segments, seed);
        let got = normalised(&changed);
        prop_assert_eq!(got.len(), cap.baseline.len(), "{}", cap.name);
        for (g, b) in got.iter().zip(&cap.baseline) {
            prop_assert_eq!(g, b, "{} seed {}", cap.name, seed);
        }
    }
}

/// Flips random payload bytes and cuts random segments short, as a damaged or hostile stream
/// would look.
fn damage(segments: &[Seg], seed: u64) -> Vec<Seg> {
    let mut rng = Rng(seed | 1);
    segments
        .iter()
        .map(|seg| {
            let mut seg = seg.clone();
            if !seg.payload.is_empty() && rng.chance(10) {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(seg.payload.len());
                    seg.payload[at] = rng.next() as u8;
                }
                if rng.chance(10) {
                    let keep = rng.below(seg.payload.len());
                    seg.payload.truncate(keep);
                }
            }
            seg
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Damaged streams never panic and keep the accounting consistent.
    #[test]
    fn damaged_streams_never_panic(index in 0usize..64, seed in any::<u64>()) {
        let caps = captures();
        let cap = &caps[index % caps.len()];
        let damaged = damage(&cap.segments, seed);
        for s in common::analyse_segments(&damaged, &common::config(true)) {
            prop_assert!(s.end_reason.is_some());
            prop_assert!(s.bytes_c2s >= 0 && s.bytes_s2c >= 0 && s.gap_bytes >= 0);
            if s.parse_errors > 0 {
                prop_assert!(s.desynced, "{} seed {}", cap.name, seed);
            }
        }
    }
}
