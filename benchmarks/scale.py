"""Catalog scale: training, evaluation and serving cost from 10k to 10M items.

    python benchmarks/scale.py                                  # 10k, 100k, 1M items
    python benchmarks/scale.py --items 10000000 --users 2000    # one more row
    python benchmarks/scale.py --items 1000000 --recall 0.95    # approx_max_k vs exact
    python benchmarks/scale.py --items 1000000 --index auto     # a faiss index vs exact
    python benchmarks/scale.py --items 1000000 --skip train,eval --workdir W --open-rates 300 \
        --serve-args "--fill-gap-ms 1 --length-buckets 50 --batch-buckets 1,2,4,8,12,16,20,24,28,32"

Per catalog size N (synthetic data, ``--users`` users of mean length 20, ``sasrec/plus`` with
max_len 50, sampled softmax with 256 negatives):

* **train**: ``jaxrec train`` for one epoch in a subprocess; step time (median over the
  logged intervals, compilation excluded), peak RSS (the process's VmHWM), wall time;
* **eval**: full ranking of every test user (``jaxrec.metrics.evaluate``, catalog-chunked),
  seconds per 1,000 users, the second of two runs (the first compiles);
* **serve**: ``jaxrec serve`` pinned to ``--server-cpus``, this client on ``--client-cpus``:
  the warm-up (compiling every bucket) and the time to SERVING, batch-1 p50/p99 (one request
  at a time), closed loop at ``--concurrency`` (req/s, p99), and the ratio of that rate to
  the brute-force bound (a full batch's (batch, D) x (D, N+1) product alone, timed on one
  core of this machine);
* with ``--open-rates R1,R2``: open-loop load at each rate (goodput, p50, p99), the form a
  "N req/s at p99 <= X ms" target takes;
* with ``--recall R``: recall@k of ``lax.approx_max_k`` at that target against exact top-k;
* with ``--index SPEC``: a faiss index (``jaxrec.ann``): its build time, recall@10/@100 against
  the exact top-k and search time per query for each of ``--index-params`` (";"-separated), and
  the serving figures again with ``jaxrec serve --index SPEC --index-params P`` (the first P).

Prints a table, writes JSON (``--out``) and a PNG of each figure against N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import closed_loop, load_requests, pyplot, save_figure, start_server, summarize  # noqa: E402

DIM = 64
MAX_LEN = 50


def data_spec(items: int, users: int) -> str:
    return f"synthetic:users={users},items={items},mean_len=20,max_len={MAX_LEN},topics={max(20, items // 2000)}"


def peak_rss_of(cmd: list[str]) -> tuple[int, float, float]:
    """Run ``cmd``; (exit code, peak RSS in MiB (VmHWM, polled), wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode:
        print(err[-3000:], file=sys.stderr)
    return proc.returncode, peak, time.perf_counter() - t0


def train(items: int, users: int, out: Path, cpus: str, extra: list[str] = ()) -> dict:
    cmd = ["taskset", "-c", cpus, sys.executable, "-m", "jaxrec.cli", "train", "--model", "sasrec/plus",
           "--data", data_spec(items, users), "--out", str(out), "--quiet",
           "--set", "loss=sampled_softmax", "--set", "num_negatives=256", "--set", "epochs=2",
           "--set", f"model_args.max_len={MAX_LEN}", "--set", f"model_args.dim={DIM}"]
    for kv in extra:
        cmd += ["--set", kv]
    rc, peak, wall = peak_rss_of(cmd)
    if rc:
        raise SystemExit(f"training {items} items failed (exit {rc})")
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "epoch_s" in r]
    # epoch 2 compiles nothing: its steps' time over its step count
    ends = {r["epoch"]: r for r in steps}
    step_ms = float("nan")
    if 1 in ends and 2 in ends and ends[2]["step"] > ends[1]["step"]:
        step_ms = 1000 * ends[2]["epoch_s"] / (ends[2]["step"] - ends[1]["step"])
    return {"train_step_ms": step_ms, "train_peak_rss_mib": peak, "train_wall_s": wall,
            "train_steps": steps[-1]["step"] if steps else 0}


def evaluate_time(run: Path, items: int, users: int) -> dict:
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.inference import Recommender
    from jaxrec.metrics import evaluate

    rec = Recommender.from_checkpoint(run)
    split = leave_one_out(load_dataset(data_spec(items, users)))
    secs = []
    for _ in range(2):
        t = time.perf_counter()
        res = evaluate(rec, split, "test")
        secs.append(time.perf_counter() - t)
    n = len(split.eval_set("test"))
    return {"eval_s_per_1k_users": 1000 * secs[-1] / n, "eval_first_s_per_1k_users": 1000 * secs[0] / n,
            "eval_users": n, "test_ndcg10": res.metrics["NDCG@10"]}


def approx_recall(run: Path, items: int, users: int, recall: float, k: int = 100) -> dict:
    """recall@k of the approximate top-k against the exact one, over test histories."""
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.inference import Recommender
    from jaxrec.scoring import Scorer

    rec = Recommender.from_checkpoint(run)
    data = load_dataset(data_spec(items, users))
    es = leave_one_out(data).test
    n = min(512, len(es))
    hist = pad_histories(data.items, es.start[:n], es.end[:n], MAX_LEN)  # (n, L)
    exact = np.asarray(rec.scorer.top_k(hist, k, exclude=hist).items)
    t = time.perf_counter()
    approx = np.asarray(Scorer(rec.stage, recall=recall).top_k(hist, k, exclude=hist).items)
    got = np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)])
    return {"approx_recall_target": recall, f"approx_recall@{k}": float(got),
            "approx_s": time.perf_counter() - t}


def index_recall(run: Path, items: int, users: int, spec: str, params: list[str], cache=None) -> dict:
    """recall@10 and @100 of the faiss index (``jaxrec.ann``) against the exact top-k over test
    histories (seen items excluded from both), and its search time per query (one core: the
    process is pinned like the server), for each search setting; and its build time."""
    from jaxrec.ann import ItemIndex, recall_at_k
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.splits import pad_histories
    from jaxrec.inference import Recommender

    rec = Recommender.from_checkpoint(run)
    data = load_dataset(data_spec(items, users))
    es = leave_one_out(data).test
    n = min(512, len(es))
    hist = pad_histories(data.items, es.start[:n], es.end[:n], MAX_LEN)  # (n, L)
    exact = np.asarray(rec.scorer.top_k(hist, 100, exclude=hist).items)  # (n, 100)
    vecs = np.asarray(rec.scorer.user_vectors(hist)[0])  # (n, D)
    t = time.perf_counter()
    index = ItemIndex(rec.scorer.item_vectors(), spec, params[0] or None, cache=cache)  # built on every core
    out = {"index": index.spec, "index_build_s": time.perf_counter() - t, "index_recall": []}
    print(f"   index {index.spec} over {index.size:,} items: {'read' if index.loaded_from else 'built'} in "
          f"{out['index_build_s']:.1f}s", flush=True)
    import faiss
    faiss.omp_set_num_threads(1)  # searched on one core, as the pinned server does
    removed = [h[h > 0] for h in hist]
    for p in params:
        if p:
            index.set_params(p)
        t = time.perf_counter()
        got = index.search(vecs, 100, removed)[1]
        ms = 1000 * (time.perf_counter() - t) / n
        out["index_recall"].append({"params": index.params, "recall@10": recall_at_k(got[:, :10], exact[:, :10]),
                                    "recall@100": recall_at_k(got, exact), "search_ms_per_query": ms})
        print(f"   index {index.describe()}: recall@10 {out['index_recall'][-1]['recall@10']:.3f} "
              f"recall@100 {out['index_recall'][-1]['recall@100']:.3f}, {ms:.2f} ms a query (1 thread)", flush=True)
    return out


async def serve_figures(port: int, reqs: list, concurrency: int, seconds: float, open_rates=()) -> dict:
    """Batch-1 latency, the closed loop at ``concurrency``, then each open-loop rate: Poisson
    arrivals at a fixed rate with 1 s deadlines (``overload.open_level``), which is what "N req/s
    at p99 <= X ms" means; a closed loop of C clients cannot show it once C / N > X (Little's law:
    32 clients at 300 req/s wait 107 ms on average)."""
    from overload import open_level

    from jaxrec.v1 import recommender_pb2_grpc as pb_grpc
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.RecommenderStub(ch)
        await closed_loop(stub, reqs, 2, 1.0)  # warm the channel
        lat = []
        for r in reqs[:200]:
            t = time.perf_counter()
            await stub.Recommend(r, timeout=30)
            lat.append(time.perf_counter() - t)
        one = summarize(lat, {}, sum(lat))
        many = await closed_loop(stub, reqs, concurrency, seconds)
        opened = {}
        for rate in open_rates:
            o = await open_level(stub.Recommend, reqs, rate, seconds, 1.0, seed=0)
            opened |= {f"open{rate:g}_goodput": o["goodput"], f"open{rate:g}_p50_ms": o["admitted_p50_ms"],
                       f"open{rate:g}_p99_ms": o["admitted_p99_ms"], f"open{rate:g}_codes": o["codes"],
                       f"open{rate:g}_send_lag_p99_ms": o["send_lag_p99_ms"]}
    return {"batch1_p50_ms": one["p50_ms"], "batch1_p99_ms": one["p99_ms"],
            f"c{concurrency}_rps": many["throughput"], f"c{concurrency}_p99_ms": many["p99_ms"],
            "serve_errors": many["errors"]} | opened


def brute_force_rps(items: int, batch: int) -> float:
    """Requests/s if a request cost only its dot products: a (batch, D) x (D, N+1) product on
    one core (call it pinned to one), median of 5."""
    import jax
    import jax.numpy as jnp
    u, t = jnp.ones((batch, DIM), jnp.float32), jnp.ones((items + 1, DIM), jnp.float32)
    f = jax.jit(lambda u, t: u @ t.T)
    jax.block_until_ready(f(u, t))
    secs = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(u, t))
        secs.append(time.perf_counter() - t0)
    return batch / float(np.median(secs))


def serve(run: Path, items: int, users: int, args, extra: tuple = ()) -> dict:
    t0 = time.perf_counter()
    proc = start_server(str(run), args.max_batch_size, 2.0, args.port, "10", cpus=args.server_cpus,
                        extra=["--max-k", "100", *args.serve_args.split(), *extra])
    ready = time.perf_counter() - t0
    try:
        warm = next((float(line.split("buckets in ", 1)[1].split("s")[0]) for line in proc.log
                     if "compiled" in line), float("nan"))
        reqs = load_requests(data_spec(items, users), MAX_LEN, 2000, 10)
        out = asyncio.run(serve_figures(args.port, reqs, args.concurrency, args.seconds, args.open_rates))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    bound = brute_force_rps(items, args.max_batch_size)
    index_line = next((line.split("approximate item index", 1)[1].strip() for line in proc.log
                       if "approximate item index" in line), None)
    return {"serve_warmup_s": warm, "serve_ready_s": ready, "brute_force_bound_rps": bound, "index_log": index_line,
            "ratio_to_bound": out[f"c{args.concurrency}_rps"] / bound} | out


def plot(rows: list, cols: list, path: Path) -> None:
    """One log-log panel per figure against the catalog size (needs the bench extra)."""
    plt = pyplot()
    if plt is None or not rows:
        return
    figs = [c for c in cols if all(isinstance(r.get(c), float) for r in rows)]
    fig, axes = plt.subplots(1, len(figs), figsize=(3.2 * len(figs), 3))
    for ax, c in zip(np.atleast_1d(axes), figs):
        ax.loglog([r["items"] for r in rows], [r[c] for r in rows], "o-")
        ax.set_title(c, fontsize=8)
        ax.set_xlabel("catalog items")
    save_figure(fig, axes, path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default="10000,100000,1000000", help="catalog sizes, comma-separated")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/scale.json")
    ap.add_argument("--workdir", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--train-cpus", default="0,1")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--client-cpus", default="1", help="this process is pinned here for the serving part")
    ap.add_argument("--port", type=int, default=50071)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--open-rates", type=lambda v: [float(x) for x in v.split(",") if x], default=[],
                    help="also open-loop levels at these rates (req/s, comma-separated; Poisson, 1 s deadlines): "
                         "goodput, p50 and p99 per rate")
    ap.add_argument("--recall", type=float, default=None, help="also measure approx_max_k at this recall target")
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                    help="more training settings, e.g. retrieval.sparse_items=true (repeatable)")
    ap.add_argument("--index", default=None, metavar="SPEC",
                    help="also an approximate item index (faiss factory string, or auto): its recall against "
                         "exact for each --nprobe, and serving with it (jaxrec serve --index)")
    ap.add_argument("--index-params", default="", help="search settings to measure, ';'-separated, e.g. "
                    "'efSearch=64;efSearch=128' (default: the index family's); the server uses the first")
    ap.add_argument("--serve-args", default="", help="more `jaxrec serve` options, e.g. '--fill-gap-ms 1'")
    ap.add_argument("--skip", default="", help="parts to skip: train (reuse --workdir runs), eval, serve, "
                                               "exact (serve with --index only)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="jaxrec-scale-"))
    rows = []
    for n in [int(x) for x in args.items.split(",")]:
        run = work / f"items{n}"
        row = {"items": n, "users": args.users}
        print(f"-- {n:,} items", flush=True)
        if "train" not in skip:
            row |= train(n, args.users, run, args.train_cpus, args.train_set)
            row["train_set"] = args.train_set
        if "eval" not in skip:
            row |= evaluate_time(run, n, args.users)
        if args.recall:
            row |= approx_recall(run, n, args.users, args.recall)
        index_cache = work / "index-cache"  # built once here (both cores), read by the server
        if args.index:
            row |= index_recall(run, n, args.users, args.index, args.index_params.split(";"), index_cache)
        if "serve" not in skip:
            import os
            os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
            try:
                if "exact" not in skip:
                    row |= serve(run, n, args.users, args)
                if args.index:
                    first = args.index_params.split(";")[0]
                    ix = serve(run, n, args.users, args, ("--index", args.index, "--index-cache", str(index_cache))
                               + (("--index-params", first) if first else ()))
                    row |= {"index_serve_params": first or "default"} | {"index_" + k: v for k, v in ix.items()}
            finally:
                os.sched_setaffinity(0, set(range(os.cpu_count())))
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["items", "train_step_ms", "train_peak_rss_mib", "eval_s_per_1k_users", "serve_warmup_s",
            "batch1_p50_ms", "batch1_p99_ms", f"c{args.concurrency}_rps", f"c{args.concurrency}_p99_ms",
            "ratio_to_bound"]
    cols += [f"open{r:g}_{f}" for r in args.open_rates for f in ("goodput", "p50_ms", "p99_ms")]
    if args.index:
        cols += ["index_serve_ready_s", "index_serve_warmup_s", "index_batch1_p50_ms", "index_batch1_p99_ms", f"index_c{args.concurrency}_rps",
                 f"index_c{args.concurrency}_p99_ms"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join((f"{r[c]:.3f}" if c == "ratio_to_bound" else f"{r[c]:,.1f}") if isinstance(r.get(c), float) else str(r.get(c, "-"))
                                for c in cols) + " |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    plot(rows, cols[1:], Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
