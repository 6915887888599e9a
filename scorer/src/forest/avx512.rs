//! Level-by-level scoring with AVX-512: eight rows walk a tree in the lanes of one vector.
//!
//! This is the workspace's one module with `unsafe` code, and it is kept to what the
//! instructions cannot do without: three helpers that load or store whole fixed-size arrays,
//! one gather helper that reads only the lanes whose index it has checked against its
//! table's length, and the call of the kernel with a proof that the CPU was checked for the
//! features it is compiled for. Everything
//! else is safe intrinsics over registers. The kernel gives bit-for-bit the path-length sums
//! of the portable kernel (`LevelTree::add_path_lengths`): the same comparisons (`x > t`,
//! false for NaN) and the same order of additions, which the forest tests check on every
//! machine that has AVX-512.
//!
//! Where it is faster (the process times it against the portable kernel, module `kernel`):
//! the portable kernel spends three loads on every step of every row (feature, threshold,
//! value). Here the split of a step is found without touching memory for most levels: the feature indices of a level, bytes, are a 64- or 128-entry
//! table in one or two registers (`vpermb`), and the thresholds of levels 1 to 5, at most 32,
//! are looked up in registers with permutes. Only the row values and the thresholds of the
//! two deepest levels are gathered. Rows are transposed into columns first, so the root's
//! comparison is a plain load of eight consecutive values.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::LevelTree;

/// Rows in a vector.
pub(super) const LANES: usize = 8;

/// The most rows a chunk holds.
const MAX_CHUNK_ROWS: usize = 128;

/// Proof that this CPU has what the kernel is compiled for: only [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

/// The rows of one chunk, transposed: feature `f` of row `r` at `f * stride + r`, so that a
/// vector of eight consecutive rows' values of one feature is one load.
pub(super) struct Columns {
    values: Vec<f64>,
    stride: usize,
    rows: usize,
}

impl Avx512 {
    /// `Some` on a CPU with AVX-512 F, BW and VBMI (Intel since Ice Lake, AMD since Zen 4).
    /// `is_x86_feature_detected!` caches its answer, so this is cheap to ask again.
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi"))
        .then_some(Self(()))
    }

    /// Adds the path length in `tree` of each row of `columns` to its entry in `sums`, one
    /// array per [`LANES`] rows. Lanes past the last row walk whatever the buffer holds
    /// there; their sums are computed and never read.
    pub(super) fn add_path_lengths(
        self,
        tree: &LevelTree,
        columns: &Columns,
        sums: &mut [[f64; LANES]],
    ) {
        // SAFETY: `self` exists only if `detect` found every feature the kernel is compiled
        // for on this CPU.
        unsafe { add_path_lengths(tree, columns, sums) }
    }
}

impl Columns {
    /// A buffer for chunks of rows of `n_features` features, sized for a batch of
    /// `batch_rows`: as many rows as keep a chunk's columns and a tree in the 32-48 KiB L1
    /// data cache of the CPUs that have AVX-512, and no more than the batch needs.
    pub(super) fn new(n_features: usize, batch_rows: usize) -> Self {
        const L1_VALUES: usize = 4096;
        let stride = (L1_VALUES / n_features.max(1))
            .min(batch_rows)
            .next_power_of_two()
            .clamp(LANES, MAX_CHUNK_ROWS);
        Self {
            values: vec![0.0; n_features.max(1) * stride],
            stride,
            rows: 0,
        }
    }

    /// The most rows a chunk holds.
    pub(super) fn capacity(&self) -> usize {
        self.stride
    }

    /// Takes `rows`, row-major with `n_features` values each and at most `capacity()` rows,
    /// as the chunk.
    pub(super) fn load(&mut self, rows: &[f64], n_features: usize) {
        self.rows = rows.len() / n_features;
        debug_assert!(self.rows <= self.stride);
        for (row_index, row) in rows.chunks_exact(n_features).enumerate() {
            for (feature, &value) in row.iter().enumerate() {
                self.values[feature * self.stride + row_index] = value;
            }
        }
    }

    /// Rows in the chunk.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn add_path_lengths(tree: &LevelTree, columns: &Columns, sums: &mut [[f64; LANES]]) {
    let stride = columns.stride;
    let column_values = Table::new(&columns.values);
    let vectors = columns.rows.div_ceil(LANES).min(sums.len());
    let one = _mm512_set1_epi64(1);
    // Positions of the lanes in the current level, one vector per LANES rows.
    let mut positions = [_mm512_setzero_si512(); MAX_CHUNK_ROWS / LANES];
    let positions = &mut positions[..vectors];
    // The row number of each lane, one vector per LANES rows.
    let row_numbers: [__m512i; MAX_CHUNK_ROWS / LANES] = std::array::from_fn(|vector| {
        let first = (vector * LANES) as i64;
        _mm512_add_epi64(
            _mm512_set1_epi64(first),
            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
        )
    });
    let row_numbers = &row_numbers[..vectors];

    if tree.levels > 0 {
        let root_column = usize::from(tree.features[0]) * stride;
        let root_threshold = _mm512_set1_pd(tree.thresholds[0]);
        for (vector, position) in positions.iter_mut().enumerate() {
            let start = root_column + vector * LANES;
            let values = load_f64x8(
                columns.values[start..start + LANES]
                    .try_into()
                    .expect("8 values"),
            );
            let goes_right = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(values, root_threshold);
            *position = _mm512_maskz_mov_epi64(goes_right, one);
        }
    }

    let thresholds = &tree.thresholds;
    let threshold_table =
        |start: usize| load_f64x8(thresholds[start..start + 8].try_into().expect("8 values"));
    // Levels 1, 2 and 3 have at most eight splits, level 4 sixteen, level 5 thirty-two.
    let level_1 = threshold_table(1);
    let level_2 = threshold_table(3);
    let level_3 = threshold_table(7);
    let level_4 = [threshold_table(15), threshold_table(23)];
    let level_5 = [
        threshold_table(31),
        threshold_table(39),
        threshold_table(47),
        threshold_table(55),
    ];
    // The two deepest levels, of at most 64 and 128 splits, are gathered.
    let level_6 = Table::new(&thresholds[63..127]);
    let level_7 = Table::new(&thresholds[127..255]);
    let sixteen = _mm512_set1_epi64(16);

    let stride_shift = _mm512_set1_epi64(i64::from(stride.trailing_zeros()));
    // One step per level, each with its own lookups inlined into its own loop.
    macro_rules! step {
        ($feature_of:expr, $threshold_of:expr) => {
            step_level(
                positions,
                row_numbers,
                &column_values,
                stride_shift,
                $feature_of,
                $threshold_of,
            )
        };
    }
    for level in 1..tree.levels {
        let feature_bytes = |first_split: usize| {
            load_u8x64(
                tree.features[first_split..first_split + 64]
                    .try_into()
                    .expect("64 bytes"),
            )
        };
        // Up to level 6 a level has at most 64 splits, whose feature bytes fill one register.
        let features = feature_bytes((1 << level) - 1);
        let one_register = |at| _mm512_maskz_permutexvar_epi8(LOW_BYTE_OF_EACH_LANE, at, features);
        match level {
            1 => step!(one_register, |at| _mm512_permutexvar_pd(at, level_1)),
            2 => step!(one_register, |at| _mm512_permutexvar_pd(at, level_2)),
            3 => step!(one_register, |at| _mm512_permutexvar_pd(at, level_3)),
            4 => step!(one_register, |at| _mm512_permutex2var_pd(
                level_4[0], at, level_4[1]
            )),
            5 => step!(one_register, |at| {
                let upper_half = _mm512_test_epi64_mask(at, sixteen);
                _mm512_mask_blend_pd(
                    upper_half,
                    _mm512_permutex2var_pd(level_5[0], at, level_5[1]),
                    _mm512_permutex2var_pd(level_5[2], at, level_5[3]),
                )
            }),
            6 => step!(one_register, |at| level_6.gather(at)),
            _ => {
                let upper_features = feature_bytes(127 + 64);
                let two_registers = |at| {
                    _mm512_maskz_permutex2var_epi8(
                        LOW_BYTE_OF_EACH_LANE,
                        features,
                        at,
                        upper_features,
                    )
                };
                step!(two_registers, |at| level_7.gather(at))
            }
        }
    }

    let path_lengths = Table::new(&tree.path_lengths);
    for (sum, &position) in sums.iter_mut().zip(positions.iter()) {
        let added = _mm512_add_pd(load_f64x8(sum), path_lengths.gather(position));
        store_f64x8(sum, added);
    }
}

/// Selects the low byte of each 64-bit lane: a byte looked up into it is zero-extended.
const LOW_BYTE_OF_EACH_LANE: __mmask64 = 0x0101_0101_0101_0101;

/// Moves every lane of `positions` one level down: the lane compares its row's value of the
/// feature of its split (`feature_of` its position) with the split's threshold
/// (`threshold_of` its position) and goes to the left or the right child. Generic over the
/// lookups so that each level's are inlined into a loop of their own.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn step_level(
    positions: &mut [__m512i],
    row_numbers: &[__m512i],
    column_values: &Table,
    stride_shift: __m512i,
    feature_of: impl Fn(__m512i) -> __m512i,
    threshold_of: impl Fn(__m512i) -> __m512d,
) {
    let one = _mm512_set1_epi64(1);
    for (position, &rows) in positions.iter_mut().zip(row_numbers) {
        let at = *position;
        let column_start = _mm512_sllv_epi64(feature_of(at), stride_shift);
        let values = column_values.gather(_mm512_add_epi64(column_start, rows));
        // NaN compares false (ordered, quiet), so a missing value goes left, as does a value
        // equal to the threshold: the portable kernel's `>`.
        let goes_right = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(values, threshold_of(at));
        let doubled = _mm512_add_epi64(at, at);
        *position = _mm512_mask_add_epi64(doubled, goes_right, doubled, one);
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load_f64x8(values: &[f64; 8]) -> __m512d {
    // SAFETY: the reference guarantees 64 readable bytes; the load has no alignment need.
    unsafe { _mm512_loadu_pd(values.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store_f64x8(values: &mut [f64; 8], vector: __m512d) {
    // SAFETY: the reference guarantees 64 writable bytes; the store has no alignment need.
    unsafe { _mm512_storeu_pd(values.as_mut_ptr(), vector) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load_u8x64(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: the reference guarantees 64 readable bytes; the load has no alignment need.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// Values that lanes look up by index.
struct Table<'a> {
    values: &'a [f64],
    /// `values.len()`, as a lane compares it.
    len: i64,
}

impl<'a> Table<'a> {
    fn new(values: &'a [f64]) -> Self {
        Self {
            values,
            len: i64::try_from(values.len()).expect("a slice is shorter than i64::MAX"),
        }
    }

    /// `values[index]` in each lane. A lane whose index is outside the table reads nothing
    /// and gives 0; callers pass indices in range, and the check makes that local to see.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gather(&self, index: __m512i) -> __m512d {
        let inside = _mm512_cmplt_epu64_mask(index, _mm512_set1_epi64(self.len));
        // SAFETY: only the lanes set in `inside` are read, and their indices are below
        // `values.len()`, so each 8-byte read is inside `values`.
        unsafe {
            _mm512_mask_i64gather_pd::<8>(_mm512_setzero_pd(), inside, index, self.values.as_ptr())
        }
    }
}
