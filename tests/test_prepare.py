"""``jaxrec data prepare``: streaming an event file into memory-mapped CSR arrays gives the
same sequences as loading it in memory, in small partitions and blocks too."""

import numpy as np
import pandas as pd
import pytest

from jaxrec.data import load_dataset
from jaxrec.data.prepare import load_prepared, prepare
from jaxrec.errors import DataError


def _events(n=5000, users=300, items=120, seed=0, string_ids=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": rng.integers(1, users, n), "item_id": rng.integers(5, 5 + items, n),
                       "timestamp": rng.integers(0, 200, n)})  # many equal times: ties keep file order
    if string_ids:
        df["user_id"] = "u" + df["user_id"].astype(str)
        df["item_id"] = "it" + df["item_id"].astype(str)
    return df


@pytest.mark.parametrize("fmt,string_ids", [("csv", False), ("parquet", True)])
def test_prepared_equals_loaded_in_memory(tmp_path, fmt, string_ids):
    df = _events(string_ids=string_ids)
    src = tmp_path / f"events.{fmt}"
    df.to_csv(src, index=False) if fmt == "csv" else df.to_parquet(src, row_group_size=700)
    rec = prepare(src, tmp_path / "prep", block_rows=600, partition_events=1000, progress=False)
    assert rec["events"] == len(df) and rec["partitions"] == 5 and rec["removed"]["interactions"] == 0
    got, want = load_prepared(tmp_path / "prep"), load_dataset(str(src))
    assert isinstance(got.items, np.memmap)  # read from disk as needed
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.times, want.times)
    assert list(got.user_ids.astype(str)) == list(np.asarray(want.user_ids).astype(str))
    assert list(got.catalog.ids) == list(want.catalog.ids)
    again = load_dataset(str(tmp_path / "prep"))  # the one entry point knows prepared directories
    np.testing.assert_array_equal(again.items, want.items)


def test_a_missing_id_names_its_line(tmp_path):
    src = tmp_path / "events.csv"
    src.write_text("user_id,item_id,timestamp\n1,2,3\n1,,4\n")
    with pytest.raises(DataError, match=r"line 3: column 'item_id' is empty"):
        prepare(src, tmp_path / "prep", progress=False)
    with pytest.raises(DataError, match="no user column"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        prepare(tmp_path / "bad.csv", tmp_path / "prep2", progress=False)


def test_training_reads_a_prepared_directory(tmp_path):
    from jaxrec.train import Config, train

    df = _events(n=3000, users=100, items=60, seed=4)
    src = tmp_path / "events.parquet"
    df.to_parquet(src)
    prepare(src, tmp_path / "prep", progress=False)
    res = train(Config(model="sasrec/small", data=str(tmp_path / "prep"), loss="ce", batch_size=32, epochs=1),
                tmp_path / "run", progress=False)
    assert "full ranking over all 60 items" in res["protocol"]
