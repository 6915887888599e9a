//! The process's scoring kernel when none is forced: measured once, on the first forest that
//! scores a batch level by level, and reported. The choice is process-wide, so this file is a
//! test binary of its own, with a single test.

use scorer::forest::{
    force_process_kernel, process_kernel, ChoiceBasis, ForestError, ForestParams, IsolationForest,
    ScoringKernel,
};

/// `n_rows` rows of `n_features` values spread over a few units, deterministic.
fn rows(n_rows: usize, n_features: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n_rows * n_features)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 50) as f64
        })
        .collect()
}

fn forest(n_features: usize, seed: u64) -> (Vec<f64>, IsolationForest) {
    let training = rows(500, n_features, seed);
    let names = (0..n_features).map(|f| format!("f{f}")).collect();
    let params = ForestParams {
        seed,
        ..ForestParams::default()
    };
    let forest = IsolationForest::fit(&training, n_features, names, &params).unwrap();
    (training, forest)
}

fn bits(scores: &[f64]) -> Vec<u64> {
    scores.iter().map(|score| score.to_bits()).collect()
}

#[test]
fn the_first_level_by_level_batch_measures_the_kernel_once_and_reports_it() {
    let (training, first) = forest(5, 1);
    let mut scores = Vec::new();

    // One row walks the linked nodes: no kernel is needed, none is chosen.
    first.score_batch(&training[..5], &mut scores);
    assert_eq!(process_kernel(), None);

    first.score_batch(&training, &mut scores);
    let choice = process_kernel().expect("a level-by-level batch chooses the kernel");
    assert!(choice.kernel.is_available());
    match &choice.basis {
        ChoiceBasis::Measured(calibration) => {
            assert!(ScoringKernel::Avx512.is_available());
            assert!(calibration.rows >= 8 && calibration.passes >= 1);
            assert!(calibration.portable_rows_per_second > 0.0);
            assert!(calibration.avx512_rows_per_second > 0.0);
        }
        ChoiceBasis::OnlyAvailable => {
            assert!(!ScoringKernel::Avx512.is_available());
            assert_eq!(choice.kernel, ScoringKernel::Portable);
        }
        ChoiceBasis::Forced => panic!("nothing forced a kernel"),
    }

    // Scored with the chosen kernel: the same bits as every kernel gives.
    for kernel in ScoringKernel::ALL.into_iter().filter(|k| k.is_available()) {
        let mut with_kernel = Vec::new();
        first
            .score_batch_with(kernel, &training, &mut with_kernel)
            .unwrap();
        assert_eq!(bits(&with_kernel), bits(&scores), "{kernel}");
    }

    let metrics = telemetry::render();
    for kernel in ScoringKernel::ALL {
        let in_use = i64::from(kernel == choice.kernel);
        let series = format!("vncguard_scorer_forest_kernel{{kernel=\"{kernel}\"}} {in_use}\n");
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    if matches!(choice.basis, ChoiceBasis::Measured(_)) {
        assert!(metrics.contains("vncguard_scorer_forest_kernel_calibration_rows_per_second"));
    }

    // Another forest, of another shape, keeps the process's choice: it is made once.
    let (other_rows, other) = forest(40, 2);
    other.score_batch(&other_rows, &mut scores);
    assert!(std::ptr::eq(process_kernel().unwrap(), choice));

    // Forcing comes before the first batch: afterwards only the kernel chosen is accepted.
    assert_eq!(force_process_kernel(choice.kernel).unwrap(), choice);
    for kernel in ScoringKernel::ALL
        .into_iter()
        .filter(|&k| k != choice.kernel)
    {
        match force_process_kernel(kernel) {
            Err(ForestError::KernelAlreadyChosen { chosen, forced }) => {
                assert_eq!((chosen, forced), (choice.kernel, kernel));
            }
            Err(ForestError::KernelUnavailable(refused)) => {
                assert_eq!(refused, kernel);
                assert!(!kernel.is_available());
            }
            other => panic!("forcing {kernel} after the choice: {other:?}"),
        }
    }
}
