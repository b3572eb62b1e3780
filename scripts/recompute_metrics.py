#!/usr/bin/env python3
"""Recomputes manirec's offline metrics from a ranked-list dump, independently.

Reads the split (TSV: user, item, weight, timestamp; as the model benchmark or a
dataset version's files give it) and a dump of `evaluate --dump` (JSON lines
{"user_id", "context"?, "items"}), rebuilds the protocol's relevant sets from the
contract's text (not from manirec's code) and prints the metrics. NDCG@K and
HitRate@K also come from trec_eval (pytrec_eval-terrier, `ndcg_cut`, `success`),
code no one on the team wrote; trec_eval's recall and MAP divide by |relevant|
where the contract divides by min(K, |relevant|), so those two are computed here.

  python3 recompute_metrics.py --train T.tsv --test S.tsv --dump D.jsonl [--protocol warm|session|first_visit]
"""
import argparse
import json
import math


def read(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f):
            u, i, w, t = line.rstrip("\n").split("\t")
            rows.append((int(t), n, u, i))
    return rows


def relevant_sets(train, test, protocol):
    items = {i for _, _, _, i in train}
    seen = {}
    for _, _, u, i in train:
        if not u.startswith("anonymous:"):
            seen.setdefault(u, set()).add(i)
    by_user = {}
    for t, n, u, i in sorted(test):
        if not u.startswith("anonymous:"):
            by_user.setdefault(u, []).append(i)
    rel, ctx = {}, {}
    for u, its in by_user.items():
        if protocol == "warm":
            if u in seen:
                r = {i for i in its if i in items and i not in seen[u]}
                if r:
                    rel[u] = r
        elif protocol == "first_visit":
            # The contract: a customer (not a session:/device: visitor) new in
            # test, scored with no context; every test item in train is relevant.
            if u in seen or u.startswith(("session:", "device:")):
                continue
            r = {i for i in its if i in items}
            if r:
                rel[u] = r
        elif u not in seen:
            # The contract: items not in train dropped first, then each item kept
            # at its first occurrence, then the first max(1, n // 2) are context.
            distinct = list(dict.fromkeys(i for i in its if i in items))
            if len(distinct) >= 2:
                k = max(1, len(distinct) // 2)
                rel[u] = set(distinct[k:])
                ctx[u] = distinct[:k]
    return rel, ctx, len(items)


def user_metrics(ranked, relevant):
    """One user's metrics, as the contract defines them: Recall@K and MAP@K divide
    by min(K, |relevant|)."""
    out = {}
    for k in (10, 20):
        hits = [1 if x in relevant else 0 for x in ranked[:k]]
        denom = min(k, len(relevant))
        out[f"recall@{k}"] = sum(hits) / denom
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        idcg = sum(1 / math.log2(p + 2) for p in range(denom))
        out[f"ndcg@{k}"] = dcg / idcg
        if k == 10:
            out["hit_rate@10"] = 1 if any(hits) else 0
            ap_, h = 0.0, 0
            for p, x in enumerate(hits):
                if x:
                    h += 1
                    ap_ += h / (p + 1)
            out["map@10"] = ap_ / denom
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--protocol", default="warm", choices=["warm", "session", "first_visit"])
    a = ap.parse_args()
    rel, ctx, n_items = relevant_sets(read(a.train), read(a.test), a.protocol)
    lists, dumped_ctx = {}, {}
    with open(a.dump) as f:
        for line in f:
            d = json.loads(line)
            lists[d["user_id"]] = d["items"]
            if "context" in d:
                dumped_ctx[d["user_id"]] = d["context"]
    missing = set(rel) - set(lists)
    extra = set(lists) - set(rel)
    out = {"users": len(rel), "users_missing_from_dump": len(missing), "users_not_evaluated_but_dumped": len(extra)}
    if a.protocol == "session":
        # The dump's context must be the one the contract's text gives.
        out["context_mismatches"] = sum(1 for u, c in ctx.items() if u in dumped_ctx and dumped_ctx[u] != c)
    sums = {}
    for u, r in rel.items():
        for key, value in user_metrics(lists.get(u, []), r).items():
            sums[key] = sums.get(key, 0) + value
    n = max(1, len(rel))
    out.update({k: v / n for k, v in sorted(sums.items())})
    covered = {x for u in rel for x in lists.get(u, [])[:20]}
    out["coverage@20"] = len(covered) / n_items
    try:
        import pytrec_eval

        qrel = {u: {i: 1 for i in r} for u, r in rel.items()}
        # trec_eval ranks by score: give rank p the score -p.
        run = {u: {i: float(-p) for p, i in enumerate(lists.get(u, [])[:20])} for u in rel}
        ev = pytrec_eval.RelevanceEvaluator(qrel, {"ndcg_cut.10,20", "success.10"})
        res = ev.evaluate(run)
        for key, name in [("ndcg_cut_10", "trec_eval ndcg@10"), ("ndcg_cut_20", "trec_eval ndcg@20"), ("success_10", "trec_eval hit_rate@10")]:
            out[name] = sum(v[key] for v in res.values()) / n
    except ImportError:
        out["trec_eval"] = "pytrec_eval not installed (pip install pytrec-eval-terrier)"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
