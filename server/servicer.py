"""The ``jaxrec.v1.Recommender`` service: validation, status codes, wire <-> engine.

Every user mistake is INVALID_ARGUMENT with a message naming the field and the value;
a full queue is RESOURCE_EXHAUSTED; an expired deadline DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from jaxrec.data.codec import history_of_indices, history_times
from jaxrec.v1 import recommender_pb2 as pb
from jaxrec.v1 import recommender_pb2_grpc as pb_grpc
from jaxrec_server.batcher import DeadlineExpired, Overloaded, QueueFull
from jaxrec_server.engine import Query

MAX_ID_LEN = 256
SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


class BadRequest(ValueError):
    pass


class Malformed:
    """What a request deserializes to when its bytes are not the message: the handler answers
    INVALID_ARGUMENT (gRPC's default would be UNKNOWN with a Python exception name)."""

    def __init__(self, message_type, error: Exception):
        self.message_type, self.error = message_type.__name__, error


def safe_deserializer(message_type):
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except Exception as e:  # noqa: BLE001 - any decode failure is the client's malformed bytes
            return Malformed(message_type, e)
    return parse


def add_to_server(servicer, server) -> None:
    """Register the Recommender service like the generated ``add_RecommenderServicer_to_server``,
    with deserializers that turn malformed bytes into INVALID_ARGUMENT."""
    methods = {"Recommend": (pb.RecommendRequest, pb.RecommendResponse),
               "Score": (pb.ScoreRequest, pb.ScoreResponse),
               "GetModelInfo": (pb.GetModelInfoRequest, pb.ModelInfo)}
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=safe_deserializer(req),
        response_serializer=resp.SerializeToString) for name, (req, resp) in methods.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def lookup_ids(field: str, ids, engine, limit: int) -> np.ndarray:
    """Catalog indices of a request's ids (0: unknown). Only unknown ids are checked for form
    (catalog ids are well-formed by construction), so a valid request pays one dict lookup
    per id: this runs on the event loop for every request."""
    if len(ids) > limit:
        raise BadRequest(f"{field}: {len(ids)} ids, more than the limit of {limit}")
    idx = engine.catalog.index_of(ids)
    for i in np.flatnonzero(idx == 0).tolist():
        x = ids[i]
        if not x or len(x) > MAX_ID_LEN or not x.isprintable() or x.strip() != x:
            raise BadRequest(f"{field}[{i}]: malformed item id {x[:40]!r}")
    return idx


def request_history(engine, request, limit: int):
    """(the latest items the model reads, every known item, count of unknown ids, their
    relative times + the prediction time for a time-aware model, else None)."""
    ids = request.history
    h = history_of_indices(lookup_ids("history", ids, engine, limit))
    times = None
    if engine.uses_time:
        if len(request.history_times) != len(ids):
            raise BadRequest(f"history_times: {len(request.history_times)} times for {len(ids)} "
                             f"history ids; {engine.name} reads event times, one per id")
        try:
            times = history_times(h, request.history_times, engine.max_len, request.now or None)
        except ValueError as e:
            raise BadRequest(f"history_times: {e}") from None
    return h.latest(engine.max_len), h.items, h.unknown, times


def _index_list(engine, field, ids, limit: int) -> np.ndarray | None:
    if not len(ids):
        return None
    idx = lookup_ids(field, ids, engine, limit)
    return idx[idx > 0]


def recommend_query(engine, request, limit: int = 10_000) -> tuple[Query, int]:
    """A ``RecommendRequest`` -> (the engine's ``Query``, count of unknown history ids); a
    request that is wrong in any field raises ``BadRequest`` naming it. The servicer and the
    load test's engine-alone timing both build their queries here."""
    n = engine.num_items
    if request.model and request.model != engine.name:
        raise BadRequest(f"model: {request.model!r} is not served (serving {engine.name!r})")
    kmax = min(n, engine.k_buckets[-1])
    if not 1 <= request.k <= kmax:
        raise BadRequest(f"k: must be in 1..{kmax}, got {request.k}")
    hist, seen, unknown, times = request_history(engine, request, limit)
    q = Query(hist, int(request.k), bool(request.exclude_seen), _index_list(engine, "allow", request.allow, limit),
              _index_list(engine, "deny", request.deny, limit), bool(request.explain), seen=seen, times=times)
    if request.allow and q.allow is not None and not len(q.allow):
        raise BadRequest("allow: none of the ids is in the catalog")
    return q, unknown


def score_query(engine, request, limit: int = 10_000) -> tuple[Query, tuple[int, list]]:
    """A ``ScoreRequest`` -> (``Query``, (unknown history count, unknown candidate ids))."""
    hist, _, unknown, times = request_history(engine, request, limit)
    cands = request.candidates
    if not len(cands):
        raise BadRequest("candidates: empty")
    idx = lookup_ids("candidates", cands, engine, limit)
    missing = [c for c, i in zip(cands, idx.tolist()) if i == 0]
    return Query(hist, 1, False, candidates=idx[idx > 0], times=times), (unknown, missing)


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, state, *, max_request_items: int = 10_000):
        self.state = state  # ServerState: .engine, .batcher, .metrics
        self.max_request_items = max_request_items

    async def _run(self, method: str, request, context, make_query, respond):
        t0 = time.perf_counter()
        metrics = self.state.metrics
        code = grpc.StatusCode.OK
        metrics.in_flight.inc()
        try:
            if isinstance(request, Malformed):
                raise BadRequest(f"the request bytes are not a valid {request.message_type}: {request.error}")
            engine = self.state.engine
            if engine is None:
                code = grpc.StatusCode.UNAVAILABLE
                metrics.rejects.labels("warming_up").inc()
                await context.abort(code, "warming up: the model is still compiling")
            timeout = context.time_remaining()
            self.state.batcher.admit(timeout)  # before any parsing: refusing must cost little
            query, extra = make_query(engine)
            answer = await self.state.batcher.submit(query, timeout, admitted=True)
            return respond(engine, query, answer, extra)
        except BadRequest as e:
            code = grpc.StatusCode.INVALID_ARGUMENT
            metrics.rejects.labels("invalid_argument").inc()
            await context.abort(code, str(e))
        except QueueFull as e:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            if isinstance(e, Overloaded):  # clients' retry policy waits this long before retrying
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(e.pushback_ms)),))
            await context.abort(code, str(e))
        except DeadlineExpired as e:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, str(e))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(method, code.name).inc()
            metrics.latency_seconds.labels(method).observe(time.perf_counter() - t0)

    # ------------------------------------------------------------ RPCs

    async def Recommend(self, request, context):
        def make_query(engine):
            return recommend_query(engine, request, self.max_request_items)

        def respond(engine, q, a, unknown):
            ids, titles = engine.id_list, engine.title_list
            r = pb.RecommendResponse(unknown_history_items=unknown, model=engine.name,
                                     model_step=engine.step or 0, cold_start=a.cold_start)
            add = r.items.add  # cheaper than building ScoredItem objects and a list
            for j, (i, s) in enumerate(zip(a.items.tolist(), a.scores.tolist())):
                it = add(item_id=ids[i], score=s, title=titles[i])
                if a.because is not None:
                    it.because.extend(pb.Because(item_id=ids[h], weight=w) for h, w in a.because[j])
            return r

        return await self._run("Recommend", request, context, make_query, respond)

    async def Score(self, request, context):
        def make_query(engine):
            return score_query(engine, request, self.max_request_items)

        def respond(engine, q, a, extra):
            unknown, missing = extra
            cat = engine.catalog
            items = [pb.ScoredItem(item_id=cat.ids[int(i)], score=float(s), title=cat.title(int(i)) or "")
                     for i, s in zip(a.items, a.scores)]
            return pb.ScoreResponse(items=items, unknown_history_items=unknown, unknown_candidates=missing,
                                    stage=engine.score_stage)

        return await self._run("Score", request, context, make_query, respond)

    async def GetModelInfo(self, request, context):
        e = self.state.engine
        if e is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up: the model is still compiling")
        self.state.metrics.requests.labels("GetModelInfo", "OK").inc()
        return pb.ModelInfo(name=e.name, step=e.step or 0, catalog_size=e.num_items,
                            max_history_length=e.max_len, batch_buckets=e.batch_buckets, uses_time=e.uses_time,
                            length_buckets=e.length_buckets, k_buckets=e.k_buckets,
                            checkpoint=str(e.checkpoint))
