"""Property-based fuzzing (hypothesis): loaders, request validation and config overrides.

Each property is the contract a user relies on: bad input gets a clear error of the right
kind (a ``DataError`` naming the file and line; INVALID_ARGUMENT; a one-line ``UserError``),
never a traceback, a crash or a silently wrong answer.
"""

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec.data.loaders import read_interactions
from jaxrec.errors import DataError, UserError
from jaxrec.train import Config
from jaxrec.v1 import recommender_pb2 as pb

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- loaders

@FAST
@given(st.binary(max_size=400), st.sampled_from([None, "sasrec", "user-lines", "ml-dat", "ml-100k", "csv"]))
def test_random_bytes_load_or_raise_a_data_error_naming_the_file(tmp_path_factory, data, fmt):
    p = tmp_path_factory.mktemp("fz") / "data.txt"
    p.write_bytes(data)
    try:
        inter, _ = read_interactions(p, fmt)
    except DataError as e:
        assert str(p) in str(e) or "format" in str(e), str(e)
        return
    assert len(inter.user) == len(inter.item) > 0


def _bad_token():
    return st.one_of(st.text(alphabet="abcxyz!?.-", min_size=1, max_size=5), st.just("1.5"), st.just("--"))


@FAST
@given(st.integers(5, 40), st.data())
def test_one_bad_line_in_a_sasrec_file_is_named_by_its_number(tmp_path_factory, n, data):
    rng = np.random.default_rng(n)
    lines = [f"{rng.integers(1, 20)} {rng.integers(1, 50)}" for _ in range(n)]
    j = data.draw(st.integers(0, n - 1))
    kind = data.draw(st.sampled_from(["token", "extra", "missing"]))
    if kind == "token":
        lines[j] = f"{data.draw(_bad_token())} {rng.integers(1, 50)}"
    elif kind == "extra":
        lines[j] = lines[j] + " 7 8"
    else:
        lines[j] = lines[j].split()[0]
    p = tmp_path_factory.mktemp("fz") / "pairs.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_interactions(p, "sasrec")
    assert f"{p}:{j + 1}:" in str(e.value), str(e.value)


@FAST
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 60)), min_size=1, max_size=80))
def test_a_valid_sasrec_file_loses_nothing(tmp_path_factory, pairs):
    p = tmp_path_factory.mktemp("fz") / "ok.txt"
    p.write_text("".join(f"{u} {i}\n" for u, i in pairs))
    inter, _ = read_interactions(p, "sasrec")
    assert list(zip(inter.user.tolist(), inter.item.tolist())) == pairs


# ---------------------------------------------------------------- config overrides

KEYS = ["lr", "epochs", "batch_size", "max_minutes", "schedule", "model_args.dim", "model_args.dropout",
        "retrieval.gbce_t", "length_buckets", "ranking.residual", "nonsense", "model_args.x"]


@FAST
@given(st.sampled_from(KEYS), st.text(max_size=12))
def test_any_override_is_accepted_typed_or_refused_in_one_line(key, value):
    try:
        cfg = Config(model="sasrec/small").with_overrides([f"{key}={value}"])
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg and (key.split(".")[-1] in msg or "key=value" in msg), msg
        return
    assert isinstance(cfg.lr, float) and cfg.lr > 0 and isinstance(cfg.batch_size, int)
    assert cfg.epochs is None or cfg.epochs >= 1


# ---------------------------------------------------------------- request validation (live server)

@pytest.fixture(scope="module")
def live(tiny_run):
    from jaxrec_server.client import Client
    from jaxrec_server.main import ServeConfig, ThreadedServer

    srv = ThreadedServer(ServeConfig(str(tiny_run), port=0, max_batch_size=8, length_buckets=[50], k_buckets=[10, 100],
                                     diversity_pool=0))
    with Client(f"127.0.0.1:{srv.port}", retries=0, timeout=20, throttle_k=None) as c:
        yield c
    srv.stop()


ids = st.one_of(st.integers(-3, 120).map(str), st.text(max_size=6), st.just(""), st.just("x" * 300))


def _check_answer(req, r):
    """An OK answer is valid: at most k, sorted, no duplicates, no padding, nothing excluded."""
    got = [it.item_id for it in r.items]
    scores = [it.score for it in r.items]
    assert len(got) == len(set(got)) <= req.k and scores == sorted(scores, reverse=True)
    assert "0" not in got and "" not in got  # never the padding item
    if req.exclude_seen:
        assert not set(got) & (set(req.history) | {str(x) for x in req.history_int_ids})
    if req.allow:
        assert set(got) <= set(req.allow)
    assert not set(got) & set(req.deny)


int_ids = st.one_of(st.integers(-3, 120), st.integers(-(2**63), 2**63 - 1))
# the history as strings, as integers (history_int_ids), or both (refused)
histories = st.one_of(st.fixed_dictionaries({"history": st.lists(ids, max_size=30)}),
                      st.fixed_dictionaries({"history_int_ids": st.lists(int_ids, max_size=30)}),
                      st.fixed_dictionaries({"history": st.lists(ids, max_size=3),
                                             "history_int_ids": st.lists(int_ids, max_size=3)}))
requests = st.builds(lambda h, **kw: pb.RecommendRequest(**h, **kw), histories, k=st.integers(-5, 200),
                     exclude_seen=st.booleans(), allow=st.lists(ids, max_size=8), deny=st.lists(ids, max_size=8))
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests)
def test_random_requests_get_a_valid_answer_or_invalid_argument(live, req):
    try:
        r = live.stub.Recommend(req, timeout=20)
    except grpc.RpcError as e:
        assert e.code() in REFUSED, e
        return
    _check_answer(req, r)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(requests, max_size=12))
def test_random_batches_answer_every_entry_in_place(live, reqs):
    """A RecommendBatch of random entries: one result each, in order, each OK and valid or refused
    with the code and message the same request gets alone."""
    results = live.recommend_batch(reqs)
    assert len(results) == len(reqs)
    for req, res in zip(reqs, results):
        if res.code:
            assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == res.code and res.error
            with pytest.raises(grpc.RpcError) as e:
                live.stub.Recommend(req, timeout=20)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == res.error
        else:
            _check_answer(req, res.response)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ids, max_size=20), st.lists(ids, max_size=20))
def test_random_score_requests_answer_in_request_order_or_invalid_argument(live, history, candidates):
    try:
        r = live.stub.Score(pb.ScoreRequest(history=history, candidates=candidates), timeout=20)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        return
    known = [c for c in candidates if c not in set(r.unknown_candidates)]
    assert [it.item_id for it in r.items] == known
