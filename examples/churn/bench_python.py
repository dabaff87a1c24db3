"""The churn pipeline in plain Python (pandas + scikit-learn), for
examples/churn/bench-vs-python.sh: same data file, same checks, same
features (same split hash), an MLP with the same shape and schedule, F1 at
the same threshold. Prints one JSON line."""

import json
import sys
import time

t0 = time.perf_counter()
import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier

M64 = (1 << 64) - 1


def in_test(seed, cid, fraction):
    h = 0xCBF29CE484222325 ^ seed
    for b in cid.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    h ^= h >> 31
    return (h >> 11) / float(1 << 53) < fraction


def main(path, epochs, threshold, seed):
    df = pd.read_parquet(path)
    # validate_data
    assert len(df) >= 1000, "row count"
    for c in df.columns:
        rate = df[c].isna().mean()
        assert rate <= (0.0 if c == "churned" else 0.05), f"null rate of {c}"
    for c, (lo, hi) in {"age": (18, 120), "tenure_months": (0, 120), "monthly_charges": (0, 500), "support_calls": (0, 50)}.items():
        v = df[c].dropna()
        assert ((v >= lo) & (v <= hi)).all(), f"range of {c}"
    assert set(df["churned"].unique()) <= {0, 1}
    # compute_features
    test = df["customer_id"].map(lambda c: in_test(seed, c, 0.2)).to_numpy()
    numeric = ["age", "senior", "tenure_months", "monthly_charges", "total_charges", "support_calls"]
    cats = ["contract", "internet_service", "payment_method"]
    X = pd.DataFrame(index=df.index)
    for c in numeric:
        med = df.loc[~test, c].median()
        v = df[c].fillna(med)
        mean, std = v[~test].mean(), v[~test].std(ddof=0) or 1.0
        X[c] = (v - mean) / std
    for c in cats:
        v = df[c].fillna("missing")
        for level in sorted(v[~test].unique()):
            X[f"{c}_{level}"] = (v == level).astype(float)
    y = df["churned"].to_numpy()
    Xtr, Xte, ytr, yte = X[~test].to_numpy(np.float32), X[test].to_numpy(np.float32), y[~test], y[test]
    # train_model
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), solver="adam", learning_rate_init=0.01,
                        alpha=1e-4, batch_size=256, max_iter=epochs, shuffle=True, random_state=seed,
                        n_iter_no_change=epochs + 1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(Xtr, ytr)
    # evaluate_model
    p = clf.predict_proba(Xte)[:, 1]
    f1 = f1_score(yte, (p >= threshold).astype(int))
    auc = roc_auc_score(yte, p)
    print(json.dumps({"seconds": time.perf_counter() - t0, "f1": f1, "roc_auc": auc, "rows": len(df)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
