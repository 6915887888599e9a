//! Fits vncguard's Isolation Forest on a CSV matrix, writes its scores and measures how fast
//! it scores on one core. `run.sh` drives it next to scikit-learn's on the same data.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use scorer::forest::{process_kernel, ChoiceBasis, ForestParams, IsolationForest, ScoringKernel};

const HELP: &str = "\
forest-bench: fit vncguard's Isolation Forest on a CSV matrix and score it

Usage: forest-bench --input <CSV> --scores <FILE> [--seed <N>] [--timing-input <CSV>]

  --input <CSV>          features only, one row per line, comma-separated, no header
  --scores <FILE>        where to write one anomaly score per input row
  --seed <N>             forest seed [default: 0]
  --timing-input <CSV>   also time every kernel over the rows of this file (same layout)
  -h, --help             print this help

Fits 100 trees on 256-row subsamples (scikit-learn's defaults), scores the input with
score_batch, which chooses the process's kernel by timing each one this CPU runs on a
calibration batch, and prints one JSON line: rows, features, fit_seconds, kernel (the one
chosen), chosen_by and, when measured, calibration_rows_per_second per kernel,
calibration_passes and calibration_seconds; with --timing-input also rows_per_second per
kernel, the best pass of each over those rows, single-threaded, the kernels taking turns for
three seconds each. No environment variables are read, so FOREST_KERNEL does not apply.";

/// Scoring is repeated for at least this long per kernel and each kernel's fastest pass is
/// reported, which is the figure least disturbed by whatever else the machine is doing.
const TIMING_BUDGET: Duration = Duration::from_secs(3);
const MIN_TIMING_PASSES: usize = 3;

struct BenchArgs {
    input: PathBuf,
    scores: PathBuf,
    seed: u64,
    timing_input: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<BenchArgs>, String> {
    let (mut input, mut scores, mut seed, mut timing_input) = (None, None, 0, None);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(value)),
            "--scores" => scores = Some(PathBuf::from(value)),
            "--seed" => {
                seed = value
                    .parse()
                    .map_err(|error| format!("--seed {value}: {error}"))?
            }
            "--timing-input" => timing_input = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}; see --help")),
        }
    }
    Ok(Some(BenchArgs {
        input: input.ok_or("--input is required")?,
        scores: scores.ok_or("--scores is required")?,
        seed,
        timing_input,
    }))
}

/// Reads a headerless numeric CSV into a row-major matrix and its column count.
fn read_matrix(path: &Path) -> Result<(Vec<f64>, usize), String> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut values = Vec::new();
    let mut n_features = None;
    for (line_index, line) in text.lines().filter(|line| !line.is_empty()).enumerate() {
        let location = || format!("{}:{}", path.display(), line_index + 1);
        let before = values.len();
        for field in line.split(',') {
            let value = field
                .trim()
                .parse::<f64>()
                .map_err(|error| format!("{}: {field:?}: {error}", location()))?;
            values.push(value);
        }
        let row_len = values.len() - before;
        let expected = *n_features.get_or_insert(row_len);
        if row_len != expected {
            return Err(format!(
                "{}: {row_len} fields where earlier rows have {expected}",
                location()
            ));
        }
    }
    Ok((
        values,
        n_features.ok_or_else(|| format!("{}: no rows", path.display()))?,
    ))
}

/// Best scoring throughput of each of `kernels` over `rows`, one whole batch per pass. The
/// kernels take turns pass by pass, so a burst of other work on the machine falls on each alike.
fn scoring_rows_per_second(
    forest: &IsolationForest,
    kernels: &[ScoringKernel],
    rows: &[f64],
) -> Result<Vec<f64>, String> {
    let n_rows = (rows.len() / forest.n_features()) as f64;
    let mut scores = Vec::new();
    let mut time_pass = |kernel| {
        let pass_started = Instant::now();
        forest
            .score_batch_with(kernel, std::hint::black_box(rows), &mut scores)
            .map_err(|error| error.to_string())?;
        std::hint::black_box(&scores);
        Ok::<_, String>(n_rows / pass_started.elapsed().as_secs_f64())
    };
    for &kernel in kernels {
        time_pass(kernel)?;
    }
    let started = Instant::now();
    let mut best = vec![0.0_f64; kernels.len()];
    let mut passes = 0;
    while passes < MIN_TIMING_PASSES || started.elapsed() < TIMING_BUDGET * kernels.len() as u32 {
        for (&kernel, best) in kernels.iter().zip(&mut best) {
            *best = best.max(time_pass(kernel)?);
        }
        passes += 1;
    }
    Ok(best)
}

fn run(args: BenchArgs) -> Result<(), String> {
    let (rows, n_features) = read_matrix(&args.input)?;
    let feature_names = (0..n_features).map(|index| format!("f{index}")).collect();
    let params = ForestParams {
        seed: args.seed,
        ..ForestParams::default()
    };
    let fit_started = Instant::now();
    let forest = IsolationForest::fit(&rows, n_features, feature_names, &params)
        .map_err(|error| error.to_string())?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();

    let mut scores = Vec::new();
    forest.score_batch(&rows, &mut scores);
    let lines: String = scores.iter().map(|score| format!("{score:?}\n")).collect();
    fs::write(&args.scores, lines)
        .map_err(|error| format!("{}: {error}", args.scores.display()))?;

    let choice = process_kernel().ok_or("score_batch chose no kernel")?;
    let mut report = serde_json::json!({
        "rows": scores.len(),
        "features": n_features,
        "fit_seconds": fit_seconds,
        "kernel": choice.kernel.name(),
    });
    match &choice.basis {
        ChoiceBasis::Measured(calibration) => {
            report["chosen_by"] = "measurement".into();
            report["calibration_rows_per_second"] = serde_json::json!({
                ScoringKernel::Portable.name(): calibration.portable_rows_per_second,
                ScoringKernel::Avx512.name(): calibration.avx512_rows_per_second,
            });
            report["calibration_seconds"] = calibration.elapsed.as_secs_f64().into();
            report["calibration_passes"] = calibration.passes.into();
        }
        ChoiceBasis::OnlyAvailable => report["chosen_by"] = "only kernel this CPU runs".into(),
        ChoiceBasis::Forced => report["chosen_by"] = "forced".into(),
    }
    if let Some(timing_input) = &args.timing_input {
        let (timing_rows, timing_features) = read_matrix(timing_input)?;
        if timing_features != n_features {
            return Err(format!(
                "{}: {timing_features} features, the model has {n_features}",
                timing_input.display()
            ));
        }
        let kernels: Vec<ScoringKernel> = ScoringKernel::ALL
            .into_iter()
            .filter(|kernel| kernel.is_available())
            .collect();
        let rates = scoring_rows_per_second(&forest, &kernels, &timing_rows)?;
        report["rows_per_second"] = kernels
            .iter()
            .zip(rates)
            .map(|(kernel, rate)| (kernel.name().to_string(), rate.into()))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("forest-bench: {message}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("forest-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
