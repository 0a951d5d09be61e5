import numpy as np
import pytest

from jaxrec.data import Interactions, ItemCatalog, build_sequences
from jaxrec.data.preprocess import chronological, dedupe_consecutive, k_core


def inter(u, i, t=None, r=None):
    return Interactions(np.array(u), np.array(i), None if t is None else np.array(t),
                        None if r is None else np.array(r, np.float32))


def test_stable_sort_ties_keep_file_order():
    x = chronological(inter([2, 1, 1, 1, 2], [5, 7, 6, 8, 9], [1, 3, 3, 2, 0]))
    assert x.user.tolist() == [1, 1, 1, 2, 2]
    assert x.item.tolist() == [8, 7, 6, 9, 5]  # 7 before 6: equal times keep file order


def test_k_core_is_iterative_and_reported():
    # items 2 and 3 have one event each -> removed; then user 2 has none left
    x = inter([1, 1, 1, 2, 2, 3, 3, 3], [1, 4, 5, 2, 3, 1, 4, 5])
    out, rep = k_core(x, 2)
    assert sorted(set(out.user.tolist())) == [1, 3]
    assert rep.interactions_removed == 2 and rep.users_removed == 1 and rep.items_removed == 2
    assert "rounds" in rep.detail


def test_dedupe_consecutive():
    out, rep = dedupe_consecutive(inter([1, 1, 1, 2, 2], [5, 5, 6, 6, 6]))
    assert out.item.tolist() == [5, 6, 6]
    assert rep.interactions_removed == 2


def test_remap_contiguous_and_catalog_roundtrip(tmp_path):
    d = build_sequences(inter([7, 7, 3], ["b", "a", "c"]))
    assert d.catalog.ids.tolist() == ["", "a", "b", "c"]
    assert d.items.min() == 1 and d.items.max() == 3
    assert d.user_ids.tolist() == [3, 7]
    assert d.catalog.external(d.sequence(1)) == ["b", "a"]
    p = tmp_path / "cat.json"
    d.catalog.save(p)
    c2 = ItemCatalog.load(p)
    assert c2.ids.tolist() == d.catalog.ids.tolist()
    assert c2.index_of(["c", "zzz"]).tolist() == [3, 0]


def test_integer_ids_name_the_catalog_ids_written_as_they_are():
    """``index_of_ints(x)`` is ``index_of(str(x))`` for every int64, on catalogs of any ids, and
    follows items added at serve time."""
    cat = ItemCatalog(np.array(["", "1", "07", "x", "-3", "42", "9223372036854775807", "1_0"], dtype=object))
    asked = [1, 7, 42, -3, 99, 0, 2**63 - 1, 10, -(2**63)]
    assert cat.index_of_ints(asked).tolist() == cat.index_of([str(x) for x in asked]).tolist() \
        == [1, 0, 5, 4, 0, 0, 6, 0, 0]
    assert cat.index_of_ints([]).tolist() == []
    assert cat.add(["100", "y"], ["", ""], {}) == 8
    assert cat.index_of_ints([100, 1, 5]).tolist() == [8, 1, 0]
    assert ItemCatalog(np.array(["", "a"], dtype=object)).index_of_ints([1, 2]).tolist() == [0, 0]


def test_threshold_needs_ratings():
    from jaxrec.errors import DataError
    with pytest.raises(DataError, match="rating"):
        build_sequences(inter([1], [1]), min_rating=4)


def test_filters_removing_everything_is_an_error():
    from jaxrec.errors import DataError
    with pytest.raises(DataError, match="removed every"):
        build_sequences(inter([1, 2], [1, 2]), k=5)
