"""Python clients: sync (``Client``) and asyncio (``AsyncClient``), with deadlines and retries.

Retries are gRPC's own (the channel's service config, ``service_config``; any gRPC client in
any language can use the same JSON): UNAVAILABLE (server restarting, connection refused) and
RESOURCE_EXHAUSTED (an overloaded server refusing fast), and for the reading calls CANCELLED
(an overloaded server's gRPC core refusing a call before taking it), are retried with
exponential backoff, at most ``retries`` times, within the call's deadline, throttled. An overloaded jaxrec server sends
``grpc-retry-pushback-ms`` with its refusal (its expected queue wait), which gRPC honours
instead of its own backoff. Every other error is raised at once as ``grpc.RpcError``.

Each client also throttles itself (``throttle_k``, on by default: ``jaxrec_server.throttle``):
while the server accepts less than 1/K of the calls asked for over the last 10 seconds, the
client refuses the excess at once (``Throttled``, RESOURCE_EXHAUSTED, never sent), so an
overload costs the server its refusals for about K times what it serves, not for all of it.
Under normal load nothing is refused (``throttle_k=None`` turns it off).

    from jaxrec_server.client import Client
    with Client("localhost:50051") as c:
        for it in c.recommend(["1", "2", "3"], k=10).items:
            print(it.item_id, it.score, it.title)

A history of integers (``c.recommend([1, 2, 3])``) is sent as ``history_int_ids``: the same
items (the id ``7`` is ``"7"``), cheaper for both ends.
"""

from __future__ import annotations

import json
import numbers

import grpc

from jaxrec.v1 import recommender_pb2 as pb
from jaxrec.v1 import recommender_pb2_grpc as pb_grpc
from jaxrec_server.throttle import AdaptiveThrottle, Throttled  # noqa: F401 - Throttled: what callers catch


SERVICE = "jaxrec.v1.Recommender"
INT64 = (-(2 ** 63), 2 ** 63 - 1)


# Calls that only read: retried on CANCELLED too, which is how gRPC's C core ends a call an
# overloaded server refused before taking it (--max-pending-rpcs: nothing ran). The writes
# (Observe, ForgetUser, AddItems) are not: a CANCELLED at shutdown may follow a write done.
READS = ("Recommend", "RecommendBatch", "RecommendStream", "Score", "GetModelInfo")

# Four retries (five attempts, the most gRPC makes): a call refused four times in a row after a
# burst still gets a fifth try within its deadline; 3 retries lost 2 calls of 384,385 in a
# 30-minute soak at 70% load, 4 lost none of 341,390 and of 351,281 (benchmarks/RESULTS.md, Overload).
RETRIES = 4


def service_config(retries: int = RETRIES, initial_backoff_s: float = 0.05, retry_tokens: int = 1000) -> str:
    """The retry policy as a gRPC service config (JSON); ``retries`` = 0 turns retries off.

    Retry throttling (gRPC's token bucket per server: ``retry_tokens``, a failure takes one, a
    success gives back 0.1, no retries below half) stops retries from multiplying an overload:
    once more than about one call in eleven fails for long, retries stop. The bucket is as deep
    as gRPC allows (1000) so that a burst of refusals under light load (a server with a latency
    target holds few pending calls; a pause of the server's VM or process fills them) is
    retried to the end: with 100 tokens, a 100 ms pause of the server every 10 s lost 16 calls
    of 21,911 in two minutes, with 1000 tokens 1 of 22,601; with 10 tokens, five refusals in a
    row turned off retries and 0.3% of calls failed (benchmarks/RESULTS.md, "Soak"). Under a
    sustained overload the deep bucket is drained in seconds, and retries stop as before."""
    if retries <= 0:
        return json.dumps({"methodConfig": [{"name": [{"service": SERVICE}]}]})

    def policy(codes):
        return {"maxAttempts": retries + 1, "initialBackoff": f"{initial_backoff_s:g}s", "maxBackoff": "1s",
                "backoffMultiplier": 2, "retryableStatusCodes": codes}
    writes = {"name": [{"service": SERVICE}], "retryPolicy": policy(["UNAVAILABLE", "RESOURCE_EXHAUSTED"])}
    reads = {"name": [{"service": SERVICE, "method": m} for m in READS],
             "retryPolicy": policy(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"])}
    return json.dumps({"methodConfig": [reads, writes],
                       "retryThrottling": {"maxTokens": retry_tokens, "tokenRatio": 0.1}})


def _options(retries: int, server_name: str | None) -> list:
    # a local subchannel pool: each client holds its own connection (gRPC shares one per target
    # across a process's channels otherwise), so clients spread over a --workers server's processes
    opts = [("grpc.service_config", service_config(retries)), ("grpc.enable_retries", int(retries > 0)),
            ("grpc.use_local_subchannel_pool", 1)]
    return opts + ([("grpc.ssl_target_name_override", server_name)] if server_name else [])


def _channel_args(tls_ca: bytes | None, token: str | None, tls_cert: bytes | None = None,
                  tls_key: bytes | None = None):
    """TLS credentials (``tls_cert``/``tls_key``: this client's certificate, for a server that
    requires mutual TLS) and the bearer-token metadata."""
    creds = None
    if tls_ca is not None or tls_cert is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=tls_ca, private_key=tls_key,
                                             certificate_chain=tls_cert)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return creds, metadata


def history_fields(history) -> dict:
    """A history as a request's fields: all integers (Python or numpy; the id ``7`` is ``"7"``)
    go as ``history_int_ids``, which the server looks up without a string per id; anything
    else as ``history`` strings. Both name the same items."""
    h = [] if history is None else list(history)
    if h and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and INT64[0] <= x <= INT64[1]
                 for x in h):
        return {"history_int_ids": [int(x) for x in h]}
    return {"history": [str(x) for x in h]}


def _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now, user_id=None,
                       diversity=0.0, diversity_by="") -> pb.RecommendRequest:
    return pb.RecommendRequest(**history_fields(history), k=k, exclude_seen=exclude_seen,
                               allow=[str(a) for a in allow or ()], deny=[str(d) for d in deny or ()],
                               explain=explain, model=model or "", history_times=[int(t) for t in times or ()],
                               now=int(now or 0), user_id=user_id or "", diversity=float(diversity or 0.0),
                               diversity_by=diversity_by or "")


def status_name(code: int) -> str:
    """The name of a ``RecommendResult.code`` (a gRPC status code number), e.g. "INVALID_ARGUMENT"."""
    return next((s.name for s in grpc.StatusCode if s.value[0] == code), str(code))


def as_request(r) -> pb.RecommendRequest:
    """A batch or stream entry: a ``RecommendRequest``, or a dict of ``recommend``'s arguments
    (``history`` and/or ``user_id``, and optionally ``k``, ``exclude_seen``, ``allow``, ``deny``,
    ``explain``, ``model``, ``times``, ``now``, ``diversity``, ``diversity_by``)."""
    if isinstance(r, pb.RecommendRequest):
        return r
    a = dict(history=(), k=10, exclude_seen=True, allow=None, deny=None, explain=False, model=None, times=None,
             now=None) | r
    return _recommend_request(a.pop("history"), **a)


def _batch_request(requests) -> pb.RecommendBatchRequest:
    return pb.RecommendBatchRequest(requests=[as_request(r) for r in requests])


def _score_request(history, candidates, times, now, user_id=None) -> pb.ScoreRequest:
    return pb.ScoreRequest(**history_fields(history), candidates=[str(c) for c in candidates],
                           history_times=[int(t) for t in times or ()], now=int(now or 0), user_id=user_id or "")


def _add_items_request(items) -> pb.AddItemsRequest:
    """``items``: dicts {"item_id", "title" (optional), "features": {name: [values]}}."""
    return pb.AddItemsRequest(items=[pb.NewItem(item_id=str(it["item_id"]), title=it.get("title") or "",
                                                features=[pb.FeatureValues(name=k, values=[str(v) for v in vs])
                                                          for k, vs in (it.get("features") or {}).items()])
                                     for it in items])


def _observe_request(user_id, items, times) -> pb.ObserveRequest:
    return pb.ObserveRequest(user_id=user_id, items=[str(i) for i in items], times=[int(t) for t in times or ()])


class Client:
    def __init__(self, target: str, *, timeout: float = 5.0, retries: int = RETRIES, tls_ca: bytes | None = None,
                 token: str | None = None, server_name: str | None = None, tls_cert: bytes | None = None,
                 tls_key: bytes | None = None, throttle_k: float | None = 2.0):
        creds, self.metadata = _channel_args(tls_ca, token, tls_cert, tls_key)
        opts = _options(retries, server_name)
        self.channel = (grpc.secure_channel(target, creds, options=opts) if creds
                        else grpc.insecure_channel(target, options=opts))
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.timeout = timeout
        self.throttle = AdaptiveThrottle(throttle_k) if throttle_k else None

    def _call(self, fn, req, timeout=None):
        """One unary call with the client's deadline and token, through its throttle (a call
        refused by the throttle raises ``Throttled`` and is never sent)."""
        if self.throttle is None:
            return fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
        self.throttle.check()
        try:
            out = fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            self.throttle.ended(e)
            raise
        self.throttle.ended(None)
        return out

    def recommend(self, history=(), k: int = 10, *, exclude_seen: bool = True, allow=None, deny=None,
                  explain: bool = False, model: str | None = None, times=None, now: int | None = None,
                  user_id: str | None = None, diversity: float = 0.0, diversity_by: str = "",
                  timeout: float | None = None):
        """``times``/``now``: event times per history id and the prediction time, for a
        time-aware model (``model_info().uses_time``). ``user_id``: start from the user's history
        in the server's event store (``observe``); ``history`` is then appended to it.
        ``diversity`` (0..1): re-rank by maximal marginal relevance (``diversity_by``: "" item
        embeddings, or a catalog feature such as "genres")."""
        req = _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now, user_id,
                                 diversity, diversity_by)
        return self._call(self.stub.Recommend, req, timeout)

    def observe(self, user_id: str, items, *, times=None, timeout: float | None = None):
        """Append events (item ids, oldest first; ``times`` one per item, or the server's clock)
        to the user's stored history -> ``ObserveResponse`` (history_length, unknown_items)."""
        return self._call(self.stub.Observe, _observe_request(user_id, items, times), timeout)

    def forget_user(self, user_id: str, *, timeout: float | None = None):
        """Delete the user's stored events -> ``ForgetUserResponse`` (found)."""
        return self._call(self.stub.ForgetUser, pb.ForgetUserRequest(user_id=user_id), timeout)

    def add_items(self, items, *, timeout: float | None = None):
        """Add items at serve time: dicts {"item_id", "title", "features": {"genres": ["Comedy"]}}
        -> ``AddItemsResponse`` (added, catalog_size, slots_left, unknown_values)."""
        return self._call(self.stub.AddItems, _add_items_request(items), timeout)

    def recommend_batch(self, requests, *, timeout: float | None = None) -> list:
        """Many users in one call (``as_request`` says what an entry may be): one
        ``RecommendResult`` per entry, in order; ``result.code`` is 0 with ``result.response``
        set, or a gRPC status code with ``result.error``: a bad entry fails alone."""
        return list(self._call(self.stub.RecommendBatch, _batch_request(requests), timeout).results)

    def recommend_stream(self, requests, *, timeout: float | None = None):
        """Send ``requests`` (any iterable, consumed as the stream goes) on one stream; yields one
        ``RecommendResult`` per request, in order. ``timeout`` bounds the whole stream."""
        return self.stub.RecommendStream((as_request(r) for r in requests), timeout=timeout or self.timeout,
                                         metadata=self.metadata)

    def score(self, history, candidates, *, times=None, now: int | None = None, user_id: str | None = None,
              timeout: float | None = None):
        return self._call(self.stub.Score, _score_request(history, candidates, times, now, user_id), timeout)

    def model_info(self, timeout: float | None = None):
        return self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    def __init__(self, target: str, *, timeout: float = 5.0, retries: int = RETRIES, tls_ca: bytes | None = None,
                 token: str | None = None, server_name: str | None = None, tls_cert: bytes | None = None,
                 tls_key: bytes | None = None, throttle_k: float | None = 2.0):
        creds, self.metadata = _channel_args(tls_ca, token, tls_cert, tls_key)
        opts = _options(retries, server_name)
        self.channel = (grpc.aio.secure_channel(target, creds, options=opts) if creds
                        else grpc.aio.insecure_channel(target, options=opts))
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.timeout = timeout
        self.throttle = AdaptiveThrottle(throttle_k) if throttle_k else None

    async def _call(self, fn, req, timeout=None):
        """As ``Client._call``: the call, through the client's throttle."""
        if self.throttle is None:
            return await fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
        self.throttle.check()
        try:
            out = await fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            self.throttle.ended(e)
            raise
        self.throttle.ended(None)
        return out

    async def recommend(self, history=(), k: int = 10, *, exclude_seen: bool = True, allow=None, deny=None,
                        explain: bool = False, model: str | None = None, times=None, now: int | None = None,
                        user_id: str | None = None, diversity: float = 0.0, diversity_by: str = "",
                        timeout: float | None = None):
        """As ``Client.recommend``."""
        req = _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now, user_id,
                                 diversity, diversity_by)
        return await self._call(self.stub.Recommend, req, timeout)

    async def observe(self, user_id: str, items, *, times=None, timeout: float | None = None):
        """As ``Client.observe``."""
        return await self._call(self.stub.Observe, _observe_request(user_id, items, times), timeout)

    async def forget_user(self, user_id: str, *, timeout: float | None = None):
        """As ``Client.forget_user``."""
        return await self._call(self.stub.ForgetUser, pb.ForgetUserRequest(user_id=user_id), timeout)

    async def add_items(self, items, *, timeout: float | None = None):
        """As ``Client.add_items``."""
        return await self._call(self.stub.AddItems, _add_items_request(items), timeout)

    async def recommend_batch(self, requests, *, timeout: float | None = None) -> list:
        """As ``Client.recommend_batch``."""
        return list((await self._call(self.stub.RecommendBatch, _batch_request(requests), timeout)).results)

    def recommend_stream(self, requests, *, timeout: float | None = None):
        """As ``Client.recommend_stream``; ``requests`` may be an async iterable. Returns the call:
        ``async for result in call``."""
        if hasattr(requests, "__aiter__"):
            async def entries():
                async for r in requests:
                    yield as_request(r)
            it = entries()
        else:
            it = (as_request(r) for r in requests)
        return self.stub.RecommendStream(it, timeout=timeout or self.timeout, metadata=self.metadata)

    async def score(self, history, candidates, *, times=None, now: int | None = None, user_id: str | None = None,
                    timeout: float | None = None):
        return await self._call(self.stub.Score, _score_request(history, candidates, times, now, user_id), timeout)

    async def model_info(self, timeout: float | None = None):
        return await self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def close(self):
        await self.channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
