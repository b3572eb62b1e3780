#!/usr/bin/env python3
"""The TensorFlow Recommenders two-tower anchor for manirec's two-tower benchmark.

Called by `cargo run --release -p manirec-models --example bench -- two-tower
--tfrs scripts/anchor_tfrs.py` (never a runtime dependency of manirec; it needs
`pip install tensorflow-cpu==2.15.1 tensorflow-recommenders==0.7.3`). Reads the
split the benchmark wrote (TSV: user, item, weight, timestamp; train and test),
trains the TFRS basic-retrieval model exactly as its tutorial does (id
embeddings of dimension 64 for users and items, in-batch softmax through
`tfrs.tasks.Retrieval`, Adagrad 0.1, batch 8192, 3 epochs), times the training
alone, and writes the top-20 lists of the warm protocol's users (their train
items excluded) as JSON lines {"user_id", "items"}, which the benchmark scores
with the same code as its own models. Prints one JSON object with the timing.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402


def read(path):
    users, items = [], []
    with open(path) as f:
        for line in f:
            u, i, _w, _t = line.rstrip("\n").split("\t")
            users.append(u)
            items.append(i)
    return users, items


def warm_users(train, test, items):
    seen = {}
    for u, i in zip(*train):
        seen.setdefault(u, set()).add(i)
    out, done = [], set()
    for u, i in zip(*test):
        if u in seen and u not in done and i in items and i not in seen[u]:
            out.append(u)
            done.add(u)
    return out, seen


class TwoTower(tfrs.Model):
    def __init__(self, user_ids, item_ids, dim, candidates):
        super().__init__()
        self.user_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=user_ids, mask_token=None),
            tf.keras.layers.Embedding(len(user_ids) + 1, dim),
        ])
        self.item_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=item_ids, mask_token=None),
            tf.keras.layers.Embedding(len(item_ids) + 1, dim),
        ])
        # The tutorial's FactorizedTopK metrics only report; they do not change
        # training, and they are left out of the timing (they cost more than it).
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
        u = self.user_model(features["user_id"])
        i = self.item_model(features["item_id"])
        return self.task(u, i)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    tf.random.set_seed(a.seed)
    train, test = read(a.train), read(a.test)
    user_ids = sorted(set(train[0]))
    item_ids = sorted(set(train[1]))
    ds = tf.data.Dataset.from_tensor_slices(
        {"user_id": np.array(train[0]), "item_id": np.array(train[1])}
    )
    shuffled = ds.shuffle(100_000, seed=a.seed, reshuffle_each_iteration=False)
    model = TwoTower(user_ids, item_ids, a.dim, None)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
    t0 = time.perf_counter()
    model.fit(shuffled.batch(8192).cache(), epochs=a.epochs, verbose=0)
    secs = time.perf_counter() - t0
    users, seen = warm_users(train, test, set(item_ids))
    item_vecs = model.item_model(np.array(item_ids)).numpy()
    user_vecs = model.user_model(np.array(users)).numpy() if users else np.zeros((0, a.dim))
    scores = user_vecs @ item_vecs.T
    index = {x: j for j, x in enumerate(item_ids)}
    with open(a.out, "w") as f:
        for row, u in zip(scores, users):
            for i in seen[u]:
                row[index[i]] = -np.inf
            top = np.argsort(-row, kind="stable")[:20]
            f.write(json.dumps({"user_id": u, "items": [item_ids[j] for j in top]}) + "\n")
    json.dump(
        {
            "model": "tfrs two-tower",
            "train_seconds": secs,
            "users": len(users),
            "tensorflow": tf.__version__,
            "threads": os.cpu_count(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
