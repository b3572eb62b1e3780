#!/usr/bin/env python3
"""Anchors for manirec's model benchmark: the field's libraries on the same split.

Called by `cargo run --release -p manirec-models --example bench` (never a runtime
dependency of manirec). Reads the split the benchmark wrote (TSV: user, item,
weight, timestamp; train and test), trains one anchor, times its training alone,
and writes the top-20 lists of the warm protocol's users (their train items
excluded) as JSON lines {"user_id", "items"}, which the benchmark scores with the
same code as its own models. Prints one JSON object with the timing on stdout.

  anchors.py ease     --train T --test S --out L --lambda 3000          (numpy, float64)
  anchors.py implicit --train T --test S --out L --factors 64 --iterations 15
                      --regularization R --alpha A --threads 2

implicit's confidence is its input value; manirec's is 1 + alpha * weight, so the
matrix handed to implicit holds 1 + alpha * weight (and implicit's own alpha is 1):
both libraries solve the same problem.

Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (they slow current numpy).
"""
import argparse
import json
import sys
import time

import numpy as np
import scipy.sparse as sp


def read(path):
    users, items, weights, ts = [], [], [], []
    with open(path) as f:
        for line in f:
            u, i, w, t = line.rstrip("\n").split("\t")
            users.append(u)
            items.append(i)
            weights.append(float(w))
            ts.append(int(t))
    return users, items, np.array(weights, dtype=np.float64), np.array(ts)


def warm_users(train, test, item_index):
    """Users with train rows and at least one new test item that occurs in train."""
    seen = {}
    for u, i in zip(train[0], train[1]):
        seen.setdefault(u, set()).add(i)
    out, done = [], set()
    for u, i in zip(test[0], test[1]):
        if u in seen and u not in done and i in item_index and i not in seen[u]:
            out.append(u)
            done.add(u)
    return out


def matrix(train, user_index, item_index, values):
    rows = np.array([user_index[u] for u in train[0]])
    cols = np.array([item_index[i] for i in train[1]])
    m = sp.csr_matrix((values, (rows, cols)), shape=(len(user_index), len(item_index)))
    m.sum_duplicates()
    return m


def index(ids):
    out = {}
    for x in ids:
        out.setdefault(x, len(out))
    return out


def write_lists(path, users, lists, item_ids):
    with open(path, "w") as f:
        for u, l in zip(users, lists):
            f.write(json.dumps({"user_id": u, "items": [item_ids[j] for j in l]}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["ease", "implicit"])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lambda", dest="lam", type=float, default=3000.0)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--regularization", type=float, default=10.0)
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    train, test = read(a.train), read(a.test)
    user_index, item_index = index(train[0]), index(train[1])
    item_ids = list(item_index)
    users = warm_users(train, test, item_index)
    uidx = np.array([user_index[u] for u in users])

    if a.model == "ease":
        x = matrix(train, user_index, item_index, train[2])
        t0 = time.perf_counter()
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += a.lam
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        secs = time.perf_counter() - t0
        scores = np.asarray(x[uidx] @ b)
        seen = x[uidx] > 0
        scores[seen.toarray()] = -np.inf
        lists = np.argsort(-scores, axis=1, kind="stable")[:, :20]
        info = {"model": "numpy-ease", "lambda": a.lam, "items": len(item_ids)}
    else:
        from threadpoolctl import threadpool_limits
        import implicit

        conf = matrix(train, user_index, item_index, train[2])
        conf.data = 1.0 + a.alpha * conf.data
        conf = conf.astype(np.float32)
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=a.factors,
            regularization=a.regularization,
            alpha=1.0,
            iterations=a.iterations,
            use_cg=True,
            calculate_training_loss=False,
            num_threads=a.threads,
            random_state=42,
        )
        with threadpool_limits(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            model.fit(conf, show_progress=False)
            secs = time.perf_counter() - t0
        lists, _ = model.recommend(uidx, conf[uidx], N=20, filter_already_liked_items=True)
        info = {"model": "implicit-als", "version": implicit.__version__, "factors": a.factors,
                "iterations": a.iterations, "regularization": a.regularization, "alpha": a.alpha,
                "threads": a.threads}
    write_lists(a.out, users, lists, item_ids)
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i.get('internal_api')} {i.get('architecture')} threads={i.get('num_threads')}" for i in threadpool_info()]
    except Exception:  # noqa: BLE001 - informational only
        blas = []
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    info.update({"train_seconds": secs, "users": len(users), "blas": blas, "peak_rss_mib": round(peak)})
    json.dump(info, sys.stdout)
    print()


if __name__ == "__main__":
    main()
