#!/usr/bin/env python3
"""Anchors for manirec's model benchmark: the field's libraries on the same split.

Called by `cargo run --release -p manirec-models --example bench` (never a runtime
dependency of manirec). Reads the split the benchmark wrote (TSV: user, item,
weight, timestamp; train and test), trains one anchor, times its training alone,
and writes the top-20 lists of the protocol's users as JSON lines {"user_id",
"items"}, which the benchmark scores with the same code as its own models. Prints
one JSON object with the timing on stdout.

`--protocol warm` (default): the warm users, ranked from their train rows, their
train items excluded. `--protocol session`: the session users cut from the
contract's text (users only in test; their test rows in time order, items not in
train dropped first, each item at its first occurrence, the first max(1, n // 2)
the context), ranked from the context alone, the context excluded. This code
shares nothing with manirec's.

  anchors.py ease     --train T --test S --out L --lambda 3000          (numpy, float64)
  anchors.py implicit --train T --test S --out L --factors 64 --iterations 15
                      --regularization R --alpha A --threads 2
  anchors.py itemknn  --train T --test S --out L --k 100                (implicit's CosineRecommender)
  anchors.py sr       --train T --test S --out L --steps 10 --prune 20  (Ludewig & Jannach's SR)
  anchors.py vsknn    --train T --test S --out L --k 100 --sample 1000  (Ludewig & Jannach's V-SKNN)

SR and V-SKNN are written here from the papers (Ludewig & Jannach, "Evaluation
of session-based recommendation algorithms", UMUAI 2018, and their session-rec
code's defaults): a training session is a user's train rows in time order.
- SR: for each item b at distance d <= steps after item a in a session, rule
  a -> b gains 1/d; each item keeps its `prune` strongest rules; a session scores
  the rules of its last item.
- V-SKNN: the context's items weighted linearly by position (the last 1, the
  first 1/n); candidates are the `sample` most recent training sessions sharing
  an item with it; similarity = weighted overlap / sqrt(|context| |session|); the
  k most similar neighbours vote their similarity to each of their items.

implicit's confidence is its input value; manirec's is 1 + alpha * weight, so the
matrix handed to implicit holds 1 + alpha * weight (and implicit's own alpha is 1):
both libraries solve the same problem.

Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (they slow current numpy).
"""
import argparse
import json
import math
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


def queries(train, test, item_index, protocol):
    """(user, ordered context items, their weights, excluded items) per evaluated user."""
    seen = {}
    for u, i, w, t in sorted(zip(train[0], train[1], train[2], train[3]), key=lambda r: r[3]):
        if not u.startswith("anonymous:"):
            seen.setdefault(u, []).append((i, w))
    by_user = {}
    order = sorted(range(len(test[0])), key=lambda n: (test[3][n], n))
    for n in order:
        u = test[0][n]
        if not u.startswith("anonymous:"):
            by_user.setdefault(u, []).append((test[1][n], test[2][n]))
    out = []
    if protocol == "warm":
        for u in warm_users(train, test, item_index):
            hist = seen[u]
            out.append((u, [i for i, _ in hist], [w for _, w in hist], {i for i, _ in hist}))
        return out
    for u, rows in by_user.items():
        if u in seen:
            continue
        known = [(i, w) for i, w in rows if i in item_index]
        distinct = list(dict.fromkeys(i for i, _ in known))
        if len(distinct) < 2:
            continue
        k = max(1, len(distinct) // 2)
        ctx = set(distinct[:k])
        # The rows before the first relevant item.
        first_rel = distinct[k]
        rows_ctx = []
        for i, w in known:
            if i == first_rel:
                break
            rows_ctx.append((i, w))
        out.append((u, [i for i, _ in rows_ctx], [w for _, w in rows_ctx], ctx))
    return out


def top20(scores, exclude_idx):
    scores = scores.astype(np.float64).copy()
    if exclude_idx:
        scores[list(exclude_idx)] = -np.inf
    top = np.argsort(-scores, kind="stable")[:20]
    return [j for j in top if np.isfinite(scores[j])]


def sessions_of(train, item_index):
    """Each user's train items in time order, and the time of their last row."""
    seqs, last = {}, {}
    for u, i, t in sorted(zip(train[0], train[1], train[3]), key=lambda r: r[2]):
        if u.startswith("anonymous:"):
            continue
        seqs.setdefault(u, []).append(item_index[i])
        last[u] = t
    return seqs, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["ease", "implicit", "itemknn", "sr", "vsknn"])
    ap.add_argument("--protocol", default="warm", choices=["warm", "session"])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prune", type=int, default=20)
    ap.add_argument("--sample", type=int, default=1000)
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
    n_items = len(item_ids)
    qs = queries(train, test, item_index, a.protocol)

    def context_matrix(weighted):
        rows, cols, vals = [], [], []
        for r, (_, ctx, ws, _) in enumerate(qs):
            for i, w in zip(ctx, ws):
                rows.append(r)
                cols.append(item_index[i])
                vals.append(w if weighted else 1.0)
        m = sp.csr_matrix((vals, (rows, cols)), shape=(len(qs), n_items))
        m.sum_duplicates()
        if not weighted:
            m.data[:] = 1.0
        return m

    if a.model in ("sr", "vsknn", "itemknn") or (a.model == "ease" and a.protocol == "session"):
        t0 = time.perf_counter()
        if a.model == "sr":
            seqs, _ = sessions_of(train, item_index)
            rules = {}
            for seq in seqs.values():
                for p, x in enumerate(seq):
                    for d in range(1, a.steps + 1):
                        if p + d >= len(seq):
                            break
                        y = seq[p + d]
                        if y != x:
                            r = rules.setdefault(x, {})
                            r[y] = r.get(y, 0.0) + 1.0 / d
            for x, r in rules.items():
                if len(r) > a.prune:
                    keep = sorted(r.items(), key=lambda kv: (-kv[1], kv[0]))[: a.prune]
                    rules[x] = dict(keep)
            secs = time.perf_counter() - t0
            lists = []
            for _, ctx, _, excl in qs:
                sc = np.zeros(n_items)
                if ctx:
                    for y, v in rules.get(item_index[ctx[-1]], {}).items():
                        sc[y] = v
                lists.append(top20(sc, {item_index[i] for i in excl}))
            info = {"model": "python-sr", "steps": a.steps, "prune": a.prune}
        elif a.model == "vsknn":
            seqs, last = sessions_of(train, item_index)
            names = sorted(seqs, key=lambda u: (last[u], u))
            sess_items = [set(seqs[u]) for u in names]  # index = recency rank
            postings = {}
            for s_idx, its in enumerate(sess_items):
                for i in its:
                    postings.setdefault(i, []).append(s_idx)
            secs = time.perf_counter() - t0
            lists = []
            for _, ctx, _, excl in qs:
                sc = np.zeros(n_items)
                ctx_idx = [item_index[i] for i in ctx]
                distinct = list(dict.fromkeys(reversed(ctx_idx)))[::-1]  # by last occurrence
                n = len(distinct)
                wpos = {i: (p + 1) / n for p, i in enumerate(distinct)}
                cands = set()
                for i in distinct:
                    cands.update(postings.get(i, []))
                cands = sorted(cands)[-a.sample:]
                sims = []
                for c in cands:
                    its = sess_items[c]
                    dot = sum(w for i, w in wpos.items() if i in its)
                    if dot > 0:
                        sims.append((dot / math.sqrt(n * len(its)), c))
                sims.sort(key=lambda x: (-x[0], -x[1]))
                for sim, c in sims[: a.k]:
                    for j in sess_items[c]:
                        sc[j] += sim
                lists.append(top20(sc, {item_index[i] for i in excl}))
            info = {"model": "python-vsknn", "k": a.k, "sample": a.sample}
        elif a.model == "itemknn":
            import implicit
            from implicit.nearest_neighbours import CosineRecommender

            x = matrix(train, user_index, item_index, np.ones(len(train[0])))
            x.data[:] = 1.0
            model = CosineRecommender(K=a.k, num_threads=2)
            model.fit(x, show_progress=False)
            secs = time.perf_counter() - t0
            ctxm = context_matrix(weighted=False)
            lists = []
            for r, (_, _, _, excl) in enumerate(qs):
                sc = np.asarray((ctxm[r] @ model.similarity).todense()).ravel()
                lists.append(top20(sc, {item_index[i] for i in excl}))
            info = {"model": "implicit-itemknn-cosine", "version": implicit.__version__, "k": a.k}
        else:
            x = matrix(train, user_index, item_index, train[2])
            g = (x.T @ x).toarray()
            g[np.diag_indices_from(g)] += a.lam
            p = np.linalg.inv(g)
            b = p / (-np.diag(p))
            b[np.diag_indices_from(b)] = 0.0
            secs = time.perf_counter() - t0
            ctxm = context_matrix(weighted=True)
            scores = np.asarray(ctxm @ b)
            lists = [top20(scores[r], {item_index[i] for i in q[3]}) for r, q in enumerate(qs)]
            info = {"model": "numpy-ease", "lambda": a.lam, "items": len(item_ids)}
        users = [q[0] for q in qs]
        info["protocol"] = a.protocol
    elif a.model == "ease":
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
