//! Isolation Forest (Liu, Ting and Zhou, 2008), fitted and scored the way scikit-learn's
//! `IsolationForest` does, so that the two can be compared score for score.
//!
//! Fitting: every tree is grown on its own subsample of `min(subsample_size, n)` rows drawn
//! without replacement. A node picks a feature uniformly among those that are not constant in
//! the node, and a threshold uniformly in `[min, max)` of that feature; rows `<= threshold` go
//! left. A node becomes a leaf at the depth limit (`ceil(log2(subsample))` unless set), when it
//! holds a single row, or when every feature is constant in it.
//!
//! Scoring: the path length of a row in a tree is the depth of the leaf it reaches plus
//! `c(leaf rows)`, the expected depth still to go had the tree been grown fully
//! ([`average_path_length`]). The anomaly score is `2^(-E[h(x)] / c(subsample))`, in `(0, 1]`:
//! about 0.5 for ordinary rows, close to 1 for rows that are isolated early. That is the
//! convention of scikit-learn's `-score_samples`. Fitting refuses non-finite values; at
//! scoring time a NaN goes left at every split that tests it, as a value equal to the
//! threshold does, so a row with missing values still gets a deterministic score.
//!
//! Scoring is the hot path. A forest of trees at most [`MAX_LEVELS`] deep over at most 256
//! features (the default depth limit of a 256-row subsample is 8) is also kept as complete
//! binary trees stored level by level: a leaf above the last level is replaced by splits that
//! send every value left, so every row takes the same number of steps and its path length is
//! read at the bottom level. Two kernels walk them ([`ScoringKernel`]), with the same scores
//! bit for bit. On a CPU with AVX-512 (VBMI), eight rows can walk a tree in the lanes of a
//! vector with the splits of most levels looked up in registers (module `avx512`, the
//! workspace's only `unsafe` code); which kernel is faster depends on the CPU, so a process
//! times both once and keeps the faster, unless told which (module `kernel`). The portable
//! kernel copies chunks of rows into rows padded to a fixed stride and walks each tree with
//! a group of 16 rows at a time, a level at a time, their positions kept in locals: the rows
//! of a group are independent of each other, so the core overlaps their lookups. No branch
//! depends on the data, and byte positions index 256-entry windows of a level and byte
//! features index padded rows, so neither needs a bounds check. Other forests, and batches
//! too small to pay for the copy, walk the linked nodes of the model file, a block of rows in
//! lockstep.
//! [`IsolationForest::score_batch`] allocates once per call, not per row.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;

pub use kernel::{
    force_process_kernel, process_kernel, Calibration, ChoiceBasis, KernelArgs, KernelChoice,
    KernelSetting, ScoringKernel,
};

/// Version of the model file layout written by [`IsolationForest::to_json`]. A file of any
/// other version is refused rather than guessed at.
pub const MODEL_FORMAT_VERSION: u32 = 1;

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Nodes a tree may have: node positions are `u32`, and padded to a power of two
/// (see `Tree`) they must still fit.
const MAX_TREE_NODES: usize = 1 << 31;

/// Rows that lockstep scoring takes through every tree before moving on: enough that a
/// tree, once in L1 cache, serves many rows.
const CHUNK_ROWS: usize = 128;

/// Rows that walk a tree side by side: enough independent lookups to keep the core busy
/// while each one waits on memory, few enough to stay in registers.
const LOCKSTEP_ROWS: usize = 16;

/// Levels of splits a tree may have to be scored level by level (see `LevelTree`): the
/// positions in a level below it, and the feature indices, then fit in a byte.
const MAX_LEVELS: usize = 8;

/// Entries a byte indexes: the width of the windows that byte positions and features index.
const BYTE_RANGE: usize = 256;

/// Values per padded row in level-by-level scoring: room for any byte feature index, plus one
/// cache line so that consecutive rows do not all fall in the same few cache sets.
const PADDED_ROW_LEN: usize = BYTE_RANGE + 8;

/// Rows that level-by-level scoring takes through every tree before moving on: their padded
/// copies, touched only in their first features, stay in a 32 KiB L1 data cache with a tree
/// even at 64 features. Measured on an AMD EPYC (Zen 4, 32 KiB L1d): 64 rows scored 7-13%
/// faster than 128 at 30 and 64 features, whose first values then overflow L1, and the same
/// within 2% at 4 and 13; 32 rows, which reload every tree twice as often, were within 3%.
const LEVEL_CHUNK_ROWS: usize = 64;

/// Rows that walk a tree together in level-by-level scoring, each keeping its position from
/// the root to the bottom in a local (on x86-64, half of them in registers and the rest in
/// stack slots): enough independent chains of lookups (feature, then value, then comparison)
/// to keep the core's loads busy while each waits on the one before. Measured: 16 rows scored
/// 12-29% faster than 8 (too few chains to hide a step's latency) and 12-22% faster than 32
/// (more positions spilled to the stack).
const LEVEL_GROUP_ROWS: usize = 16;

/// Fewest rows that [`IsolationForest::score_batch`] scores level by level; fewer rows do not
/// pay for the per-level passes and the copy, and walk the linked nodes instead.
const MIN_LEVEL_ROWS: usize = 8;

/// How a forest is grown. The defaults are those of Liu et al. and of scikit-learn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Number of trees; 100 is where the paper found path lengths to have converged.
    pub n_trees: usize,
    /// Rows drawn, without replacement, to grow each tree; capped at the number of
    /// training rows.
    pub subsample_size: usize,
    /// Seed of the random generator: the same rows and parameters give the same forest.
    pub seed: u64,
    /// Depth at which nodes stop splitting; `None` means `ceil(log2(subsample))`, the average
    /// tree height, past which only normal rows would still be told apart.
    pub max_depth: Option<usize>,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            subsample_size: 256,
            seed: 0,
            max_depth: None,
        }
    }
}

/// Why a forest could not be fitted or a model file could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum ForestError {
    #[error("no training rows")]
    EmptyInput,
    #[error("a row needs at least one feature")]
    NoFeatures,
    #[error("{values} values do not make whole rows of {n_features} features")]
    RaggedRows { values: usize, n_features: usize },
    #[error("{names} feature names for {n_features} features")]
    FeatureNamesMismatch { names: usize, n_features: usize },
    #[error("training value {value} at row {row}, feature {feature} is not finite")]
    NonFiniteValue {
        row: usize,
        feature: usize,
        value: f64,
    },
    #[error("invalid forest parameters: {0}")]
    InvalidParams(&'static str),
    #[error(
        "model format version {found} is not supported (this build reads {MODEL_FORMAT_VERSION})"
    )]
    UnsupportedFormatVersion { found: u32 },
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("this CPU cannot run the {0} scoring kernel")]
    KernelUnavailable(ScoringKernel),
    #[error("the {forced} scoring kernel was forced after this process had chosen {chosen}")]
    KernelAlreadyChosen {
        chosen: ScoringKernel,
        forced: ScoringKernel,
    },
    #[error("model JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// keys, `2 H(n-1) - 2(n-1)/n` with `H(i) = ln(i) + γ`; `c(1) = 0`, `c(2) = 1`.
/// It normalises path lengths and stands in for the subtree a leaf did not grow.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// A fitted Isolation Forest. Serialises (through serde) to the model file described by
/// [`MODEL_FORMAT_VERSION`], and is validated whenever it is deserialised.
#[derive(Clone, Debug)]
pub struct IsolationForest {
    feature_names: Vec<String>,
    params: ForestParams,
    training_rows: usize,
    trees: Vec<Tree>,
    /// The same trees laid out level by level, when every tree and the feature count allow it
    /// (see `LevelTree`).
    level_trees: Option<Vec<LevelTree>>,
    /// `-1 / (n_trees * c(subsample))`: a row's score is `exp2(its path length sum * this)`.
    path_length_sum_to_exponent: f64,
}

/// One isolation tree as linked nodes: the layout of the model file, and the one walked in
/// lockstep scoring. The children of a split are `left` and `left + 1`; a leaf has `left`
/// pointing at itself and an infinite threshold, so a walk that reaches it stays there for
/// the remaining steps.
///
/// `nodes` and `leaf_path_length` are padded with unreachable leaves to a power-of-two
/// length: a position masked with `len - 1` is then provably in bounds, so the walk pays an
/// `and` where bounds checks cost it about a fifth of its throughput.
#[derive(Clone, Debug)]
struct Tree {
    nodes: Vec<Node>,
    /// Depth of the leaf plus `c(leaf rows)` for leaves, unused (0) for splits.
    leaf_path_length: Vec<f64>,
    /// Training rows that reached each leaf, 0 for splits; one entry per real node, no
    /// padding. This is what the model file records.
    leaf_rows: Vec<u32>,
    /// Depth of the deepest leaf: the number of steps that reaches a leaf from the root.
    depth: usize,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f64,
    feature: u32,
    left: u32,
}

impl Node {
    /// A leaf at `index`: every value, NaN included, compares not above the infinite
    /// threshold and leads back to the leaf itself.
    fn leaf(index: usize) -> Self {
        Self {
            threshold: f64::INFINITY,
            feature: 0,
            left: index as u32,
        }
    }
}

impl Tree {
    fn new(
        mut nodes: Vec<Node>,
        mut leaf_path_length: Vec<f64>,
        leaf_rows: Vec<u32>,
        depth: usize,
    ) -> Self {
        let padded_len = nodes.len().next_power_of_two();
        nodes.extend((nodes.len()..padded_len).map(Node::leaf));
        leaf_path_length.resize(padded_len, 0.0);
        Self {
            nodes,
            leaf_path_length,
            leaf_rows,
            depth,
        }
    }

    /// Adds the path length of each row in `values` to its entry in `sums`, walking
    /// [`LOCKSTEP_ROWS`] rows at a time. `values` holds `sums.len()` rows of `n_features`
    /// values, row-major, then padding up to a power-of-two length.
    fn add_path_lengths(&self, values: &[f64], n_features: usize, sums: &mut [f64]) {
        let mut lockstep_sums = sums.chunks_exact_mut(LOCKSTEP_ROWS);
        let mut row_start = 0;
        for sums in &mut lockstep_sums {
            let row_starts: [usize; LOCKSTEP_ROWS] =
                std::array::from_fn(|row| row_start + row * n_features);
            let sums: &mut [f64; LOCKSTEP_ROWS] = sums
                .try_into()
                .expect("chunks_exact_mut gives whole blocks");
            self.add_lockstep_path_lengths(values, row_starts, sums);
            row_start += LOCKSTEP_ROWS * n_features;
        }
        for sum in lockstep_sums.into_remainder() {
            self.add_lockstep_path_lengths(values, [row_start], std::array::from_mut(sum));
            row_start += n_features;
        }
    }

    /// Walks the `ROWS` rows of `values` that start at `row_starts` down the tree together,
    /// one level per step, and adds each one's path length to its sum. A walk that has
    /// reached its leaf stays there, so every row takes `depth` steps and no branch depends
    /// on the data; the rows' independent lookups keep the core busy while each one waits
    /// on memory.
    fn add_lockstep_path_lengths<const ROWS: usize>(
        &self,
        values: &[f64],
        row_starts: [usize; ROWS],
        sums: &mut [f64; ROWS],
    ) {
        debug_assert!(values.len().is_power_of_two());
        let value_mask = values.len() - 1;
        let values = &values[..=value_mask];
        let node_mask = self.nodes.len() - 1;
        let nodes = &self.nodes[..=node_mask];
        let leaf_path_length = &self.leaf_path_length[..=node_mask];
        let mut positions = [0u32; ROWS];
        for _ in 0..self.depth {
            for (position, &row_start) in positions.iter_mut().zip(&row_starts) {
                let node = nodes[*position as usize & node_mask];
                let value = values[(row_start + node.feature as usize) & value_mask];
                // NaN compares false, so a missing value goes left, as does a value equal
                // to the threshold.
                *position = node.left + u32::from(value > node.threshold);
            }
        }
        for (sum, position) in sums.iter_mut().zip(positions) {
            *sum += leaf_path_length[position as usize & node_mask];
        }
    }
}

/// An isolation tree of at most [`MAX_LEVELS`] levels of splits, stored as a complete
/// binary tree level by level: the splits of level `l` at `2^l - 1 ..`, the children of
/// position `p` at positions `2p` and `2p + 1` of the next level. A leaf above the bottom is
/// replaced by splits with an infinite threshold, which send every value, NaN included,
/// left, so a row that reaches it carries on along leftmost children to the bottom, where
/// its path length is stored. Both split arrays are padded so that every level has a
/// [`BYTE_RANGE`]-entry window.
#[derive(Clone, Debug)]
struct LevelTree {
    thresholds: Vec<f64>,
    /// Fits in a byte: level-by-level scoring requires at most [`BYTE_RANGE`] features.
    features: Vec<u8>,
    /// Path length of the leaf each bottom position belongs to, [`BYTE_RANGE`] entries.
    path_lengths: Vec<f64>,
    /// Levels of splits: the steps from the root to the bottom.
    levels: usize,
}

impl LevelTree {
    fn new(tree: &Tree) -> Self {
        let levels = tree.depth;
        let split_slots = (1 << levels) - 1 + BYTE_RANGE;
        let mut thresholds = vec![f64::INFINITY; split_slots];
        let mut features = vec![0; split_slots];
        let mut path_lengths = vec![0.0; BYTE_RANGE];
        // (node index, its level, its position in the level)
        let mut pending = vec![(0, 0, 0)];
        while let Some((index, level, position)) = pending.pop() {
            if tree.leaf_rows[index] > 0 {
                path_lengths[position << (levels - level)] = tree.leaf_path_length[index];
                continue;
            }
            let node = tree.nodes[index];
            let slot = (1 << level) - 1 + position;
            thresholds[slot] = node.threshold;
            features[slot] = node.feature as u8;
            let left = node.left as usize;
            pending.push((left, level + 1, 2 * position));
            pending.push((left + 1, level + 1, 2 * position + 1));
        }
        Self {
            thresholds,
            features,
            path_lengths,
            levels,
        }
    }

    /// Adds the path length of each of `rows` to its entry in `sums`, [`LEVEL_GROUP_ROWS`]
    /// rows at a time: both hold a whole number of groups.
    fn add_path_lengths(&self, rows: &[[f64; PADDED_ROW_LEN]], sums: &mut [f64]) {
        debug_assert!(rows.len().is_multiple_of(LEVEL_GROUP_ROWS));
        for (rows, sums) in rows
            .chunks_exact(LEVEL_GROUP_ROWS)
            .zip(sums.chunks_exact_mut(LEVEL_GROUP_ROWS))
        {
            self.add_group_path_lengths(
                rows.try_into().expect("whole groups"),
                sums.try_into().expect("whole groups"),
            );
        }
    }

    /// Walks a group of rows down the tree together, a level at a time, and adds each one's
    /// path length to its sum. The rows' positions are locals from the root to the bottom: a
    /// step of a row loads its split's feature and threshold and its value and compares them,
    /// and no branch depends on the data. With the root's split hoisted out of the loop (4-7%
    /// of the gain), this measured 13-18% faster than passes over a whole chunk that wrote
    /// each row's direction and then its position to buffers at every level.
    fn add_group_path_lengths(
        &self,
        rows: &[[f64; PADDED_ROW_LEN]; LEVEL_GROUP_ROWS],
        sums: &mut [f64; LEVEL_GROUP_ROWS],
    ) {
        let mut positions = [0u8; LEVEL_GROUP_ROWS];
        // Every row starts at the root: its split needs no lookup per row.
        if self.levels > 0 {
            let (root_feature, root_threshold) =
                (usize::from(self.features[0]), self.thresholds[0]);
            for (position, row) in positions.iter_mut().zip(rows) {
                *position = u8::from(row[root_feature] > root_threshold);
            }
        }
        for level in 1..self.levels {
            let start = (1 << level) - 1;
            let window = start..start + BYTE_RANGE;
            let thresholds: &[f64; BYTE_RANGE] =
                self.thresholds[window.clone()].try_into().expect("padded");
            let features: &[u8; BYTE_RANGE] = self.features[window].try_into().expect("padded");
            for (position, row) in positions.iter_mut().zip(rows) {
                let split = usize::from(*position);
                // NaN compares false, so a missing value goes left, as does a value equal
                // to the threshold.
                let goes_right = row[usize::from(features[split])] > thresholds[split];
                *position = (*position << 1) | u8::from(goes_right);
            }
        }
        let path_lengths: &[f64; BYTE_RANGE] = self.path_lengths[..]
            .try_into()
            .expect("one per bottom position");
        for (sum, &position) in sums.iter_mut().zip(&positions) {
            *sum += path_lengths[usize::from(position)];
        }
    }
}

impl IsolationForest {
    /// Grows a forest on `rows`, a row-major matrix of `n_features` columns named by
    /// `feature_names`. Every value must be finite.
    pub fn fit(
        rows: &[f64],
        n_features: usize,
        feature_names: Vec<String>,
        params: &ForestParams,
    ) -> Result<Self, ForestError> {
        if n_features == 0 {
            return Err(ForestError::NoFeatures);
        }
        if rows.is_empty() {
            return Err(ForestError::EmptyInput);
        }
        if !rows.len().is_multiple_of(n_features) {
            return Err(ForestError::RaggedRows {
                values: rows.len(),
                n_features,
            });
        }
        if feature_names.len() != n_features {
            return Err(ForestError::FeatureNamesMismatch {
                names: feature_names.len(),
                n_features,
            });
        }
        if let Some(position) = rows.iter().position(|value| !value.is_finite()) {
            return Err(ForestError::NonFiniteValue {
                row: position / n_features,
                feature: position % n_features,
                value: rows[position],
            });
        }
        if params.n_trees == 0 {
            return Err(ForestError::InvalidParams("n_trees must be at least 1"));
        }
        if params.subsample_size == 0 {
            return Err(ForestError::InvalidParams(
                "subsample_size must be at least 1",
            ));
        }
        if n_features > u32::MAX as usize {
            return Err(ForestError::InvalidParams(
                "more features than a node can index",
            ));
        }
        let training_rows = rows.len() / n_features;
        let subsample_size = params.subsample_size.min(training_rows);
        // A tree has fewer than 2 * subsample nodes.
        if subsample_size > MAX_TREE_NODES / 2 {
            return Err(ForestError::InvalidParams("subsample_size too large"));
        }

        let mut grower = TreeGrower {
            rows,
            n_features,
            max_depth: params
                .max_depth
                .unwrap_or_else(|| default_max_depth(subsample_size)),
            rng: Xoshiro256StarStar::from_seed(params.seed),
            candidate_features: Vec::with_capacity(n_features),
        };
        // Shuffling a prefix of a permutation draws a uniform subsample from it whatever
        // order earlier trees left it in, so one buffer serves every tree.
        let mut row_order: Vec<usize> = (0..training_rows).collect();
        let mut subsample = vec![0; subsample_size];
        let trees = (0..params.n_trees)
            .map(|_| {
                for position in 0..subsample_size {
                    let drawn = position + grower.rng.below(training_rows - position);
                    row_order.swap(position, drawn);
                }
                subsample.copy_from_slice(&row_order[..subsample_size]);
                grower.grow(&mut subsample)
            })
            .collect();

        Ok(Self::assemble(
            feature_names,
            params.clone(),
            training_rows,
            trees,
        ))
    }

    fn assemble(
        feature_names: Vec<String>,
        params: ForestParams,
        training_rows: usize,
        trees: Vec<Tree>,
    ) -> Self {
        let normaliser =
            trees.len() as f64 * average_path_length(params.subsample_size.min(training_rows));
        // A single training row gives c = 0 and no information: scikit-learn scores every
        // row 0.5 then, and so do we.
        let path_length_sum_to_exponent = if normaliser > 0.0 {
            -1.0 / normaliser
        } else {
            0.0
        };
        let level_trees = (feature_names.len() <= BYTE_RANGE
            && trees.iter().all(|tree| tree.depth <= MAX_LEVELS))
        .then(|| trees.iter().map(LevelTree::new).collect());
        Self {
            feature_names,
            params,
            training_rows,
            trees,
            level_trees,
            path_length_sum_to_exponent,
        }
    }

    /// Anomaly score of one row in `(0, 1]`; about 0.5 is ordinary, near 1 is anomalous.
    /// NaN values go to the left child of every split that tests them. Scoring many rows,
    /// [`Self::score_batch`] is faster and allocates once per call rather than per row.
    ///
    /// # Panics
    /// If `row` does not have exactly one value per feature.
    pub fn score(&self, row: &[f64]) -> f64 {
        assert_eq!(
            row.len(),
            self.n_features(),
            "row length must equal the model's feature count"
        );
        let mut scores = Vec::with_capacity(1);
        self.score_batch(row, &mut scores);
        scores[0]
    }

    /// Scores every row of the row-major matrix `rows` into `out`, replacing its contents
    /// and reusing its allocation. The scores are those of [`Self::score`].
    ///
    /// # Panics
    /// If `rows` is not made of whole rows of the model's feature count.
    ///
    /// A batch walked level by level uses the process's kernel ([`process_kernel`]): the one
    /// forced, or else the faster on this CPU, timed on the first forest that scores such a
    /// batch, which takes a few milliseconds once per process.
    pub fn score_batch(&self, rows: &[f64], out: &mut Vec<f64>) {
        let kernel = if self.walks_level_by_level(rows) {
            kernel::process_kernel_measured_on(self)
        } else {
            // The batch walks the linked nodes, whatever the kernel.
            ScoringKernel::Portable
        };
        self.score_batch_with(kernel, rows, out)
            .expect("the process's kernel is one this CPU runs");
    }

    /// Whether a batch of `rows` is walked level by level, by a [`ScoringKernel`].
    fn walks_level_by_level(&self, rows: &[f64]) -> bool {
        self.level_trees.is_some() && rows.len() / self.n_features() >= MIN_LEVEL_ROWS
    }

    /// [`Self::score_batch`] with the given kernel, for comparing kernels: the scores are the
    /// same bit for bit, only the speed differs. A kernel this CPU cannot run is an error for
    /// a batch it would walk (one of at least 8 rows of a forest kept level by level); other
    /// batches take the linked nodes whatever the kernel.
    ///
    /// # Panics
    /// If `rows` is not made of whole rows of the model's feature count.
    pub fn score_batch_with(
        &self,
        kernel: ScoringKernel,
        rows: &[f64],
        out: &mut Vec<f64>,
    ) -> Result<(), ForestError> {
        let n_features = self.n_features();
        assert_eq!(
            rows.len() % n_features,
            0,
            "rows must hold a whole number of rows of the model's feature count"
        );
        out.clear();
        out.reserve(rows.len() / n_features);
        match &self.level_trees {
            Some(level_trees) if self.walks_level_by_level(rows) => match kernel {
                #[cfg(target_arch = "x86_64")]
                ScoringKernel::Avx512 => match avx512::Avx512::detect() {
                    Some(avx512) => {
                        self.score_level_by_level_avx512(avx512, level_trees, rows, out)
                    }
                    None => return Err(ForestError::KernelUnavailable(kernel)),
                },
                #[cfg(not(target_arch = "x86_64"))]
                ScoringKernel::Avx512 => return Err(ForestError::KernelUnavailable(kernel)),
                ScoringKernel::Portable => self.score_level_by_level(level_trees, rows, out),
            },
            _ => self.score_in_lockstep(rows, out),
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    fn score_level_by_level_avx512(
        &self,
        avx512: avx512::Avx512,
        level_trees: &[LevelTree],
        rows: &[f64],
        out: &mut Vec<f64>,
    ) {
        let n_features = self.n_features();
        let mut columns = avx512::Columns::new(n_features, rows.len() / n_features);
        let mut path_length_sums = vec![[0.0; avx512::LANES]; columns.capacity() / avx512::LANES];
        for chunk in rows.chunks(columns.capacity() * n_features) {
            columns.load(chunk, n_features);
            let sums = &mut path_length_sums[..columns.rows().div_ceil(avx512::LANES)];
            sums.fill([0.0; avx512::LANES]);
            for tree in level_trees {
                avx512.add_path_lengths(tree, &columns, sums);
            }
            out.extend(
                sums.as_flattened()[..columns.rows()]
                    .iter()
                    .map(|&sum| self.score_from_path_length_sum(sum)),
            );
        }
    }

    fn score_level_by_level(&self, level_trees: &[LevelTree], rows: &[f64], out: &mut Vec<f64>) {
        let n_features = self.n_features();
        // Rows are walked in whole groups: the last group of a chunk may run past its rows into
        // rows left from an earlier chunk (or zeros), whose sums are computed and never read.
        let buffer_rows = (rows.len() / n_features)
            .min(LEVEL_CHUNK_ROWS)
            .next_multiple_of(LEVEL_GROUP_ROWS);
        let mut padded_rows = vec![[0.0; PADDED_ROW_LEN]; buffer_rows];
        let mut path_length_sums = [0.0; LEVEL_CHUNK_ROWS];
        for chunk in rows.chunks(LEVEL_CHUNK_ROWS * n_features) {
            let chunk_rows = chunk.len() / n_features;
            for (padded, row) in padded_rows.iter_mut().zip(chunk.chunks_exact(n_features)) {
                padded[..n_features].copy_from_slice(row);
            }
            let walked_rows = chunk_rows.next_multiple_of(LEVEL_GROUP_ROWS);
            let path_length_sums = &mut path_length_sums[..walked_rows];
            path_length_sums.fill(0.0);
            for tree in level_trees {
                tree.add_path_lengths(&padded_rows[..walked_rows], path_length_sums);
            }
            out.extend(
                path_length_sums[..chunk_rows]
                    .iter()
                    .map(|&sum| self.score_from_path_length_sum(sum)),
            );
        }
    }

    fn score_in_lockstep(&self, rows: &[f64], out: &mut Vec<f64>) {
        let n_features = self.n_features();
        // Each chunk is copied into a buffer of power-of-two length, so that value indices
        // can be masked into bounds like node positions (see `Tree`).
        let chunk_len = CHUNK_ROWS * n_features;
        let mut chunk_copy = vec![0.0; rows.len().min(chunk_len).next_power_of_two()];
        for chunk in rows.chunks(chunk_len) {
            chunk_copy[..chunk.len()].copy_from_slice(chunk);
            let mut path_length_sums = [0.0; CHUNK_ROWS];
            let path_length_sums = &mut path_length_sums[..chunk.len() / n_features];
            for tree in &self.trees {
                tree.add_path_lengths(&chunk_copy, n_features, path_length_sums);
            }
            out.extend(
                path_length_sums
                    .iter()
                    .map(|&sum| self.score_from_path_length_sum(sum)),
            );
        }
    }

    fn score_from_path_length_sum(&self, path_length_sum: f64) -> f64 {
        if self.path_length_sum_to_exponent == 0.0 {
            return 0.5;
        }
        (path_length_sum * self.path_length_sum_to_exponent).exp2()
    }

    /// Names of the features, in the order rows must give them.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// Number of rows the forest was fitted on.
    pub fn training_rows(&self) -> usize {
        self.training_rows
    }

    /// The model file: JSON of the layout [`MODEL_FORMAT_VERSION`].
    pub fn to_json(&self) -> Result<String, ForestError> {
        Ok(serde_json::to_string(&ModelFile::from(self))?)
    }

    /// Reads a model file written by [`Self::to_json`]. A file of another format version, a
    /// malformed or truncated file, or a tree that is not a well-formed isolation tree over
    /// the named features gives an error; no input makes it panic.
    pub fn from_json(json: &str) -> Result<Self, ForestError> {
        // The version is read alone first: another version may lay out everything else
        // differently.
        let header: ModelFileHeader = serde_json::from_str(json)?;
        if header.format_version != MODEL_FORMAT_VERSION {
            return Err(ForestError::UnsupportedFormatVersion {
                found: header.format_version,
            });
        }
        Self::try_from(serde_json::from_str::<ModelFile>(json)?)
    }
}

fn default_max_depth(subsample_size: usize) -> usize {
    match subsample_size {
        0 | 1 => 0,
        n => (usize::BITS - (n - 1).leading_zeros()) as usize,
    }
}

struct TreeGrower<'a> {
    rows: &'a [f64],
    n_features: usize,
    max_depth: usize,
    rng: Xoshiro256StarStar,
    candidate_features: Vec<u32>,
}

/// A node waiting to be grown: its index and the range of the subsample that reached it.
struct PendingNode {
    index: usize,
    start: usize,
    end: usize,
    depth: usize,
}

impl TreeGrower<'_> {
    fn value(&self, row: usize, feature: u32) -> f64 {
        self.rows[row * self.n_features + feature as usize]
    }

    /// Grows a tree on `subsample` (row indices), which it reorders so that each node's rows
    /// are contiguous.
    fn grow(&mut self, subsample: &mut [usize]) -> Tree {
        let mut nodes = vec![Node::leaf(0)];
        let mut leaf_path_length = vec![0.0];
        let mut leaf_rows = vec![0];
        let mut depth = 0;
        let mut pending = vec![PendingNode {
            index: 0,
            start: 0,
            end: subsample.len(),
            depth: 0,
        }];
        while let Some(node) = pending.pop() {
            let node_rows = &mut subsample[node.start..node.end];
            let split = if node.depth < self.max_depth && node_rows.len() > 1 {
                self.draw_split(node_rows)
            } else {
                None
            };
            let Some((feature, threshold)) = split else {
                nodes[node.index] = Node::leaf(node.index);
                leaf_path_length[node.index] =
                    node.depth as f64 + average_path_length(node_rows.len());
                leaf_rows[node.index] = node_rows.len() as u32;
                depth = depth.max(node.depth);
                continue;
            };
            let left_rows = partition(node_rows, |row| self.value(row, feature) <= threshold);
            let left = nodes.len();
            nodes[node.index] = Node {
                threshold,
                feature,
                left: left as u32,
            };
            nodes.extend([Node::leaf(left), Node::leaf(left + 1)]);
            leaf_path_length.extend([0.0; 2]);
            leaf_rows.extend([0; 2]);
            let middle = node.start + left_rows;
            pending.push(PendingNode {
                index: left + 1,
                start: middle,
                end: node.end,
                depth: node.depth + 1,
            });
            pending.push(PendingNode {
                index: left,
                start: node.start,
                end: middle,
                depth: node.depth + 1,
            });
        }
        Tree::new(nodes, leaf_path_length, leaf_rows, depth)
    }

    /// Draws a feature uniformly among those not constant over `node_rows` and a threshold
    /// uniformly in `[min, max)` of it, as scikit-learn's random splitter does; `None` if
    /// every feature is constant.
    fn draw_split(&mut self, node_rows: &[usize]) -> Option<(u32, f64)> {
        self.candidate_features.clear();
        self.candidate_features.extend(0..self.n_features as u32);
        while !self.candidate_features.is_empty() {
            let drawn = self.rng.below(self.candidate_features.len());
            let feature = self.candidate_features[drawn];
            let (min, max) =
                node_rows
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(min, max), &row| {
                        let value = self.value(row, feature);
                        (min.min(value), max.max(value))
                    });
            if min < max {
                let fraction = self.rng.next_f64();
                // A convex combination cannot overflow where `max - min` could.
                let threshold = min * (1.0 - fraction) + max * fraction;
                // Rounding may land on max (or below min) and leave a child empty.
                let threshold = if (min..max).contains(&threshold) {
                    threshold
                } else {
                    min
                };
                return Some((feature, threshold));
            }
            self.candidate_features.swap_remove(drawn);
        }
        None
    }
}

/// Moves the rows for which `goes_left` holds to the front; returns how many there are.
fn partition(rows: &mut [usize], goes_left: impl Fn(usize) -> bool) -> usize {
    let mut left_count = 0;
    for position in 0..rows.len() {
        if goes_left(rows[position]) {
            rows.swap(left_count, position);
            left_count += 1;
        }
    }
    left_count
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64 as its authors recommend:
/// small, fast and statistically sound, and written here so a seed means the same forest on
/// every platform and every version of every dependency.
#[derive(Clone, Debug)]
struct Xoshiro256StarStar {
    state: [u64; 4],
}

impl Xoshiro256StarStar {
    fn from_seed(seed: u64) -> Self {
        let mut splitmix_state = seed;
        let mut splitmix64 = || {
            splitmix_state = splitmix_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = splitmix_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            state: [splitmix64(), splitmix64(), splitmix64(), splitmix64()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` by multiply-shift (Lemire); the bias, at most `bound / 2^64`, is
    /// far below anything a forest could show.
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }
}

/// The model file. Splits name their feature by index into `feature_names`; their right
/// child is `left + 1`. Leaves keep the number of subsample rows that reached them, from
/// which their path length is derived.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    feature_names: Vec<String>,
    params: ForestParams,
    training_rows: usize,
    trees: Vec<Vec<NodeEntry>>,
}

#[derive(Deserialize)]
struct ModelFileHeader {
    format_version: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum NodeEntry {
    Split {
        feature: u32,
        threshold: f64,
        left: u32,
    },
    Leaf {
        rows: u32,
    },
}

impl From<&IsolationForest> for ModelFile {
    fn from(forest: &IsolationForest) -> Self {
        let trees = forest
            .trees
            .iter()
            .map(|tree| {
                tree.nodes
                    .iter()
                    .zip(&tree.leaf_rows)
                    .map(|(node, &rows)| {
                        if rows > 0 {
                            NodeEntry::Leaf { rows }
                        } else {
                            NodeEntry::Split {
                                feature: node.feature,
                                threshold: node.threshold,
                                left: node.left,
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            format_version: MODEL_FORMAT_VERSION,
            feature_names: forest.feature_names.clone(),
            params: forest.params.clone(),
            training_rows: forest.training_rows,
            trees,
        }
    }
}

impl TryFrom<ModelFile> for IsolationForest {
    type Error = ForestError;

    fn try_from(file: ModelFile) -> Result<Self, ForestError> {
        if file.format_version != MODEL_FORMAT_VERSION {
            return Err(ForestError::UnsupportedFormatVersion {
                found: file.format_version,
            });
        }
        let invalid = |reason: String| Err(ForestError::InvalidModel(reason));
        if file.feature_names.is_empty() {
            return invalid("no features".into());
        }
        if file.training_rows == 0 {
            return invalid("no training rows".into());
        }
        if file.params.subsample_size == 0 {
            return invalid("subsample_size is 0".into());
        }
        if file.trees.is_empty() || file.trees.len() != file.params.n_trees {
            return invalid(format!(
                "{} trees where params say {}",
                file.trees.len(),
                file.params.n_trees
            ));
        }
        let subsample_size = file.params.subsample_size.min(file.training_rows);
        let trees = file
            .trees
            .iter()
            .enumerate()
            .map(|(tree_index, entries)| {
                tree_from_entries(entries, file.feature_names.len(), subsample_size).map_err(
                    |reason| ForestError::InvalidModel(format!("tree {tree_index}: {reason}")),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::assemble(
            file.feature_names,
            file.params,
            file.training_rows,
            trees,
        ))
    }
}

/// Rebuilds a tree, checking that the entries form one tree rooted at entry 0: every child
/// comes after its parent (so there is no cycle) and every entry but the root is the child of
/// exactly one split (so there is nothing unreachable).
fn tree_from_entries(
    entries: &[NodeEntry],
    n_features: usize,
    subsample_size: usize,
) -> Result<Tree, String> {
    if entries.is_empty() {
        return Err("no nodes".into());
    }
    if entries.len() > MAX_TREE_NODES {
        return Err("too many nodes".into());
    }
    let mut has_parent = vec![false; entries.len()];
    let mut node_depth = vec![0usize; entries.len()];
    let mut nodes = Vec::with_capacity(entries.len());
    let mut leaf_path_length = Vec::with_capacity(entries.len());
    let mut leaf_rows = Vec::with_capacity(entries.len());
    let mut tree_depth = 0;
    for (index, entry) in entries.iter().enumerate() {
        // Every possible parent of this node has a smaller index and was checked already.
        if index > 0 && !has_parent[index] {
            return Err(format!("node {index} is no split's child"));
        }
        let depth = node_depth[index];
        match *entry {
            NodeEntry::Split {
                feature,
                threshold,
                left,
            } => {
                let left_index = left as usize;
                if feature as usize >= n_features {
                    return Err(format!("node {index} splits on unknown feature {feature}"));
                }
                if !threshold.is_finite() {
                    return Err(format!("node {index} has a non-finite threshold"));
                }
                if left_index <= index || left_index + 1 >= entries.len() {
                    return Err(format!("node {index} has children out of order or range"));
                }
                for child in [left_index, left_index + 1] {
                    if has_parent[child] {
                        return Err(format!("node {child} is the child of two splits"));
                    }
                    has_parent[child] = true;
                    node_depth[child] = depth + 1;
                }
                nodes.push(Node {
                    threshold,
                    feature,
                    left,
                });
                leaf_path_length.push(0.0);
                leaf_rows.push(0);
            }
            NodeEntry::Leaf { rows } => {
                if rows == 0 || rows as usize > subsample_size {
                    return Err(format!(
                        "leaf {index} holds {rows} rows of a {subsample_size}-row subsample"
                    ));
                }
                nodes.push(Node::leaf(index));
                leaf_path_length.push(depth as f64 + average_path_length(rows as usize));
                leaf_rows.push(rows);
                tree_depth = tree_depth.max(depth);
            }
        }
    }
    Ok(Tree::new(nodes, leaf_path_length, leaf_rows, tree_depth))
}

impl Serialize for IsolationForest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ModelFile::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IsolationForest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = ModelFile::deserialize(deserializer)?;
        Self::try_from(file).map_err(serde::de::Error::custom)
    }
}
