#!/usr/bin/env python3
"""Probes of what else could move the `session` protocol (a benchmark, not a test).

Reads a split dumped by the model benchmark (`bench sessions --dump DIR`) and scores,
on that split's test part and on a validation split cut from its train part the same
way (time order, 80/20), model variants written here in numpy, with the contract's
session cases (items not in train dropped, distinct items, the first half the
context). What it answers, in docs/bench-models.md ("The ceilings"):

  ease     MovieLens latest-small: does any EASE variant beat manirec's EASE by the
           3 % that 1.05x the anchor asks? Ridge lambda, EDLAE's dropout emphasis
           (Steck 2020: lambda + p/(1-p) diag(G)), user-degree normalisation, and
           the context's items weighed by their position from the most recent.
  markov   sessions-gen: a multi-step Markov walk on the learned transitions (the
           estimate of the generator's own law; scripts/sessions_ceiling.py ranks by
           the law itself), mixed with same-visit co-occurrence.

  python3 scripts/probe_sessions.py ease --split DIR/ml-latest-small
  python3 scripts/probe_sessions.py markov --split DIR/sessions-gen [--dump OUT.jsonl]
"""
import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recompute_metrics import relevant_sets, user_metrics  # noqa: E402

HALF_LIFE_DAYS = 1095.0  # what manirec's tune chose on latest-small
VISIT_GAP_S = 60


def read(path):
    with open(path) as f:
        return sorted((int(t), n, u, i, float(w)) for n, (u, i, w, t) in
                      enumerate(line.rstrip("\n").split("\t") for line in f))


def session_cases(train, test):
    """(context rows, context items, relevant set) per visitor of the session protocol,
    the cases cut by recompute_metrics.py from the contract's text."""
    relevant, contexts, _ = relevant_sets([r[:4] for r in train], [r[:4] for r in test], "session")
    known = {r[3] for r in train}
    rows_of = defaultdict(list)
    for r in test:
        if r[2] in relevant and r[3] in known:
            rows_of[r[2]].append(r)
    cases = []
    for u, context in contexts.items():
        rows = rows_of[u]
        first_relevant = next(n for n, r in enumerate(rows) if r[3] not in context)
        cases.append((rows[:first_relevant], context, relevant[u]))
    return cases


def score(cases, index, ranker):
    """Mean NDCG@10 and Recall@20 of `ranker`'s lists, and how many visitors."""
    ids = {v: k for k, v in index.items()}
    ndcg, recall = [], []
    for rows, context, relevant in cases:
        s = ranker(rows, context)
        for i in context:
            s[index[i]] = -np.inf
        m = user_metrics([ids[j] for j in np.argsort(-s, kind="stable")[:20]], relevant)
        ndcg.append(m["ndcg@10"])
        recall.append(m["recall@20"])
    return float(np.mean(ndcg)), float(np.mean(recall)), len(cases)


def splits(prefix):
    train, test = read(prefix + ".train.tsv"), read(prefix + ".test.tsv")
    cut = int(len(train) * 0.8)
    return [("validation", train[:cut], train[cut:]), ("test", train, test)]


def ease_variants(prefix):
    sets = []
    for name, train, test in splits(prefix):
        ref = train[-1][0]
        users = {u: n for n, u in enumerate(dict.fromkeys(r[2] for r in train))}
        index = {i: n for n, i in enumerate(dict.fromkeys(r[3] for r in train))}
        x = np.zeros((len(users), len(index)))
        for t, _, u, i, w in train:
            x[users[u], index[i]] += w * 0.5 ** ((ref - t) / 86400 / HALF_LIFE_DAYS)
        sets.append((name, x, index, session_cases(train, test)))

    def run(label, lam, p=0.0, user_norm=0.0, position_decay=1.0):
        out = []
        for name, x, index, cases in sets:
            xt = x / np.maximum((x > 0).sum(1, keepdims=True), 1) ** user_norm
            g = xt.T @ xt
            g[np.diag_indices_from(g)] += lam + p / (1 - p) * np.diag(g)
            inv = np.linalg.inv(g)
            b = -inv / np.diag(inv)
            b[np.diag_indices_from(b)] = 0

            def ranker(rows, _context):
                v = np.zeros(len(index))
                for k, r in enumerate(rows):
                    v[index[r[3]]] += r[4] * position_decay ** (len(rows) - 1 - k)
                return v @ b

            nd, rc, n = score(cases, index, ranker)
            out.append(f"{name} ({n}) {nd:.4f} / {rc:.4f}")
        print(f"{label:<44} " + "   ".join(out), flush=True)

    for lam in (500, 1000, 2000):
        run(f"EASE lambda {lam}", lam)
    for p in (0.1, 0.25, 0.5):
        for lam in (100, 1000):
            run(f"EDLAE p {p}, lambda {lam}", lam, p=p)
    for a in (0.25, 0.5):
        for lam in (10, 100, 1000):
            run(f"users normalised |u|^-{a}, lambda {lam}", lam, user_norm=a)
    for d in (0.99, 0.97, 0.95, 0.9):
        run(f"lambda 1000, context position decay {d}", 1000, position_decay=d)


def markov(prefix, dump, mix=0.2, horizon=2.0, smoothing=0.5):
    for name, train, test in splits(prefix):
        index = {i: n for n, i in enumerate(sorted({r[3] for r in train}))}
        n = len(index)
        pop = np.zeros(n)
        steps, together, last, visit = [], [], {}, {}
        for t, _, u, i, _w in train:
            j = index[i]
            pop[j] += 1
            if u in last and t - last[u][0] <= VISIT_GAP_S:
                steps.append((last[u][1], j))
                together += [(j, k) for k in set(visit[u]) if k != j]
                together += [(k, j) for k in set(visit[u]) if k != j]
                visit[u].append(j)
            else:
                visit[u] = [j]
            last[u] = (t, j)

        def kernel(pairs):
            m = sp.csr_matrix((np.ones(len(pairs)), tuple(zip(*pairs))), shape=(n, n))
            out = m.sum(1).A1
            return sp.diags(1 / (out + smoothing)) @ m, smoothing / (out + smoothing)

        p, p_rest = kernel(steps)
        c, c_rest = kernel(together)
        walk = ((1 - mix) * p + mix * c).T.tocsr()
        rest = (1 - mix) * p_rest + mix * c_rest  # mass that jumps by popularity
        pop /= pop.sum()

        def ranker(rows, context):
            v = np.zeros(n)
            v[index[rows[-1][3]]] = 1.0
            s = np.zeros(n)
            for _ in range(max(1, round(horizon * len(context)))):
                v = walk @ v + (rest * v).sum() * pop
                s += v
            return s

        cases = session_cases(train, test)
        nd, rc, users = score(cases, index, ranker)
        print(f"Markov walk (mix {mix}, horizon {horizon}) {name} ({users}) {nd:.4f} / {rc:.4f}", flush=True)
        if dump and name == "test":
            ids = {v: k for k, v in index.items()}
            with open(dump, "w") as f:
                for rows, context, _ in cases:
                    s = ranker(rows, context)
                    for i in context:
                        s[index[i]] = -np.inf
                    top = [ids[j] for j in np.argsort(-s, kind="stable")[:20]]
                    f.write(json.dumps({"user_id": rows[0][2], "context": context, "items": top}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("probe", choices=["ease", "markov"])
    ap.add_argument("--split", required=True, help="DIR/NAME of NAME.train.tsv and NAME.test.tsv")
    ap.add_argument("--dump", help="markov: the test part's lists, for recompute_metrics.py")
    a = ap.parse_args()
    if a.probe == "ease":
        ease_variants(a.split)
    else:
        markov(a.split, a.dump)


if __name__ == "__main__":
    main()
