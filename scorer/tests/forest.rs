use scorer::forest::{
    average_path_length, ForestError, ForestParams, IsolationForest, ScoringKernel,
    MODEL_FORMAT_VERSION,
};

const N_FEATURES: usize = 3;

/// Deterministic standard normal draws (xorshift + Box-Muller), so the tests need no
/// random-number crate and always see the same data.
struct Gaussian {
    state: u64,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// `n_rows` rows of a standard Gaussian cluster around the origin, row-major.
fn gaussian_cluster(n_rows: usize, seed: u64) -> Vec<f64> {
    let mut gaussian = Gaussian::new(seed);
    (0..n_rows * N_FEATURES)
        .map(|_| gaussian.sample())
        .collect()
}

fn feature_names() -> Vec<String> {
    ["bytes_in", "bytes_out", "auth_failures"]
        .map(String::from)
        .to_vec()
}

fn fit_cluster(seed: u64) -> (Vec<f64>, IsolationForest) {
    let rows = gaussian_cluster(1000, 7);
    let params = ForestParams {
        seed,
        ..ForestParams::default()
    };
    let forest = IsolationForest::fit(&rows, N_FEATURES, feature_names(), &params).unwrap();
    (rows, forest)
}

fn scores(forest: &IsolationForest, rows: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    forest.score_batch(rows, &mut out);
    out
}

#[test]
fn average_path_length_matches_known_values() {
    assert_eq!(average_path_length(0), 0.0);
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    // 2 (ln 2 + γ) - 4/3, and the normaliser of a 256-row subsample, both as scikit-learn's
    // _average_path_length gives them.
    assert!((average_path_length(3) - 1.207_392_357_589_623).abs() < 1e-12);
    assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
}

#[test]
fn hand_written_model_scores_by_the_formula() {
    // One tree: the root splits feature 1 at 0.5; 3 of the 4 subsample rows went left.
    let json = format!(
        r#"{{"format_version":{MODEL_FORMAT_VERSION},
            "feature_names":["bytes_in","bytes_out","auth_failures"],
            "params":{{"n_trees":1,"subsample_size":256,"seed":0,"max_depth":null}},
            "training_rows":4,
            "trees":[[{{"split":{{"feature":1,"threshold":0.5,"left":1}}}},
                      {{"leaf":{{"rows":3}}}},
                      {{"leaf":{{"rows":1}}}}]]}}"#
    );
    let forest = IsolationForest::from_json(&json).unwrap();
    // The subsample is min(256, 4 training rows) = 4, so scores are normalised by c(4).
    let c4 = 2.0 * (3f64.ln() + 0.577_215_664_901_532_9) - 1.5;
    let left = 2f64.powf(-(1.0 + average_path_length(3)) / c4);
    let right = 2f64.powf(-1.0 / c4);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(
        close(forest.score(&[9.0, 0.5, 9.0]), left),
        "the threshold goes left"
    );
    assert!(close(forest.score(&[9.0, 0.49, 9.0]), left));
    assert!(
        close(forest.score(&[9.0, f64::NAN, 9.0]), left),
        "NaN goes left"
    );
    assert!(close(forest.score(&[9.0, 0.51, 9.0]), right));
    assert!(close(forest.score(&[9.0, f64::INFINITY, 9.0]), right));
}

#[test]
fn same_seed_gives_same_forest_and_another_seed_does_not() {
    let (rows, first) = fit_cluster(3);
    let (_, second) = fit_cluster(3);
    let (_, other_seed) = fit_cluster(4);
    assert_eq!(first.to_json().unwrap(), second.to_json().unwrap());
    assert_eq!(scores(&first, &rows), scores(&second, &rows));
    assert_ne!(scores(&first, &rows), scores(&other_seed, &rows));
}

#[test]
fn clear_outlier_scores_above_every_inlier() {
    let (rows, forest) = fit_cluster(0);
    let outlier = [8.0, -8.0, 8.0];
    let outlier_score = forest.score(&outlier);
    assert!(outlier_score > 0.6, "outlier scored {outlier_score}");
    let highest_inlier = scores(&forest, &rows).into_iter().fold(0.0, f64::max);
    assert!(
        outlier_score > highest_inlier,
        "outlier {outlier_score} <= inlier {highest_inlier}"
    );
}

#[test]
fn dense_cluster_points_score_as_normal() {
    let (_, forest) = fit_cluster(0);
    // Fresh points from the cluster's core, not the training rows themselves.
    let core: Vec<f64> = gaussian_cluster(200, 99)
        .into_iter()
        .map(|value| value * 0.3)
        .collect();
    for score in scores(&forest, &core) {
        assert!(score < 0.55, "core point scored {score}");
        assert!(score > 0.0);
    }
}

#[test]
fn batch_scores_equal_row_by_row_scores() {
    let (rows, forest) = fit_cluster(0);
    // 1000 rows: whole blocks plus a remainder.
    let row_by_row: Vec<f64> = rows
        .chunks_exact(N_FEATURES)
        .map(|row| forest.score(row))
        .collect();
    assert_eq!(scores(&forest, &rows), row_by_row);
}

#[test]
fn batch_scores_of_missing_and_infinite_values_equal_row_by_row_scores() {
    let (rows, forest) = fit_cluster(0);
    // Enough rows for a batch to be scored level by level, where a single row walks the
    // linked nodes: the two walks must agree on NaN, infinities and signed zeros.
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
    let batch: Vec<f64> = rows[..300 * N_FEATURES]
        .iter()
        .enumerate()
        .map(|(index, &value)| match index % 7 {
            0..=4 => specials[index % 7],
            _ => value,
        })
        .collect();
    let row_by_row: Vec<f64> = batch
        .chunks_exact(N_FEATURES)
        .map(|row| forest.score(row))
        .collect();
    assert_eq!(scores(&forest, &batch), row_by_row);
}

/// The thresholds of the splits on each feature, read from the model file.
fn thresholds_by_feature(forest: &IsolationForest) -> Vec<Vec<f64>> {
    let model: serde_json::Value = serde_json::from_str(&forest.to_json().unwrap()).unwrap();
    let mut thresholds = vec![Vec::new(); forest.n_features()];
    for node in model["trees"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|tree| tree.as_array().unwrap())
    {
        if let Some(split) = node.get("split") {
            let feature = split["feature"].as_u64().unwrap() as usize;
            thresholds[feature].push(split["threshold"].as_f64().unwrap());
        }
    }
    thresholds
}

#[test]
fn every_scoring_kernel_gives_the_row_by_row_scores_bit_for_bit() {
    // (features, subsample, trees): level-by-level trees of 2, 4, 7 and 8 levels, over 1 to
    // 256 features, so that every level's lookup and every chunk size is taken.
    let forests = [
        (1, 256, 10),
        (3, 4, 20),
        (13, 16, 30),
        (30, 256, 100),
        (64, 128, 40),
        (256, 256, 12),
    ];
    for (n_features, subsample_size, n_trees) in forests {
        let mut gaussian = Gaussian::new(n_features as u64);
        let training: Vec<f64> = (0..600 * n_features).map(|_| gaussian.sample()).collect();
        let names = (0..n_features)
            .map(|feature| format!("feature_{feature}"))
            .collect();
        let params = ForestParams {
            n_trees,
            subsample_size,
            seed: 3,
            max_depth: None,
        };
        let forest = IsolationForest::fit(&training, n_features, names, &params).unwrap();
        let thresholds = thresholds_by_feature(&forest);
        // Batch sizes around the AVX-512 kernel's 8-row vectors and chunks of up to 128 rows,
        // and the portable kernel's 16-row groups and 64-row chunks.
        for batch_rows in [8, 9, 16, 17, 63, 64, 65, 129, 1000] {
            // Missing, infinite and signed-zero values, and values equal to a split's
            // threshold (which go left), among ordinary ones.
            let batch: Vec<f64> = (0..batch_rows * n_features)
                .map(|index| {
                    let feature_thresholds = &thresholds[index % n_features];
                    match index % 11 {
                        0 => f64::NAN,
                        1 => f64::INFINITY,
                        2 => f64::NEG_INFINITY,
                        3 => -0.0,
                        4 | 5 if !feature_thresholds.is_empty() => {
                            feature_thresholds[index % feature_thresholds.len()]
                        }
                        _ => gaussian.sample(),
                    }
                })
                .collect();
            let row_by_row: Vec<u64> = batch
                .chunks_exact(n_features)
                .map(|row| forest.score(row).to_bits())
                .collect();
            for kernel in ScoringKernel::ALL {
                let mut out = Vec::new();
                match forest.score_batch_with(kernel, &batch, &mut out) {
                    Ok(()) => {
                        let batch_bits: Vec<u64> =
                            out.iter().map(|score| score.to_bits()).collect();
                        assert_eq!(
                            batch_bits, row_by_row,
                            "{kernel:?}, {n_features} features, subsample {subsample_size}, {batch_rows} rows"
                        );
                    }
                    Err(ForestError::KernelUnavailable(refused)) => {
                        assert_eq!(refused, kernel);
                        assert!(
                            !kernel.is_available(),
                            "{kernel:?} is available but was refused"
                        );
                    }
                    Err(other) => panic!("{kernel:?}: {other}"),
                }
            }
        }
    }
    assert!(ScoringKernel::Portable.is_available());
}

#[test]
fn forests_deeper_than_eight_levels_score_batches_like_rows() {
    let rows = gaussian_cluster(4000, 5);
    let params = ForestParams {
        n_trees: 20,
        subsample_size: 2048,
        ..ForestParams::default()
    };
    let forest = IsolationForest::fit(&rows, N_FEATURES, feature_names(), &params).unwrap();
    let batch = &rows[..500 * N_FEATURES];
    let row_by_row: Vec<f64> = batch
        .chunks_exact(N_FEATURES)
        .map(|row| forest.score(row))
        .collect();
    assert_eq!(scores(&forest, batch), row_by_row);
}

#[test]
fn batch_scores_follow_leaves_of_different_depths() {
    // The root splits feature 0 at 0: left splits feature 2 at 10 into leaves of 2 and 1
    // rows at depth 2, right is a leaf of 5 rows at depth 1 (where a walk that does not stay
    // left below it would go wrong, feature 0 being above 0 there).
    let json = format!(
        r#"{{"format_version":{MODEL_FORMAT_VERSION},
            "feature_names":["bytes_in","bytes_out","auth_failures"],
            "params":{{"n_trees":1,"subsample_size":8,"seed":0,"max_depth":null}},
            "training_rows":8,
            "trees":[[{{"split":{{"feature":0,"threshold":0.0,"left":1}}}},
                      {{"split":{{"feature":2,"threshold":10.0,"left":3}}}},
                      {{"leaf":{{"rows":5}}}},
                      {{"leaf":{{"rows":2}}}},
                      {{"leaf":{{"rows":1}}}}]]}}"#
    );
    let forest = IsolationForest::from_json(&json).unwrap();
    let c8 = average_path_length(8);
    let score = |path_length: f64| 2f64.powf(-path_length / c8);
    let expected = [
        score(1.0 + average_path_length(5)),
        score(2.0 + average_path_length(2)),
        score(2.0),
    ];
    // Each kind of row many times over, so the batch is scored level by level.
    let kinds = [[1.0, 0.0, 50.0], [-1.0, 0.0, 5.0], [-1.0, 0.0, 50.0]];
    let batch: Vec<f64> = (0..60).flat_map(|index| kinds[index % 3]).collect();
    for (index, score) in scores(&forest, &batch).into_iter().enumerate() {
        assert!(
            (score - expected[index % 3]).abs() < 1e-12,
            "row {index}: {score}, expected {}",
            expected[index % 3]
        );
    }
}

#[test]
fn nan_goes_left_deterministically() {
    let (_, forest) = fit_cluster(0);
    let with_nan = [f64::NAN, 0.0, 0.0];
    let score = forest.score(&with_nan);
    assert_eq!(score, forest.score(&with_nan));
    assert!(score > 0.0 && score <= 1.0);
    // Going left at every split on feature 0 is what the most negative value does.
    assert_eq!(score, forest.score(&[f64::MIN, 0.0, 0.0]));
}

#[test]
fn json_round_trip_keeps_scores_identical() {
    let (rows, forest) = fit_cluster(0);
    let json = forest.to_json().unwrap();
    let reloaded = IsolationForest::from_json(&json).unwrap();
    assert_eq!(reloaded.feature_names(), feature_names());
    assert_eq!(reloaded.params(), forest.params());
    assert_eq!(reloaded.training_rows(), 1000);
    assert_eq!(scores(&reloaded, &rows), scores(&forest, &rows));
    assert_eq!(
        reloaded.score(&[8.0, -8.0, 8.0]),
        forest.score(&[8.0, -8.0, 8.0])
    );
    assert_eq!(reloaded.to_json().unwrap(), json);
}

#[test]
fn serde_deserialize_validates_like_from_json() {
    let (_, forest) = fit_cluster(0);
    let json = serde_json::to_string(&forest).unwrap();
    assert!(serde_json::from_str::<IsolationForest>(&json).is_ok());
    let bumped = json.replace(
        &format!("\"format_version\":{MODEL_FORMAT_VERSION}"),
        &format!("\"format_version\":{}", MODEL_FORMAT_VERSION + 1),
    );
    assert!(serde_json::from_str::<IsolationForest>(&bumped).is_err());
}

#[test]
fn bumped_format_version_is_refused() {
    let (_, forest) = fit_cluster(0);
    let json = forest.to_json().unwrap();
    let current = format!("\"format_version\":{MODEL_FORMAT_VERSION}");
    assert!(json.contains(&current));
    let bumped = json.replace(
        &current,
        &format!("\"format_version\":{}", MODEL_FORMAT_VERSION + 1),
    );
    match IsolationForest::from_json(&bumped) {
        Err(ForestError::UnsupportedFormatVersion { found }) => {
            assert_eq!(found, MODEL_FORMAT_VERSION + 1)
        }
        other => panic!("expected a version error, got {other:?}"),
    }
}

/// The model file of a small forest of `n_trees` fitted on 16-row subsamples.
fn small_model_json(n_trees: usize) -> String {
    let rows = gaussian_cluster(64, 1);
    let params = ForestParams {
        n_trees,
        subsample_size: 16,
        ..ForestParams::default()
    };
    IsolationForest::fit(&rows, N_FEATURES, feature_names(), &params)
        .unwrap()
        .to_json()
        .unwrap()
}

#[test]
fn truncated_model_file_is_an_error_at_every_length() {
    let json = small_model_json(2);
    for length in 0..json.len() {
        let truncated = &json[..length];
        assert!(
            IsolationForest::from_json(truncated).is_err(),
            "a file cut at {length} bytes loaded"
        );
    }
}

#[test]
fn malformed_trees_are_errors() {
    let json = small_model_json(1);
    let file: serde_json::Value = serde_json::from_str(&json).unwrap();
    let root = file["trees"][0][0]["split"].clone();
    assert!(root.is_object(), "the root of a 16-row tree splits");

    type Corruption = fn(&mut serde_json::Value);
    let corruptions: [(&str, Corruption); 7] = [
        ("unknown feature", |file| {
            file["trees"][0][0]["split"]["feature"] = 3.into()
        }),
        ("child before parent", |file| {
            file["trees"][0][0]["split"]["left"] = 0.into()
        }),
        ("child out of range", |file| {
            file["trees"][0][0]["split"]["left"] = 100_000.into()
        }),
        ("threshold not a number", |file| {
            file["trees"][0][0]["split"]["threshold"] = serde_json::Value::Null
        }),
        ("empty leaf", |file| {
            let last = file["trees"][0].as_array().unwrap().len() - 1;
            file["trees"][0][last] = serde_json::json!({"leaf": {"rows": 0}})
        }),
        ("unreachable node", |file| {
            file["trees"][0]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"leaf": {"rows": 1}}))
        }),
        ("tree count differs from params", |file| {
            file["params"]["n_trees"] = 2.into()
        }),
    ];
    for (what, corrupt) in corruptions {
        let mut corrupted = file.clone();
        corrupt(&mut corrupted);
        let result = IsolationForest::from_json(&corrupted.to_string());
        assert!(result.is_err(), "{what}: loaded");
    }
    // The untouched file still loads, so each error above comes from its corruption.
    assert!(IsolationForest::from_json(&file.to_string()).is_ok());
    // A NaN threshold has no JSON spelling; the literal is rejected by the parser.
    let nan_threshold = json.replacen(
        &format!("\"threshold\":{}", root["threshold"]),
        "\"threshold\":NaN",
        1,
    );
    assert_ne!(nan_threshold, json);
    assert!(IsolationForest::from_json(&nan_threshold).is_err());
}

#[test]
fn fit_rejects_bad_input() {
    let params = ForestParams::default();
    let fit = |rows: &[f64], n_features: usize, names: usize| {
        IsolationForest::fit(rows, n_features, feature_names()[..names].to_vec(), &params)
    };
    assert!(matches!(fit(&[], 3, 3), Err(ForestError::EmptyInput)));
    assert!(matches!(fit(&[1.0], 0, 0), Err(ForestError::NoFeatures)));
    assert!(matches!(
        fit(&[1.0, 2.0, 3.0, 4.0], 3, 3),
        Err(ForestError::RaggedRows {
            values: 4,
            n_features: 3
        })
    ));
    assert!(matches!(
        fit(&[1.0, 2.0], 2, 3),
        Err(ForestError::FeatureNamesMismatch { .. })
    ));
    for bad_value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let rows = [0.0, 1.0, 2.0, 3.0, bad_value, 5.0];
        assert!(matches!(
            fit(&rows, 3, 3),
            Err(ForestError::NonFiniteValue {
                row: 1,
                feature: 1,
                ..
            })
        ));
    }
    let no_trees = ForestParams {
        n_trees: 0,
        ..ForestParams::default()
    };
    assert!(matches!(
        IsolationForest::fit(&[1.0, 2.0, 3.0], 3, feature_names(), &no_trees),
        Err(ForestError::InvalidParams(_))
    ));
}

#[test]
fn constant_and_tiny_inputs_score_without_failing() {
    // Every feature constant: no split is possible, every tree is a single leaf.
    let constant = vec![1.0; 30 * N_FEATURES];
    let forest = IsolationForest::fit(
        &constant,
        N_FEATURES,
        feature_names(),
        &ForestParams::default(),
    )
    .unwrap();
    let expected = 2f64.powf(-1.0);
    assert!((forest.score(&[1.0, 1.0, 1.0]) - expected).abs() < 1e-12);
    assert!((forest.score(&[5.0, -5.0, 0.0]) - expected).abs() < 1e-12);
    // One training row tells nothing: scikit-learn scores everything 0.5 then.
    let single = IsolationForest::fit(
        &[1.0, 2.0, 3.0],
        N_FEATURES,
        feature_names(),
        &ForestParams::default(),
    )
    .unwrap();
    assert_eq!(single.score(&[9.0, 9.0, 9.0]), 0.5);
}

#[test]
fn subsample_and_depth_follow_params() {
    let (rows, _) = fit_cluster(0);
    let shallow = ForestParams {
        max_depth: Some(0),
        ..ForestParams::default()
    };
    // Depth 0: every row ends at the root leaf holding the whole subsample, path c(256).
    let forest = IsolationForest::fit(&rows, N_FEATURES, feature_names(), &shallow).unwrap();
    for score in scores(&forest, &rows[..30]) {
        assert!((score - 0.5).abs() < 1e-12);
    }
    let file: serde_json::Value = serde_json::from_str(&forest.to_json().unwrap()).unwrap();
    assert_eq!(file["trees"][0][0]["leaf"]["rows"], 256);
}
