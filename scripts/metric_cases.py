#!/usr/bin/env python3
"""Writes tests/data/metric_cases.json: random clusterings with SciPy's and scikit-learn's
verdicts (accuracy through scipy.optimize.linear_sum_assignment, NMI, ARI), so the Rust metrics
are checked against the reference implementations without Python at test time.

Reproduce: python3 -m pip install scipy scikit-learn && python3 scripts/metric_cases.py
"""
import json
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

rng = np.random.default_rng(2021)
cases = []
for i in range(60):
    n = int(rng.integers(1, 300))
    k_true = int(rng.integers(1, 12))
    k_pred = int(rng.integers(1, 12))
    truth = rng.integers(0, k_true, n)
    if i % 3 == 0:  # mostly right, with noise: realistic clusterings
        perm = rng.permutation(max(k_true, k_pred))
        pred = perm[truth]
        noise = rng.random(n) < 0.2
        pred[noise] = rng.integers(0, k_pred, noise.sum())
    else:
        pred = rng.integers(0, k_pred, n)
    d = max(truth.max(), pred.max()) + 1
    w = np.zeros((d, d), dtype=np.int64)
    for t, p in zip(truth, pred):
        w[p, t] += 1
    rows, cols = linear_sum_assignment(w.max() - w)
    acc = w[rows, cols].sum() / n
    cases.append({
        "truth": truth.tolist(),
        "predicted": pred.tolist(),
        "accuracy": float(acc),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "ari": float(adjusted_rand_score(truth, pred)),
    })
with open("tests/data/metric_cases.json", "w") as f:
    json.dump(cases, f, separators=(",", ":"))
print(f"{len(cases)} cases")
