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
from jaxrec.errors import UserError
from jaxrec.v1 import recommender_pb2 as pb
from jaxrec.v1 import recommender_pb2_grpc as pb_grpc
from jaxrec_server.batcher import DeadlineExpired, Overloaded, QueueFull
from jaxrec_server.engine import Query
from jaxrec_server.store import StoreUnavailable

MAX_ID_LEN = 256
SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


class BadRequest(ValueError):
    pass


class NoSlots(Exception):
    """AddItems on a server without spare rows (FAILED_PRECONDITION)."""

    def __init__(self):
        super().__init__("AddItems: this server has no rows for new items (serve a model trained with item "
                         "features with --new-item-slots N)")


class NoStore(Exception):
    """A ``user_id`` request to a server started without an event store (FAILED_PRECONDITION)."""

    def __init__(self):
        super().__init__("user_id: this server keeps no user events (it was started with --store none)")


class Malformed:
    """What a request deserializes to when its bytes are not the message: the handler answers
    INVALID_ARGUMENT (gRPC's default would be UNKNOWN with a Python exception name)."""

    def __init__(self, message_type, error: Exception):
        self.message_type, self.error = message_type.__name__, error

    def refusal(self) -> "BadRequest":
        return BadRequest(f"the request bytes are not a valid {self.message_type}: {self.error}")


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
             "GetModelInfo": (pb.GetModelInfoRequest, pb.ModelInfo),
             "Observe": (pb.ObserveRequest, pb.ObserveResponse),
             "ForgetUser": (pb.ForgetUserRequest, pb.ForgetUserResponse),
             "AddItems": (pb.AddItemsRequest, pb.AddItemsResponse)}
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
    if idx.all():  # every id known: nothing to check
        return idx
    for i in np.flatnonzero(idx == 0).tolist():
        x = ids[i]
        if not x or len(x) > MAX_ID_LEN or not x.isprintable() or x.strip() != x:
            raise BadRequest(f"{field}[{i}]: malformed item id {x[:40]!r}")
    return idx


def history_indices(engine, request, limit: int, stored=None) -> tuple[np.ndarray, int]:
    """(catalog indices of the stored history then the request's own, 0 = unknown; how many
    ids the request gave). The request's ids come as strings (``history``) or as integers
    (``history_int_ids``: looked up without a Python string per id), never both."""
    ints, ids = request.history_int_ids, request.history
    field, given = ("history_int_ids", ints) if len(ints) else ("history", ids)
    if len(ints) and len(ids):
        raise BadRequest(f"history and history_int_ids: send one of them, not both (got {len(ids)} "
                         f"and {len(ints)} ids)")
    if len(given) > limit:  # the request's own ids are limited; the store bounds its own
        raise BadRequest(f"{field}: {len(given)} ids, more than the limit of {limit}")
    idx = engine.catalog.index_of_ints(ints) if len(ints) else lookup_ids("history", ids, engine, limit)
    if stored:
        idx = np.concatenate([lookup_ids("history", stored.items, engine, len(stored)), idx])
    return idx, len(given)


def request_history(engine, request, limit: int, stored=None):
    """(the latest items the model reads, every known item, count of unknown ids, their
    relative times + the prediction time for a time-aware model, else None). ``stored``: the
    user's ``Events`` from the event store, read before the request's own history."""
    idx, n = history_indices(engine, request, limit, stored)
    h = history_of_indices(idx)
    times = None
    if engine.uses_time:
        given = request.history_times
        if len(given) != n:
            raise BadRequest(f"history_times: {len(given)} times for {n} "
                             f"history ids; {engine.name} reads event times, one per id")
        try:
            times = history_times(h, (stored.times + list(given)) if stored else given, engine.max_len,
                                  request.now or None)
        except ValueError as e:
            raise BadRequest(f"history_times: {e}") from None
    return h.latest(engine.max_len), h.items, h.unknown, times


def check_user(user_id: str) -> str:
    """A user id as the store keys it: 1..256 printable characters, no surrounding blanks."""
    if not user_id or len(user_id) > MAX_ID_LEN or not user_id.isprintable() or user_id.strip() != user_id:
        raise BadRequest(f"user_id: malformed {user_id[:40]!r} (1..{MAX_ID_LEN} printable characters, "
                         "no leading or trailing blanks)")
    return user_id


def _index_list(engine, field, ids, limit: int) -> np.ndarray | None:
    if not len(ids):
        return None
    idx = lookup_ids(field, ids, engine, limit)
    return idx[idx > 0]


def recommend_query(engine, request, limit: int = 10_000, stored=None) -> tuple[Query, int]:
    """A ``RecommendRequest`` -> (the engine's ``Query``, count of unknown history ids); a
    request that is wrong in any field raises ``BadRequest`` naming it. The servicer and the
    load test's engine-alone timing both build their queries here. ``stored``: the user's
    events from the store (``request.user_id``)."""
    n = engine.num_items
    if request.model and request.model != engine.name:
        raise BadRequest(f"model: {request.model!r} is not served (serving {engine.name!r})")
    kmax = min(n, engine.k_buckets[-1])
    if not 1 <= request.k <= kmax:
        raise BadRequest(f"k: must be in 1..{kmax}, got {request.k}")
    d, by = float(request.diversity), request.diversity_by
    if not 0.0 <= d <= 1.0:  # NaN fails too
        raise BadRequest(f"diversity: must be in 0..1, got {d}")
    if (d > 0 or by) and (why := engine.diversity_refusal(request.k, by)) is not None:
        raise BadRequest(why)
    hist, seen, unknown, times = request_history(engine, request, limit, stored)
    q = Query(hist, int(request.k), bool(request.exclude_seen), _index_list(engine, "allow", request.allow, limit),
              _index_list(engine, "deny", request.deny, limit), bool(request.explain), seen=seen, times=times,
              diversity=d, diversity_by=by)
    if request.allow and q.allow is not None and not len(q.allow):
        raise BadRequest("allow: none of the ids is in the catalog")
    if (why := engine.refusal(q)) is not None:  # outside what an exported artifact answers
        raise BadRequest(why)
    return q, unknown


def score_query(engine, request, limit: int = 10_000, stored=None) -> tuple[Query, tuple[int, list]]:
    """A ``ScoreRequest`` -> (``Query``, (unknown history count, unknown candidate ids))."""
    hist, _, unknown, times = request_history(engine, request, limit, stored)
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
    add = r.items.add  # add() then attributes: cheaper than keywords or ScoredItem objects
    for j, (i, s) in enumerate(zip(a.items.tolist(), a.scores.tolist())):
        it = add()
        it.item_id, it.score = ids[i], s
        if titles[i]:
            it.title = titles[i]
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
    if isinstance(e, StoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(e, (NoStore, NoSlots)):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


REFUSALS = (BadRequest, QueueFull, DeadlineExpired, StoreUnavailable, NoStore, NoSlots)  # answered with status_of
# calls refused UNAVAILABLE (safe to retry elsewhere: nothing ran), by jaxrec_rejects_total's reason
UNAVAILABLE_BECAUSE = {"warming_up": "warming up: the model is still compiling",
                       "draining": "draining: the server is shutting down; retry on another instance"}


class RecommenderServicer(pb_grpc.RecommenderServicer):
    MAX_BATCH_ENTRIES = 4096  # requests in one RecommendBatch call
    STREAM_AHEAD = 256  # stream requests read ahead of the answer being written (flow control beyond it)

    def __init__(self, state, *, max_request_items: int = 10_000):
        self.state = state  # ServerState: .engine, .batcher, .metrics
        self.max_request_items = max_request_items

    def _admit(self, request, timeout) -> None:
        """Refuse malformed bytes and work the batcher cannot finish in time, before anything
        else is spent on the request (refusing must cost little)."""
        if isinstance(request, Malformed):
            raise request.refusal()
        self.state.batcher.admit(timeout)

    async def _stored(self, requests) -> list:
        """The stored ``Events`` of each request's ``user_id`` (None for a request without one), read
        in one store call; when the store fails, the exception in place of each user's events."""
        users = [(i, r.user_id) for i, r in enumerate(requests) if r.user_id]
        out = [None] * len(requests)
        if not users:
            return out
        store = self.state.store
        ok = []
        for i, u in users:
            try:
                out[i] = NoStore() if store is None else check_user(u)
                if store is not None:
                    ok.append(i)
            except BadRequest as e:
                out[i] = e
        if ok:
            t0 = time.perf_counter()
            try:
                found = await store.read([requests[i].user_id for i in ok])
            except StoreUnavailable as e:
                found = [e] * len(ok)
            self.state.metrics.store_seconds.labels("read").observe(time.perf_counter() - t0)
            for i, ev in zip(ok, found):
                out[i] = ev
        return out

    @staticmethod
    def _parse(engine, request, stored, make_query, limit):
        if isinstance(stored, BaseException):
            raise stored
        return make_query(engine, request, limit, stored)

    async def _engine(self, context):
        engine, why = self._engine_or_why()
        if why:
            self.state.metrics.rejects.labels(why).inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_BECAUSE[why])
        return engine

    def _engine_or_why(self):
        """(engine, None), or (None, why calls are refused UNAVAILABLE now: a key of UNAVAILABLE_BECAUSE)."""
        if self.state.draining:
            return None, "draining"
        if self.state.engine is None:
            return None, "warming_up"
        return self.state.engine, None

    async def _abort(self, context, e: BaseException):
        code = status_of(e)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            self.state.metrics.rejects.labels("invalid_argument").inc()
        if isinstance(e, Overloaded):  # clients' retry policy waits this long before retrying
            context.set_trailing_metadata((("grpc-retry-pushback-ms", str(e.pushback_ms)),))
        await context.abort(code, str(e))

    async def _run(self, method: str, request, context, make_query, respond):
        t0 = time.perf_counter()
        metrics = self.state.metrics
        code = grpc.StatusCode.OK
        metrics.in_flight.inc()
        try:
            engine = await self._engine(context)
            timeout = context.time_remaining()
            self._admit(request, timeout)
            stored = (await self._stored([request]))[0] if request.user_id else None
            query, extra = self._parse(engine, request, stored, make_query, self.max_request_items)
            answer = await self.state.batcher.enqueue(query, timeout)
            return respond(engine, answer, extra)
        except REFUSALS as e:
            code = status_of(e)
            await self._abort(context, e)
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
        the first entries the batcher can answer in time are admitted (the rest refused in
        place, RESOURCE_EXHAUSTED), the admitted ones' stored histories are read in one store call,
        the valid ones join the batcher's queue together, and each entry's error is written in
        place; one bad entry fails alone."""
        t0 = time.perf_counter()
        batcher, codes = self.state.batcher, collections.Counter()

        def fail(res, e):
            res.code, res.error = status_of(e).value[0], str(e) or type(e).__name__
            codes[status_of(e).name] += 1
            if isinstance(e, BadRequest):  # counted as the unary path counts it
                self.state.metrics.rejects.labels("invalid_argument").inc()

        entries = []
        for req, res in zip(requests, results):
            if isinstance(req, Malformed):  # a stream's message that did not parse
                fail(res, req.refusal())
            else:
                entries.append((req, res))
        m = batcher.admit_many(len(entries), timeout)  # one estimate for the call, not one per entry
        admitted = entries[:m]
        if m < len(entries):
            refusal = batcher.overloaded(timeout)
            for _, res in entries[m:]:
                fail(res, refusal)
        stored = await self._stored([req for req, _ in admitted])
        waiting = []  # (result, unknown count, answer future)
        for (req, res), ev in zip(admitted, stored):
            try:
                query, unknown = self._parse(engine, req, ev, recommend_query, self.max_request_items)
                waiting.append((res, unknown, batcher.enqueue(query, timeout)))
            except REFUSALS as e:
                fail(res, e)
        if waiting:
            answers = await asyncio.gather(*(f for *_, f in waiting), return_exceptions=True)
            for (res, unknown, _), a in zip(waiting, answers):
                if isinstance(a, BaseException):
                    fail(res, a)
                else:
                    fill_recommend(res.response, engine, a, unknown)
                    codes["OK"] += 1
        m = self.state.metrics
        for code, n in codes.items():  # counted per entry, as unary calls are
            m.requests.labels(method, code).inc(n)
        m.latency_seconds.labels(method).observe(time.perf_counter() - t0)

    async def _store_call(self, method: str, request, context, call):
        """Observe and ForgetUser: validate, run ``call(store, request)`` (a coroutine), count."""
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Malformed):
                raise request.refusal()
            if self.state.store is None:
                raise NoStore()
            check_user(request.user_id)
            return await call(self.state.store, request)
        except REFUSALS as e:
            code = status_of(e)
            await self._abort(context, e)
        finally:
            self.state.metrics.requests.labels(method, code.name).inc()
            self.state.metrics.store_seconds.labels(method).observe(time.perf_counter() - t0)

    # ------------------------------------------------------------ RPCs

    async def Recommend(self, request, context):
        return await self._run("Recommend", request, context, recommend_query,
                               lambda engine, a, unknown: fill_recommend(pb.RecommendResponse(), engine, a, unknown))

    async def RecommendBatch(self, request, context):
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.refusal()))
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
            engine, why = self._engine_or_why()
            if why:
                res.code, res.error = grpc.StatusCode.UNAVAILABLE.value[0], UNAVAILABLE_BECAUSE[why]
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

    async def Observe(self, request, context):
        async def call(store, r):
            items, times = list(r.items), list(r.times)
            if not items:
                raise BadRequest("items: empty (an Observe call appends at least one event)")
            engine = self.state.engine
            if engine is None:  # ids are checked for form against the catalog
                raise StoreUnavailable(UNAVAILABLE_BECAUSE["warming_up"])
            idx = lookup_ids("items", items, engine, self.max_request_items)
            if times and len(times) != len(items):
                raise BadRequest(f"times: {len(times)} times for {len(items)} items; give one per item or none")
            if not times:
                times = [int(time.time())] * len(items)
            n = await store.append(r.user_id, items, times)
            return pb.ObserveResponse(history_length=n, unknown_items=int((idx == 0).sum()))

        return await self._store_call("Observe", request, context, call)

    async def ForgetUser(self, request, context):
        async def call(store, r):
            return pb.ForgetUserResponse(found=await store.forget(r.user_id))

        return await self._store_call("ForgetUser", request, context, call)

    async def AddItems(self, request, context):
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Malformed):
                raise request.refusal()
            engine = await self._engine(context)
            if not engine.new_item_slots:
                raise NoSlots()
            items = []
            for i, it in enumerate(request.items):
                x = it.item_id
                if not x or len(x) > MAX_ID_LEN or not x.isprintable() or x.strip() != x:
                    raise BadRequest(f"items[{i}].item_id: malformed {x[:40]!r}")
                values = {}
                for f in it.features:
                    values.setdefault(f.name, []).extend(f.values)
                items.append((x, it.title, values))
            loop = asyncio.get_running_loop()
            try:  # on the device thread, between batches
                added, unknown = await loop.run_in_executor(self.state.batcher.executor, engine.add_items, items)
            except UserError as e:
                raise BadRequest(str(e)) from None
            return pb.AddItemsResponse(added=added, catalog_size=engine.num_items, slots_left=engine.new_item_slots,
                                       unknown_values=unknown)
        except REFUSALS as e:
            code = status_of(e)
            await self._abort(context, e)
        finally:
            self.state.metrics.requests.labels("AddItems", code.name).inc()

    async def GetModelInfo(self, request, context):
        e = await self._engine(context)
        self.state.metrics.requests.labels("GetModelInfo", "OK").inc()
        return pb.ModelInfo(name=e.name, step=e.step or 0, catalog_size=e.num_items,
                            max_history_length=e.max_len, batch_buckets=e.batch_buckets, uses_time=e.uses_time,
                            length_buckets=e.length_buckets, k_buckets=e.k_buckets,
                            checkpoint=str(e.checkpoint), table_dtype=e.table_dtype,
                            table_bytes=e.scorer.table_bytes(), diversity_pool=e.diversity_pool if
                            e.diversity_k_buckets else 0, item_features=e.item_features,
                            new_item_slots=e.new_item_slots, cold_items=e.cold_items,
                            index="" if e.index is None else e.index.describe(), **self.state.store_info())
