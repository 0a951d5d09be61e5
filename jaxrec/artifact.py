"""A portable serving artifact: the serving functions as serialized StableHLO (``jax.export``).

    jaxrec export --checkpoint runs/ml1m_sasrec_ce --out artifacts/ml1m
    jaxrec serve --artifact artifacts/ml1m

An artifact holds everything ``jaxrec serve`` needs and nothing of the model's Python source
or of Orbax: loading one imports neither ``jaxrec.models`` nor ``orbax`` (a test checks), so
a serving image can carry a model it cannot re-train, and a model keeps answering exactly as
exported whatever later changes the code. Layout of the directory:

    manifest.json     format version, model name, step, history length, buckets, widths, the
                      jax version and platform it was exported on, the table dtype
    catalog.json      the item catalog (``ItemCatalog.save``)
    popularity.npy    (N+1,) training counts: the cold-start list
    items.npy         (N+1, D) float32 output item vectors: explanations
    params.npz        the parameters (compact tables included), flat, in the functions' order
    top_k/l{L}_k{K}.jaxexport   top-k with exclude lists of width W(L), one per (length, k)
    top_k/l{L}_k{K}_a{A}.jaxexport   the same with allow lists of width A (``allow_widths``)
    score/l{L}_c{C}.jaxexport   scores of C candidates, one per (length, width)

The batch dimension is symbolic (one export serves every batch bucket); history length, k,
exclude, allow and candidate widths are concrete, as the server's buckets are. What an
artifact does not carry: exclude lists longer than W(L) = 2 L (rounded up to a power of two:
a full history plus as many deny ids), allow lists longer than the widest exported one, Score
requests of more than the widest exported candidate list; a server on an artifact refuses
those with INVALID_ARGUMENT. A single retrieval model or a two-stage server (retriever +
ranker: ``manifest.json`` ``kind`` "pipeline", its functions re-rank the retriever's top
candidates as the live server does) exports; the exported functions run on the platform they
were exported for (``manifest.json``: ``platform``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.codec import next_pow2
from jaxrec.data.types import ItemCatalog
from jaxrec.errors import UserError
from jaxrec.scoring import TopK

FORMAT = 1
SCORE_WIDTHS = (16, 128)
ALLOW_WIDTHS = (128,)  # allow lists up to 128 items (the server pads them to powers of two >= 16)


def exclude_width(l: int) -> int:
    """The exclude-list width of history bucket ``l``: a full history plus as many deny ids."""
    return next_pow2(2 * l, 16)


def _top_k_name(l: int, k: int, a: int = 0) -> str:
    return f"top_k/l{l}_k{k}" + (f"_a{a}" if a else "") + ".jaxexport"


def _score_name(l: int, c: int) -> str:
    return f"score/l{l}_c{c}.jaxexport"


def _save_flat(path: Path, leaves) -> list[str]:
    """Leaves as ``a0, a1, ...`` in one .npz; bfloat16 goes as its uint16 bits (numpy has no
    bfloat16 of its own). Returns each leaf's dtype name."""
    arrays, dtypes = {}, []
    for i, x in enumerate(leaves):
        a = np.asarray(x)
        dtypes.append(str(a.dtype))
        arrays[f"a{i}"] = a.view(np.uint16) if a.dtype == jnp.bfloat16 else a
    np.savez(path, **arrays)
    return dtypes


def _load_flat(path: Path, dtypes: list[str]) -> list:
    with np.load(path) as z:
        out = []
        for i, dt in enumerate(dtypes):
            a = z[f"a{i}"]
            out.append(jnp.asarray(a.view(jnp.bfloat16) if dt == "bfloat16" else a))
        return out


def export(engine, out: str | Path, score_widths=SCORE_WIDTHS, allow_widths=ALLOW_WIDTHS, progress=print) -> dict:
    """Write ``engine``'s serving functions (a compiled ``jaxrec_server.engine.Engine``'s
    buckets, its scorer and catalog) as an artifact in ``out``; returns the manifest."""
    from jax import export as jex

    scorer = engine.scorer
    if scorer.kind not in ("retrieval", "pipeline"):
        raise UserError(f"jaxrec export serves a retrieval model or a two-stage server; this is a {scorer.kind}")
    if engine.index is not None:
        raise UserError("jaxrec export: an approximate item index (--index) is not part of an artifact")
    out = Path(out)
    for sub in ("top_k", "score"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # ((first stage's parameters, compact tables or None), the ranker's parameters or None)
    leaves, treedef = jax.tree_util.tree_flatten(scorer._params())
    dtypes = _save_flat(out / "params.npz", leaves)
    uses_time = scorer.uses_time
    b = jex.symbolic_shape("b")[0]

    def spec(*shape, dtype=jnp.int32):
        return jax.ShapeDtypeStruct(shape, dtype)

    flat_spec = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    t0 = time.perf_counter()
    for l in engine.length_buckets:
        times = spec(b, l + 1) if uses_time else None
        for k in engine.k_buckets:
            def top_k(flat, history, exclude, times, allow=None, restricted=None, k=k):
                p, kp = jax.tree_util.tree_unflatten(treedef, flat)
                r = scorer._top_k_fn(p, kp, history, exclude, allow, restricted, times, k=k, explain=True)
                return r.values, r.items, r.attention
            exp = jex.export(jax.jit(top_k))(flat_spec, spec(b, l), spec(b, engine.exclude_widths[l]), times)
            (out / _top_k_name(l, k)).write_bytes(exp.serialize())
            for a in allow_widths:
                exp = jex.export(jax.jit(top_k))(flat_spec, spec(b, l), spec(b, engine.exclude_widths[l]), times,
                                                 spec(b, a), spec(b, dtype=jnp.bool_))
                (out / _top_k_name(l, k, a)).write_bytes(exp.serialize())
        for c in score_widths:
            def score(flat, history, candidates, times):
                return scorer._score_fn(*jax.tree_util.tree_unflatten(treedef, flat), history, candidates, times)
            exp = jex.export(jax.jit(score))(flat_spec, spec(b, l), spec(b, c), times)
            (out / _score_name(l, c)).write_bytes(exp.serialize())
        if progress:
            progress(f"exported history length {l}: k {engine.k_buckets}, allow widths {list(allow_widths)}, "
                     f"candidate widths {list(score_widths)}")
    engine.catalog.save(out / "catalog.json")
    np.save(out / "popularity.npy", engine.popularity)
    np.save(out / "items.npy", scorer.item_vectors().astype(np.float32))
    manifest = {"format": FORMAT, "name": engine.name, "step": engine.step, "max_len": engine.max_len,
                "uses_time": uses_time, "num_items": engine.num_items, "length_buckets": engine.length_buckets,
                "k_buckets": engine.k_buckets, "score_widths": list(score_widths),
                "allow_widths": sorted(int(a) for a in allow_widths), "kind": scorer.kind,
                "exclude_widths": {str(l): w for l, w in engine.exclude_widths.items()},
                "param_dtypes": dtypes, "table_dtype": engine.table_dtype, "table_bytes": scorer.table_bytes(),
                "jax": jax.__version__, "platform": jax.default_backend(), "checkpoint": str(engine.checkpoint),
                "export_seconds": round(time.perf_counter() - t0, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


class Artifact:
    """A loaded artifact: the ``Scorer`` methods the server's engine calls, from the exported
    functions (each compiled once per batch size, on first use or in warm-up)."""

    def __init__(self, path: str | Path):
        from jax import export as jex

        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.exists():
            raise UserError(f"{self.path}: not an artifact (no manifest.json; write one with jaxrec export)")
        self.manifest = m = json.loads(mf.read_text())
        if m.get("format") != FORMAT:
            raise UserError(f"{mf}: artifact format {m.get('format')!r}, this jaxrec reads {FORMAT}")
        if m["platform"] != jax.default_backend():
            raise UserError(f"{self.path}: exported for {m['platform']}, this process runs on {jax.default_backend()}")
        self.catalog = ItemCatalog.load(self.path / "catalog.json")
        self.popularity = np.load(self.path / "popularity.npy")
        self._items = np.load(self.path / "items.npy")
        self.flat = _load_flat(self.path / "params.npz", m["param_dtypes"])
        self.max_len, self.uses_time, self.table_dtype = m["max_len"], m["uses_time"], m["table_dtype"]
        self.length_buckets, self.k_buckets = m["length_buckets"], m["k_buckets"]
        self.score_widths = m["score_widths"]
        self.allow_widths = m.get("allow_widths", [])  # artifacts before allow lists have none
        self.kind = m.get("kind", "retrieval")
        self.exclude_widths = {int(l): w for l, w in m["exclude_widths"].items()}
        self._fns = {}
        for l in self.length_buckets:
            for k in self.k_buckets:
                for a in [0] + self.allow_widths:
                    fn = jex.deserialize(bytearray((self.path / _top_k_name(l, k, a)).read_bytes()))
                    self._fns["top_k", l, k, a] = jax.jit(fn.call)
            for c in self.score_widths:
                self._fns["score", l, c] = jax.jit(jex.deserialize(bytearray((self.path / _score_name(l, c)).read_bytes())).call)
        self._shapes = set()

    def refusal(self, l: int, exclude: int = 0, allow: int | None = None, candidates: int = 0) -> str | None:
        """Why a request of history bucket ``l`` is outside what was exported (None: it is not);
        ``allow``: the length of its allow list (None: no list)."""
        if allow is not None and not self.allow_widths:
            return "allow: this server runs an exported artifact, which has no allow lists"
        if allow is not None and allow > self.allow_widths[-1]:
            return f"allow: {allow} ids, more than the {self.allow_widths[-1]} this artifact takes"
        if exclude > self.exclude_widths[l]:
            return (f"{exclude} excluded ids (history + deny) is more than the {self.exclude_widths[l]} this "
                    f"artifact takes for histories of up to {l} items")
        if candidates > self.score_widths[-1]:
            return f"candidates: {candidates} ids, more than the {self.score_widths[-1]} this artifact scores at once"
        return None

    def _call(self, key, *args):
        self._shapes.add((key, args[0].shape))
        return self._fns[key](self.flat, *args)

    def top_k(self, history, k: int, *, exclude=None, allow=None, restricted=None, times=None,
              explain: bool = False) -> TopK:
        b, l = history.shape
        a = 0 if allow is None else next((w for w in self.allow_widths if w >= allow.shape[1]), None)
        if a is None or ("top_k", l, k, a) not in self._fns:
            raise UserError(self.refusal(l, allow=allow.shape[1]) if a is None
                            else f"no exported top-k for history length {l}, k {k}")
        width = self.exclude_widths[l]
        ex = np.zeros((b, width), np.int32)
        if exclude is not None:
            if exclude.shape[1] > width and np.any(exclude[:, width:]):
                raise UserError(self.refusal(l, exclude.shape[1]))
            ex[:, : min(width, exclude.shape[1])] = exclude[:, :width]
        args = [jnp.asarray(history, jnp.int32), jnp.asarray(ex), None if times is None else jnp.asarray(times, jnp.int32)]
        if a:
            al = np.zeros((b, a), np.int32)
            al[:, : allow.shape[1]] = allow
            args += [jnp.asarray(al), jnp.asarray(np.ones(b, bool) if restricted is None else restricted, jnp.bool_)]
        vals, items, att = self._call(("top_k", l, k, a), *args)
        return TopK(vals, items, att)

    def score(self, history, candidates, times=None):
        b, l = history.shape
        c = next((w for w in self.score_widths if w >= candidates.shape[1]), None)
        if c is None:
            raise UserError(self.refusal(l, candidates=candidates.shape[1]))
        cand = np.zeros((b, c), np.int32)
        cand[:, : candidates.shape[1]] = candidates
        s = self._call(("score", l, c), jnp.asarray(history, jnp.int32), jnp.asarray(cand),
                       None if times is None else jnp.asarray(times, jnp.int32))
        return s[:, : candidates.shape[1]]

    def item_vectors(self, idx=None) -> np.ndarray:
        return self._items if idx is None else self._items[idx]

    def table_bytes(self) -> int:
        return int(self.manifest["table_bytes"])

    def compile_count(self) -> int:
        """Distinct (function, batch shape) calls: each compiles once."""
        return len(self._shapes)
