"""Adaptive client-side throttling: a client that sheds its own excess before it reaches the server.

Why: a server that refuses excess load fast (admission control, gRPC's pending-call limit)
still spends CPU on every refusal, and at 10x its capacity the refusals alone take a sixth of
its core (benchmarks/RESULTS.md, "Overload"): what it refuses is what it cannot serve. Retries
do not help (they add calls), and backoff only helps the calls that are retried. The remedy is
the one in Google's SRE book (chapter 21, "Client-side throttling"): each client keeps, over a
trailing window, how many calls it asked for (``requests``) and how many the server accepted
(``accepts``: answered with anything but an overload or a timeout), and refuses a new call
locally, at once, with probability

    p = max(0, (requests - K * accepts) / (requests + 1))

so that once the server accepts less than 1/K of what the client asks for, the client sends
about K times what is accepted and drops the rest without a round trip. Under normal load
every call is accepted and p is 0; with K = 2 (the book's choice) a client sends at most
about twice what the server can take, which the server refuses cheaply, and the server's
goodput at 10x offered load is what it is at 2x. One change from the book: nothing is refused
while the window holds fewer than ``min_requests`` calls (20), so a client that calls now and
then sees every failure as the server sent it (a first call refused makes p 1/2 otherwise).

``benchmarks/openloop.cc`` (the C++ load generator) implements the same rule with the same
window, so overload.py can measure it at rates a Python client cannot offer.
"""

from __future__ import annotations

import random
import threading
import time

import grpc


# Answers that say the server had no capacity for the call: refused for overload
# (RESOURCE_EXHAUSTED; CANCELLED is how gRPC's core ends a call refused before it was taken) or
# not answered in time (DEADLINE_EXCEEDED). Everything else is an accept, errors in the request
# included (the server had the capacity to answer), and so is UNAVAILABLE: a server restarting or
# draining is not overloaded, its calls fail fast, and the retry policy sends them elsewhere;
# refusing them here would only hide the true status.
NOT_ACCEPTED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED})


class Throttled(grpc.RpcError):
    """A call the client refused itself (``AdaptiveThrottle``): RESOURCE_EXHAUSTED, never sent."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return (f"throttled by the client: the server accepted too few recent calls "
                f"(this call refused with probability {self.p:.2f})")

    def __str__(self) -> str:
        return f"RESOURCE_EXHAUSTED: {self.details()}"


class AdaptiveThrottle:
    """The SRE book's client-side throttle over a trailing window of ``window_s`` seconds, kept as
    one-second buckets (the window slides by whole seconds). ``k`` >= 1: how many times what the
    server accepts a client keeps sending (2: the book's; larger wastes more of the server's CPU
    on refusals, smaller refuses locally calls the server could have taken).

    Use: ``throttle.check()`` before a call (it raises ``Throttled`` for a call refused here;
    ``allow()`` is the same as a bool), then ``throttle.ended(error)`` when the call ends (None
    when it answered). Thread-safe: a sync client's threads share one."""

    def __init__(self, k: float = 2.0, window_s: int = 10, min_requests: int = 20, *, clock=time.monotonic,
                 rng=None):
        if not k >= 1.0:
            raise ValueError(f"throttle k must be >= 1 (the multiple of accepted calls a client sends), got {k}")
        if not (isinstance(window_s, int) and window_s >= 1):
            raise ValueError(f"throttle window_s must be a whole number of seconds >= 1, got {window_s!r}")
        self.k, self.window_s, self.min_requests = float(k), window_s, min_requests
        self.clock, self.rng = clock, rng or random.Random()
        self._requests = [0] * window_s  # per one-second bucket, second % window_s
        self._accepts = [0] * window_s
        self._second = None  # the second the buckets were last brought up to
        self.last_p = 0.0  # the refusal probability the last ``allow()`` drew against
        self._lock = threading.Lock()

    def _roll(self) -> int:
        """Bring the buckets up to now (zeroing the seconds that passed); now's bucket index."""
        now = int(self.clock())
        if self._second is None or now - self._second >= self.window_s:
            self._requests, self._accepts = [0] * self.window_s, [0] * self.window_s
        else:
            for s in range(self._second + 1, now + 1):
                self._requests[s % self.window_s] = self._accepts[s % self.window_s] = 0
        self._second = now
        return now % self.window_s

    def probability(self) -> float:
        """The chance that the next call is refused locally, from the window's counts."""
        with self._lock:
            return self._probability()

    def _probability(self) -> float:
        self._roll()
        requests, accepts = sum(self._requests), sum(self._accepts)
        if requests < self.min_requests:
            return 0.0
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def allow(self) -> bool:
        """Whether to send the next call (False: it is refused here, and counted as asked for)."""
        with self._lock:
            p = self._probability()
            self.last_p = p
            if p > 0.0 and self.rng.random() < p:
                self._requests[self._roll()] += 1
                return False
            return True

    def record(self, accepted: bool) -> None:
        """Count a sent call when it ends: asked for, and ``accepted`` unless its status is in
        ``NOT_ACCEPTED``. A sent call counts when it ends, not when it starts: counted at the
        start, a burst of calls in flight would read as calls not accepted and refuse itself."""
        with self._lock:
            b = self._roll()
            self._requests[b] += 1
            self._accepts[b] += bool(accepted)

    def check(self) -> None:
        """``allow()``, raising ``Throttled`` (a ``grpc.RpcError``, RESOURCE_EXHAUSTED) when refused."""
        if not self.allow():
            raise Throttled(self.last_p)

    def ended(self, error: BaseException | None) -> None:
        """Record a sent call's end from the exception it raised (None: it answered)."""
        code = error.code() if isinstance(error, grpc.RpcError) and hasattr(error, "code") else None
        self.record(code not in NOT_ACCEPTED)
