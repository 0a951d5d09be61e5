"""Items added at serve time (AddItems) and catalog items never trained on, against the live server."""

import grpc
import numpy as np
import pytest

from jaxrec.train import Config, train
from jaxrec_server.client import Client
from jaxrec_server.main import ServeConfig, ThreadedServer

SERVE = dict(max_batch_size=8, length_buckets=[16, 50], k_buckets=[10, 100], max_delay_ms=1.0, store="none")


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("newitems") / "run"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=2, seed=5,
                 model_args={"features": ["topic"]}), d, progress=False)
    return d


def test_add_items_are_recommendable_at_once_without_compiling(feature_run):
    srv = ThreadedServer(ServeConfig(str(feature_run), port=0, new_item_slots=3, **SERVE))
    try:
        engine = srv.srv.state.engine
        topics = engine.catalog.features["topic"]["vocab"]
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            info = c.model_info()
            assert (info.new_item_slots, info.catalog_size) == (3, 100)
            c.recommend(["1", "2", "3"], k=10, allow=["5", "6"])  # allow lists compile on first use, new items or not
            compiled = engine.compile_count()
            r = c.add_items([{"item_id": "new-1", "title": "A new one", "features": {"topic": [topics[0], "nope"]}},
                             {"item_id": "new-2", "features": {"topic": [topics[0]]}}])
            assert (r.added, r.catalog_size, r.slots_left) == (2, 102, 1)
            assert list(r.unknown_values) == ["new-1: topic=nope"]
            only = c.recommend(["1", "2", "3"], k=10, allow=["new-1", "new-2"])
            assert [it.item_id for it in only.items] == ["new-1", "new-2"] or \
                [it.item_id for it in only.items] == ["new-2", "new-1"]
            assert only.items[0].score == pytest.approx(only.items[1].score)  # same features, same row
            assert next(it.title for it in only.items if it.item_id == "new-1") == "A new one"
            wide = c.recommend(["1", "2"], k=100)  # the whole catalog: new items are in it, spare rows are not
            ids = [it.item_id for it in wide.items]
            assert {"new-1", "new-2"} <= set(ids) and len(ids) == 100  # all 102 but the 2 history items
            seen = c.recommend(["new-1", "5"], k=100)  # a history with a new item: read, and excluded
            assert "new-1" not in {it.item_id for it in seen.items} and seen.unknown_history_items == 0
            s = c.score(["1"], ["new-2", "7"])
            assert [it.item_id for it in s.items] == ["new-2", "7"] and np.isfinite(s.items[0].score)
            div = c.recommend(["1", "2"], k=10, diversity=0.9, diversity_by="topic")
            assert len(div.items) == 10
            assert engine.compile_count() == compiled  # nothing compiled for the new rows
            for items, needle in (([{"item_id": "new-1", "features": {"topic": [topics[1]]}}], "already in the catalog"),
                                  ([{"item_id": "x", "features": {"topic": ["nope"]}}], "nothing to represent it by"),
                                  ([{"item_id": f"y{i}", "features": {"topic": [topics[1]]}} for i in range(2)],
                                   "1 spare row(s) left"),
                                  ([{"item_id": " bad", "features": {"topic": [topics[1]]}}], "item_id")):
                with pytest.raises(grpc.RpcError) as e:
                    c.add_items(items)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details()
            assert c.model_info().new_item_slots == 1
        from jaxrec.cli import main
        assert main(["query", "--target", f"127.0.0.1:{srv.port}", "--add-item", "new-3", "--title", "Third",
                     "--feature", f"topic={topics[3]},zzz"]) == 0
        assert engine.catalog.title(engine.catalog.index_of(["new-3"])[0]) == "Third" and engine.new_item_slots == 0
    finally:
        srv.stop()


def test_a_server_without_slots_refuses_add_items(feature_run):
    srv = ThreadedServer(ServeConfig(str(feature_run), port=0, **(SERVE | dict(diversity_pool=0))))
    try:
        with Client(f"127.0.0.1:{srv.port}", timeout=20, retries=0) as c:
            with pytest.raises(grpc.RpcError) as e:
                c.add_items([{"item_id": "n", "features": {"topic": ["a"]}}])
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--new-item-slots" in e.value.details()
    finally:
        srv.stop()


def test_items_added_join_the_approximate_index(feature_run):
    from jaxrec.inference import Recommender
    from jaxrec_server.engine import Engine, Query
    engine = Engine(Recommender.from_checkpoint(feature_run), max_batch_size=4, length_buckets=[16],
                    k_buckets=[100], diversity_pool=0, new_item_slots=2, index="Flat")
    topics = engine.catalog.features["topic"]["vocab"]
    engine.add_items([("fresh", "", {"topic": [topics[0]]})])
    assert engine.index.size == 101
    new = engine.catalog.index_of(["fresh"])[0]
    got = engine.run([Query(np.array([1, 2], np.int32), 99)])[0].items  # every item but the 2 seen
    assert new in got.tolist() and len(got) == 99
