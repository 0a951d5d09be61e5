"""Python clients: sync (``Client``) and asyncio (``AsyncClient``), with deadlines and retries.

UNAVAILABLE (server restarting, connection refused) is retried with exponential backoff;
every other error is raised at once as ``grpc.RpcError``.

    from jaxrec_server.client import Client
    with Client("localhost:50051") as c:
        for it in c.recommend(["1", "2", "3"], k=10).items:
            print(it.item_id, it.score, it.title)
"""

from __future__ import annotations

import asyncio
import time

import grpc

from jaxrec.v1 import recommender_pb2 as pb
from jaxrec.v1 import recommender_pb2_grpc as pb_grpc


def _channel_args(tls_ca: bytes | None, token: str | None):
    creds = grpc.ssl_channel_credentials(root_certificates=tls_ca) if tls_ca is not None else None
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return creds, metadata


def _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now) -> pb.RecommendRequest:
    return pb.RecommendRequest(history=[str(h) for h in history], k=k, exclude_seen=exclude_seen,
                               allow=[str(a) for a in allow or ()], deny=[str(d) for d in deny or ()],
                               explain=explain, model=model or "", history_times=[int(t) for t in times or ()],
                               now=int(now or 0))


def _score_request(history, candidates, times, now) -> pb.ScoreRequest:
    return pb.ScoreRequest(history=[str(h) for h in history], candidates=[str(c) for c in candidates],
                           history_times=[int(t) for t in times or ()], now=int(now or 0))


class Client:
    def __init__(self, target: str, *, timeout: float = 5.0, retries: int = 3, tls_ca: bytes | None = None,
                 token: str | None = None, server_name: str | None = None):
        creds, self.metadata = _channel_args(tls_ca, token)
        opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = (grpc.secure_channel(target, creds, options=opts) if creds
                        else grpc.insecure_channel(target))
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.timeout, self.retries = timeout, retries

    def _call(self, fn, req, timeout=None):
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2

    def recommend(self, history, k: int = 10, *, exclude_seen: bool = True, allow=None, deny=None,
                  explain: bool = False, model: str | None = None, times=None, now: int | None = None,
                  timeout: float | None = None):
        """``times``/``now``: event times per history id and the prediction time, for a
        time-aware model (``model_info().uses_time``)."""
        req = _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now)
        return self._call(self.stub.Recommend, req, timeout)

    def score(self, history, candidates, *, times=None, now: int | None = None, timeout: float | None = None):
        return self._call(self.stub.Score, _score_request(history, candidates, times, now), timeout)

    def model_info(self, timeout: float | None = None):
        return self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    def __init__(self, target: str, *, timeout: float = 5.0, retries: int = 3, tls_ca: bytes | None = None,
                 token: str | None = None, server_name: str | None = None):
        creds, self.metadata = _channel_args(tls_ca, token)
        opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = (grpc.aio.secure_channel(target, creds, options=opts) if creds
                        else grpc.aio.insecure_channel(target))
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.timeout, self.retries = timeout, retries

    async def _call(self, fn, req, timeout=None):
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return await fn(req, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(delay)
                delay *= 2

    async def recommend(self, history, k: int = 10, *, exclude_seen: bool = True, allow=None, deny=None,
                        explain: bool = False, model: str | None = None, times=None, now: int | None = None,
                        timeout: float | None = None):
        req = _recommend_request(history, k, exclude_seen, allow, deny, explain, model, times, now)
        return await self._call(self.stub.Recommend, req, timeout)

    async def score(self, history, candidates, *, times=None, now: int | None = None,
                    timeout: float | None = None):
        return await self._call(self.stub.Score, _score_request(history, candidates, times, now), timeout)

    async def model_info(self, timeout: float | None = None):
        return await self._call(self.stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def close(self):
        await self.channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
