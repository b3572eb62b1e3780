#!/usr/bin/env python3
"""Benchmark (not a test): `manirec serve` under load, with wrk over loopback.

What it measures. For each shop (the demo shop, a large synthetic shop), one
`manirec serve` on 127.0.0.1, and wrk on the same machine (they share its cores):
  - `GET /v1/recommendations?user_id=…&k=10` (or `session_id=…`) at a few
    concurrency levels, the ids rotating over a fixed, seeded list of paths:
    known customers (drawn by activity, so heavy users ask more often), recent
    anonymous sessions that have history but are not in the model (ALS folds them
    in), and strangers (popularity), so no cache can answer from memory;
  - a mix: 70 % recommendations, 20 % `/v1/items/{id}/similar?k=10` (items drawn by
    popularity), 10 % `/v1/popular?k=10`.
For each run: requests/s, p50/p90/p99/max latency (wrk's own histogram), non-2xx
answers, and the CPU seconds the server and wrk each used (their share of the
2 cores). Results go to `target/bench-serve/<label>.json`; a table is printed.

How the large shop is made: through manirec's real paths, never by writing its
database directly: a seeded generator writes an interactions CSV (Zipf-like item
popularity inside taste groups, log-normal user activity, 4 event types, recent
anonymous sessions), then `manirec import --interactions`, `dataset build`,
`train --model als`, `models promote`. The data dir is kept under
`target/bench-serve/` and reused when it exists (delete it to rebuild). The demo
shop is `manirec demo --no-serve` (the best of its models is promoted).

Usage: scripts/bench-serve [--users N --items N --interactions N] [--label L]
       [--shops demo,large] [--duration S] [--connections 1,8,32,128]
Needs: python3 with numpy and pandas (generator), wrk.
"""
import argparse
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "bench_serve.lua")
TYPES = [("product_view", 1.0, 0.70), ("product_click", 2.0, 0.15),
         ("add_to_cart", 4.0, 0.10), ("purchase", 5.0, 0.05)]
START = 1_735_689_600  # 2025-01-01
SPAN = 365 * 86_400


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def generate(path, users, items, interactions, sessions, seed):
    """Writes the large shop's interactions CSV; returns the sampling facts the
    load needs (user ids by activity, session ids, item ids by popularity)."""
    rng = np.random.default_rng(seed)
    groups = max(1, items // 200)
    # Item popularity: Zipf over a random ranking (exponent 1.0, offset 5 so the
    # head is not a single item), items spread over taste groups.
    rank = rng.permutation(items)
    pop = 1.0 / (rank + 5.0) ** 1.0
    pop /= pop.sum()
    group = rng.integers(0, groups, items)
    # Items ordered by group; cumulative popularity inside that order, so a draw
    # "inside group g" is a searchsorted in [cum_start[g], cum_end[g]).
    order = np.argsort(group, kind="stable")
    cum = np.cumsum(pop[order])
    grp_sizes = np.bincount(group, minlength=groups)
    grp_end = np.cumsum(grp_sizes)
    grp_start = grp_end - grp_sizes
    cum0 = np.concatenate([[0.0], cum])
    g_lo, g_hi = cum0[grp_start], cum0[grp_end]

    # User activity: log-normal (heavy tail), at least one interaction each,
    # scaled to the total.
    drawn = int(interactions * 1.01) + 100
    act = rng.lognormal(0.0, 1.3, users)
    counts = np.maximum(1, np.floor(act / act.sum() * drawn)).astype(np.int64)
    short = drawn - counts.sum()
    if short > 0:
        counts[np.argsort(-act)[: short % users]] += 1
        counts += short // users
    elif short < 0:
        counts[np.argmax(counts)] += short
    n = int(counts.sum())
    uidx = np.repeat(np.arange(users), counts)
    # Each user has a favourite group (their taste); 60 % of what they touch is
    # from it, the rest follows global popularity.
    fav = rng.integers(0, groups, users)
    in_fav = rng.random(n) < 0.6
    item = np.empty(n, dtype=np.int64)
    g = fav[uidx[in_fav]]
    u = g_lo[g] + rng.random(in_fav.sum()) * (g_hi[g] - g_lo[g])
    item[in_fav] = order[np.minimum(np.searchsorted(cum, u, side="right"), items - 1)]
    item[~in_fav] = rng.choice(items, (~in_fav).sum(), p=pop)
    # Each customer is active over a window (a day to the whole year) inside the year.
    first = rng.integers(0, SPAN - 86_400, users)
    length = 86_400 + (rng.random(users) * (SPAN - 86_400 - first)).astype(np.int64)
    ts = START + first[uidx] + (rng.random(n) * length[uidx]).astype(np.int64)
    kind = rng.choice(len(TYPES), n, p=[t[2] for t in TYPES])

    # Anonymous sessions: 2-20 product views in the last two weeks, so they are
    # in the store (history) but in the dataset's test part, not in the model.
    s_len = rng.integers(2, 21, sessions)
    s_idx = np.repeat(np.arange(sessions), s_len)
    s_item = rng.choice(items, len(s_idx), p=pop)
    s_ts = START + SPAN - rng.integers(0, 14 * 86_400, len(s_idx))

    import pandas as pd

    names = np.array([t[0] for t in TYPES])
    weights = np.array([t[1] for t in TYPES])
    item_names = np.char.add("p", np.char.zfill(np.arange(items).astype(str), 6))
    user_names = np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7))
    sess_names = np.char.add("s", np.char.zfill(np.arange(sessions).astype(str), 6))
    frame = pd.DataFrame({
        "user_id": np.concatenate([user_names[uidx], np.char.add("session:", sess_names)[s_idx]]),
        "item_id": np.concatenate([item_names[item], item_names[s_item]]),
        "rating": np.concatenate([weights[kind], np.ones(len(s_idx))]),
        "timestamp": np.concatenate([ts, s_ts]),
        "interaction_type": np.concatenate([names[kind], np.full(len(s_idx), "product_view")]),
    })
    # Exactly `interactions` distinct customer rows (the store keeps one row per
    # user, item, timestamp and type): a few more were drawn, repeats dropped.
    frame = frame.drop_duplicates(subset=["user_id", "item_id", "timestamp", "interaction_type"])
    customers = ~frame["user_id"].str.startswith("session:")
    if customers.sum() < interactions:
        sys.exit(f"only {customers.sum()} distinct rows; raise the oversampling")
    # Drop the surplus at random among rows of users with a few rows, so every
    # customer keeps at least one.
    per_user = frame["user_id"].map(frame["user_id"].value_counts())
    eligible = frame.index[customers & (per_user >= 5)]
    extra = rng.choice(eligible, customers.sum() - interactions, replace=False)
    frame = frame.drop(extra)
    kept = frame[customers.loc[frame.index]]
    counts = kept["user_id"].value_counts().reindex(user_names, fill_value=0).to_numpy()
    item_counts = kept["item_id"].value_counts().reindex(item_names, fill_value=0).to_numpy()
    frame = frame.sample(frac=1.0, random_state=seed)  # file order is not time order
    frame.to_csv(path, index=False)
    return {
        "rows": len(frame),
        "users": [str(x) for x in user_names],
        "user_weights": counts.tolist(),
        "sessions": [str(x) for x in sess_names],
        "items": [str(x) for x in item_names],
        "item_weights": item_counts.tolist(),
    }


def manirec(binary, data, *args, env=None):
    cmd = [binary, "--data-dir", data, "--json", *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    log(f"  {' '.join(args)}: {time.perf_counter() - t:.1f} s")
    return json.loads(proc.stdout)


def build_large(binary, root, args, env):
    tag = f"large-u{args.users}-i{args.items}-n{args.interactions}-s{args.seed}"
    data = os.path.join(root, tag)
    facts_path = os.path.join(data, "bench-facts.json")
    if os.path.exists(facts_path):
        log(f"large shop: reusing {data}")
        with open(facts_path) as f:
            return data, json.load(f)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    log(f"large shop: building {data}")
    csv = os.path.join(root, tag + ".csv")
    t = time.perf_counter()
    facts = generate(csv, args.users, args.items, args.interactions, args.sessions, args.seed)
    log(f"  generated {facts['rows']:,} rows in {time.perf_counter() - t:.1f} s")
    steps = {}
    steps["import"] = manirec(binary, data, "import", "--interactions", csv, "--source", "realtime", env=env)
    steps["dataset"] = manirec(binary, data, "dataset", "build", env=env)
    train = manirec(binary, data, "train", "--model", "als", "--seed", str(args.seed), env=env)
    steps["train"] = {k: train.get(k) for k in ("model_version", "train_seconds", "metrics")}
    manirec(binary, data, "models", "promote", train["model_version"], env=env)
    os.remove(csv)
    facts["setup"] = steps
    with open(facts_path, "w") as f:
        json.dump(facts, f)
    return data, facts


def build_demo(binary, root, env):
    data = os.path.join(root, "demo")
    facts_path = os.path.join(data, "bench-facts.json")
    if os.path.exists(facts_path):
        log(f"demo shop: reusing {data}")
        with open(facts_path) as f:
            return data, json.load(f)
    shutil.rmtree(data, ignore_errors=True)
    log(f"demo shop: building {data}")
    manirec(binary, data, "demo", "--no-serve", env=env)
    # The ids the load asks for, read back through the store mirror's export path
    # would need SQL; the dataset's train file names them instead.
    import pandas as pd

    manifest = json.load(open(latest_manifest(data)))
    frames = [pd.read_parquet(os.path.join(data, "objects", f["key"])) for f in manifest["files"]
              if f["key"].endswith(".parquet")]
    rows = pd.concat(frames)
    real = rows[~rows["user_id"].str.startswith(("anonymous:", "session:", "device:"))]
    users = real["user_id"].value_counts()
    sessions = rows[rows["user_id"].str.startswith("session:")]["user_id"].unique()
    items = rows["item_id"].value_counts()
    facts = {
        "rows": int(len(rows)),
        "users": [str(u) for u in users.index],
        "user_weights": [int(c) for c in users.values],
        "sessions": [str(s)[len("session:"):] for s in sessions],
        "items": [str(i) for i in items.index],
        "item_weights": [int(c) for c in items.values],
    }
    with open(facts_path, "w") as f:
        json.dump(facts, f)
    return data, facts


def latest_manifest(data):
    base = os.path.join(data, "objects", "datasets")
    versions = sorted(os.listdir(base), key=lambda v: [int(x) for x in v[1:].split(".")])
    return os.path.join(base, versions[-1], "manifest.json")


def paths(facts, n, seed, mix):
    """n request paths: recommendations for 70 % known customers (by activity),
    15 % recent sessions, 15 % strangers; with `mix`, 20 % similar and 10 %
    popular among them."""
    rng = np.random.default_rng(seed)
    users = np.array(facts["users"])
    uw = np.array(facts["user_weights"], dtype=float)
    items = np.array(facts["items"])
    iw = np.array(facts["item_weights"], dtype=float)
    sessions = np.array(facts["sessions"]) if facts["sessions"] else None
    kind, who = rng.random(n), rng.random(n)
    pick_user = rng.choice(users, n, p=uw / uw.sum())
    pick_item = rng.choice(items, n, p=iw / iw.sum())
    pick_session = rng.choice(sessions, n) if sessions is not None else None
    out = []
    for i in range(n):
        if mix and kind[i] < 0.2:
            out.append(f"/v1/items/{pick_item[i]}/similar?k=10")
        elif mix and kind[i] < 0.3:
            out.append("/v1/popular?k=10")
        elif who[i] < 0.70 or sessions is None:
            out.append(f"/v1/recommendations?user_id={pick_user[i]}&user_token={user_token(pick_user[i])}&k=10")
        elif who[i] < 0.85:
            out.append(f"/v1/recommendations?session_id={pick_session[i]}&k=10")
        else:
            out.append(f"/v1/recommendations?user_id=stranger-{i}&user_token={user_token(f'stranger-{i}')}&k=10")
    return out


# user_id answers need the shopper's token (what a shop's theme makes).
STOREFRONT_SECRET = "bench-storefront-secret-0123456789"


def user_token(user_id, expiry=4102444800):
    uid = str(user_id).strip()
    uid = uid.lower() if "@" in uid else uid
    message = f"{uid}|{expiry}".encode()
    return f"{expiry}." + hmac.new(STOREFRONT_SECRET.encode(), message, hashlib.sha256).hexdigest()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(binary, data, port, env):
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            sys.exit(f"port {port} is already in use (a server left over?); pick another with --port")
    log_path = os.path.join(data, "bench-serve.log")
    # wrk is one client hammering on purpose: no per-client rate limit here.
    settings = os.path.join(data, "manirec.toml")
    text = open(settings).read() if os.path.exists(settings) else ""
    if "[limits]" not in text:
        with open(settings, "a") as f:
            f.write("\n[limits]\nrate_per_second = 0\n")
    proc = subprocess.Popen([binary, "--data-dir", data, "serve", "--addr", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/popular?k=1", timeout=1).read()
            return proc
        except Exception:
            if proc.poll() is not None:
                sys.exit(f"manirec serve exited: {open(log_path).read()[-2000:]}")
            time.sleep(0.2)
    proc.kill()
    sys.exit("manirec serve did not answer within 120 s")


def run_wrk(port, path_file, connections, threads, duration, server_pid):
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
           "-s", LUA, f"http://127.0.0.1:{port}", "--", path_file]
    load = os.getloadavg()[0]
    s0, t0 = cpu_seconds(server_pid), time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    status = proc.returncode
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    s1 = cpu_seconds(server_pid)
    if status != 0:
        sys.exit(f"wrk failed: {err.decode()}")
    text = out.decode()
    m = re.search(r"^BENCH (.*)$", text, re.M)
    result = json.loads(m.group(1))
    result["server_cpu_s"] = round(s1 - s0, 2)
    result["loadavg_1m_before"] = round(load, 2)
    result["wrk_cpu_s"] = round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 2)
    result["wall_s"] = round(wall, 2)
    return result, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manirec", default="target/release/manirec")
    ap.add_argument("--out", default="target/bench-serve")
    ap.add_argument("--label", default="run")
    ap.add_argument("--shops", default="demo,large")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--interactions", type=int, default=5_000_000)
    ap.add_argument("--sessions", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", default="1,8,32,128")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--port", type=int, default=28931)
    ap.add_argument("--setup-only", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None and not args.setup_only:
        sys.exit("wrk is not installed (apt-get install wrk)")
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    binary = os.path.abspath(args.manirec)
    env = dict(os.environ, MANIREC_USER_KEY="00" * 32, MANIREC_LOG="warn",
               MANIREC_STOREFRONT_SECRET=STOREFRONT_SECRET)
    for k in ("MANIREC_OBJECT_STORE", "MANIREC_DATABASE_URL", "MANIREC_DATA_DIR"):
        env.pop(k, None)

    shops = []
    for shop in args.shops.split(","):
        if shop == "demo":
            shops.append(("demo",) + build_demo(binary, root, env))
        elif shop == "large":
            shops.append(("large",) + build_large(binary, root, args, env))
        else:
            sys.exit(f"unknown shop {shop!r} (demo, large)")
    if args.setup_only:
        return

    machine = {
        "nproc": os.cpu_count(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "kernel": platform.release(),
        "wrk_threads": args.threads,
    }
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"label": args.label, "commit": git, "machine": machine, "duration_s": args.duration, "runs": []}
    for name, data, facts in shops:
        rec_file = os.path.join(root, f"paths-{name}-rec.txt")
        mix_file = os.path.join(root, f"paths-{name}-mix.txt")
        for file, mix in ((rec_file, False), (mix_file, True)):
            with open(file, "w") as f:
                f.write("\n".join(paths(facts, 20_000, args.seed, mix)) + "\n")
        t = time.perf_counter()
        server = start_server(binary, data, args.port, env)
        log(f"  {name}: serving after {time.perf_counter() - t:.1f} s")
        try:
            # Warm-up: page cache, model, connections.
            run_wrk(args.port, rec_file, 8, args.threads, 3, server.pid)
            cases = [("recommendations", rec_file, int(c)) for c in args.connections.split(",")]
            cases.append(("mix", mix_file, 32))
            for workload, file, c in cases:
                r, _ = run_wrk(args.port, file, c, args.threads, args.duration, server.pid)
                r.update(shop=name, workload=workload, connections=c)
                report["runs"].append(r)
                with open(os.path.join(root, f"{args.label}.json"), "w") as f:
                    json.dump(report, f, indent=1)  # after every run: a cut-short run keeps its numbers
                log(f"  {name:6} {workload:16} c={c:<4} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:.2f}  "
                    f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log("  manirec serve did not stop within 10 s of SIGTERM; killed")
                server.kill()
                server.wait()
    out = os.path.join(root, f"{args.label}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{args.label} @ {git}: {machine['nproc']} × {machine['cpu']}, wrk -t{args.threads}, "
          f"{args.duration} s per run (server and wrk share the cores)")
    print(f"{'shop':6} {'workload':16} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'non-2xx':>7} {'server CPU':>10} {'wrk CPU':>8}")
    for r in report["runs"]:
        print(f"{r['shop']:6} {r['workload']:16} {r['connections']:>5} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} "
              f"{r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['max_ms']:>7.1f} {r['errors']:>7} "
              f"{r['server_cpu_s'] / r['wall_s']:>9.0%} {r['wrk_cpu_s'] / r['wall_s']:>7.0%}")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
