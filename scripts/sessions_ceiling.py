#!/usr/bin/env python3
"""The ceiling of the generated session log (`sessions-gen`): ranked lists from the
generator's own law, for `recompute_metrics.py` to score.

The model benchmark's `session_log` walks between designs: each next view is, with
probability 0.5, a design of the same designer (the ten designs `10 g .. 10 g + 9`),
0.3 the next design (`d + 1`), 0.2 any design by appeal. That walk is first-order: a
visitor's future depends on their current design alone, so no model that learns from
data can rank their future designs better, on average, than the law itself. This
script ranks, for every visitor of the `session` protocol, each design by its expected
number of visits over the next `H` steps of the walk, `Σ_{t=1..H} e_c Pᵗ` (`c` the
design viewed last before the first relevant one, `H = horizon × |context|`, since the
context is half of the visit's distinct designs). The appeal is estimated from the
designs that open a visit in train (the generator's exact appeal order is a draw of
its random number generator), so the lists are a slight under-estimate of the ceiling.

  cargo run --release -p manirec-models --example bench -- sessions --dump DIR --only sessions-gen --kinds sr
  python3 scripts/sessions_ceiling.py --train DIR/sessions-gen.train.tsv --test DIR/sessions-gen.test.tsv --out DIR/ceiling.jsonl
  python3 scripts/recompute_metrics.py --train DIR/sessions-gen.train.tsv --test DIR/sessions-gen.test.tsv \
      --dump DIR/ceiling.jsonl --protocol session
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recompute_metrics import read, relevant_sets  # noqa: E402

GROUP, SAME_DESIGNER, NEXT_DESIGN, BY_APPEAL = 10, 0.5, 0.3, 0.2
VISIT_GAP_S = 60  # views are 20 s apart; a visitor's visits are minutes apart


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--horizon", type=float, default=1.0, help="steps ahead per context design")
    a = ap.parse_args()
    train, test = read(a.train), read(a.test)
    design = lambda item: int(item[1:])  # noqa: E731 ("d123" -> 123)
    n = GROUP * (1 + max(design(i) for _, _, _, i in train + test) // GROUP)

    starts = np.full(n, 0.01)  # every design can be drawn by appeal
    last_seen = {}
    for t, _, u, i in sorted(train):
        if u not in last_seen or t - last_seen[u] > VISIT_GAP_S:
            starts[design(i)] += 1
        last_seen[u] = t
    appeal = starts / starts.sum()

    def step(v):
        """One step of the walk: v P, from P's three parts (no n x n matrix)."""
        same = np.repeat(v.reshape(-1, GROUP).sum(1) / GROUP, GROUP)
        return SAME_DESIGNER * same + NEXT_DESIGN * np.roll(v, 1) + BY_APPEAL * v.sum() * appeal

    known = np.zeros(n, dtype=bool)
    for _, _, _, i in train:
        known[design(i)] = True
    rel, ctx, _ = relevant_sets(train, test, "session")
    rows_of = {}
    for t, k, u, i in sorted(test):
        if u in rel and known[design(i)]:
            rows_of.setdefault(u, []).append(i)
    with open(a.out, "w") as f:
        for u, context in ctx.items():
            rows = rows_of[u]
            first_relevant = next(k for k, i in enumerate(rows) if i not in context)
            v = np.zeros(n)
            v[design(rows[first_relevant - 1])] = 1.0
            score = np.zeros(n)
            for _ in range(max(1, round(a.horizon * len(context)))):
                v = step(v)
                score += v
            score[~known] = -np.inf
            for i in context:
                score[design(i)] = -np.inf
            top = np.argsort(-score, kind="stable")[:20]
            f.write(json.dumps({"user_id": u, "context": context, "items": [f"d{j}" for j in top]}) + "\n")


if __name__ == "__main__":
    main()
