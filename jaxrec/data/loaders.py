"""Readers for the file formats recommender research uses, all vectorised.

Formats (``--format``):

===============  ==============================================================  ===========
name             layout                                                          example
===============  ==============================================================  ===========
``sasrec``       ``user item`` per line, chronological per user                  ml-1m.txt
``user-lines``   ``user item item ...`` one line per user (S3-Rec/ICLRec/DuoRec)  Beauty.txt
``ml-100k``      ``user<TAB>item<TAB>rating<TAB>timestamp``                       u.data
``ml-dat``       ``user::item::rating::timestamp``                               ratings.dat
``ml-csv``       CSV with header ``userId,movieId,rating,timestamp``             ratings.csv
``csv``/``tsv``  generic delimited file with a header and named columns          events.csv
``parquet``      generic Parquet with named columns                              events.parquet
===============  ==============================================================  ===========

The fast path parses with pandas' C reader; only when that fails (or the result does not
have the expected shape) do we rescan the file line by line to report the first bad line
with its number and content. A format is never guessed silently into garbage: a line that
does not fit the detected or named format is an error that names the format and the line.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from jaxrec.data.features import categorical_feature
from jaxrec.data.types import Interactions, ItemCatalog
from jaxrec.errors import DataError, bad_line

FORMATS = ("sasrec", "user-lines", "ml-100k", "ml-dat", "ml-csv", "csv", "tsv", "parquet")

USER_COLUMNS = ("user_id", "userId", "user", "uid", "UserID")
ITEM_COLUMNS = ("item_id", "itemId", "movieId", "item", "iid", "MovieID")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")
RATING_COLUMNS = ("rating", "score")


# ---------------------------------------------------------------- format detection

def detect_format(path: Path) -> str:
    """Guess the format from the file name, then from its first lines."""
    name = path.name.lower()
    if name == "u.data":
        return "ml-100k"
    if name.endswith("ratings.dat"):
        return "ml-dat"
    if name == "ratings.csv":
        return "ml-csv"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    head = _head_lines(path, 1000)
    if not head:
        raise DataError(f"{path}: the file is empty")
    if all("::" in line for line in head):
        return "ml-dat"
    ntok = [len(line.split()) for line in head]
    if all("\t" in line for line in head) and all(n == 4 for n in ntok):
        return "ml-100k"
    if all(n == 2 for n in ntok):
        return "sasrec"
    if all(n >= 2 for n in ntok):
        return "user-lines"
    raise DataError(f"{path}: cannot detect the format from its first lines; "
                    f"pass --format (one of {', '.join(FORMATS)})")


def _head_lines(path: Path, n: int) -> list[str]:
    out = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                out.append(line)
                if len(out) >= n:
                    break
    return out


# ---------------------------------------------------------------- error location (slow path)

def _is_int(tok: str) -> bool:
    try:
        int(tok)
        return True
    except ValueError:
        return False


def _raise_first_bad_line(path: Path, fmt: str, check) -> None:
    """Rescan ``path`` and raise for the first line where ``check(line) -> str|None`` complains.

    Only called after the vectorised parse failed, so its Python loop never runs on good data.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            why = check(line)
            if why:
                raise bad_line(path, lineno, line, f"not a valid {fmt!r} line ({why})")
    raise DataError(f"{path}: could not be parsed as {fmt!r}")


def _check_int_tokens(n_exact: int | None, n_min: int = 1, sep: str | None = None):
    def check(line: str) -> str | None:
        toks = line.strip().split(sep)
        if n_exact is not None and len(toks) != n_exact:
            return f"expected {n_exact} fields, found {len(toks)}"
        if len(toks) < n_min:
            return f"expected at least {n_min} fields, found {len(toks)}"
        for t in toks[:2] if n_exact and n_exact > 2 else toks:
            if not _is_int(t.strip()):
                return f"id {t.strip()!r} is not an integer"
        return None
    return check


def _read_table(path: Path, fmt: str, data: bytes | None, sep: str, ncols: int, check) -> pd.DataFrame:
    """Parse a header-less delimited file with exactly ``ncols`` columns, or raise at the bad line."""
    src = io.BytesIO(data) if data is not None else path
    try:
        df = pd.read_csv(src, sep=sep, header=None, engine="c", dtype=str if ncols > 4 else None,
                         skip_blank_lines=True, comment=None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError):
        _raise_first_bad_line(path, fmt, check)
    if df.shape[1] != ncols or df.isna().to_numpy().any():
        _raise_first_bad_line(path, fmt, check)
    if not all(pd.api.types.is_integer_dtype(df[c]) for c in df.columns[:2]):
        _raise_first_bad_line(path, fmt, check)
    return df


# ---------------------------------------------------------------- readers

def read_sasrec(path: Path) -> Interactions:
    """``user item`` pairs, chronological per user. No times: file order is the order."""
    df = _read_table(path, "sasrec", None, r"\s+", 2, _check_int_tokens(2))
    return Interactions(df[0].to_numpy(np.int64), df[1].to_numpy(np.int64), source=str(path))


def read_user_lines(path: Path) -> Interactions:
    """``user item item ...`` one line per user; the items are in chronological order."""
    raw = path.read_bytes()
    lines = [ln.split() for ln in raw.splitlines()]
    lines = [t for t in lines if t]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    counts = np.fromiter((len(t) - 1 for t in lines), dtype=np.int64, count=len(lines))
    if (counts < 1).any():
        _raise_first_bad_line(path, "user-lines", _check_int_tokens(None, n_min=2))
    users = [t[0] for t in lines]
    items = [tok for t in lines for tok in t[1:]]
    try:
        u = np.array(users).astype(np.int64)
        it = np.array(items).astype(np.int64)
    except ValueError:
        _raise_first_bad_line(path, "user-lines", _check_int_tokens(None, n_min=2))
    return Interactions(np.repeat(u, counts), it, source=str(path))


def read_movielens(path: Path, fmt: str) -> Interactions:
    """MovieLens rating files: ml-100k ``u.data``, ml-1m/10m ``ratings.dat``, ml-20m+ ``ratings.csv``."""
    if fmt == "ml-csv":
        return read_generic(path, "csv", "userId", "movieId", "timestamp", "rating")
    if fmt == "ml-dat":
        data = path.read_bytes().replace(b"::", b"\t")
        df = _read_table(path, fmt, data, "\t", 4, _check_int_tokens(4, sep="::"))
    else:  # ml-100k
        df = _read_table(path, fmt, None, "\t", 4, _check_int_tokens(4, sep="\t"))
    if not pd.api.types.is_integer_dtype(df[3]):
        _raise_first_bad_line(path, fmt, _check_int_tokens(4, sep="::" if fmt == "ml-dat" else "\t"))
    return Interactions(df[0].to_numpy(np.int64), df[1].to_numpy(np.int64),
                        time=df[3].to_numpy(np.int64), rating=df[2].to_numpy(np.float32),
                        source=str(path))


def _pick_column(df: pd.DataFrame, path: Path, wanted: str | None, candidates, role: str,
                 required: bool) -> str | None:
    if wanted is not None:
        if wanted not in df.columns:
            raise DataError(f"{path}: no {role} column {wanted!r}; columns are {list(df.columns)}")
        return wanted
    for c in candidates:
        if c in df.columns:
            return c
    if required:
        raise DataError(f"{path}: no {role} column found (looked for {', '.join(candidates)}); "
                        f"columns are {list(df.columns)}; name it with --{role}-col")
    return None


def _id_column(df: pd.DataFrame, col: str, path: Path, row_offset: int) -> np.ndarray:
    s = df[col]
    missing = s.isna().to_numpy()
    if missing.any():
        r = int(np.argmax(missing))
        raise DataError(f"{path}: row {r + row_offset}: column {col!r} is empty")
    if pd.api.types.is_integer_dtype(s):
        return s.to_numpy(np.int64)
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy()
        frac = v != np.round(v)
        if frac.any():
            r = int(np.argmax(frac))
            raise DataError(f"{path}: row {r + row_offset}: column {col!r} value {v[r]!r} is not an id")
        return v.astype(np.int64)
    return s.astype(str).to_numpy(dtype=object)


def read_generic(path: Path, fmt: str, user_col=None, item_col=None, time_col=None,
                 rating_col=None) -> Interactions:
    """CSV/TSV (with a header) or Parquet with named columns; ids may be strings."""
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
            row_offset = 0  # rows are 0-based in Parquet
        else:
            df = pd.read_csv(path, sep="," if fmt in ("csv", "ml-csv") else "\t", engine="c")
            row_offset = 2  # 1-based line numbers, after the header line
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not a valid {fmt} file: {e}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as {fmt}: {e}") from None
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    ucol = _pick_column(df, path, user_col, USER_COLUMNS, "user", True)
    icol = _pick_column(df, path, item_col, ITEM_COLUMNS, "item", True)
    tcol = _pick_column(df, path, time_col, TIME_COLUMNS, "time", False)
    rcol = _pick_column(df, path, rating_col, RATING_COLUMNS, "rating", False)
    time = None
    if tcol is not None:
        t = df[tcol]
        if t.isna().any():
            r = int(np.argmax(t.isna().to_numpy()))
            raise DataError(f"{path}: row {r + row_offset}: column {tcol!r} is empty")
        if pd.api.types.is_numeric_dtype(t):
            time = t.to_numpy()
        else:
            try:
                time = pd.to_datetime(t).astype("int64").to_numpy() // 10**9
            except (ValueError, TypeError) as e:
                raise DataError(f"{path}: column {tcol!r} is neither numeric nor a date: {e}") from None
    rating = None
    if rcol is not None:
        if not pd.api.types.is_numeric_dtype(df[rcol]):
            raise DataError(f"{path}: column {rcol!r} must be numeric, found {df[rcol].dtype}")
        rating = df[rcol].to_numpy(np.float32)
    return Interactions(_id_column(df, ucol, path, row_offset), _id_column(df, icol, path, row_offset),
                        time=time, rating=rating, source=str(path))


def read_interactions(path, fmt: str | None = None, **columns) -> tuple[Interactions, str]:
    """Read any supported file; returns the interactions and the format used."""
    path = Path(path)
    if path.is_dir():
        for cand in ("ratings.dat", "ratings.csv", "u.data"):
            if (path / cand).exists():
                path = path / cand
                break
        else:
            raise DataError(f"{path}: is a directory with no ratings.dat, ratings.csv or u.data")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if fmt == "sasrec":
        inter = read_sasrec(path)
    elif fmt == "user-lines":
        inter = read_user_lines(path)
    elif fmt in ("ml-100k", "ml-dat", "ml-csv"):
        inter = read_movielens(path, fmt)
    else:
        inter = read_generic(path, fmt, **columns)
    if len(inter) == 0:
        raise DataError(f"{path}: no interactions")
    return inter, fmt


# ---------------------------------------------------------------- item metadata (MovieLens)

def read_movies(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Titles and genres keyed by MovieID (as str) from ``movies.dat`` (ISO-8859-1) or ``movies.csv``."""
    titles, genres = {}, {}
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        for col in ("movieId", "title", "genres"):
            if col not in df.columns:
                raise DataError(f"{path}: no {col!r} column; columns are {list(df.columns)}")
        rows = zip(df["movieId"], df["title"], df["genres"])
    else:
        text = path.read_bytes().decode("latin-1")
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("::")
            if len(parts) != 3:
                raise bad_line(path, lineno, line, "expected MovieID::Title::Genres")
            rows.append(parts)
    for mid, title, g in rows:
        titles[mid] = title
        genres[mid] = [x for x in g.split("|") if x and x != "(no genres listed)"]
    return titles, genres


def movielens_item_metadata(path: Path, fmt: str, ids: list[str]) -> tuple[list | None, list | None]:
    """Find titles/genres for catalog ids next to a MovieLens-derived file, if present.

    Two layouts are known: the SASRec ``ml-1m.txt`` whose ids join through
    ``sas_to_original_items.txt`` to ``movies.dat``; and files with original MovieIDs
    (``ratings.dat``/``ratings.csv``/``*original_ids*``) beside ``movies.dat``/``movies.csv``.
    """
    d = path.parent
    movies = next((d / m for m in ("movies.dat", "movies.csv") if (d / m).exists()), None)
    if movies is None:
        return None, None
    mapping = None
    if path.name == "ml-1m.txt" and (d / "sas_to_original_items.txt").exists():
        m = pd.read_csv(d / "sas_to_original_items.txt", sep=r"\s+", header=None, dtype=str)
        mapping = dict(zip(m[0], m[1]))
    elif not (fmt.startswith("ml-") or "original" in path.name):
        return None, None
    titles, genres = read_movies(movies)
    orig = [mapping.get(i, "") if mapping is not None else i for i in ids]
    return [titles.get(o, "") for o in orig], [genres.get(o, []) for o in orig]


def catalog_with_metadata(ids: np.ndarray, titles: list | None, genres: list | None) -> ItemCatalog:
    """Build a catalog (ids[0] is padding) with optional titles and a ``genres`` feature."""
    feats = {}
    if genres is not None:
        feats["genres"] = categorical_feature(genres)
    return ItemCatalog(ids, None if titles is None else np.asarray(titles, dtype=object), feats)
