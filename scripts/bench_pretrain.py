"""Benchmark (not a test): does pre-training a two-tower model on public data
help the shop? `scripts/bench-pretrain` runs it.

The shop is the demo shop (seed 1). The public data, in turn:
  sister  a sister shop: the demo generator with seed 2 (the same category ids and
          names, other customers and designs), its training interactions under
          ids of their own (`b:`), and its designs' categories as features;
  movies  MovieLens latest-small (read by path, never copied), with its genres as
          features: no shop item has a genre, so nothing carries over.
Each is imported into a copy of the shop with `--source public`, then
`train --model two-tower --pretrain public --pretrain-features F` reports the
fine-tuned model beside the same spec trained on the shop's data alone (warm
protocol, the same users, a paired bootstrap interval of the difference).
"""

import argparse
import csv
import json
import os
import shutil
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_serve as bs  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sister_shop(binary, root, env):
    """The sister shop's interactions and its designs' categories, as files."""
    data = os.path.join(root, "sister")
    if not os.path.exists(os.path.join(data, "manirec.db")):
        shutil.rmtree(data, ignore_errors=True)
        bs.manirec(binary, data, "demo", "--seed", "2", "--no-serve", env=env)
    rows = os.path.join(root, "sister-interactions.csv")
    features = os.path.join(root, "sister-features.csv")
    con = sqlite3.connect(os.path.join(data, "manirec.db"))
    with open(rows, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rating", "timestamp", "interaction_type", "synthetic"])
        for r in con.execute("SELECT user_id, item_id, rating, timestamp, interaction_type, synthetic"
                             " FROM training_interactions WHERE source <> 'public'"):
            w.writerow(["b:" + r[0], "b:" + r[1], r[2], r[3], r[4], r[5]])
    con.close()
    shop = sqlite3.connect(os.path.join(data, "demo", "shop.db"))
    with open(features, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category"])
        for item, category in shop.execute(
                "SELECT e.id, b.category_id FROM end_products e"
                " JOIN base_products b ON b.id = e.base_product_id"):
            w.writerow([f"b:{item}", category])
    shop.close()
    return rows, features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manirec", default="target/release/manirec")
    ap.add_argument("--out", default="target/bench-pretrain")
    ap.add_argument("--label", default="run")
    ap.add_argument("--movielens", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                        "ml-latest-small"))
    ap.add_argument("--seeds", default="1,2,3", help="training seeds, each one run")
    args = ap.parse_args()
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    binary = os.path.abspath(args.manirec)
    env = dict(os.environ, MANIREC_USER_KEY="00" * 32, MANIREC_LOG="warn")
    for k in ("MANIREC_OBJECT_STORE", "MANIREC_DATABASE_URL", "MANIREC_DATA_DIR"):
        env.pop(k, None)

    shop = os.path.join(root, "shop")
    if not os.path.exists(os.path.join(shop, "manirec.db")):
        shutil.rmtree(shop, ignore_errors=True)
        bs.manirec(binary, shop, "demo", "--no-serve", env=env)

    sources = {"sister": sister_shop(binary, root, env)}
    ml = os.path.abspath(args.movielens)
    if os.path.exists(os.path.join(ml, "ratings.csv")):
        genres = os.path.join(root, "movie-genres.csv")
        with open(os.path.join(ml, "movies.csv"), newline="") as src, open(genres, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["item_id", "genres"])
            for r in csv.DictReader(src):
                w.writerow([r["movieId"], r["genres"]])
        sources["movies"] = (os.path.join(ml, "ratings.csv"), genres)
    else:
        log(f"no MovieLens at {ml}: the movies case is skipped")

    report = {"label": args.label, "nproc": os.cpu_count(),
              "loadavg_1m_before": round(os.getloadavg()[0], 2), "runs": []}
    for name, (rows, features) in sources.items():
        data = os.path.join(root, f"shop+{name}")
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(shop, data, ignore=shutil.ignore_patterns("*.log"))
        bs.manirec(binary, data, "import", "--interactions", rows, "--source", "public", env=env)
        for seed in args.seeds.split(","):
            t = time.perf_counter()
            out = bs.manirec(binary, data, "train", "--model", "two-tower", "--seed", seed,
                             "--pretrain", "public", "--pretrain-features", features, env=env)
            p = out["pretrain"]
            run = {
                "public": name, "seed": int(seed), "public_rows": p["rows"],
                "features_shared": p["features_shared"], "pretrain_seconds": p["pretrain_seconds"],
                "fine_tune_seconds": out["train_seconds"],
                "users_evaluated": out["users_evaluated"],
                "ndcg@10": out["metrics"]["ndcg@10"], "shop_alone_ndcg@10": p["shop_alone"]["ndcg@10"],
                "recall@20": out["metrics"]["recall@20"],
                "shop_alone_recall@20": p["shop_alone"]["recall@20"],
                "gain_ci": p["ndcg10_gain_ci"], "helped": p["helped"],
                "cold_start": out.get("cold_start"),
                "wall_seconds": round(time.perf_counter() - t, 1),
            }
            report["runs"].append(run)
            log(f"  {name} seed {seed}: NDCG@10 {run['ndcg@10']:.4f} vs {run['shop_alone_ndcg@10']:.4f}"
                f" alone, gain {run['gain_ci'][0]:+.4f}..{run['gain_ci'][1]:+.4f},"
                f" {run['features_shared']} features shared")
    path = os.path.join(root, f"{args.label}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print("| public data | seed | rows | features shared | NDCG@10 fine-tuned | NDCG@10 shop alone "
          "| difference (95 %) | Recall@20 fine-tuned | Recall@20 alone |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        print(f"| {r['public']} | {r['seed']} | {r['public_rows']:,} | {r['features_shared']} "
              f"| {r['ndcg@10']:.4f} | {r['shop_alone_ndcg@10']:.4f} "
              f"| {r['gain_ci'][0]:+.4f}..{r['gain_ci'][1]:+.4f} "
              f"| {r['recall@20']:.4f} | {r['shop_alone_recall@20']:.4f} |")
    log(f"results in {path}")


if __name__ == "__main__":
    main()
