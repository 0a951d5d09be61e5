"""The approximate item index (jaxrec.ann) against brute force, alone and behind the server."""

import numpy as np
import pytest

from jaxrec.ann import ItemIndex, default_spec, recall_at_k
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.train import Config, train
from jaxrec_server.engine import Engine, Query


def brute(table, users, k, removed):
    """The exact top-k by inner product over rows 1.., ``removed`` rows left out: numpy, slowly."""
    out = []
    for u, r in zip(users, removed):
        s = table @ u
        s[0] = -np.inf
        s[list(r)] = -np.inf
        out.append(np.argsort(-s, kind="stable")[:k])
    return np.array(out)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2001, 16)).astype(np.float32)  # 2,000 items + padding row 0


def test_reading_every_cell_is_exact_and_exclusions_hold(table):
    users = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    removed = [np.array([], np.int32), np.array([5, 17], np.int32)] + [
        brute(table, users[i:i + 1], 3, [[]])[0] for i in range(2, 6)]  # each row's own top 3 removed
    for spec, nprobe in (("Flat", 1), ("IVF16,Flat", 16)):
        idx = ItemIndex(table, spec, nprobe)
        vals, items = idx.search(users, 10, removed)
        assert np.array_equal(items, brute(table, users, 10, removed)), spec
        assert np.allclose(vals, np.take_along_axis(users @ table.T, items.astype(int), 1), atol=1e-4)
        assert not np.isin(0, items) and all(not np.isin(r, it).any() for r, it in zip(removed, items))


def test_fewer_cells_lower_recall_measured_against_exact(table):
    users = np.random.default_rng(2).normal(size=(64, 16)).astype(np.float32)
    exact = brute(table, users, 20, [[]] * 64)
    got = {p: recall_at_k(ItemIndex(table, "IVF32,Flat", p).search(users, 20)[1], exact) for p in (1, 8, 32)}
    assert got[32] == 1.0 and got[1] < got[8] <= 1.0


def test_recall_at_k_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 0]]), np.array([[3, 9, 1], [4, 5, 6]])) == pytest.approx(
        (2 / 3 + 2 / 3) / 2)
    assert recall_at_k(np.array([[1, 0]]), np.array([[1, 0]])) == 1.0  # padding is not an item


def test_added_rows_are_found_and_short_answers_are_padded(table):
    idx = ItemIndex(table[:101], "IVF2,Flat", 1)
    idx.add(101, 100 * np.ones((1, 16), np.float32))  # a new item every positive user ranks first
    vals, items = idx.search(np.ones((1, 16), np.float32), 5)
    assert items[0, 0] == 101 and idx.size == 101
    vals, items = ItemIndex(table[:4], "Flat").search(np.ones((1, 16), np.float32), 5)
    assert items[0, 3:].tolist() == [0, 0] and np.isneginf(vals[0, 3:]).all()  # 3 items, k = 5


def test_default_spec_and_bad_specs():
    assert default_spec(1_000_000) == "IVF4096,Flat" and default_spec(10_000_000) == "IVF16384,Flat"
    assert default_spec(100) == "IVF2,Flat"  # at least 39 training points a cell
    with pytest.raises(UserError, match="not a faiss index factory string"):
        ItemIndex(np.ones((10, 4), np.float32), "NoSuchIndex")
    with pytest.raises(UserError, match="nprobe"):
        ItemIndex(np.ones((100, 4), np.float32), "IVF2,Flat", 0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ann") / "run"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=1, seed=3), d,
          progress=False)
    return d


def test_an_engine_on_an_index_that_reads_every_cell_answers_as_exact(run):
    kw = dict(max_batch_size=4, length_buckets=[16], k_buckets=[10, 50], diversity_pool=50)
    exact = Engine(Recommender.from_checkpoint(run), **kw)
    ann = Engine(Recommender.from_checkpoint(run), index="IVF2,Flat", index_nprobe=2, **kw)
    assert ann.index.describe() == "IVF2,Flat nprobe=2" and ann.index.size == 100
    ann.warm_up()
    compiled = ann.compile_count()
    qs = [Query(np.array([1, 2, 3], np.int32), 10, explain=True),
          Query(np.array([5, 6], np.int32), 10, deny=np.array([7, 8], np.int32)),
          Query(np.array([9], np.int32), 50), Query(np.array([], np.int32), 10),  # cold start: popular
          Query(np.array([1, 4], np.int32), 10, diversity=0.5)]
    for a, b in zip(exact.run(qs), ann.run(qs)):
        assert np.array_equal(a.items, b.items) and np.allclose(a.scores, b.scores, atol=1e-5)
        assert (a.because is None) == (b.because is None)
    assert ann.compile_count() == compiled  # the index path compiled everything it runs in warm_up
    allow = Query(np.array([1, 2], np.int32), 10, allow=np.array([3, 4, 5], np.int32))  # served exactly
    assert sorted(ann.run([allow])[0].items.tolist()) == [3, 4, 5]


def test_an_index_serves_retrieval_alone(run):
    rec = Recommender.from_checkpoint(run)
    with pytest.raises(UserError, match="retrieval model alone"):
        Engine(rec, ranker=rec, index="auto")


def test_a_server_on_an_index_says_so_and_answers(run):
    from jaxrec_server.client import Client
    from jaxrec_server.main import ServeConfig, ThreadedServer
    srv = ThreadedServer(ServeConfig(str(run), port=0, max_batch_size=4, length_buckets=[16], k_buckets=[10],
                                     store="none", diversity_pool=0, index="auto"))
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            assert c.model_info().index == "IVF2,Flat nprobe=2"  # nprobe capped at the cells there are
            r = c.recommend(["1", "2", "3"], k=10)
            ids = [it.item_id for it in r.items]
            assert len(ids) == 10 and not {"1", "2", "3"} & set(ids)
    finally:
        srv.stop()
