"""vncguard's Isolation Forest beside scikit-learn's on the detection bench's authenticated
sessions: the rows, folds and vncguard scores the detection-bench binary wrote.

Both forests see the same features (schemas::features::FEATURES as the scorer builds a row:
an absent feature is 0) and the same training split: for each fold of the normal sessions,
the normal sessions of the other folds. Each forest scores the held-out normal sessions and
every insider session, and the AUC (insiders positive) is computed here, by the same code for
both, averaged over folds and seeds. Both use 100 trees on subsamples of min(256, rows)."""

import argparse
import csv
import sys
from collections import defaultdict

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args()

    with open(f"{args.work_dir}/authenticated_sessions.csv") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    n_features = len(header) - 4
    features = np.array([[float(v) for v in row[4:]] for row in rows])
    folds = np.array([int(row[3]) for row in rows])
    kinds = [row[2] for row in rows]
    insider = folds < 0

    vncguard = defaultdict(dict)
    with open(f"{args.work_dir}/vncguard_forest_scores.csv") as f:
        for record in csv.DictReader(f):
            vncguard[(int(record["seed"]), int(record["fold"]))][int(record["row"])] = float(record["score"])
    if not vncguard:
        sys.exit("no vncguard scores")

    aucs = {"vncguard": [], "sklearn": []}
    per_kind = defaultdict(lambda: {"vncguard": [], "sklearn": []})
    for (seed, fold), scored in sorted(vncguard.items()):
        train = features[(folds >= 0) & (folds != fold)]
        evaluated = np.array(sorted(scored))
        forest = IsolationForest(n_estimators=100, max_samples="auto", random_state=seed).fit(train)
        # score_samples is the negated anomaly score: higher is more normal.
        theirs = -forest.score_samples(features[evaluated])
        ours = np.array([scored[i] for i in evaluated])
        labels = insider[evaluated]
        for name, scores in (("vncguard", ours), ("sklearn", theirs)):
            aucs[name].append(roc_auc_score(labels, scores))
            for kind in sorted({kinds[i] for i in evaluated if insider[i]}):
                keep = np.array([not insider[i] or kinds[i] == kind for i in evaluated])
                per_kind[kind][name].append(roc_auc_score(labels[keep], scores[keep]))

    ours, theirs = np.mean(aucs["vncguard"]), np.mean(aucs["sklearn"])
    n_benign, n_insider = int((folds >= 0).sum()), int(insider.sum())
    for kind, both in sorted(per_kind.items()):
        print(f"forest AUC, normal vs insider {kind}: vncguard {np.mean(both['vncguard']):.3f},"
              f" scikit-learn {np.mean(both['sklearn']):.3f}")
    n_folds = len({fold for _, fold in vncguard})
    n_seeds = len({seed for seed, _ in vncguard})
    what = (f"forest ROC AUC, {n_benign} normal vs {n_insider} insider authenticated sessions"
            f" ({n_features} features, {n_folds} folds x {n_seeds} seeds, trained on normal sessions)")
    print(f"REPORT|detection|{what}|{ours:.3f}|scikit-learn {sklearn.__version__} {theirs:.3f}|"
          f"{ours / theirs if theirs else float('nan'):.2f}x")


if __name__ == "__main__":
    main()
