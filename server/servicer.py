"""The ``jaxrec.v1.Recommender`` service: validation, status codes, wire <-> engine.

Every user mistake is INVALID_ARGUMENT with a message naming the field and the value;
a full queue is RESOURCE_EXHAUSTED; an expired deadline DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import collections
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
    unary = {"Recommend": (pb.RecommendRequest, pb.RecommendResponse),
             "RecommendBatch": (pb.RecommendBatchRequest, pb.RecommendBatchResponse),
             "Score": (pb.ScoreRequest, pb.ScoreResponse),
             "GetModelInfo": (pb.GetModelInfoRequest, pb.ModelInfo)}
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=safe_deserializer(req),
        response_serializer=resp.SerializeToString) for name, (req, resp) in unary.items()}
    handlers["RecommendStream"] = grpc.stream_stream_rpc_method_handler(
        servicer.RecommendStream, request_deserializer=safe_deserializer(pb.RecommendRequest),
        response_serializer=pb.RecommendResult.SerializeToString)
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
    if (why := engine.refusal(q)) is not None:  # outside what an exported artifact answers
        raise BadRequest(why)
    return q, unknown


def score_query(engine, request, limit: int = 10_000) -> tuple[Query, tuple[int, list]]:
    """A ``ScoreRequest`` -> (``Query``, (unknown history count, unknown candidate ids))."""
    hist, _, unknown, times = request_history(engine, request, limit)
    cands = request.candidates
    if not len(cands):
        raise BadRequest("candidates: empty")
    idx = lookup_ids("candidates", cands, engine, limit)
    missing = [c for c, i in zip(cands, idx.tolist()) if i == 0]
    q = Query(hist, 1, False, candidates=idx[idx > 0], times=times)
    if (why := engine.refusal(q)) is not None:
        raise BadRequest(why)
    return q, (unknown, missing)


def fill_recommend(r: pb.RecommendResponse, engine, a, unknown: int) -> pb.RecommendResponse:
    """Write an engine ``Answer`` into ``r`` in place (a batch's entries are filled where they
    lie in the batch response: no message is built twice and copied)."""
    ids, titles = engine.id_list, engine.title_list
    r.unknown_history_items, r.model, r.model_step, r.cold_start = unknown, engine.name, engine.step or 0, a.cold_start
    add = r.items.add  # cheaper than building ScoredItem objects and a list
    for j, (i, s) in enumerate(zip(a.items.tolist(), a.scores.tolist())):
        it = add(item_id=ids[i], score=s, title=titles[i])
        if a.because is not None:
            it.because.extend(pb.Because(item_id=ids[h], weight=w) for h, w in a.because[j])
    return r


def status_of(e: BaseException) -> grpc.StatusCode:
    """The status a unary call fails with for ``e`` (a batch entry carries the same code)."""
    if isinstance(e, BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(e, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(e, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.INTERNAL


class RecommenderServicer(pb_grpc.RecommenderServicer):
    MAX_BATCH_ENTRIES = 4096  # requests in one RecommendBatch call
    STREAM_AHEAD = 256  # stream requests read ahead of the answer being written (flow control beyond it)

    def __init__(self, state, *, max_request_items: int = 10_000):
        self.state = state  # ServerState: .engine, .batcher, .metrics
        self.max_request_items = max_request_items

    def _prepare(self, engine, request, timeout, make_query):
        """Admit, then parse (refusing must cost little, so admission comes first)."""
        if isinstance(request, Malformed):
            raise BadRequest(f"the request bytes are not a valid {request.message_type}: {request.error}")
        self.state.batcher.admit(timeout)
        return make_query(engine, request, self.max_request_items)

    async def _engine(self, context):
        engine = self.state.engine
        if engine is None:
            self.state.metrics.rejects.labels("warming_up").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up: the model is still compiling")
        return engine

    async def _run(self, method: str, request, context, make_query, respond):
        t0 = time.perf_counter()
        metrics = self.state.metrics
        code = grpc.StatusCode.OK
        metrics.in_flight.inc()
        try:
            engine = await self._engine(context)
            timeout = context.time_remaining()
            query, extra = self._prepare(engine, request, timeout, make_query)
            answer = await self.state.batcher.enqueue(query, timeout)
            return respond(engine, answer, extra)
        except (BadRequest, QueueFull, DeadlineExpired) as e:
            code = status_of(e)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                metrics.rejects.labels("invalid_argument").inc()
            if isinstance(e, Overloaded):  # clients' retry policy waits this long before retrying
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(e.pushback_ms)),))
            await context.abort(code, str(e))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNAVAILABLE  # only _engine aborts outside the handlers above
            raise
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(method, code.name).inc()
            metrics.latency_seconds.labels(method).observe(time.perf_counter() - t0)

    async def _entries(self, method: str, engine, requests, timeout, results) -> None:
        """Answer many Recommend requests into ``results`` (RecommendResult messages, same order):
        every entry is admitted and parsed, the valid ones join the batcher's queue together, and
        each entry's error is written in place; one bad entry fails alone."""
        t0 = time.perf_counter()
        batcher, codes = self.state.batcher, collections.Counter()
        waiting = []  # (result, unknown count, answer future)
        for req, res in zip(requests, results):
            try:
                query, unknown = self._prepare(engine, req, timeout, recommend_query)
                waiting.append((res, unknown, batcher.enqueue(query, timeout)))
            except (BadRequest, QueueFull) as e:
                res.code, res.error = status_of(e).value[0], str(e)
                codes[status_of(e).name] += 1
                if isinstance(e, BadRequest):  # counted as the unary path counts it
                    self.state.metrics.rejects.labels("invalid_argument").inc()
        if waiting:
            answers = await asyncio.gather(*(f for *_, f in waiting), return_exceptions=True)
            for (res, unknown, _), a in zip(waiting, answers):
                if isinstance(a, BaseException):
                    res.code, res.error = status_of(a).value[0], str(a) or type(a).__name__
                    codes[status_of(a).name] += 1
                else:
                    fill_recommend(res.response, engine, a, unknown)
                    codes["OK"] += 1
        m = self.state.metrics
        for code, n in codes.items():  # counted per entry, as unary calls are
            m.requests.labels(method, code).inc(n)
        m.latency_seconds.labels(method).observe(time.perf_counter() - t0)

    # ------------------------------------------------------------ RPCs

    async def Recommend(self, request, context):
        return await self._run("Recommend", request, context, recommend_query,
                               lambda engine, a, unknown: fill_recommend(pb.RecommendResponse(), engine, a, unknown))

    async def RecommendBatch(self, request, context):
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request bytes are not a valid {request.message_type}: {request.error}")
        n = len(request.requests)
        if n > self.MAX_BATCH_ENTRIES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"requests: {n} entries, more than the limit of {self.MAX_BATCH_ENTRIES}")
        engine = await self._engine(context)
        out = pb.RecommendBatchResponse()
        results = [out.results.add() for _ in range(n)]
        self.state.metrics.in_flight.inc()
        try:
            await self._entries("RecommendBatch", engine, request.requests, context.time_remaining(), results)
        finally:
            self.state.metrics.in_flight.dec()
        return out

    async def RecommendStream(self, request_iterator, context):
        """Each request is answered as soon as its batch is done, and written in request order;
        at most ``STREAM_AHEAD`` requests are read ahead, so a fast writer is slowed by HTTP/2
        flow control instead of filling the server's memory."""
        pending: asyncio.Queue = asyncio.Queue(self.STREAM_AHEAD)

        async def one(req):
            res = pb.RecommendResult()
            engine = self.state.engine
            if engine is None:
                res.code, res.error = grpc.StatusCode.UNAVAILABLE.value[0], "warming up: the model is still compiling"
            else:
                await self._entries("RecommendStream", engine, [req], context.time_remaining(), [res])
            return res

        async def read():
            try:
                async for req in request_iterator:
                    await pending.put(asyncio.ensure_future(one(req)))
            finally:
                await pending.put(None)

        self.state.metrics.in_flight.inc()
        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader  # a failed read (e.g. the client's stream broke) surfaces here
        finally:
            reader.cancel()
            self.state.metrics.in_flight.dec()

    async def Score(self, request, context):
        def respond(engine, a, extra):
            unknown, missing = extra
            cat = engine.catalog
            items = [pb.ScoredItem(item_id=cat.ids[int(i)], score=float(s), title=cat.title(int(i)) or "")
                     for i, s in zip(a.items, a.scores)]
            return pb.ScoreResponse(items=items, unknown_history_items=unknown, unknown_candidates=missing,
                                    stage=engine.score_stage)

        return await self._run("Score", request, context, score_query, respond)

    async def GetModelInfo(self, request, context):
        e = await self._engine(context)
        self.state.metrics.requests.labels("GetModelInfo", "OK").inc()
        return pb.ModelInfo(name=e.name, step=e.step or 0, catalog_size=e.num_items,
                            max_history_length=e.max_len, batch_buckets=e.batch_buckets, uses_time=e.uses_time,
                            length_buckets=e.length_buckets, k_buckets=e.k_buckets,
                            checkpoint=str(e.checkpoint), table_dtype=e.table_dtype,
                            table_bytes=e.scorer.table_bytes())
