//! The process's scoring kernel forced by `--forest-kernel` (`FOREST_KERNEL`): chosen at once,
//! reported, never measured over, and an error on a CPU that cannot run it. The choice is
//! process-wide, so this file is a test binary of its own, with a single test.

use clap::Parser;
use scorer::forest::{
    process_kernel, ChoiceBasis, ForestError, ForestParams, IsolationForest, KernelArgs,
    ScoringKernel,
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    kernel: KernelArgs,
}

#[test]
fn a_forced_kernel_is_the_process_kernel_or_a_clear_error() {
    let forced = Cli::try_parse_from(["scorer", "--forest-kernel", "avx512"]).unwrap();
    if !ScoringKernel::Avx512.is_available() {
        let error = forced.kernel.apply().unwrap_err();
        assert!(matches!(
            error,
            ForestError::KernelUnavailable(ScoringKernel::Avx512)
        ));
        assert_eq!(
            error.to_string(),
            "this CPU cannot run the avx512 scoring kernel"
        );
        assert_eq!(process_kernel(), None);
        return;
    }
    forced.kernel.apply().unwrap();
    let choice = process_kernel().expect("forcing chooses at once");
    assert_eq!(choice.kernel, ScoringKernel::Avx512);
    assert_eq!(choice.basis, ChoiceBasis::Forced);
    let metrics = telemetry::render();
    assert!(metrics.contains("vncguard_scorer_forest_kernel{kernel=\"avx512\"} 1\n"));
    assert!(metrics.contains("vncguard_scorer_forest_kernel{kernel=\"portable\"} 0\n"));

    // Scoring a level-by-level batch keeps the forced kernel; nothing is measured.
    let rows: Vec<f64> = (0..400).map(|i| f64::from(i % 37) * 0.25).collect();
    let names = vec!["a".to_string(), "b".to_string()];
    let forest = IsolationForest::fit(&rows, 2, names, &ForestParams::default()).unwrap();
    let mut scores = Vec::new();
    forest.score_batch(&rows, &mut scores);
    assert!(std::ptr::eq(process_kernel().unwrap(), choice));
    assert_eq!(choice.basis, ChoiceBasis::Forced);

    let portable = Cli::try_parse_from(["scorer", "--forest-kernel", "portable"]).unwrap();
    assert!(matches!(
        portable.kernel.apply(),
        Err(ForestError::KernelAlreadyChosen {
            chosen: ScoringKernel::Avx512,
            forced: ScoringKernel::Portable
        })
    ));
    assert!(Cli::try_parse_from(["scorer", "--forest-kernel", "sse2"]).is_err());
}
