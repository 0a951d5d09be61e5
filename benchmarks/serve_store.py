"""What the user-event store costs a request: Recommend by user_id against Recommend with the
history on the wire, on both backends, and Observe's own latency.

    python benchmarks/serve_store.py --checkpoint runs/ml1m_sasrec_ce_t40 --server-cpus 0 --client-cpus 1

For each backend (SQLite in WAL mode; Redis, a real redis-server started here on a loopback port
and pinned with the server) it starts ``jaxrec serve --store ...`` pinned to --server-cpus, writes
every user's latest events with Observe (one call per user), then drives the server from this
process (pinned to --client-cpus) at each --concurrency for --seconds per mode:

* ``history``: Recommend with the user's history (the model's max length of ids) in the request;
* ``user_id``: Recommend with only the user id (the store reads the same history);
* ``observe``: Observe of one new event per call.

Prints p50 / p99 latency and calls/s per (backend, mode, concurrency) and the user_id / history
ratios; writes benchmarks/serve_store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list, cpus: str | None) -> list:
    return (["taskset", "-c", cpus] if cpus else []) + cmd


def start_server(args, store: str, log) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "jaxrec.cli", "serve", "--checkpoint", args.checkpoint, "--port", "0",
           "--store", store, "--max-batch-size", "64", "--k-buckets", "10", "--diversity-pool", "0"]
    if args.length_buckets:
        cmd += ["--length-buckets", args.length_buckets]
    proc = subprocess.Popen(pinned(cmd, args.server_cpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited:\n" + "".join(log))
        log.append(line)
        if m := re.search(r"^serving .* on 127\.0\.0\.1:(\d+)", line):
            return proc, int(m.group(1))


async def drive(target: str, make_call, concurrency: int, seconds: float) -> dict:
    from jaxrec_server.client import AsyncClient

    lat, errors = [], 0
    async with AsyncClient(target, timeout=10, retries=0) as c:
        for i in range(min(50, 5 * concurrency)):  # warm the connection and the code paths
            await make_call(c, i)
        stop = time.perf_counter() + seconds

        async def worker(w):
            nonlocal errors
            i = w
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    await make_call(c, i)
                    lat.append(time.perf_counter() - t)
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    errors += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"calls": len(lat), "errors": errors, "per_s": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def main(argv=None) -> int:
    from jaxrec.data import load_dataset
    from jaxrec.inference import Recommender

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=None, help="the run's data file (default: its config's path)")
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--length-buckets", default=None, help="the server's --length-buckets")
    ap.add_argument("--server-cpus", default=None, help="taskset list for the server (and redis-server)")
    ap.add_argument("--client-cpus", default=None, help="taskset list for this process (the load)")
    ap.add_argument("--out", default=str(HERE / "serve_store.json"))
    args = ap.parse_args(argv)
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})

    rec = Recommender.from_checkpoint(args.checkpoint)
    data = load_dataset(args.data or rec.config.data)
    max_len = rec.max_len
    ids = data.catalog.ids
    users = []
    for u in range(min(args.users, data.num_users)):
        seq = data.sequence(u)[-max_len:]
        users.append((f"user-{u}", [ids[i] for i in seq]))
    del rec
    conc = [int(c) for c in args.concurrency.split(",")]
    rows, tmp = [], Path(tempfile.mkdtemp(prefix="serve_store-"))
    for backend in args.backends.split(","):
        redis_proc = None
        if backend == "redis":
            exe = shutil.which("redis-server")
            if exe is None:
                print("redis-server not installed: skipping the Redis backend")
                continue
            rport = free_port()
            redis_proc = subprocess.Popen(pinned([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                                  "--appendonly", "no"], args.server_cpus),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            store = f"redis://127.0.0.1:{rport}/0"
        else:
            store = f"sqlite:{tmp / 'events.sqlite'}"
        log: list = []
        proc, port = start_server(args, store, log)
        target = f"127.0.0.1:{port}"
        try:
            async def fill():
                from jaxrec_server.client import AsyncClient
                async with AsyncClient(target, timeout=30) as c:
                    for lo in range(0, len(users), 64):
                        await asyncio.gather(*(c.observe(u, h) for u, h in users[lo: lo + 64]))
            t = time.perf_counter()
            asyncio.run(fill())
            print(f"{backend}: stored {len(users)} users' histories ({max_len} events max) in "
                  f"{time.perf_counter() - t:.1f}s", flush=True)
            modes = {
                "history": lambda c, i: c.recommend(users[i % len(users)][1], k=10),
                "user_id": lambda c, i: c.recommend(user_id=users[i % len(users)][0], k=10),
                "observe": lambda c, i: c.observe(users[i % len(users)][0], [users[(i * 7) % len(users)][1][-1]]),
            }
            for n in conc:
                for mode, call in modes.items():
                    r = asyncio.run(drive(target, call, n, args.seconds))
                    rows.append({"backend": backend, "mode": mode, "concurrency": n, **r})
                    print(f"  {backend:<6} {mode:<8} x{n:<3} {r['per_s']:8.0f}/s  p50 {r['p50_ms']:6.2f} ms  "
                          f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.checkpoint}: {len(users)} users, {max_len}-event histories; server on cpus {args.server_cpus}, "
          f"load on cpus {args.client_cpus}; {args.seconds:g}s per row\n")
    print("| backend | mode | concurrency | calls/s | p50 ms | p99 ms | errors | p50 vs history |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["backend"] == r["backend"] and x["concurrency"] == r["concurrency"]
                    and x["mode"] == "history")
        print(f"| {r['backend']} | {r['mode']} | {r['concurrency']} | {r['per_s']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['errors']} | {r['p50_ms'] / base['p50_ms']:.2f}x |")
    Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "users": len(users), "max_len": max_len,
                                          "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
                                          "seconds": args.seconds, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
