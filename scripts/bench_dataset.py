#!/usr/bin/env python3
"""Benchmark: `manirec dataset build` against the design's pandas notebook.

What it measures. One run, one machine, the same rows for both:
  1. generates N interactions (default 5,000,000) with planted exact duplicates
     (3 %) and near duplicates (same user and item a few seconds to minutes
     later, 7 %), imports them into a fresh manirec store (setup, not timed in
     the comparison), and exports them back as the seed's CSV, so that pandas
     reads exactly the rows the store holds;
  2. times `manirec dataset build` (read the SQLite store, 5-minute dedup keeping
     the latest, sort, 80/20 split, write train/test Parquet + manifest), as a
     separate process: wall time and peak resident memory (ru_maxrss);
  3. times the design's pandas code (ORIGIN.md §4, plan A) on the exported CSV,
     as a separate process: read_csv, to_datetime(unit='s').dt.floor('5min'),
     drop_duplicates(subset=[user_id, item_id, time_window], keep='last'),
     sort_values('timestamp'), 80/20 split, write train/test Parquet;
  4. checks that both kept the same number of rows, prints the ratio of the
     medians (each timed command runs --repeat times, 3 by default, the two
     sides interleaved, so that the machine's swings fall on both);
  5. the weekly workflow: 1 % new rows in the week after the last (setup:
     imported, and exported again so that pandas reads every row), then times
     `manirec dataset build` (an increment: it reads the periods that changed
     and copies the rest from its parent's files) against pandas' full
     re-merge of every row, and checks that a `dataset build --full` of the
     same data writes the same files (SHA-256).

Usage: scripts/bench-dataset [ROWS] [--baseline OLD_MANIREC]   (builds manirec in release mode first)
Needs: python3 with numpy, pandas, pyarrow.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PANDAS = r'''
import sys, pandas as pd
src, out = sys.argv[1], sys.argv[2]
all_data = pd.read_csv(src)
all_data['time_window'] = pd.to_datetime(all_data['timestamp'], unit='s').dt.floor('5min')
all_data = all_data.drop_duplicates(subset=['user_id', 'item_id', 'time_window'], keep='last')
all_data = all_data.sort_values('timestamp')
split_idx = int(len(all_data) * 0.8)
train_data = all_data[:split_idx]
test_data = all_data[split_idx:]
train_data.drop(columns=['time_window']).to_parquet(out + '/train.parquet', index=False)
test_data.drop(columns=['time_window']).to_parquet(out + '/test.parquet', index=False)
print(f"Total: {len(all_data)}, Train: {len(train_data)}, Test: {len(test_data)}")
'''


def run(cmd, env=None):
    """Runs cmd as its own process; returns (seconds, peak RSS MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed: {err.decode()}")
    return seconds, usage.ru_maxrss / 1024, out.decode()


START = 1_700_000_000
DAYS = 365


def generate(path, n, seed=7, start=START, days=DAYS):
    import numpy as np

    rng = np.random.default_rng(seed)
    base = int(n * 0.90)
    users = rng.zipf(1.3, base) % 300_000
    items = rng.zipf(1.2, base) % 60_000
    ts = start + rng.integers(0, days * 86_400, base)
    kinds = np.array(["product_view", "product_click", "add_to_cart", "purchase", "view"])
    weights = np.array([1.0, 2.0, 4.0, 5.0, 3.0])
    k = rng.choice(len(kinds), base, p=[0.6, 0.2, 0.1, 0.05, 0.05])
    synthetic = (k == 4) & (rng.random(base) < 0.9)
    # Near duplicates: the same user and item 1..600 s later (often, not always,
    # in the same 5-minute window), possibly another type.
    near = rng.choice(base, int(n * 0.07), replace=False)
    # Exact duplicates: the same line again.
    exact = rng.choice(base, n - base - len(near), replace=False)
    idx = np.concatenate([np.arange(base), near, exact])
    shift = np.concatenate([
        np.zeros(base, dtype=np.int64),
        rng.integers(1, 600, len(near)),
        np.zeros(len(exact), dtype=np.int64),
    ])
    ktype = np.concatenate([k, rng.choice(len(kinds), len(near)), k[exact]])
    order = rng.permutation(len(idx))
    import pandas as pd

    frame = pd.DataFrame({
        "user_id": pd.Series(users[idx]).map(lambda u: f"u_{u:032x}")[order],
        "item_id": pd.Series(items[idx]).map(lambda i: f"p{i:06d}")[order],
        "rating": weights[ktype][order],
        "timestamp": (ts[idx] + shift)[order],
        "interaction_type": kinds[ktype][order],
        "synthetic": np.concatenate([synthetic, synthetic[near], synthetic[exact]])[order].astype(int),
    })
    frame.to_csv(path, index=False)
    return len(frame)


def generate_apart(path, n, seed=7, start=START, days=DAYS):
    """generate() in a process of its own: a child forked from a process that
    holds the generated frame would inherit its peak memory (ru_maxrss)."""
    subprocess.run([sys.executable, __file__, "--generate", path, str(n), str(seed),
                    str(start), str(days)], check=True)


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "--generate":
        path, n, seed, start, days = sys.argv[2:]
        generate(path, int(n), int(seed), int(start), int(days))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--manirec", default="target/release/manirec")
    ap.add_argument("--work", default=None)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each timed command, interleaved (medians reported)")
    ap.add_argument("--baseline", default=None,
                    help="another manirec binary (an older build) whose full build is timed "
                         "interleaved with the two others, on the same store")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="manirec-bench-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    env = dict(os.environ, MANIREC_USER_KEY="00" * 32)
    env.pop("MANIREC_OBJECT_STORE", None)
    env.pop("MANIREC_DATABASE_URL", None)
    manirec = [args.manirec, "--data-dir", data, "--json"]

    gen = os.path.join(work, "generated.csv")
    fresh = not os.path.exists(os.path.join(data, "manirec.db"))
    if fresh:
        if not os.path.exists(gen):
            t = time.perf_counter()
            generate_apart(gen, args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        secs, _, out = run(manirec + ["import", "--interactions", gen, "--source", "realtime"], env)
        imp = json.loads(out)
        print(f"imported: {imp['inserted']:,} stored, {imp['duplicates']:,} exact duplicates "
              f"({secs:.1f} s, setup)", file=sys.stderr)
    _, _, out = run(manirec + ["export", "--format", "csv"], env)
    exported = json.loads(out)
    csv_path = os.path.join(data, "objects", exported["key"])
    print(f"exported {exported['rows']:,} rows to {csv_path}", file=sys.stderr)

    # The setup's writes on disk first: the kernel writing back the freshly
    # imported store would slow whichever side runs while it does.
    os.sync()
    # Each side several times, interleaved, so that the machine's minute-to-
    # minute swings fall on both: medians and ranges are reported.
    pandas_out = os.path.join(work, "pandas")
    os.makedirs(pandas_out, exist_ok=True)
    rust, pandas, baseline = [], [], []
    for _ in range(args.repeat):
        secs, mb, out = run(manirec + ["dataset", "build", "--full"], env)
        rust.append((secs, mb))
        build = json.loads(out)
        secs, mb, pout = run([sys.executable, "-c", PANDAS, csv_path, pandas_out])
        pandas.append((secs, mb))
        if args.baseline:
            secs, mb, _ = run([args.baseline, "--data-dir", data, "--json",
                               "dataset", "build", "--full"], env)
            baseline.append((secs, mb))
    total = int(pout.split("Total: ")[1].split(",")[0])

    result = {
        "rows_in": exported["rows"],
        "repeat": args.repeat,
        "rows_after_dedup": {"manirec": build["rows"], "pandas": total},
        "manirec": {**timing(rust), "steps_ms": build["timings_ms"]},
        "pandas": timing(pandas),
        "speedup": round(median(pandas) / median(rust), 1),
        "cpus": os.cpu_count(),
        "versions": {"pandas": __import__("pandas").__version__,
                     "pyarrow": __import__("pyarrow").__version__},
    }
    if baseline:
        result["baseline"] = {"binary": args.baseline, **timing(baseline),
                              "speedup_over_it": round(median(baseline) / median(rust), 2)}
    if build["rows"] != total:
        print(json.dumps(result, indent=2))
        sys.exit("manirec and pandas kept a different number of rows")

    # The weekly workflow: 1 % new rows in the week after the last, then an
    # increment against pandas' full re-merge. Each increment runs on a fresh
    # copy of the store as it stands after the import (the copy is not timed).
    if args.baseline:
        # The increments' parent is the latest version: one this build wrote
        # (the baseline's files may be encoded otherwise).
        run(manirec + ["dataset", "build", "--full"], env)
    new = os.path.join(work, "new-week.csv")
    generated = not os.path.exists(new)
    if generated:
        generate_apart(new, max(args.rows // 100, 1), seed=8, start=START + DAYS * 86_400, days=7)
    if fresh or generated:
        # Once per store: a store kept from an earlier run has the week already.
        run(manirec + ["import", "--interactions", new, "--source", "realtime"], env)
    _, _, out = run(manirec + ["export", "--format", "csv"], env)
    all_csv = os.path.join(data, "objects", json.loads(out)["key"])
    copy = os.path.join(work, "increment")
    rust, pandas = [], []
    for _ in range(args.repeat):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(data, copy)
        # The copy's pages on disk first: else the build's first fsync would
        # write back the whole freshly copied file.
        os.sync()
        on_copy = [args.manirec, "--data-dir", copy, "--json"]
        secs, mb, out = run(on_copy + ["dataset", "build"], env)
        rust.append((secs, mb))
        inc = json.loads(out)
        secs, mb, pout = run([sys.executable, "-c", PANDAS, all_csv, pandas_out])
        pandas.append((secs, mb))
    inc_total = int(pout.split("Total: ")[1].split(",")[0])
    _, _, out = run(on_copy + ["dataset", "build", "--full"], env)
    full = json.loads(out)
    shutil.rmtree(copy, ignore_errors=True)
    sums = lambda b: sorted((f["part"], f["sha256"]) for f in b["files"])
    result["increment"] = {
        "new_rows": inc["counts"]["new_since_parent"],
        "version": inc["version"],
        "read": inc["read"],
        "rows_after_dedup": {"manirec": inc["rows"], "pandas": inc_total},
        "manirec": {**timing(rust, 3), "steps_ms": inc["timings_ms"]},
        "pandas_full_remerge": timing(pandas),
        "speedup": round(median(pandas) / median(rust), 1),
        "files_equal_a_full_build": sums(inc) == sums(full),
    }
    print(json.dumps(result, indent=2))
    if inc["rows"] != inc_total:
        sys.exit("the increment and pandas kept a different number of rows")
    if sums(inc) != sums(full):
        sys.exit("the increment's files differ from a full build's")


def median(runs):
    return statistics.median(s for s, _ in runs)


def timing(runs, digits=2):
    """Median and range of the wall times, the largest peak memory."""
    secs = [s for s, _ in runs]
    return {"seconds": round(statistics.median(secs), digits),
            "seconds_range": [round(min(secs), digits), round(max(secs), digits)],
            "peak_rss_mib": round(max(mb for _, mb in runs))}

if __name__ == "__main__":
    main()
