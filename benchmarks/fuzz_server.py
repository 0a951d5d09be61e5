"""Fuzz a live server: N random, malformed and hostile requests; counts by status code.

    python benchmarks/fuzz_server.py --checkpoint runs/ml1m_sasrec_ce --requests 100000

Requests (drawn from a seeded generator, sent with ``--concurrency`` in flight): Recommend
and Score messages with random known/unknown/empty/huge/unicode ids, k from -2^31 to
2^31-1, random allow/deny lists, explain on and off, wrong models, random event times, random
user ids (of the event store) and diversity values (NaN, inf, out of range, unknown
features); Observe, ForgetUser and AddItems calls with the same kinds of ids; and raw bytes
that are not a valid message. Every OK answer is checked (sorted, no duplicates, no
padding id, nothing excluded or denied, only allowed items). At the end the server must still
answer health SERVING and a plain request. Exit status 1 on any UNKNOWN/INTERNAL answer, an
invalid OK answer, or a dead server. Writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overload import rss_mib  # noqa: E402
from serve_load import start_server  # noqa: E402

from jaxrec_server.client import status_name  # noqa: E402


def random_ids(rng, catalog: list[str], n: int) -> list[str]:
    kinds = rng.integers(0, 10, n)
    out = []
    for kd in kinds:
        if kd < 6:
            out.append(catalog[rng.integers(0, len(catalog))])
        elif kd == 6:
            out.append(str(rng.integers(-10**6, 10**6)))
        elif kd == 7:
            out.append("".join(chr(c) for c in rng.integers(1, 0x2FFF, rng.integers(0, 8))))
        elif kd == 8:
            out.append("x" * int(rng.integers(200, 6000)))
        else:
            out.append("")
    return out


RAW_METHODS = ("Recommend", "Score", "RecommendBatch", "Observe", "ForgetUser", "AddItems")


def random_user(rng) -> str:
    kd = rng.integers(0, 6)
    if kd < 4:
        return f"user-{rng.integers(0, 50)}"  # a small pool: events accumulate, TTL and bounds apply
    return random_ids(rng, ["u"], 1)[0]  # empty, huge, unicode, numeric


def make_request(rng, catalog, pb, model_name):
    """(method, request bytes or message, the request for checking or None)."""
    r = rng.random()
    if r < 0.08:  # not a message at all
        return str(rng.choice(RAW_METHODS)), rng.bytes(int(rng.integers(1, 64))), None
    if r < 0.14:  # the event store
        items = random_ids(rng, catalog, int(rng.choice([0, 1, 3, 50, 300])))
        times = [] if rng.random() < 0.7 else [int(t) for t in rng.integers(-10**9, 10**9, len(items) + rng.integers(0, 2))]
        req = pb.ObserveRequest(user_id=random_user(rng), items=items, times=times)
        return "Observe", req, None
    if r < 0.15:
        return "ForgetUser", pb.ForgetUserRequest(user_id=random_user(rng)), None
    if r < 0.16:
        items = [pb.NewItem(item_id=random_ids(rng, catalog, 1)[0], title=random_ids(rng, ["t"], 1)[0],
                            features=[pb.FeatureValues(name=str(rng.choice(["genres", "topic", ""])),
                                                       values=random_ids(rng, ["Comedy", "Drama"], 3))])
                 for _ in range(int(rng.integers(0, 4)))]
        return "AddItems", pb.AddItemsRequest(items=items), None
    if r > 0.9:  # many users in one call: each entry as random as a lone request
        entries = [make_request(rng, catalog, pb, model_name) for _ in range(int(rng.integers(0, 17)))]
        req = pb.RecommendBatchRequest(requests=[e[1] for e in entries if e[0] == "Recommend" and e[2] is not None])
        return "RecommendBatch", req, req
    hist = random_ids(rng, catalog, int(rng.choice([0, 1, 5, 50, 200, 3000])))
    times = [] if rng.random() < 0.7 else [int(t) for t in rng.integers(-10**9, 10**9, len(hist))]
    if r < 0.25:
        req = pb.ScoreRequest(history=hist, candidates=random_ids(rng, catalog, int(rng.integers(0, 50))),
                              history_times=times)
        return "Score", req, req
    k = int(rng.choice([rng.integers(-5, 120), rng.integers(-2**31, 2**31 - 1), 10]))
    diversity = 0.0 if rng.random() < 0.7 else float(rng.choice([rng.random(), -1.0, 2.0, np.nan, np.inf]))
    req = pb.RecommendRequest(history=hist, k=k, exclude_seen=bool(rng.random() < 0.8),
                              allow=random_ids(rng, catalog, int(rng.choice([0, 0, 3, 40]))),
                              deny=random_ids(rng, catalog, int(rng.choice([0, 2, 20]))),
                              explain=bool(rng.random() < 0.3), history_times=times,
                              model=model_name if rng.random() < 0.9 else "another-model",
                              user_id=random_user(rng) if rng.random() < 0.3 else "", diversity=diversity,
                              diversity_by=str(rng.choice(["", "", "genres", "nope"])))
    return "Recommend", req, req



def check_answer(req, resp) -> str | None:
    """Why an OK Recommend answer is wrong, or None."""
    ids = [it.item_id for it in resp.items]
    scores = [it.score for it in resp.items]
    if len(ids) != len(set(ids)):
        return "duplicate items"
    if scores != sorted(scores, reverse=True) and not req.diversity > 0:  # diversity: re-ranked order
        return "not sorted"
    if len(ids) > req.k:
        return "more than k items"
    if any(not i for i in ids):
        return "padding id"
    if req.exclude_seen and set(ids) & set(req.history):
        return "a seen item"
    if set(ids) & set(req.deny):
        return "a denied item"
    if len(req.allow) and not set(ids) <= set(req.allow):
        return "an item outside allow"
    return None


async def fuzz(target: str, n: int, concurrency: int, catalog: list[str], model_name: str, seed: int) -> dict:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from jaxrec.v1 import recommender_pb2 as pb
    from jaxrec.v1 import recommender_pb2_grpc as pb_grpc

    rng = np.random.default_rng(seed)
    codes, invalid, sem = collections.Counter(), collections.Counter(), asyncio.Semaphore(concurrency)
    entry_codes = collections.Counter()  # RecommendBatch entries by code
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        raw = {m: ch.unary_unary(f"/jaxrec.v1.Recommender/{m}") for m in RAW_METHODS}

        async def one(method, payload, req):
            async with sem:
                try:
                    if isinstance(payload, bytes):
                        await raw[method](payload, timeout=30)
                    else:
                        resp = await getattr(stub, method)(payload, timeout=30)
                        if method == "Recommend" and (why := check_answer(req, resp)):
                            invalid[why] += 1
                        if method == "RecommendBatch":  # every entry: its own code, OK ones valid
                            if len(resp.results) != len(req.requests):
                                invalid["batch: results do not match entries"] += 1
                            for q, res in zip(req.requests, resp.results):
                                entry_codes[status_name(res.code)] += 1
                                if not res.code and (why := check_answer(q, res.response)):
                                    invalid["batch entry: " + why] += 1
                    codes["OK"] += 1
                except grpc.RpcError as e:
                    codes[e.code().name] += 1

        t0, tasks = time.perf_counter(), []
        for i in range(n):
            tasks.append(asyncio.create_task(one(*make_request(rng, catalog, pb, model_name))))
            if len(tasks) >= 4 * concurrency:
                await asyncio.gather(*tasks)
                tasks = []
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - t0
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        alive = await stub.Recommend(pb.RecommendRequest(history=catalog[:3], k=5), timeout=10)
    return {"requests": n, "seconds": seconds, "codes": dict(codes), "batch_entry_codes": dict(entry_codes),
            "invalid_ok_answers": dict(invalid),
            "health_after": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
            "plain_request_after": len(alive.items)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=50889)
    ap.add_argument("--new-item-slots", action="store_true",
                    help="serve with --new-item-slots 64 (a checkpoint trained with item features)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().with_name("fuzz_server.json")))
    args = ap.parse_args(argv)
    from jaxrec.train.rundir import RunDir
    run = RunDir.open(args.checkpoint)
    catalog, name = run.catalog().ids[1:].tolist(), run.config().model
    import tempfile
    store = Path(tempfile.mkdtemp(prefix="fuzz-store-")) / "events.sqlite"
    proc = start_server(args.checkpoint, 64, 2.0, args.port, "10,100",
                        extra=["--store", f"sqlite:{store}", "--store-ttl-s", "30"] + (
                            ["--new-item-slots", "64"] if args.new_item_slots else []))
    try:
        rss0 = rss_mib(proc.pid)
        out = asyncio.run(fuzz(f"127.0.0.1:{args.port}", args.requests, args.concurrency, catalog, name, args.seed))
        out |= {"server_rss_mib": [rss0, rss_mib(proc.pid)], "server_exit": proc.poll()}
    finally:
        proc.terminate()
        proc.wait(30)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    bad = sum(c.get("UNKNOWN", 0) + c.get("INTERNAL", 0) for c in (out["codes"], out["batch_entry_codes"])) + \
        sum(out["invalid_ok_answers"].values())
    ok = not bad and out["health_after"] == "SERVING" and out["plain_request_after"] == 5 and out["server_exit"] is None
    print(f"{'PASS' if ok else 'FAIL'}: {out['requests']:,} requests in {out['seconds']:.0f} s; "
          f"UNKNOWN/INTERNAL/invalid answers: {bad}; server {out['health_after']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
