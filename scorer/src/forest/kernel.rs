//! Which kernel walks the forests of a process: the faster of those this CPU runs, measured on
//! the first forest that scores a batch level by level, unless the operator forces one
//! (`FOREST_KERNEL`).
//!
//! CPU flags cannot tell which is faster. The AVX-512 kernel scored 1.6-1.8 times the
//! portable kernel's rows per second on the Intel Xeon it was written on, and fewer on an AMD
//! EPYC (Zen 4) with the same flags; gathers, which it is built on, are several times slower
//! again under the Downfall microcode. Both kernels give the same scores bit for bit, so the
//! choice only changes the speed, and timing both for a few milliseconds settles it on the
//! machine itself.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{ForestError, IsolationForest, Xoshiro256StarStar};

/// How batches of rows walk forests that are kept level by level (see `LevelTree`). Every
/// kernel gives the same scores bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoringKernel {
    /// Plain Rust, any CPU.
    Portable,
    /// Eight rows per vector with AVX-512 F, BW and VBMI (x86-64: Intel since Ice Lake,
    /// AMD since Zen 4).
    Avx512,
}

impl ScoringKernel {
    /// Every kernel, available here or not.
    pub const ALL: [Self; 2] = [Self::Portable, Self::Avx512];

    /// Whether this CPU runs the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => super::avx512::Avx512::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 => false,
        }
    }

    /// The kernel's name in `FOREST_KERNEL`, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for ScoringKernel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// How a process picks its kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSetting {
    /// Time every kernel this CPU runs on the first forest scored and keep the faster.
    #[default]
    Auto,
    /// Force the portable kernel.
    Portable,
    /// Force the AVX-512 kernel; an error on a CPU without it.
    Avx512,
}

/// The scoring-kernel flag of the binaries that score forests.
#[derive(Clone, Debug, clap::Args)]
pub struct KernelArgs {
    /// Forest scoring kernel: `auto` times each kernel this CPU runs on the first forest
    /// scored and keeps the faster (the scores are the same bit for bit); `portable` or
    /// `avx512` forces one, and forcing one the CPU lacks is an error.
    #[arg(long, env = "FOREST_KERNEL", value_enum, default_value_t = KernelSetting::Auto)]
    pub forest_kernel: KernelSetting,
}

impl KernelArgs {
    /// Makes the setting the process's: a forced kernel is chosen now (and reported), `auto`
    /// leaves the choice to the first forest scored. Call it before scoring.
    pub fn apply(&self) -> Result<(), ForestError> {
        let forced = match self.forest_kernel {
            KernelSetting::Auto => return Ok(()),
            KernelSetting::Portable => ScoringKernel::Portable,
            KernelSetting::Avx512 => ScoringKernel::Avx512,
        };
        force_process_kernel(forced).map(drop)
    }
}

/// The kernel a process scores with, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelChoice {
    pub kernel: ScoringKernel,
    pub basis: ChoiceBasis,
}

/// Why a kernel was chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum ChoiceBasis {
    /// The operator forced it.
    Forced,
    /// It is the only one this CPU runs.
    OnlyAvailable,
    /// It scored the calibration batch faster (see [`Calibration`]).
    Measured(Calibration),
}

/// What the calibration measured: each kernel's best pass over the same batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Rows in the calibration batch.
    pub rows: usize,
    /// Timed passes of each kernel over it.
    pub passes: usize,
    /// Rows per second of each kernel's best pass.
    pub portable_rows_per_second: f64,
    pub avx512_rows_per_second: f64,
    /// Time the whole calibration took, warm-up included.
    pub elapsed: Duration,
}

/// Row-tree walks in one calibration pass: 512 rows of a 100-tree forest, about 0.3 ms at the
/// 1.5-3 M rows/s either kernel reaches on the CPUs measured. Enough that a pass is thousands
/// of times the resolution of the clock and walks whole chunks of either kernel (64 and 128
/// rows) as a stage batch (500 rows by default) does, few enough that every pass of both
/// kernels together is about 3 ms of work. A forest with more trees gets fewer rows, so a
/// pass costs the same.
const CALIBRATION_ROW_WALKS: usize = 512 * 100;

/// The most rows a calibration batch has: a forest of few trees scores them quickly enough.
const MAX_CALIBRATION_ROWS: usize = 512;

/// Timed passes of each kernel, after one untimed warm-up pass each (page faults, cold caches
/// and branch predictors). Each kernel keeps its best pass, the one least disturbed by other
/// work on the machine; the kernels alternate pass by pass, so a burst of such work falls on
/// both alike. Measured on a 2-core machine shared with other work: over five passes the
/// portable kernel's best came within 1% of its best over three seconds, and the ratio of the
/// two kernels stayed within 2% of its median in most of 30 calibrations (up to 18% off in a
/// few that other work disturbed throughout). Every
/// pass is always run, however long the machine takes: when a wall-clock budget of 5 ms cut
/// calibrations short, 2 of 8 decided on a single pass that a preemption had stretched, and
/// took AVX-512 for 17 and 195 times faster than the portable kernel.
const CALIBRATION_PASSES: usize = 5;

/// How much faster than the portable kernel the AVX-512 kernel must score the calibration
/// batch to be chosen. Above the 2% by which most calibrations vary (see
/// [`CALIBRATION_PASSES`]), so that noise does not flip the choice from one process to the
/// next where the kernels are close; and where they are this close, the portable kernel is
/// kept: it is the plain-Rust path, and its speed does not hinge on the gather microcode of
/// the CPU.
const AVX512_MARGIN: f64 = 0.05;

/// The process's choice, made once.
static PROCESS_KERNEL: OnceLock<KernelChoice> = OnceLock::new();

/// The kernel this process scores with, once chosen: forced, or measured when the first forest
/// scored a batch level by level.
pub fn process_kernel() -> Option<&'static KernelChoice> {
    PROCESS_KERNEL.get()
}

/// Makes `kernel` the process's kernel and reports it. An error if this CPU cannot run it, or
/// if the process has already chosen another (forcing must come before the first batch).
pub fn force_process_kernel(kernel: ScoringKernel) -> Result<&'static KernelChoice, ForestError> {
    if !kernel.is_available() {
        return Err(ForestError::KernelUnavailable(kernel));
    }
    let choice = PROCESS_KERNEL.get_or_init(|| {
        let choice = KernelChoice {
            kernel,
            basis: ChoiceBasis::Forced,
        };
        choice.report();
        choice
    });
    if choice.kernel != kernel {
        return Err(ForestError::KernelAlreadyChosen {
            chosen: choice.kernel,
            forced: kernel,
        });
    }
    Ok(choice)
}

/// The process's kernel, measured on `forest` (kept level by level) if not chosen yet.
pub(super) fn process_kernel_measured_on(forest: &IsolationForest) -> ScoringKernel {
    PROCESS_KERNEL
        .get_or_init(|| {
            let choice = KernelChoice::measured_on(forest);
            choice.report();
            choice
        })
        .kernel
}

impl KernelChoice {
    /// Times every kernel this CPU runs on a calibration batch for `forest` and keeps the
    /// faster, by [`preferred_kernel`].
    fn measured_on(forest: &IsolationForest) -> Self {
        if !ScoringKernel::Avx512.is_available() {
            return Self {
                kernel: ScoringKernel::Portable,
                basis: ChoiceBasis::OnlyAvailable,
            };
        }
        let started = Instant::now();
        let n_rows = (CALIBRATION_ROW_WALKS / forest.trees.len().max(1))
            .clamp(super::MIN_LEVEL_ROWS, MAX_CALIBRATION_ROWS);
        let rows = calibration_rows(forest, n_rows);
        let mut scores = Vec::with_capacity(n_rows);
        let mut time_pass = |kernel| {
            let pass_started = Instant::now();
            forest
                .score_batch_with(kernel, std::hint::black_box(&rows), &mut scores)
                .expect("only kernels this CPU runs are timed");
            std::hint::black_box(&scores);
            pass_started.elapsed()
        };
        for kernel in ScoringKernel::ALL {
            time_pass(kernel);
        }
        let mut best = [Duration::MAX; ScoringKernel::ALL.len()];
        for _ in 0..CALIBRATION_PASSES {
            for (kernel, best) in ScoringKernel::ALL.into_iter().zip(&mut best) {
                *best = (*best).min(time_pass(kernel));
            }
        }
        // A pass takes hundreds of microseconds; the floor only keeps the rate finite.
        let rows_per_second = |best: Duration| n_rows as f64 / best.as_secs_f64().max(1e-9);
        let [portable_best, avx512_best] = best;
        let calibration = Calibration {
            rows: n_rows,
            passes: CALIBRATION_PASSES,
            portable_rows_per_second: rows_per_second(portable_best),
            avx512_rows_per_second: rows_per_second(avx512_best),
            elapsed: started.elapsed(),
        };
        Self {
            kernel: preferred_kernel(
                calibration.portable_rows_per_second,
                calibration.avx512_rows_per_second,
            ),
            basis: ChoiceBasis::Measured(calibration),
        }
    }

    /// Logs the choice and sets the `vncguard_scorer_forest_kernel` gauges: 1 for the chosen
    /// kernel, 0 for the others.
    fn report(&self) {
        for kernel in ScoringKernel::ALL {
            telemetry::gauge(
                "vncguard_scorer_forest_kernel",
                "Forest scoring kernel in use (1) and not (0); chosen once per process.",
                &[("kernel", kernel.name())],
            )
            .set(i64::from(kernel == self.kernel));
        }
        match &self.basis {
            ChoiceBasis::Measured(calibration) => {
                for (kernel, rate) in [
                    (
                        ScoringKernel::Portable,
                        calibration.portable_rows_per_second,
                    ),
                    (ScoringKernel::Avx512, calibration.avx512_rows_per_second),
                ] {
                    telemetry::gauge(
                        "vncguard_scorer_forest_kernel_calibration_rows_per_second",
                        "Rows per second of each forest scoring kernel's best calibration pass.",
                        &[("kernel", kernel.name())],
                    )
                    .set(rate as i64);
                }
                tracing::info!(
                    kernel = self.kernel.name(),
                    chosen_by = "measurement",
                    portable_rows_per_second = calibration.portable_rows_per_second as u64,
                    avx512_rows_per_second = calibration.avx512_rows_per_second as u64,
                    calibration_rows = calibration.rows,
                    calibration_passes = calibration.passes,
                    calibration_us = calibration.elapsed.as_micros() as u64,
                    "forest scoring kernel chosen"
                );
            }
            ChoiceBasis::Forced => tracing::info!(
                kernel = self.kernel.name(),
                chosen_by = "FOREST_KERNEL",
                "forest scoring kernel chosen"
            ),
            ChoiceBasis::OnlyAvailable => tracing::info!(
                kernel = self.kernel.name(),
                chosen_by = "only kernel this CPU runs",
                "forest scoring kernel chosen"
            ),
        }
    }
}

/// The kernel to keep given each one's calibration speed: AVX-512 only if it is faster than
/// the portable kernel by more than [`AVX512_MARGIN`].
fn preferred_kernel(portable_rows_per_second: f64, avx512_rows_per_second: f64) -> ScoringKernel {
    if avx512_rows_per_second > portable_rows_per_second * (1.0 + AVX512_MARGIN) {
        ScoringKernel::Avx512
    } else {
        ScoringKernel::Portable
    }
}

/// `n_rows` rows for timing `forest`, each value the threshold of a split on its feature drawn
/// at random from the whole forest. Thresholds are drawn between the values of the training
/// rows that reached a split, so they follow the training data and the calibration rows take
/// paths through the trees as real rows do, without the caller having to provide any. A
/// feature no split tests is 0.
fn calibration_rows(forest: &IsolationForest, n_rows: usize) -> Vec<f64> {
    let mut thresholds_by_feature = vec![Vec::new(); forest.n_features()];
    for tree in &forest.trees {
        // `leaf_rows` has one entry per real node, 0 for splits; the padding is left out.
        for (node, &leaf_rows) in tree.nodes.iter().zip(&tree.leaf_rows) {
            if leaf_rows == 0 {
                thresholds_by_feature[node.feature as usize].push(node.threshold);
            }
        }
    }
    let mut rng = Xoshiro256StarStar::from_seed(0);
    (0..n_rows)
        .flat_map(|_| thresholds_by_feature.iter())
        .map(|thresholds| match thresholds.len() {
            0 => 0.0,
            len => thresholds[rng.below(len)],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_is_kept_only_when_faster_by_the_margin() {
        let portable = 1_000_000.0;
        assert_eq!(
            preferred_kernel(portable, portable),
            ScoringKernel::Portable
        );
        assert_eq!(
            preferred_kernel(portable, portable * 0.8),
            ScoringKernel::Portable
        );
        assert_eq!(
            preferred_kernel(portable, portable * (1.0 + AVX512_MARGIN / 2.0)),
            ScoringKernel::Portable
        );
        assert_eq!(
            preferred_kernel(portable, portable * (1.0 + 2.0 * AVX512_MARGIN)),
            ScoringKernel::Avx512
        );
    }
}
