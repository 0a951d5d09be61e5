"""Distillation teachers (``retrieval.teachers``): frozen runs whose next-item distribution a
student learns besides its targets, with their outputs computed once, not at every step.

The teachers are frozen and read without dropout, and a training window is the same every
epoch (``TrainBatches``: a unit's window ends at the same place, cut to the same length bucket;
with ``all_windows`` a long sequence has several), so a teacher's hidden states for a window
never change. Computing them at every step cost
four transformer forwards per step (3.5x a plain step on the 2-core CPU, four teachers on
ML-1M); computed once before training they cost about one epoch's forwards, and a step reads
its batch's rows from memory (float16: ~0.5 GB for ML-1M's 6,040 windows of up to 200
positions and four teachers' 320 dimensions side by side).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data.batching import TrainBatches
from jaxrec.data.splits import pad_histories
from jaxrec.errors import UserError
from jaxrec.train.rundir import RunDir


def teacher_view(teachers, inputs) -> tuple:
    """The teachers' mean next-item log-probability as one dot product: (``ht`` (B, L, sum Dt),
    ``table_t`` (V, sum Dt)). The mean of the members' log-softmaxes is the mean of their logits
    less a constant per position (their log-normalisers), which a softmax over the same classes
    ignores: so their hidden states side by side, over their count, against their tables side by
    side give the ensemble's distribution at the cost of one wider matmul (``losses.catalog_ce``)."""
    ht = jnp.concatenate([t.hidden(inputs, None) for t in teachers], -1) / len(teachers)  # (B, L, sum Dt)
    return ht.astype(jnp.float32), teacher_table(teachers)


def teacher_table(teachers) -> jax.Array:
    """(V, sum Dt) the teachers' output item tables side by side (``teacher_view``'s item side)."""
    return jnp.concatenate([t.output_table() for t in teachers], -1).astype(jnp.float32)


def load_teachers(run_dirs: list[str], loss: str, catalog) -> list:
    """Each run's best checkpoint as a frozen model, checked to fit the student (loss ce;
    retrieval models of the same catalog that read no event times and score by a dot product or
    cosine, not MoL)."""
    if loss != "ce":
        raise UserError(f"retrieval.teachers (distillation) needs loss ce, not {loss!r}")
    out = []
    for d in run_dirs:
        rd = RunDir.open(d)
        m = rd.load_model("best")
        model = nnx.merge(m.graphdef, m.params)
        if model.kind != "retrieval" or m.info.uses_time or getattr(model, "mol", None) is not None:
            raise UserError(f"teacher {d}: a distillation teacher is a retrieval model without event times "
                            f"or MoL scores ({m.config.model})")
        if list(m.catalog.ids) != list(catalog.ids):
            raise UserError(f"teacher {d} was trained on another item catalog than this data's")
        out.append(model)
    return out


class TeacherCache:
    """The teachers' ``teacher_view`` of every training window, computed once (``build``); a
    batch gets its units' as ``teacher_h`` (B, L, sum Dt) float16 (``rows``, the ``row_extra``
    of ``TrainBatches``: a unit is one window of a sequence, its index into ``batches.rows`` /
    ``batches.ends``), and the loss their tables side by side (``table``)."""

    def __init__(self, teachers: list, batches: TrainBatches, chunk: int = 64, progress: bool = True):
        split = batches.split
        view = jax.jit(lambda inputs: teacher_view(teachers, inputs)[0].astype(jnp.float16))
        self.table = teacher_table(teachers)  # (V, sum Dt)
        self.dim = int(self.table.shape[1])
        self.slot = np.zeros(len(batches.rows), np.int64)  # unit -> its place in its bucket's array
        self.arrays = []  # per length bucket: (units in it, window, sum Dt) float16
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(batches.rows), desc="teachers", unit="window", leave=False, dynamic_ncols=True)
        for b, w in enumerate(batches.windows):
            units = np.flatnonzero(batches.bucket_of == b)
            self.slot[units] = np.arange(len(units))
            out = np.zeros((len(units), w, self.dim), np.float16)
            for i in range(0, len(units), chunk):
                part = units[i:i + chunk]
                rows = batches.rows[part]
                seq = pad_histories(split.data.items, split.train_start[rows], batches.ends[part], w + 1)
                inputs = np.pad(seq[:, :-1], ((0, chunk - len(part)), (0, 0)))  # a fixed shape: one compile per bucket
                out[i:i + len(part)] = np.asarray(view(inputs))[:len(part)]
                if bar is not None:
                    bar.update(len(part))
            self.arrays.append(out)
        if bar is not None:
            bar.close()
        self.bucket = {w: b for b, w in enumerate(batches.windows)}
        self.nbytes = sum(a.nbytes for a in self.arrays)

    def rows(self, units: np.ndarray, window: int, size: int) -> dict:
        """``teacher_h`` for a batch of ``size`` whose first rows are the windows ``units`` (the
        rest padding), each ``window`` long."""
        out = np.zeros((size, window, self.dim), np.float16)
        out[:len(units)] = self.arrays[self.bucket[window]][self.slot[units]]
        return {"teacher_h": out}
