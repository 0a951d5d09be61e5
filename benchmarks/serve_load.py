"""Serving load test: closed and open loop, batching on vs off, in one run.

    python benchmarks/serve_load.py --checkpoint runs/ml1m_sasrec_ce             # starts servers
    python benchmarks/serve_load.py --target localhost:50051 --data ../shared/data/ml-1m/ml-1m.txt
    jaxrec bench serve ...                                                       # the same

Without ``--out`` it writes benchmarks/serve_load.{json,png}.

Histories are the test-split inputs of the run's data (leave-one-out), replayed in order.
For each server setting (``--batch-sizes``, default 64 and 1 = batching off) it runs a
closed loop at each concurrency (``--concurrency``), then an open loop with Poisson
arrivals at half of the best closed-loop throughput (latency measured from the scheduled
send time, so a slow server cannot hide queueing). Reports throughput, p50/p90/p99/p99.9
latency and errors by status code as a table, JSON (``--out``) and a PNG
(latency vs throughput) when matplotlib is installed. The server runs in its own process.

Where the time goes: ``--batch-sizes 64,1,floor`` adds ``benchmarks/grpc_floor.py`` (a model-free
server answering a fixed response: the most a Python gRPC server does on the machine); each
closed-loop row records the CPU per request of the server process and of this client; and
``--engine`` times the model path alone (``Engine.run``, no gRPC) at batch 1 and the largest
batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from jaxrec_server.client import status_name  # a RecommendResult code -> its name


def load_requests(data_spec: str, max_len: int, limit: int, k: int) -> list:
    """One ``RecommendRequest`` per test history (the last ``max_len`` items), built once so the
    client spends its CPU on calls, not on building messages. Event times ride along when the
    data has them (time-aware models need them; the others ignore them)."""
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.v1 import recommender_pb2 as pb
    data = load_dataset(data_spec)
    es = leave_one_out(data).test
    out = []
    for i in range(min(limit, len(es))):
        lo, hi = max(es.start[i], es.end[i] - max_len), es.end[i]
        times = [] if data.times is None else data.times[lo:hi].astype(np.int64).tolist()
        out.append(pb.RecommendRequest(history=data.catalog.external(data.items[lo:hi]), k=k,
                                       exclude_seen=True, history_times=times))
    return out


def start_server(checkpoint: str, batch: int | str, delay_ms: float, port: int, k_buckets: str,
                 max_history: int | None = None, event_loop: str = "asyncio", k: int = 10,
                 cpus: str | None = None, extra: list | None = None, workers: int = 1) -> subprocess.Popen:
    """``batch``: the server's --max-batch-size, or "floor" for ``grpc_floor.py``; ``cpus``: pin
    the server to these cores (``taskset``; ``workers`` share them out); ``extra``: more
    ``jaxrec serve`` options. The returned process's ``log`` holds the lines it printed before
    serving."""
    if batch == "floor":
        cmd = [sys.executable, str(Path(__file__).with_name("grpc_floor.py")), "--port", str(port), "-k", str(k),
               "--event-loop", event_loop]
    else:
        cmd = [sys.executable, "-m", "jaxrec.cli", "serve", "--checkpoint", checkpoint, "--port", str(port),
               "--max-batch-size", str(batch), "--max-delay-ms", str(delay_ms), "--max-queue", "100000",
               "--k-buckets", k_buckets, "--event-loop", event_loop]
        cmd += ["--max-history", str(max_history)] if max_history else []
        cmd += ["--workers", str(workers)] if workers > 1 else []
        cmd += list(extra or [])
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu")))
    proc.log = []
    try:
        for line in proc.stdout:
            proc.log.append(line.rstrip())
            if line.startswith("serving"):
                return proc
    except BaseException:  # a timeout or Ctrl-C while it starts: say how far it got
        print("server not serving yet; its log so far:", *proc.log[-20:], sep="\n  ", flush=True)
        proc.kill()
        raise
    raise SystemExit(f"server did not start: {proc.wait()}\n" + "\n".join(proc.log[-20:]))


def cpu_list(spec: str) -> set[int]:
    """taskset's list syntax: "1", "0,2", "10-15" -> the cores."""
    cores = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def _stat(pid) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process and its live children (``--workers``)
    have used: this process when ``pid`` is None."""
    if pid is None:
        return time.process_time()
    pids, total = [pid], 0.0
    for d in Path("/proc").iterdir():  # the children: processes whose parent is pid
        if d.name.isdigit():
            try:
                if int(_stat(d.name)[1]) == pid:
                    pids.append(int(d.name))
            except (OSError, IndexError):
                continue
    for p in pids:
        try:
            f = _stat(p)
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except OSError:  # exited meanwhile
            pass
    return total


class CpuMeter:
    """Per-request CPU of the server process and of this client over one measurement: the
    budget the two cores share, so a table can say where a request's time goes."""

    def __init__(self, server_pid: int | None, client_pids=()):
        self.pid = server_pid if server_pid and Path(f"/proc/{server_pid}/stat").exists() else None
        self.clients = [None, *client_pids]  # this process and its load processes (--client-procs)

    def _client_s(self) -> float:
        return sum(process_cpu_s(p) for p in self.clients)

    def __enter__(self):
        self.s0, self.c0 = (process_cpu_s(self.pid) if self.pid else None), self._client_s()
        return self

    def __exit__(self, *exc):
        self.server = process_cpu_s(self.pid) - self.s0 if self.pid else None
        self.client = self._client_s() - self.c0

    def per_request(self, n: int) -> dict:
        n = max(n, 1)
        return {"server_cpu_ms": None if self.server is None else 1000 * self.server / n,
                "client_cpu_ms": 1000 * self.client / n}


def engine_only(checkpoint: str, reqs: list, batch_sizes=(1, 64), max_history: int | None = None,
                seconds: float = 5.0) -> list[dict]:
    """The server's model path without gRPC: ``Engine.run`` on the same requests, in batches,
    in this process. Its CPU per request is what the model, the masks and the answers cost;
    the gRPC floor's is what the RPCs cost; a batched server pays both."""
    from jaxrec_server.main import ServeConfig, load_engine
    from jaxrec_server.servicer import recommend_query
    rows = []
    for b in batch_sizes:
        engine = load_engine(ServeConfig(checkpoint, max_batch_size=b, k_buckets=[reqs[0].k],
                                         max_history=max_history))
        engine.warm_up()
        rows.append(time_engine(engine, [recommend_query(engine, r)[0] for r in reqs], b, seconds))
    return rows


def time_engine(engine, queries: list, b: int, seconds: float) -> dict:
    """``Engine.run`` over ``queries`` (built by the servicer's own ``recommend_query``) in
    batches of ``b`` for ``seconds``: recommendations/s and CPU ms per recommendation."""
    n, lo, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        batch = queries[lo: lo + b]
        engine.run(batch)
        n, lo = n + len(batch), (lo + b) % len(queries)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": "engine", "batch": b, "throughput": n / wall, "engine_cpu_ms": 1000 * cpu / n}


def engine_on_demand(checkpoint: str, reqs: list, b: int, max_history: int | None, seconds: float) -> None:
    """The child of ``EngineChild``: build and warm the engine once, print READY, then time it
    (``time_engine``) each time a line arrives on stdin, printing one ROW line per timing."""
    from jaxrec_server.main import ServeConfig, load_engine
    from jaxrec_server.servicer import recommend_query
    engine = load_engine(ServeConfig(checkpoint, max_batch_size=b, k_buckets=[reqs[0].k], max_history=max_history))
    engine.warm_up()
    queries = [recommend_query(engine, r)[0] for r in reqs]
    print("READY", flush=True)
    for _ in sys.stdin:
        print("ROW", json.dumps(time_engine(engine, queries, b, seconds)), flush=True)


def batch_requests(reqs: list, entries: int) -> list:
    """``RecommendBatchRequest``s of ``entries`` consecutive histories each (built once)."""
    from jaxrec.v1 import recommender_pb2 as pb
    return [pb.RecommendBatchRequest(requests=reqs[i: i + entries]) for i in range(0, len(reqs) - entries + 1, entries)]


class Tally:
    """What one measurement collects: latencies per call, recommendations answered, errors."""

    def __init__(self):
        self.lat, self.recs, self.errors = [], 0, collections.Counter()


async def _send(stub, req, start, t: Tally) -> None:
    """One call (``Recommend``, or ``RecommendBatch`` for a batch request); latency counted from
    ``start`` (the send or the scheduled time); a batch entry's error counts by its code."""
    from jaxrec.v1 import recommender_pb2 as pb
    try:
        if isinstance(req, pb.RecommendBatchRequest):
            r = await stub.RecommendBatch(req, timeout=30)
            bad = [res.code for res in r.results if res.code]
            for c in bad:
                t.errors[status_name(c)] += 1
            t.recs += len(r.results) - len(bad)
        else:
            await stub.Recommend(req, timeout=30)
            t.recs += 1
        t.lat.append(time.perf_counter() - start)
    except grpc.RpcError as e:
        t.errors[e.code().name] += 1



def summarize(lat: list[float], errors: dict, seconds: float, recs: int | None = None) -> dict:
    """Throughput in recommendations/s (``recs``; default one per call) and per-call latency."""
    a = np.array(lat) * 1000 if lat else np.array([np.nan])
    recs = len(lat) if recs is None else recs
    return {"throughput": recs / seconds, "calls_per_s": len(lat) / seconds, "ok": recs, "errors": dict(errors),
            "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "p999_ms": float(np.percentile(a, 99.9))}


def _stubs(stub) -> list:
    return stub if isinstance(stub, list) else [stub]


async def closed_tally(stub, reqs, concurrency, seconds, stream: bool = False) -> tuple[Tally, float]:
    """``concurrency`` callers, each sending its next call when the last is answered; ``stub``: one
    stub or a list (callers take them round-robin: one connection each); ``reqs``: unary or batch
    requests; ``stream``: each caller keeps a ``RecommendStream`` open and sends its unary
    requests on it, one at a time."""
    t, stubs = Tally(), _stubs(stub)
    end = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def worker(j):
        s = stubs[j % len(stubs)]
        while time.perf_counter() < end:
            await _send(s, reqs[next(counter) % len(reqs)], time.perf_counter(), t)

    async def stream_worker(j):
        call = stubs[j % len(stubs)].RecommendStream(timeout=seconds + 60)
        while time.perf_counter() < end:
            start = time.perf_counter()
            await call.write(reqs[next(counter) % len(reqs)])
            res = await call.read()
            if res.code:
                t.errors[status_name(res.code)] += 1
            else:
                t.recs += 1
                t.lat.append(time.perf_counter() - start)
        await call.done_writing()

    t0 = time.perf_counter()
    await asyncio.gather(*((stream_worker if stream else worker)(j) for j in range(concurrency)))
    return t, time.perf_counter() - t0


async def closed_loop(stub, reqs, concurrency, seconds, stream: bool = False) -> dict:
    """``closed_tally`` summarized: recommendations/s and per-call latency percentiles."""
    t, wall = await closed_tally(stub, reqs, concurrency, seconds, stream)
    return summarize(t.lat, t.errors, wall, t.recs)


async def poisson_sends(launch, rate: float, seconds: float, seed: int = 0) -> tuple[int, float]:
    """Open-loop load: for ``seconds``, call ``launch(i, scheduled_time)`` at Poisson arrival times
    of ``rate`` per second, each call a task of its own (a slow answer never delays the next send),
    then wait for them all. Returns (calls sent, seconds the sending took: more than ``seconds``
    when the client fell behind its schedule)."""
    rng = np.random.default_rng(seed)
    tasks = []
    t0 = time.perf_counter()
    at, i = t0, 0
    while at < t0 + seconds:
        at += rng.exponential(1.0 / rate)
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(launch(i, at)))
        i += 1
    sent_for = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    return i, sent_for


async def open_tally(stub, reqs, rate, seconds, seed=0) -> Tally:
    """Poisson arrivals of calls at ``rate`` per second (latency from the scheduled send time)."""
    t, stubs = Tally(), _stubs(stub)
    await poisson_sends(lambda i, at: _send(stubs[i % len(stubs)], reqs[i % len(reqs)], at, t), rate, seconds, seed)
    return t


async def open_loop(stub, reqs, rate, seconds, seed=0) -> dict:
    """``open_tally`` summarized over the ``seconds`` of sending."""
    t = await open_tally(stub, reqs, rate, seconds, seed)
    return summarize(t.lat, t.errors, seconds, t.recs) | {"offered_rate": rate}


RPCS = ("unary", "stream")  # and "batchN": RecommendBatch calls of N histories; ":int" after any


def parse_rpc(rpc: str) -> tuple[str, int, bool]:
    """"unary" / "stream" / "batch64", each optionally with ":int" (histories sent as
    ``history_int_ids``) -> (kind, entries per call, integer ids)."""
    base, sep, ids = rpc.partition(":")
    if sep and ids != "int":
        raise SystemExit(f"--rpc {rpc!r}: the only suffix is :int (histories as integer ids)")
    if base in RPCS:
        return base, 1, bool(sep)
    if base.startswith("batch") and base[5:].isdigit() and int(base[5:]) > 0:
        return "batch", int(base[5:]), bool(sep)
    raise SystemExit(f"--rpc {rpc!r}: use unary, stream or batchN (e.g. batch64), optionally with :int")


def with_int_ids(reqs: list) -> list:
    """The same requests with their histories as ``history_int_ids`` (the catalog's ids must be
    decimal integers, as ml-1m's and beauty's prepared files are)."""
    out = []
    for r in reqs:
        q = type(r)()
        q.CopyFrom(r)
        q.ClearField("history")
        q.history_int_ids.extend(int(x) for x in r.history)
        out.append(q)
    return out


class Load:
    """This process's load: ``channels`` connections to ``target`` and the calls of one ``rpc``
    kind; ``await load(mode, n, seconds)`` runs a closed loop of ``n`` callers or an open loop
    of ``n`` calls/s and returns the summary row."""

    def __init__(self, target: str, reqs: list, rpc: str, channels: int):
        kind, entries, ints = parse_rpc(rpc)
        reqs = with_int_ids(reqs) if ints else reqs
        self.calls = batch_requests(reqs, entries) if kind == "batch" else reqs
        self.target, self.channels, self.stream = target, channels, kind == "stream"

    async def __aenter__(self):
        from jaxrec.v1 import recommender_pb2_grpc as pb_grpc
        self.chans = [grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
                      for _ in range(self.channels)]
        self.stubs = [pb_grpc.RecommenderStub(ch) for ch in self.chans]
        return self

    async def __aexit__(self, *exc):
        for ch in self.chans:
            await ch.close()

    async def tally(self, mode: str, n, seconds: float) -> tuple[Tally, float]:
        if mode == "closed":
            return await closed_tally(self.stubs, self.calls, n, seconds, stream=self.stream)
        return await open_tally(self.stubs, self.calls, n, seconds), seconds

    async def __call__(self, mode: str, n, seconds: float) -> dict:
        t, wall = await self.tally(mode, n, seconds)
        return summarize(t.lat, t.errors, wall, t.recs)


class ClientProcs:
    """``--client-procs N``: the load offered from N client processes, each with its share of
    the callers (or of the open-loop rate) and of the connections, started together. One Python
    client tops out near one core's worth of gRPC calls, under what a many-core server with
    ``--workers`` answers; with several, the client stops being the limit. Each is this script
    run again (``client_proc``, as ``EngineChild`` does: it also works where the script was
    loaded with runpy), fed one job per line and answering one tally per line."""

    def __init__(self, n: int, data: str, max_len: int, users: int, k: int, event_loop: str):
        code = ("import runpy, sys; m = runpy.run_path(sys.argv[1]); "
                "m['client_proc'](sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])")
        self.procs = [subprocess.Popen([sys.executable, "-c", code, __file__, data, str(max_len), str(users), str(k),
                                        event_loop], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
                      for _ in range(n)]
        for p in self.procs:
            self._line(p, "READY")
        self.pids = [p.pid for p in self.procs]

    @staticmethod
    def _line(p, tag: str) -> str:
        for line in p.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        raise SystemExit(f"a load client process ended ({p.wait()}) before printing {tag}")

    def load(self, target: str, rpc: str, channels: int) -> "ProcsLoad":
        return ProcsLoad(self, (target, rpc, channels))

    def run(self, job: tuple, mode: str, n, seconds: float) -> dict:
        """One measurement: each process's share sent, the tallies merged into one summary row."""
        target, rpc, channels = job
        k = len(self.procs)
        start = time.time() + 2.0  # each connects and warms up first, then all start together
        for i, p in enumerate(self.procs):
            share = n / k if mode == "open" else n // k + (i < n % k)
            p.stdin.write(json.dumps([target, rpc, max(1, channels // k), mode, share, seconds, start, i]) + "\n")
            p.stdin.flush()
        t, wall = Tally(), 0.0
        for p in self.procs:
            lat, recs, errors, w = json.loads(self._line(p, "ROW"))
            t.lat += lat
            t.recs += recs
            t.errors.update(errors)
            wall = max(wall, w)
        return summarize(t.lat, t.errors, wall or seconds, t.recs)

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            p.wait(30)


class ProcsLoad:
    """``Load``'s interface over ``ClientProcs`` (the processes open their own connections)."""

    def __init__(self, procs: ClientProcs, job: tuple):
        self.procs, self.job = procs, job

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        pass

    async def __call__(self, mode: str, n, seconds: float) -> dict:
        return await asyncio.to_thread(self.procs.run, self.job, mode, n, seconds)


def client_proc(data: str, max_len: int, users: int, k: int, event_loop: str) -> None:
    """One ``ClientProcs`` process: load the histories once, then run each job read from stdin."""
    import signal
    from jaxrec_server.main import run_on_loop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C / timeout -s INT: the parent stops, then ends these
    reqs = load_requests(data, max_len, users, k)
    print("READY", flush=True)
    for line in sys.stdin:
        print("ROW", json.dumps(run_on_loop(client_job(reqs, *json.loads(line)), event_loop)), flush=True)


async def client_job(reqs, target, rpc, channels, mode, n, seconds, start, seed):
    """One process's share of a measurement: warm the connections, wait for the common start,
    run until the common end; the raw tally goes back to be merged."""
    async with Load(target, reqs, rpc, channels) as load:
        await load.tally("closed", channels, 0.5)
        if start > time.time():
            await asyncio.sleep(start - time.time())
        left = start + seconds - time.time()
        if not n or left <= 0:
            return [], 0, {}, 0.0
        if mode == "closed":
            t, wall = await load.tally("closed", n, left)
        else:
            t, wall = await open_tally(load.stubs, load.calls, n, left, seed), left
    return t.lat, t.recs, dict(t.errors), wall


async def measure(target, reqs, concurrencies, seconds, server_pid: int | None = None, rpc: str = "unary",
                  channels: int = 1, open_loop_too: bool = True, procs: ClientProcs | None = None) -> list[dict]:
    """Closed loops at each concurrency, then (``open_loop_too``) an open loop at half the best
    call rate, over ``channels`` connections (a ``--workers`` server's kernel spreads
    connections, not calls), from this process or from ``procs``."""
    kind = parse_rpc(rpc)[0]
    rows = []
    async with (Load(target, reqs, rpc, channels) if procs is None else procs.load(target, rpc, channels)) as run:
        await run("closed", max(4, channels), 1.0)  # warm the channels
        for c in concurrencies:
            with CpuMeter(server_pid, procs.pids if procs else ()) as cpu:
                r = await run("closed", c, seconds)
            rows.append({"mode": "closed", "rpc": rpc, "concurrency": c} | r | cpu.per_request(r["ok"]))
        best = max(r["calls_per_s"] for r in rows)
        if best <= 0:
            errs = {k: v for r in rows for k, v in r.get("errors", {}).items()}
            raise SystemExit(f"no request answered in the closed-loop runs (errors: {errs}); "
                             "cannot size the open-loop run")
        if kind != "stream" and open_loop_too:  # a stream is a closed loop by nature
            rows.append({"mode": "open", "rpc": rpc, "concurrency": None}
                        | await run("open", best / 2, seconds) | {"offered_rate": best / 2})
    return rows


def pyplot():
    """matplotlib.pyplot on the file-only backend, or None without matplotlib (the bench extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, axes, path: Path, dpi: int = 120) -> bool:
    """The common end of every benchmark figure: legends where labelled, a light grid, saved."""
    import numpy as np
    for a in np.atleast_1d(axes):
        if a.get_legend_handles_labels()[0]:
            a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return True


def plot(results: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results.items():
        for rpc in dict.fromkeys(r.get("rpc", "unary") for r in rows):
            closed = [r for r in rows if r["mode"] == "closed" and r.get("rpc", "unary") == rpc]
            if not closed:  # the engine-alone rows are not a server
                continue
            label = name if rpc == "unary" else f"{name} {rpc}"
            ax.plot([r["throughput"] for r in closed], [r["p99_ms"] for r in closed], "o-", label=f"{label} p99")
            ax.plot([r["throughput"] for r in closed], [r["p50_ms"] for r in closed], "x--", label=f"{label} p50")
    ax.set_xlabel("recommendations / s")
    ax.set_ylabel("latency per call (ms)")
    ax.set_yscale("log")
    return save_figure(fig, ax, path)


def main(argv=None) -> int:
    from jaxrec_server.main import EVENT_LOOPS, run_on_loop  # the model side, only when run
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="run directory: start servers from it")
    ap.add_argument("--target", help="host:port of a running server (instead of --checkpoint)")
    ap.add_argument("--data", help="data for histories (default: the run's training data)")
    ap.add_argument("--batch-sizes", default="64,1",
                    help="server --max-batch-size settings to compare; 'floor' adds a model-free server "
                         "answering a fixed response (benchmarks/grpc_floor.py): the most any Python gRPC "
                         "server reaches on this machine")
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--concurrency", default="1,8,32,64,128")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--k-buckets", default="10", help="server k buckets (only these are compiled)")
    ap.add_argument("--max-history", type=int, default=None,
                    help="server --max-history (the model reads the latest N items; requests still "
                         "carry the whole history)")
    ap.add_argument("--users", type=int, default=6040, help="distinct histories to replay")
    ap.add_argument("--event-loop", choices=EVENT_LOOPS, default="asyncio",
                    help="event loop of the server and of this load client")
    ap.add_argument("--engine", action="store_true",
                    help="also time the server's model path alone (Engine.run, no gRPC) at batch 1 and "
                         "the largest batch size, in this process, after the servers")
    ap.add_argument("--rpc", default="unary",
                    help="client calls to compare, comma-separated: unary (Recommend), batchN (RecommendBatch of "
                         "N histories, e.g. batch64; throughput counts recommendations), stream (RecommendStream, "
                         "one request at a time per caller); each optionally with :int (histories as history_int_ids, "
                         "e.g. batch64,batch64:int)")
    ap.add_argument("--workers", default="1", help="server --workers settings to compare, e.g. 1,2")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="load client processes (callers, rate and connections shared out): one Python client "
                         "offers about one core's worth of calls, under what --workers on many cores answer")
    ap.add_argument("--channels", type=int, default=4,
                    help="client connections (a --workers server spreads connections, not calls)")
    ap.add_argument("--serve-args", default="", help="extra `jaxrec serve` options, e.g. '--gil-switch-ms 0.5'")
    ap.add_argument("--server-cpus", default=None, help="pin the servers to these cores (taskset -c), e.g. 0")
    ap.add_argument("--client-cpus", default=None, help="pin this load client to these cores, e.g. 1")
    ap.add_argument("--paired", type=int, default=0, metavar="N",
                    help="with --checkpoint and --server-cpus: N rounds that time the largest --batch-sizes "
                         "server (its best closed loop over --rpc x --concurrency) and the engine alone in "
                         "turn, both processes pinned to the server cores and alive throughout; prints a "
                         "ratio per round and their median (the ratio the serving issue asks for, robust "
                         "to the machine's speed drifting between measurements)")
    ap.add_argument("--port", type=int, default=50777)
    ap.add_argument("--out", default=str(Path(__file__).resolve().with_name("serve_load.json")))
    args = ap.parse_args(argv)
    if not (args.checkpoint or args.target):
        ap.error("give --checkpoint or --target")
    rpcs = [r.strip() for r in args.rpc.split(",") if r.strip()]
    for r in rpcs:
        parse_rpc(r)
    workers = [int(w) for w in args.workers.split(",")]
    if args.client_cpus:
        os.sched_setaffinity(0, cpu_list(args.client_cpus))
    max_len, data = 200, args.data
    if args.checkpoint:
        from jaxrec.train.rundir import RunDir
        run = RunDir.open(args.checkpoint)
        max_len, data = run.model_info().max_len, data or run.config().data
    if data is None:
        ap.error("--data is required with --target")
    reqs = load_requests(data, max_len, args.users, args.k)
    conc = [int(c) for c in args.concurrency.split(",")]
    if args.paired:
        if not (args.checkpoint and args.server_cpus):
            ap.error("--paired needs --checkpoint and --server-cpus")
        paired = paired_rounds(args, data, reqs, rpcs, conc, args.paired)
        Path(args.out).write_text(json.dumps({"k": args.k, "data": data, "seconds": args.seconds,
                                              "serve_args": args.serve_args, "max_history": args.max_history,
                                              "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
                                              "channels": args.channels, "event_loop": args.event_loop,
                                              "rpc": rpcs, "concurrency": conc, "paired": paired}, indent=2))
        print(f"wrote {args.out}")
        return 0
    results = {}
    settings = ([b if b == "floor" else int(b) for b in args.batch_sizes.split(",")]
                if args.checkpoint else [None])
    names = {None: "target", 1: "batching off", "floor": "grpc floor"}
    procs = (ClientProcs(args.client_procs, data, max_len, args.users, args.k, args.event_loop)
             if args.client_procs > 1 else None)
    meta = {"k": args.k, "data": data, "seconds": args.seconds, "serve_args": args.serve_args,
            "max_history": args.max_history, "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
            "channels": args.channels, "client_procs": args.client_procs, "event_loop": args.event_loop}
    for b in settings:
        for w in ([1] if b in (None, "floor") else workers):
            name = names.get(b, f"batch<={b}") + (f" x{w} workers" if w > 1 else "")
            proc = (start_server(args.checkpoint, b, args.max_delay_ms, args.port, args.k_buckets, args.max_history,
                                 args.event_loop, args.k, cpus=args.server_cpus, workers=w,
                                 extra=args.serve_args.split() if b != "floor" else None) if b is not None else None)
            try:
                results[name] = []
                for rpc in rpcs:
                    results[name] += run_on_loop(measure(args.target or f"127.0.0.1:{args.port}", reqs, conc,
                                                         args.seconds, proc.pid if proc else None, rpc,
                                                         args.channels, procs=procs), args.event_loop)
            finally:
                if proc:
                    proc.terminate()
                    proc.wait(60)
            # what is measured so far, should a timeout end the run before the last server
            Path(args.out).write_text(json.dumps(meta | {"results": results, "partial": True}, indent=2))
    if procs:
        procs.close()
    print(f"top-{args.k}, {len(reqs)} test histories from {data}, {args.seconds:g}s per point, "
          f"{os.cpu_count()} CPUs, server and client on one machine"
          + (f" (server cores {args.server_cpus}, client cores {args.client_cpus})" if args.server_cpus else "")
          + (f", server --max-history {args.max_history}" if args.max_history else "")
          + f", {args.event_loop} event loop, {args.channels} connection(s)"
          + (f" from {args.client_procs} client processes" if procs else "") + "; req/s = recommendations/s")
    print(f"{'server':<22} {'rpc':<8} {'mode':<7} {'conc':>5} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'p99.9':>7} {'cpu ms/req srv+cli':>18}  errors")
    for name, rows in results.items():
        for r in rows:
            c = r["concurrency"] if r["concurrency"] is not None else f"{r['offered_rate']:.0f}/s"
            cpu = ("" if r.get("client_cpu_ms") is None else
                   f"{r['server_cpu_ms'] or float('nan'):.3f}+{r['client_cpu_ms']:.3f}")
            print(f"{name:<22} {r['rpc']:<8} {r['mode']:<7} {c!s:>5} {r['throughput']:>8.0f} {r['p50_ms']:>7.1f} "
                  f"{r['p90_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['p999_ms']:>7.1f} {cpu:>18}  {r['errors'] or '-'}")
    if args.engine and args.checkpoint:
        sizes = sorted({1, max((b for b in settings if isinstance(b, int)), default=1)})
        if args.server_cpus:  # the model path in a process of its own on the servers' cores, as they ran
            results["engine alone"] = engine_child(args, data, sizes)
        else:
            results["engine alone"] = engine_only(args.checkpoint, reqs, sizes, args.max_history, args.seconds)
        for r in results["engine alone"]:
            print(f"engine alone (no gRPC) batch {r['batch']:>3}: {r['throughput']:>8.0f} req/s, "
                  f"{r['engine_cpu_ms']:.3f} cpu ms/req")
    for line in ratios(results):
        print(line)
    Path(args.out).write_text(json.dumps(meta | {"results": results}, indent=2))
    png = Path(args.out).with_suffix(".png")
    print(f"wrote {args.out}" + (f" and {png}" if plot(results, png) else " (no matplotlib: no plot)"))
    return 0


def engine_child(args, data: str, sizes) -> list[dict]:
    """``engine_only`` in fresh processes under ``taskset -c SERVER_CPUS`` (``EngineChild``, one
    per batch size): pinned before JAX starts, so XLA's threads have exactly the cores the
    server had (pinning this process later would leave threads already started on every core)."""
    rows = []
    for b in sizes:
        child = EngineChild(args, data, b)
        try:
            rows.append(child.time())
        finally:
            child.close()
    return rows


class EngineChild:
    """The model path alone (``engine_on_demand``) in a process pinned to the servers' cores
    before JAX starts, kept alive between load rounds so that each server figure has an
    engine figure taken a minute from it: this VM's speed drifts 20-30% between sittings and
    more within one, and a ratio of two figures taken minutes apart measures that drift as
    much as the server (single runs of the same code gave 60-78%)."""

    def __init__(self, args, data: str, b: int):
        from jaxrec.train.rundir import RunDir
        max_len = RunDir.open(args.checkpoint).model_info().max_len
        code = ("import json, runpy, sys; m = runpy.run_path(sys.argv[1]); "
                "reqs = m['load_requests'](sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])); "
                "m['engine_on_demand'](sys.argv[6], reqs, int(sys.argv[7]), json.loads(sys.argv[8]), float(sys.argv[9]))")
        self.proc = subprocess.Popen(
            ["taskset", "-c", args.server_cpus, sys.executable, "-c", code, __file__, data, str(max_len),
             str(args.users), str(args.k), args.checkpoint, str(b), json.dumps(args.max_history), str(args.seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu")))
        self._line("READY")

    def _line(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        raise SystemExit(f"the engine-alone process ended ({self.proc.wait()}) before printing {tag}")

    def time(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self._line("ROW"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


def paired_rounds(args, data: str, reqs: list, rpcs: list, conc: list, rounds: int) -> dict:
    """``--paired N``: one batched server and one engine-alone process, both pinned to the
    server cores and alive together, timed in turn N times (the server's best closed loop
    over ``rpcs`` x ``conc``, then the engine alone): a ratio per round, their median."""
    from jaxrec_server.main import run_on_loop
    b = max(int(x) for x in args.batch_sizes.split(",") if x.strip().isdigit())
    engine = EngineChild(args, data, b)
    proc = start_server(args.checkpoint, b, args.max_delay_ms, args.port, args.k_buckets, args.max_history,
                        args.event_loop, args.k, cpus=args.server_cpus, extra=args.serve_args.split())
    out = []
    try:
        for i in range(rounds):
            rows = []
            for rpc in rpcs:
                rows += run_on_loop(measure(f"127.0.0.1:{args.port}", reqs, conc, args.seconds, proc.pid, rpc,
                                            args.channels, open_loop_too=False), args.event_loop)
            by_rpc = {rpc: max((r for r in rows if r["rpc"] == rpc), key=lambda r: r["throughput"]) for rpc in rpcs}
            best = max(by_rpc.values(), key=lambda r: r["throughput"])
            alone = engine.time()
            out.append({"round": i + 1, "server": best, "engine": alone,
                        "ratio": best["throughput"] / alone["throughput"],
                        "by_rpc": {rpc: {"server": r, "ratio": r["throughput"] / alone["throughput"]}
                                   for rpc, r in by_rpc.items()}})
            for rpc, r in by_rpc.items():
                print(f"round {i + 1}: server {rpc} c={r['concurrency']} {r['throughput']:.0f} rec/s "
                      f"({r['server_cpu_ms'] or float('nan'):.3f} cpu ms/rec), engine alone batch {b} "
                      f"{alone['throughput']:.0f} rec/s ({alone['engine_cpu_ms']:.3f}): "
                      f"{out[-1]['by_rpc'][rpc]['ratio']:.0%}", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
        engine.close()
    medians = {}
    for rpc in ["best"] + (rpcs if len(rpcs) > 1 else []):
        rs = sorted(r["ratio"] if rpc == "best" else r["by_rpc"][rpc]["ratio"] for r in out)
        medians[rpc] = float(np.median(rs))
        print(f"server{'' if rpc == 'best' else ' ' + rpc} / engine alone over {rounds} paired rounds: "
              f"median {medians[rpc]:.0%} (min {rs[0]:.0%}, max {rs[-1]:.0%})")
    return {"batch": b, "rounds": out, "median_ratio": medians["best"], "median_ratio_by_rpc": medians}


def ratios(results: dict) -> list[str]:
    """The comparisons the serving issue asks for, from one run's rows: each server and call kind
    against batching off, RecommendBatch against the engine alone at the same batch size, the
    batched unary server against the floor, and N workers against one."""
    best = {}  # (server, rpc) -> best closed-loop recommendations/s
    for name, rows in results.items():
        for r in rows:
            if r.get("mode") == "closed":
                best[name, r["rpc"]] = max(best.get((name, r["rpc"]), 0.0), r["throughput"])
    engine = {r["batch"]: r["throughput"] for r in results.get("engine alone", [])}
    out = []
    for (name, rpc), v in best.items():
        if ("batching off", "unary") in best and (name, rpc) != ("batching off", "unary"):
            out.append(f"max throughput {name} {rpc} / batching off unary: {v / best['batching off', 'unary']:.1f}x")
        kind, n, _ = parse_rpc(rpc)
        if kind == "batch" and n in engine:
            out.append(f"{name} {rpc} / engine alone batch {n}: {v / engine[n]:.0%}")
        if kind == "unary" and name.startswith("batch<=") and ("grpc floor", "unary") in best:
            out.append(f"{name} {rpc} / grpc floor unary: {v / best['grpc floor', 'unary']:.0%}")
        if " x" in name and (name.split(" x")[0], rpc) in best:
            w = name.split(" x")[1].split()[0]
            out.append(f"{name} / 1 worker, {rpc}: {v / best[name.split(' x')[0], rpc]:.2f}x ({w} workers)")
    return out


if __name__ == "__main__":
    sys.exit(main())
