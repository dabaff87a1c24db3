"""scikit-learn's side of benches/trainers.rs: same data, same split, same
hyper-parameters. Prints `name<TAB>seconds<TAB>accuracy<TAB>f1` lines."""
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neural_network import MLPClassifier

data = np.loadtxt(sys.argv[1], delimiter=",", dtype=np.float32)
split = int(sys.argv[2])
x, y = data[:, :-1], data[:, -1].astype(int)
xtr, xte, ytr, yte = x[:split], x[split:], y[:split], y[split:]

for name, model in [
    ("sklearn LogisticRegression", LogisticRegression(C=1.0 / (1e-4 * split), max_iter=100)),
    (
        "sklearn MLPClassifier 64-64",
        MLPClassifier(hidden_layer_sizes=(64, 64), solver="adam", learning_rate_init=1e-3,
                      batch_size=128, max_iter=20, alpha=1e-4, shuffle=True, random_state=0,
                      tol=0.0, n_iter_no_change=1000),
    ),
]:
    t = time.perf_counter()
    model.fit(xtr, ytr)
    secs = time.perf_counter() - t
    p = model.predict(xte)
    print(f"{name}\t{secs:.6f}\t{accuracy_score(yte, p):.6f}\t{f1_score(yte, p):.6f}")
