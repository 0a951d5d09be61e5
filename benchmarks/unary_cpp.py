"""Unary throughput against the gRPC floor with a C++ load generator (issue 19, must-show 1).

    python benchmarks/unary_cpp.py --checkpoint RUN --data ../shared/data/ml-1m/ml-1m.txt \
        --server-cpus 0-1 --client-cpus 1 [--max-history 50] [--rates 1000,2000,...] [--seconds 4]

Why a separate benchmark: ``serve_load.py``'s Python client spends ~0.13 ms of CPU on each unary
call, so on the 2-core machine it needs a whole core of its own to offer the floor's ~6,000
calls/s, and the server is left one core for both gRPC and the model. ``benchmarks/openloop.cc``
(``overload.py --client cpp``) sends pre-serialized requests for a few microseconds each, which
leaves most of the client's core to the server: the question is whether, with the model's XLA
work free to run there, the unary batched server reaches 80% of the floor.

For each server (the model-free floor, ``grpc_floor.py``, and ``jaxrec serve`` batching up to 64)
it sends Poisson arrivals at each rate in ``--rates`` for ``--seconds`` with a ``--deadline-ms``
deadline and takes as the server's throughput the highest goodput (OK answers/s) of a rate at
which at least ``--min-ok`` of the calls sent were answered OK (an overloaded floor queues and
lets calls expire; ours refuses the excess early): both are judged by one rule. CPU per answered
call comes from ``/proc`` for the server and from ``getrusage`` for the load generator, and the
size and time of jaxrec's device batches from its Prometheus endpoint. Prints a table and writes
JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overload import build_openloop, open_level_cpp, write_requests  # noqa: E402  (sibling benchmark scripts)
from serve_load import load_requests, process_cpu_s, start_server  # noqa: E402


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children: the load generator's."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def batch_totals(metrics_port: int | None) -> dict:
    """The server's device-batch totals from its Prometheus endpoint (sums and counts of
    ``jaxrec_batch_size`` and ``jaxrec_batch_seconds``); empty for the floor, which has none."""
    if metrics_port is None:
        return {}
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(jaxrec_batch_(?:size|seconds)_(?:sum|count)) (\S+)$", text, re.M)}


def sweep(exe: Path, port: int, reqfile: Path, rates: list[float], args, server_pid: int,
          metrics_port: int | None = None) -> list[dict]:
    """One open-loop level per rate (ascending), stopping two levels after the first that
    answered fewer than ``--min-ok`` of its calls. For jaxrec's server each level also records
    its device batches: how many requests each held and how long each ran, on average."""
    out, misses = [], 0
    for rate in rates:
        b0 = batch_totals(metrics_port)
        s0, c0 = process_cpu_s(server_pid), children_cpu_s()
        lv = open_level_cpp(exe, f"127.0.0.1:{port}", reqfile, rate, args.seconds, args.deadline_ms / 1000,
                            seed=int(rate), cpus=args.client_cpus)
        n_ok = max(lv["goodput"] * args.seconds, 1)
        lv["ok_share"] = lv["goodput"] * args.seconds / max(lv["sent"], 1)
        lv["server_cpu_ms"] = 1000 * (process_cpu_s(server_pid) - s0) / n_ok
        lv["client_cpu_ms"] = 1000 * (children_cpu_s() - c0) / n_ok
        b1, batches = batch_totals(metrics_port), ""
        if b1:
            n = max(b1["jaxrec_batch_size_count"] - b0["jaxrec_batch_size_count"], 1)
            lv["mean_batch"] = (b1["jaxrec_batch_size_sum"] - b0["jaxrec_batch_size_sum"]) / n
            lv["device_ms_per_batch"] = 1000 * (b1["jaxrec_batch_seconds_sum"] - b0["jaxrec_batch_seconds_sum"]) / n
            batches = f", batches of {lv['mean_batch']:.1f} in {lv['device_ms_per_batch']:.1f} ms"
        out.append(lv)
        print(f"  rate {rate:>8,.0f}/s: offered {lv['offered_rate']:>8,.0f}, goodput {lv['goodput']:>8,.0f}, "
              f"ok {100 * lv['ok_share']:5.1f}%, p99 {lv['admitted_p99_ms'] or float('nan'):7.1f} ms, "
              f"cpu ms/answer server {lv['server_cpu_ms']:.3f} client {lv['client_cpu_ms']:.3f}{batches}", flush=True)
        misses += lv["ok_share"] < args.min_ok
        if misses >= 2:
            break
    return out


def best(levels: list[dict], min_ok: float) -> dict | None:
    ok = [lv for lv in levels if lv["ok_share"] >= min_ok]
    return max(ok, key=lambda lv: lv["goodput"]) if ok else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="run directory to serve")
    ap.add_argument("--data", required=True, help="the dataset whose test histories are the requests")
    ap.add_argument("--max-history", type=int, default=None, help="the server reads the latest N items")
    ap.add_argument("--history", type=int, default=200, help="items sent per request (the latest)")
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,7000,8000,10000,12000")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--deadline-ms", type=float, default=200.0)
    ap.add_argument("--min-ok", type=float, default=0.99, help="share of calls answered OK for a rate to count")
    ap.add_argument("--server-cpus", default="0-1")
    ap.add_argument("--client-cpus", default="1")
    ap.add_argument("--servers", default="floor,64", help="'floor' and/or jaxrec's --max-batch-size values")
    ap.add_argument("--serve-args", default="", help="more `jaxrec serve` options, one string")
    ap.add_argument("--port", type=int, default=50231)
    ap.add_argument("--out", default="benchmarks/unary_cpp.json")
    args = ap.parse_args(argv)

    exe = build_openloop()
    reqs = load_requests(args.data, args.history, args.users, args.k)
    reqfile = write_requests(reqs, Path(args.out).with_suffix(".requests.bin"))
    rates = [float(r) for r in args.rates.split(",")]
    results = {}
    try:
        for i, name in enumerate(args.servers.split(",")):
            batch = name if name == "floor" else int(name)
            port = args.port + i
            print(f"server {name} on cores {args.server_cpus}, "
                  f"C++ load on {args.client_cpus}", flush=True)
            mport = None if name == "floor" else port + 100
            extra = args.serve_args.split() + ([] if mport is None else ["--metrics-port", str(mport)])
            proc = start_server(args.checkpoint, batch, 2.0, port, "10", args.max_history, k=args.k,
                                cpus=args.server_cpus, extra=extra)
            try:
                results[name] = sweep(exe, port, reqfile, rates, args, proc.pid, mport)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        reqfile.unlink(missing_ok=True)

    print("\n| server | best rate | goodput/s | p99 ms | CPU ms/answer server + client |")
    print("|---|---|---|---|---|")
    tops = {}
    for name, levels in results.items():
        b = best(levels, args.min_ok)
        tops[name] = b
        if b:
            print(f"| {'grpc floor' if name == 'floor' else 'batch<=' + name} | {b['target_rate']:,.0f} | "
                  f"{b['goodput']:,.0f} | {b['admitted_p99_ms']:.1f} | {b['server_cpu_ms']:.3f} + {b['client_cpu_ms']:.3f} |")
    if tops.get("floor"):
        for name, b in tops.items():
            if name != "floor" and b:
                print(f"batch<={name} / floor: {100 * b['goodput'] / tops['floor']['goodput']:.0f}% (target 80%)")
    Path(args.out).write_text(json.dumps({"args": vars(args), "levels": results,
                                          "best": tops}, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
