import numpy as np
import pandas as pd
import pytest

from jaxrec.cli import main
from jaxrec.data import load_dataset, read_interactions
from jaxrec.errors import DataError


def test_sasrec_pairs(write):
    p = write("d.txt", "1 10\n1 11\n2 10\n\n2 12\n2 11\n")
    inter, fmt = read_interactions(p)
    assert fmt == "sasrec"
    assert inter.user.tolist() == [1, 1, 2, 2, 2]
    assert inter.item.tolist() == [10, 11, 10, 12, 11]
    d = load_dataset(str(p))
    assert d.num_users == 2 and d.num_items == 3 and d.num_interactions == 5
    assert d.catalog.external(d.sequence(1)) == ["10", "12", "11"]  # file order kept


def test_user_lines(write):
    p = write("Beauty.txt", "1 5 6 7\n2 6 8\n3 9 5 6 7 8\n")
    inter, fmt = read_interactions(p)
    assert fmt == "user-lines"
    assert inter.user.tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3, 3]
    assert inter.item.tolist() == [5, 6, 7, 6, 8, 9, 5, 6, 7, 8]


def test_ml100k(write):
    p = write("u.data", "1\t20\t4\t100\n1\t10\t5\t50\n2\t10\t3\t70\n")
    d = load_dataset(str(p))
    assert d.catalog.external(d.sequence(0)) == ["10", "20"]  # sorted by time
    assert d.times.tolist() == [50, 100, 70]


def test_ml_dat_with_movies(write):
    p = write("ml/ratings.dat", "1::2::5::300\n1::1::3::200\n2::1::4::100\n")
    write("ml/movies.dat", "1::Toy Story (1995)::Animation|Comedy\n2::Caf\xe9 (1999)::Drama\n"
          .encode("latin-1"))
    d = load_dataset(str(p.parent))  # a directory finds ratings.dat
    assert d.catalog.external(d.sequence(0)) == ["1", "2"]
    assert d.catalog.title(2) == "Caf\xe9 (1999)"
    assert d.catalog.feature_values("genres", 1) == ["Animation", "Comedy"]
    d4 = load_dataset(str(p), min_rating=4)
    assert d4.num_interactions == 2
    assert d4.reports[0].interactions_removed == 1


def test_ml_csv(write):
    p = write("ratings.csv", "userId,movieId,rating,timestamp\n1,3,4.5,20\n1,4,2.0,10\n")
    write("movies.csv", 'movieId,title,genres\n3,"Heat, The (1995)",Action|Crime\n4,X,(no genres listed)\n')
    inter, fmt = read_interactions(p)
    assert fmt == "ml-csv"
    d = load_dataset(str(p))
    assert d.catalog.external(d.sequence(0)) == ["4", "3"]
    assert d.catalog.title(1) == "Heat, The (1995)"  # index 1 is movieId "3"
    assert d.catalog.feature_values("genres", 2) == []


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_generic_columns(tmp_path, kind):
    df = pd.DataFrame({"uid": ["a", "a", "b"], "sku": ["x", "y", "x"], "ts": [2, 1, 5]})
    p = tmp_path / f"ev.{kind}"
    if kind == "parquet":
        df.to_parquet(p)
    else:
        df.to_csv(p, sep="," if kind == "csv" else "\t", index=False)
    d = load_dataset(str(p), user_col="uid", item_col="sku", time_col="ts")
    assert d.catalog.external(d.sequence(0)) == ["y", "x"]
    assert d.user_ids.tolist() == ["a", "b"]


def test_generic_missing_column(write):
    p = write("ev.csv", "user_id,foo\n1,2\n")
    with pytest.raises(DataError, match="no item column"):
        load_dataset(str(p))
    with pytest.raises(DataError, match="no user column 'who'"):
        load_dataset(str(p), user_col="who")


@pytest.mark.parametrize("content,fmt,lineno,why", [
    ("1 2\n1 3\n1 x\n", None, 3, "not an integer"),
    ("1 2\n1 3 4\n", "sasrec", 2, "expected 2 fields"),
    ("1 2\n1\n", "sasrec", 2, "expected 2 fields"),
    ("1 2 3\n2 4 b5\n", "user-lines", 2, "not an integer"),
])
def test_malformed_line_names_file_line_and_content(write, content, fmt, lineno, why):
    p = write("bad.txt", content)
    with pytest.raises(DataError) as e:
        read_interactions(p, fmt)
    msg = str(e.value)
    assert f"{p}:{lineno}:" in msg and why in msg
    assert repr(content.splitlines()[lineno - 1]) in msg


def test_ml_dat_bad_line(write):
    p = write("ratings.dat", "1::2::5::300\n1::oops::3::200\n")
    with pytest.raises(DataError, match=r"ratings.dat:2:.*'1::oops::3::200'"):
        read_interactions(p)


def test_empty_and_unknown(write, tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_interactions(write("e.txt", ""))
    with pytest.raises(DataError, match="empty"):
        read_interactions(write("e2.txt", "\n\n"))
    with pytest.raises(DataError, match="unknown format 'xml'"):
        read_interactions(write("a.txt", "1 2\n"), "xml")
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="cannot detect"):
        read_interactions(write("w.txt", "hello\n"))


def test_cli_bad_input_is_one_line_exit_2(write, capsys):
    p = write("bad.txt", "1 2\n1 z\n")
    assert main(["data", "stats", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and ":2:" in err


def test_no_silent_loss(write):
    """Every line of a valid file becomes an interaction."""
    rng = np.random.default_rng(0)
    u = np.sort(rng.integers(1, 50, 1000))
    i = rng.integers(1, 300, 1000)
    p = write("big.txt", "".join(f"{a} {b}\n" for a, b in zip(u, i)))
    assert load_dataset(str(p)).num_interactions == 1000
