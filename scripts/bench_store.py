#!/usr/bin/env python3
"""Benchmark (not a test): the same shop on SQLite and on PostgreSQL, served by
one and by two `manirec serve` replicas, in one run on one machine.

What it measures, for each (database, replicas):
  - ingestion: `POST /v1/events` with batches of 1 and of 500 events, 8
    connections in all (split over the replicas); events stored per second;
  - recommendations: `GET /v1/recommendations` for known customers, recent
    sessions and strangers (the paths of scripts/bench-serve), 8 connections in
    all; requests/s, p50 and p99 latency (with two replicas, the slower
    replica's percentile: a conservative figure).
wrk runs on the same machine (it shares the cores with the servers and with
PostgreSQL). The shop is the demo shop (`manirec demo --no-serve`) on SQLite;
the PostgreSQL one is made from it with `manirec store copy`, so both hold the
same rows. PostgreSQL is the throwaway server of scripts/test-postgres (TLS on, as a hosted
one; manirec connects with its default, sslmode=prefer, so encrypted).

Usage: scripts/bench-store [--duration S] [--label L]
Results: target/bench-store/<label>.json, and a table on stdout.
"""
import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_serve as bs  # noqa: E402  (its server, wrk and path helpers)

EVENTS_LUA = os.path.join(HERE, "bench_store_events.lua")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def facts_from_sqlite(db_path):
    """Who and what the load asks for, read from the demo store."""
    con = sqlite3.connect(db_path)
    users = con.execute(
        "SELECT user_id, COUNT(*) FROM training_interactions WHERE user_id NOT LIKE 'session:%' "
        "AND user_id NOT LIKE 'device:%' AND user_id NOT LIKE 'anonymous:%' GROUP BY 1").fetchall()
    sessions = [r[0][len("session:"):] for r in con.execute(
        "SELECT DISTINCT user_id FROM training_interactions WHERE user_id LIKE 'session:%'")]
    items = con.execute("SELECT item_id, COUNT(*) FROM training_interactions GROUP BY 1").fetchall()
    con.close()
    return {
        "users": [u for u, _ in users], "user_weights": [c for _, c in users],
        "sessions": sessions,
        "items": [i for i, _ in items], "item_weights": [c for _, c in items],
    }


def wrk(port, script, args, connections, duration):
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", script,
           f"http://127.0.0.1:{port}", "--", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def collect(procs):
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"wrk failed: {err.decode()}")
        line = next(l for l in out.decode().splitlines() if l.startswith("BENCH "))
        results.append(json.loads(line[len("BENCH "):]))
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] + r["socket_errors"] for r in results),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manirec", default="target/release/manirec")
    ap.add_argument("--out", default="target/bench-store")
    ap.add_argument("--label", default="run")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--port", type=int, default=28951)
    args = ap.parse_args()
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    binary = os.path.abspath(args.manirec)
    env = dict(os.environ, MANIREC_USER_KEY="00" * 32, MANIREC_LOG="warn",
               MANIREC_STOREFRONT_SECRET=bs.STOREFRONT_SECRET)
    for k in ("MANIREC_OBJECT_STORE", "MANIREC_DATABASE_URL", "MANIREC_DATA_DIR"):
        env.pop(k, None)

    # The shop on SQLite, then the same rows on PostgreSQL.
    lite = os.path.join(root, "sqlite")
    if not os.path.exists(os.path.join(lite, "manirec.db")):
        shutil.rmtree(lite, ignore_errors=True)
        bs.manirec(binary, lite, "demo", "--no-serve", env=env)
    started = subprocess.run([os.path.join(HERE, "test-postgres"), "start"], capture_output=True,
                             text=True, check=True).stdout
    server_url = next(line.split("=", 1)[1] for line in started.splitlines()
                      if line.startswith("export MANIREC_TEST_POSTGRES_URL="))
    subprocess.run(["psql", server_url, "-qc", "DROP DATABASE IF EXISTS manirec_bench_store WITH (FORCE)",
                    "-c", "CREATE DATABASE manirec_bench_store"], check=True)
    pg_url = server_url.rsplit("/", 1)[0] + "/manirec_bench_store"
    pg = os.path.join(root, "postgres")
    shutil.rmtree(pg, ignore_errors=True)
    shutil.copytree(lite, pg, ignore=shutil.ignore_patterns("manirec.db*", "*.log"))
    copied = bs.manirec(binary, lite, "store", "copy", "--to", pg_url, env=env)
    log(f"  store copy: {sum(t['target_rows'] for t in copied['tables']):,} rows")

    facts = facts_from_sqlite(os.path.join(lite, "manirec.db"))
    rec_file = os.path.join(root, "paths-rec.txt")
    with open(rec_file, "w") as f:
        f.write("\n".join(bs.paths(facts, 20_000, 7, False)) + "\n")

    report = {"label": args.label, "duration_s": args.duration, "nproc": os.cpu_count(),
              "loadavg_1m_before": round(os.getloadavg()[0], 2), "runs": []}
    for backend, data, extra in (("sqlite", lite, {}), ("postgres", pg, {"MANIREC_DATABASE_URL": pg_url})):
        for replicas in (1, 2):
            ports = [args.port + i for i in range(replicas)]
            servers = []
            for i, port in enumerate(ports):
                # Each replica its own data dir for its log, one store between them.
                servers.append(bs.start_server(binary, data, port, dict(env, **extra)))
            try:
                per = 8 // replicas
                bs.run_wrk(ports[0], rec_file, 4, 1, 2, servers[0].pid)  # warm-up
                for batch in (1, 500):
                    tag = f"{backend}{replicas}b{batch}t{int(time.time())}"
                    r = collect([wrk(p, EVENTS_LUA, [str(batch), f"{tag}p{p}"], per, args.duration)
                                 for p in ports])
                    r.update(backend=backend, replicas=replicas, workload=f"events, batch {batch}",
                             events_per_s=round(r["rps"] * batch))
                    report["runs"].append(r)
                    log(f"  {backend:8} x{replicas} events batch {batch:<3} {r['events_per_s']:>9,} events/s "
                        f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms errors {r['errors']}")
                r = collect([wrk(p, bs.LUA, [rec_file], per, args.duration) for p in ports])
                r.update(backend=backend, replicas=replicas, workload="recommendations")
                report["runs"].append(r)
                log(f"  {backend:8} x{replicas} recommendations {r['rps']:>9.0f} req/s "
                    f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms errors {r['errors']}")
            finally:
                for s in servers:
                    s.terminate()
                    s.wait(timeout=15)
    out = os.path.join(root, f"{args.label}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{args.label}: {report['nproc']} cores, load {report['loadavg_1m_before']} before, "
          f"{args.duration} s per run, 8 connections in all (wrk on the same cores)")
    print(f"{'database':9} {'replicas':>8} {'workload':18} {'per second':>11} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for r in report["runs"]:
        rate = r.get("events_per_s", round(r["rps"]))
        print(f"{r['backend']:9} {r['replicas']:>8} {r['workload']:18} {rate:>11,} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['errors']:>6}")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
