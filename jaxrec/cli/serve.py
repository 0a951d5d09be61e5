"""``jaxrec serve``, ``jaxrec query`` and ``jaxrec bench serve``: the gRPC side."""

from __future__ import annotations

import argparse
import dataclasses
import json

from jaxrec.cli.common import add_model_options, parse_times, require_files
from jaxrec.errors import UserError


def set_grpc_experiments(names: str) -> None:
    """Add ``names`` (comma-separated) to GRPC_EXPERIMENTS for this process and the workers it
    starts. gRPC's core reads the variable once, when ``grpc`` is imported, so this must run
    first; in a process that has already imported it the change would be silently ignored, so
    that is an error."""
    import os
    import sys

    if "grpc" in sys.modules:
        raise UserError("--grpc-experiments: gRPC is already loaded in this process; set GRPC_EXPERIMENTS "
                        "in the environment instead")
    have = [x for x in os.environ.get("GRPC_EXPERIMENTS", "").split(",") if x]
    os.environ["GRPC_EXPERIMENTS"] = ",".join(have + [x.strip() for x in names.split(",")
                                                      if x.strip() and x.strip() not in have])


def cmd_serve(args) -> int:
    import logging

    if args.grpc_experiments:  # gRPC reads them once, when it loads: before jaxrec_server imports it
        set_grpc_experiments(args.grpc_experiments)
    from jaxrec_server.main import ServeConfig, run_on_loop, serve_forever

    # force: an import (absl, via orbax) may have configured the root logger at WARNING already
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's per-restore chatter
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: need at least 1")
    if args.latency_target_ms is not None and args.latency_target_ms != "auto":
        try:
            args.latency_target_ms = float(args.latency_target_ms)
        except ValueError:
            raise UserError(f"--latency-target-ms {args.latency_target_ms!r}: a number of ms or 'auto'") from None
        if not args.latency_target_ms > 0:
            raise UserError(f"--latency-target-ms {args.latency_target_ms}: must be more than 0 ms")
    for flag, n in (("--loop-nice", args.loop_nice), ("--compute-nice", args.compute_nice)):
        if not 0 <= n <= 19:
            raise UserError(f"{flag} {n}: a nice increment from 0 (off) to 19")
    if not 0 <= args.grpc_rt_priority <= 99:
        raise UserError(f"--grpc-rt-priority {args.grpc_rt_priority}: a SCHED_FIFO priority from 1 to 99 (0: off)")
    if args.compute_nice and args.loop_nice and args.compute_nice >= args.loop_nice:
        # the loop would take the core from the device: admitted work waits while new calls are
        # taken and refused in Python, the collapse --loop-nice is there to prevent
        raise UserError(f"--compute-nice {args.compute_nice} must be under --loop-nice {args.loop_nice}: "
                        "the event loop goes behind the device, the compute threads between the two")
    if args.compile_cache:  # XLA's persistent cache: a restart or reload of the same shapes skips compiling
        import os

        from jaxrec_server.workers import use_compile_cache
        use_compile_cache(args.compile_cache)
        # --workers' processes read it from their environment (in place of the temporary cache
        # they share otherwise), so it outlives this server
        os.environ["JAX_COMPILATION_CACHE_DIR"] = args.compile_cache
    if sum(bool(x) for x in (args.checkpoint, args.retriever, args.artifact)) != 1:
        raise UserError("give one of --checkpoint DIR, --retriever DIR (with --ranker) or --artifact DIR")
    if args.artifact and (args.watch or args.ranker or args.table_dtype != "float32" or args.max_history):
        raise UserError("--artifact serves what jaxrec export wrote: --watch, --ranker, --table-dtype and "
                        "--max-history are chosen at export time, not here")
    args.checkpoint = args.checkpoint or args.retriever or args.artifact
    # every ServeConfig field is an option of the same name (dest), so none is forgotten here
    cfg = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)
                         if hasattr(args, f.name)})
    if cfg.catalog_chunk is not None and cfg.catalog_chunk <= 0:
        cfg.catalog_chunk = None  # 0: the whole catalog
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise UserError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    require_files(tls_cert=cfg.tls_cert, tls_key=cfg.tls_key, tls_client_ca=cfg.tls_client_ca,
                  auth_token_file=cfg.auth_token_file)
    if args.workers > 1 or args.worker_gpus:
        from jaxrec_server.workers import serve_workers
        gpus = [g.strip() for g in args.worker_gpus.split(",") if g.strip()] if args.worker_gpus else None
        try:
            return serve_workers(cfg, args.workers, event_loop=args.event_loop, gpus=gpus)
        except (RuntimeError, OSError) as e:
            raise UserError(str(e)) from None
    run_on_loop(serve_forever(cfg), args.event_loop)
    return 0


def cmd_export(args) -> int:
    from jaxrec.artifact import export
    from jaxrec_server.main import ServeConfig, load_engine

    if bool(args.checkpoint) == bool(args.retriever) or bool(args.retriever) != bool(args.ranker):
        raise UserError("give --checkpoint DIR (a retrieval run), or --retriever DIR with --ranker DIR")
    cfg = ServeConfig(args.checkpoint or args.retriever, length_buckets=args.length_buckets, k_buckets=args.k_buckets,
                      max_history=args.max_history, max_k=args.max_k, table_dtype=args.table_dtype,
                      ranker=args.ranker, candidates=args.candidates, blend=args.blend)
    if args.catalog_chunk is not None:
        cfg.catalog_chunk = args.catalog_chunk or None
    engine = load_engine(cfg)
    m = export(engine, args.out, score_widths=args.score_widths, allow_widths=args.allow_widths)
    print(f"wrote {args.out}: {m['name']} ({m['kind']}) step {m['step']}, history buckets {m['length_buckets']}, "
          f"k {m['k_buckets']}, allow widths {m['allow_widths']}, score widths {m['score_widths']}, "
          f"{m['table_dtype']} table, for {m['platform']} ({m['export_seconds']}s)")
    return 0


def cmd_query(args) -> int:
    import grpc

    from jaxrec.v1 import recommender_pb2 as pb
    from jaxrec_server.client import Client, status_name

    require_files(tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                  auth_token_file=args.auth_token_file)
    token = open(args.auth_token_file).read().strip().splitlines()[0] if args.auth_token_file else None
    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    cert = open(args.tls_cert, "rb").read() if args.tls_cert else None
    key = open(args.tls_key, "rb").read() if args.tls_key else None
    histories = [_ids(one) for one in args.history]
    if (args.observe or args.forget) and not args.user:
        raise UserError("--observe and --forget go with --user")
    if not histories and not args.user and not args.add_item:
        raise UserError("give --history IDS (repeat for several users), --user ID or --add-item ID")
    if args.times and len(histories) > 1:
        raise UserError("--times goes with one --history")
    if args.user and len(histories) > 1:
        raise UserError("--user goes with at most one --history (appended to the stored one)")
    entries = [dict(history=h, k=args.k, exclude_seen=not args.include_seen, explain=args.explain,
                    times=parse_times(args.times), now=args.now, user_id=args.user, diversity=args.diversity,
                    diversity_by=args.diversity_by) for h in histories or [[]]]
    try:
        with Client(args.target, token=token, tls_ca=ca, tls_cert=cert, tls_key=key, timeout=args.timeout) as c:
            if args.add_item:
                feats = {}
                for f in args.feature:
                    name, eq, values = f.partition("=")
                    if not eq or not name.strip():
                        raise UserError(f"--feature {f!r}: use NAME=V1,V2 (e.g. genres=Comedy,Drama)")
                    feats.setdefault(name.strip(), []).extend(_ids(values))
                r = c.add_items([{"item_id": args.add_item, "title": args.title, "features": feats}])
                print(f"added {r.added} item(s): catalog {r.catalog_size} items, {r.slots_left} slot(s) left"
                      + "".join(f"\n  not kept: {u}" for u in r.unknown_values))
                return 0
            if args.forget:
                found = c.forget_user(args.user).found
                print(f"user {args.user}: " + ("events deleted" if found else "nothing stored"))
                return 0
            if args.observe:
                r = c.observe(args.user, _ids(args.observe), times=parse_times(args.times))
                print(f"user {args.user}: {r.history_length} events stored"
                      + (f" ({r.unknown_items} id(s) not in the served catalog)" if r.unknown_items else ""))
                return 0
            if len(entries) == 1 and not args.stream:
                results = [pb.RecommendResult(response=c.recommend(**entries[0]))]
            elif args.stream:
                results = list(c.recommend_stream(entries))
            else:
                results = c.recommend_batch(entries)
    except grpc.RpcError as e:
        raise UserError(f"{args.target}: {e.code().name}: {e.details()}") from None
    histories = histories or [[]]
    if args.json:
        from google.protobuf.json_format import MessageToDict
        for res in results:  # one JSON line per history
            print(json.dumps(MessageToDict(res.response) if not res.code else
                             {"code": status_name(res.code), "error": res.error}))
        return 0
    failed = 0
    for n, (h, res) in enumerate(zip(histories, results)):
        if len(results) > 1:
            print(("\n" if n else "") + f"history {n + 1} ({len(h)} items):")
        if res.code:
            failed += 1
            print(f"  error: {status_name(res.code)}: {res.error}")
            continue
        _print_response(res.response)
    return 1 if failed else 0


def _ids(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def _print_response(r) -> None:
    print(f"{r.model} (step {r.model_step})" + (f"; {r.unknown_history_items} unknown history id(s) skipped"
                                                if r.unknown_history_items else "")
          + ("; cold start: popular items" if r.cold_start else ""))
    for rank, it in enumerate(r.items, start=1):
        print(f"{rank:>3}. {it.item_id:<12} {it.score:8.3f}  {it.title}")
        for b in it.because:
            print(f"       because of {b.item_id} ({b.weight:.0%})")


def cmd_bench(args) -> int:
    """The serving load test lives in benchmarks/ (a script, not part of the installed package)."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"
    if not script.exists():
        raise UserError(f"{script}: the load test ships with the source tree (benchmarks/); "
                        "run jaxrec bench from a checkout")
    return runpy.run_path(str(script))["main"](args.rest)


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {s!r}") from None


def add_parsers(sub) -> None:
    sv = sub.add_parser("serve", help="serve a trained run over gRPC (dynamic batching)")
    add_model_options(sv, required=True)
    sv.add_argument("--artifact", default=None, help="serve an artifact written by jaxrec export instead")
    sv.add_argument("--port", type=int, default=50051)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    sv.add_argument("--max-batch-size", type=int, default=64, help="1 turns batching off")
    sv.add_argument("--max-delay-ms", type=float, default=2.0)
    sv.add_argument("--max-queue", type=int, default=1024, help="waiting requests before RESOURCE_EXHAUSTED")
    sv.add_argument("--max-wait-ms", type=float, default=None,
                    help="admission control: refuse (RESOURCE_EXHAUSTED) a request whose expected queue "
                         "wait exceeds this or its deadline (default: four full-batch times, measured, "
                         "at least 50 ms)")
    sv.add_argument("--max-concurrent-rpcs", type=int, default=None,
                    help="RPCs gRPC admits at once; more are refused at once (default: max-queue + 2 batches)")
    sv.add_argument("--max-streams-per-connection", type=int, default=None,
                    help="HTTP/2 streams a connection may have open; a client's calls past it wait on the client "
                         "(costing the server nothing) and fail there at their deadline (default: unbounded)")
    sv.add_argument("--max-pending-rpcs", type=int, default=None,
                    help="calls gRPC's C core holds before the event loop takes them; past it a call is refused "
                         "there, before any Python runs (default: --max-batch-size; 0: gRPC's own, 1000)")
    sv.add_argument("--grpc-experiments", default=None, metavar="LIST",
                    help="gRPC core experiments for the serving processes (GRPC_EXPERIMENTS, set before gRPC "
                         "loads), e.g. ph2_server: gRPC's promise-based HTTP/2 server, whose refusals past "
                         "--max-pending-rpcs are RESOURCE_EXHAUSTED instead of CANCELLED (default: none)")
    sv.add_argument("--loop-nice", type=int, default=19,
                    help="nice increment of the event-loop thread: when the core is contended the device thread "
                         "(answering admitted requests) goes first and the excess is refused in gRPC's C core "
                         "(default 19; 0: off)")
    sv.add_argument("--compute-nice", type=int, default=0,
                    help="nice increment of the compute threads (the device thread, XLA's): gRPC's own threads "
                         "then go first on a contended core, so calls past --max-pending-rpcs are refused without "
                         "waiting for the device's time slice; keep it under --loop-nice (default 0: off)")
    sv.add_argument("--grpc-rt-priority", type=int, default=0,
                    help="real-time priority (SCHED_FIFO, 1-99) of gRPC's C-core threads: calls past "
                         "--max-pending-rpcs are refused at once on a core busy with the device; needs "
                         "CAP_SYS_NICE (default 0: off)")
    sv.add_argument("--fill-gap-ms", type=float, default=0.0,
                    help="past --max-delay-ms a batch keeps filling while calls arrive less than this apart and "
                         "its requests can still finish in time (default 0: off; 1 lifts a slow model's "
                         "closed-loop throughput, e.g. 1M items 4.4x, at some goodput under 10x overload)")
    sv.add_argument("--latency-target-ms", default=None, metavar="MS|auto",
                    help="cap each batch at the largest size whose measured device time is at most half of "
                         "this, and refuse (RESOURCE_EXHAUSTED) a request expected to wait longer: admitted "
                         "latency under overload stays near the target, at some throughput; 'auto': 4.5 times the "
                         "light-load latency measured after compiling (the batching delay plus one request's "
                         "device call), which follows the model and the machine's speed; the server then "
                         "binds once compiled, gRPC holding as many pending calls as the measured call costs "
                         "allow in half the target unless --max-pending-rpcs (default: off; batches grow to "
                         "--max-batch-size)")
    sv.add_argument("--length-buckets", type=_ints, default=None, help="history length buckets, e.g. 16,64,200")
    sv.add_argument("--batch-buckets", type=_ints, default=None,
                    help="batch sizes compiled, e.g. 1,2,4,8,12,16,24,32 (default: powers of two up to "
                         "--max-batch-size); a batch is padded to the next one, which on a large catalog costs "
                         "what real rows cost")
    sv.add_argument("--k-buckets", type=_ints, default=None, help="top-k buckets, e.g. 10,100")
    sv.add_argument("--max-history", type=int, default=None,
                    help="the model reads only the latest N items (default: its max_len); "
                         "exclude-seen still covers the whole request history")
    sv.add_argument("--max-k", type=int, default=1000, help="the largest k a client may ask")
    sv.add_argument("--catalog-chunk", type=int, default=argparse.SUPPRESS,
                    help="catalog columns scored at once: memory is batch x chunk, not batch x catalog "
                         "(default: jaxrec.scoring.DEFAULT_CHUNK, 32768; 0: the whole catalog at once)")
    sv.add_argument("--approx-recall", type=float, default=None,
                    help="approximate top-k (jax.lax.approx_max_k) with this recall target, e.g. 0.95 "
                         "(fast on TPU; exact elsewhere); benchmarks/scale.py measures its recall")
    sv.add_argument("--index", default=None, metavar="SPEC",
                    help="serve top-k from an approximate item index (faiss): a factory string such as HNSW32 "
                         "or IVF4096,Flat, auto (HNSW32) or ivf (~4 sqrt(N) cells); exact scoring when not given. "
                         "For catalogs where brute force is too slow; benchmarks/scale.py --index measures recall")
    sv.add_argument("--index-params", default=None, metavar="PARAMS",
                    help="the index's search width, faiss syntax: efSearch=N (HNSW; default 128) or nprobe=N "
                         "(IVF; default 32): wider is slower and closer to exact")
    sv.add_argument("--index-cache", default=None, metavar="DIR",
                    help="keep built indexes here (keyed by a hash of the item rows and the spec): a restart "
                         "on the same model reads the index instead of building it")
    sv.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="persistent XLA compilation cache: a restart with the same model shapes and "
                         "buckets loads its compiled buckets instead of compiling (trusted directory only)")
    sv.add_argument("--gil-switch-ms", type=float, default=0.5,
                    help="Python's GIL hand-off interval in the server (Python's own: 5 ms): shorter lets the "
                         "device thread take the GIL back sooner from the event loop (jaxrec_server/main.py)")
    sv.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                    help="once serving, move the start-up heap out of the garbage collector's sight (gc.freeze; "
                         "again after a hot reload): a full collection would otherwise pause every thread "
                         "~200 ms (jaxrec_server/main.py, freeze_heap)")
    sv.add_argument("--table-dtype", choices=["float32", "bfloat16", "int8"], default="float32",
                    help="serve the item table in fewer bytes: bfloat16 (half), int8 with per-row scales "
                         "(a quarter); quality change measured in benchmarks/RESULTS.md")
    sv.add_argument("--workers", type=int, default=1,
                    help="server processes sharing the port (SO_REUSEPORT), each with its compiled model; "
                         "on CPU each is pinned to its share of the cores (jaxrec_server/workers.py)")
    sv.add_argument("--worker-gpus", default=None, metavar="IDS",
                    help="GPU ids for the workers, dealt round-robin, e.g. 0,1,2,3 (default: all visible to each)")
    sv.add_argument("--diversity-pool", type=int, default=200,
                    help="candidates the diversity re-ranking (RecommendRequest.diversity) chooses among; "
                         "0 turns it off and skips its warm-up compiles")
    sv.add_argument("--new-item-slots", type=int, default=0,
                    help="items AddItems may add while serving (a model trained with item features: a new item "
                         "is represented by its feature values)")
    sv.add_argument("--cold-items", choices=["features", "trained"], default="features",
                    help="catalog items never trained on: represented by their features (default, for a model "
                         "with item features) or as trained")
    sv.add_argument("--store", default="sqlite:jaxrec-events.sqlite",
                    help="the user-event store behind Observe, ForgetUser and Recommend by user_id: "
                         "sqlite:PATH (embedded, shared by --workers; default: jaxrec-events.sqlite in the "
                         "working directory), redis://HOST:PORT/DB (many replicas) or none")
    sv.add_argument("--store-ttl-s", type=float, default=30 * 24 * 3600,
                    help="a user's events are deleted this long after the last one (default: 30 days)")
    sv.add_argument("--exclude-window", type=int, default=200,
                    help="events kept per user beyond the model's history, so exclude_seen still removes them")
    sv.add_argument("--metrics-port", type=int, default=None,
                    help="Prometheus /metrics port (with --workers: the sum over workers, served by the parent)")
    sv.add_argument("--watch", action="store_true", help="hot-reload newer checkpoints from --checkpoint")
    sv.add_argument("--tls-cert", default=None)
    sv.add_argument("--tls-key", default=None)
    sv.add_argument("--tls-client-ca", default=None,
                    help="mutual TLS: require client certificates signed by this CA (PEM)")
    sv.add_argument("--auth-token-file", default=None, help="require 'authorization: Bearer <token>'")
    sv.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    sv.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="the server's event loop (jaxrec_server.main.run_on_loop)")
    sv.set_defaults(func=cmd_serve)

    ex = sub.add_parser("export", help="write a portable serving artifact (jax.export StableHLO) of a run")
    add_model_options(ex, required=True)
    ex.add_argument("--out", required=True, help="artifact directory (jaxrec serve --artifact DIR)")
    ex.add_argument("--length-buckets", type=_ints, default=None, help="history length buckets, e.g. 16,64,200")
    ex.add_argument("--k-buckets", type=_ints, default=None, help="top-k buckets, e.g. 10,100")
    ex.add_argument("--max-history", type=int, default=None, help="the model reads only the latest N items")
    ex.add_argument("--max-k", type=int, default=1000)
    ex.add_argument("--catalog-chunk", type=int, default=None,
                    help="catalog columns scored at once (default: as jaxrec serve; 0: the whole catalog)")
    ex.add_argument("--table-dtype", choices=["float32", "bfloat16", "int8"], default="float32")
    ex.add_argument("--score-widths", type=_ints, default=[16, 128],
                    help="candidate-list widths of the exported Score functions (the largest is the limit)")
    ex.add_argument("--allow-widths", type=_ints, default=[128],
                    help="allow-list widths of the exported top-k functions (the largest is the limit; "
                         "an empty value exports none)")
    ex.set_defaults(func=cmd_export)

    qy = sub.add_parser("query", help="ask a running server for recommendations")
    qy.add_argument("--target", default="localhost:50051")
    qy.add_argument("--history", default=[], action="append",
                    help="external item ids, oldest first, comma-separated; repeat for several users "
                         "(sent in one RecommendBatch call)")
    qy.add_argument("--user", default=None,
                    help="a user id of the server's event store: recommend from its stored history (plus "
                         "--history, if given)")
    qy.add_argument("--observe", default=None, metavar="IDS",
                    help="with --user: append these item ids (comma-separated) to the user's stored history")
    qy.add_argument("--forget", action="store_true", help="with --user: delete the user's stored events")
    qy.add_argument("--add-item", default=None, metavar="ID",
                    help="add a new item to the served catalog (AddItems; a server with --new-item-slots)")
    qy.add_argument("--feature", action="append", default=[], metavar="NAME=V1,V2",
                    help="with --add-item: its feature values, e.g. genres=Comedy,Drama (repeatable)")
    qy.add_argument("--title", default="", help="with --add-item: its title")
    qy.add_argument("--diversity", type=float, default=0.0,
                    help="0..1: re-rank for items unlike each other (maximal marginal relevance)")
    qy.add_argument("--diversity-by", default="",
                    help="similarity for --diversity: item embeddings (default) or a catalog feature, e.g. genres")
    qy.add_argument("--stream", action="store_true", help="send the histories on one RecommendStream")
    qy.add_argument("-k", type=int, default=10)
    qy.add_argument("--times", default=None, help="event times, one per history id (time-aware models)")
    qy.add_argument("--now", type=int, default=None, help="prediction time (default: the last event's)")
    qy.add_argument("--include-seen", action="store_true")
    qy.add_argument("--explain", action="store_true", help="show which history items led to each item")
    qy.add_argument("--timeout", type=float, default=5.0)
    qy.add_argument("--tls-ca", default=None, help="CA certificate (PEM) for a TLS server")
    qy.add_argument("--tls-cert", default=None, help="this client's certificate (PEM), for mutual TLS")
    qy.add_argument("--tls-key", default=None, help="this client's private key (PEM), for mutual TLS")
    qy.add_argument("--auth-token-file", default=None)
    qy.add_argument("--json", action="store_true")
    qy.set_defaults(func=cmd_query)

    bn = sub.add_parser("bench", help="benchmarks: 'jaxrec bench serve --checkpoint DIR' (load test)")
    bn.add_argument("what", choices=["serve"])
    bn.add_argument("rest", nargs=argparse.REMAINDER, help="options of the load test (see --help)")
    bn.set_defaults(func=cmd_bench)

