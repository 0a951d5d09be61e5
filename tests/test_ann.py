"""The approximate item index (jaxrec.ann) against brute force, alone and behind the server."""

import numpy as np
import pytest

from jaxrec.ann import ItemIndex, ivf_spec, recall_at_k
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
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
    for spec, params in (("Flat", None), ("IVF16,Flat", "nprobe=16")):
        idx = ItemIndex(table, spec, params)
        vals, items = idx.search(users, 10, removed)
        assert np.array_equal(items, brute(table, users, 10, removed)), spec
        assert np.allclose(vals, np.take_along_axis(users @ table.T, items.astype(int), 1), atol=1e-4)
        assert not np.isin(0, items) and all(not np.isin(r, it).any() for r, it in zip(removed, items))


def test_a_narrower_search_lowers_recall_measured_against_exact(table):
    users = np.random.default_rng(2).normal(size=(64, 16)).astype(np.float32)
    exact = brute(table, users, 20, [[]] * 64)
    ivf = ItemIndex(table, "IVF32,Flat")
    assert ivf.describe() == "IVF32,Flat nprobe=32"  # the family's default: here every cell
    got = {}
    for p in (1, 8, 32):
        ivf.set_params(f"nprobe={p}")
        got[p] = recall_at_k(ivf.search(users, 20)[1], exact)
    assert got[32] == 1.0 and got[1] < got[8] <= 1.0
    graph = ItemIndex(table)  # the default: HNSW32, efSearch=128, in L2 over augmented rows
    assert graph.describe() == "HNSW32 efSearch=128" and graph.euclidean
    vals, items = graph.search(users, 20)
    assert recall_at_k(items, exact) > 0.95
    # the scores are inner products, recovered from the augmented distances
    np.testing.assert_allclose(vals, np.take_along_axis(users @ table.T, items.astype(int), 1), atol=1e-3)


def test_a_graph_finds_the_largest_inner_products_whatever_the_norms():
    """Rows of very different norms: the largest inner products belong to long rows, which a
    graph built on inner products reaches badly; the augmented L2 graph finds them."""
    rng = np.random.default_rng(5)
    t = rng.normal(size=(3001, 16)).astype(np.float32) * rng.uniform(0.1, 3.0, size=(3001, 1)).astype(np.float32)
    users = rng.normal(size=(128, 16)).astype(np.float32)
    exact = brute(t, users, 10, [[]] * 128)
    assert recall_at_k(ItemIndex(t, "HNSW32", "efSearch=64").search(users, 10)[1], exact) > 0.97


def test_recall_at_k_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 0]]), np.array([[3, 9, 1], [4, 5, 6]])) == pytest.approx(
        (2 / 3 + 2 / 3) / 2)
    assert recall_at_k(np.array([[1, 0]]), np.array([[1, 0]])) == 1.0  # padding is not an item


def test_added_rows_are_found_and_short_answers_are_padded(table):
    idx = ItemIndex(table[:101], "IVF2,Flat", "nprobe=1")
    idx.add(101, 100 * np.ones((1, 16), np.float32))  # a new item every positive user ranks first
    vals, items = idx.search(np.ones((1, 16), np.float32), 5)
    assert items[0, 0] == 101 and idx.size == 101
    vals, items = ItemIndex(table[:4], "Flat").search(np.ones((1, 16), np.float32), 5)
    assert items[0, 3:].tolist() == [0, 0] and np.isneginf(vals[0, 3:]).all()  # 3 items, k = 5


def test_ivf_spec_and_bad_specs():
    assert ivf_spec(1_000_000) == "IVF4096,Flat" and ivf_spec(10_000_000) == "IVF16384,Flat"
    assert ivf_spec(100) == "IVF2,Flat"  # at least 39 training points a cell
    assert ItemIndex(np.ones((100, 4), np.float32), "ivf").spec == "IVF2,Flat"
    with pytest.raises(UserError, match="not a faiss index factory string"):
        ItemIndex(np.ones((10, 4), np.float32), "NoSuchIndex")
    with pytest.raises(UserError, match="cannot set 'efSearch=8'"):
        ItemIndex(np.ones((100, 4), np.float32), "IVF2,Flat", "efSearch=8")


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_an_engine_on_an_index_that_reads_every_cell_answers_as_exact(run):
    kw = dict(max_batch_size=4, length_buckets=[16], k_buckets=[10, 50], diversity_pool=50)
    exact = Engine(Recommender.from_checkpoint(run), **kw)
    ann = Engine(Recommender.from_checkpoint(run), index="IVF2,Flat", index_params="nprobe=2", **kw)
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
                                     store="none", diversity_pool=0, index="ivf"))
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            assert c.model_info().index == "IVF2,Flat nprobe=32"
            r = c.recommend(["1", "2", "3"], k=10)
            ids = [it.item_id for it in r.items]
            assert len(ids) == 10 and not {"1", "2", "3"} & set(ids)
    finally:
        srv.stop()


def test_a_cached_index_is_read_back_and_a_bad_cache_file_rebuilt(table, tmp_path):
    users = np.random.default_rng(4).normal(size=(8, 16)).astype(np.float32)
    first = ItemIndex(table, "HNSW16", cache=tmp_path)
    files = list(tmp_path.glob("*.faiss"))
    assert first.loaded_from is None and len(files) == 1
    again = ItemIndex(table, "HNSW16", cache=tmp_path)
    assert again.loaded_from == files[0] and again.describe() == first.describe()
    assert np.array_equal(again.search(users, 10)[1], first.search(users, 10)[1])
    other = ItemIndex(table + 1, "HNSW16", cache=tmp_path)  # other rows: another key
    assert other.loaded_from is None and len(list(tmp_path.glob("*.faiss"))) == 2
    files[0].write_bytes(b"not an index")
    rebuilt = ItemIndex(table, "HNSW16", cache=tmp_path)
    assert rebuilt.loaded_from is None  # (a graph built on several threads may differ in detail)
    assert recall_at_k(rebuilt.search(users, 10)[1], first.search(users, 10)[1]) > 0.9
    assert ItemIndex(table, "HNSW16", cache=tmp_path).loaded_from == files[0]  # written over
