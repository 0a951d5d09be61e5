"""Training configuration: one dataclass, set from a config file and ``--set key=value``.

A config file is Python with ``get_config() -> dict`` (configs as code, big_vision style);
its docstring holds the run command and the expected figure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from jaxrec.errors import UserError


@dataclasses.dataclass
class TrainConfig:
    model: str = "sasrec"  # registry name, optionally /variant
    data: str = "synthetic"
    split: str = "leave_one_out"  # held-out protocol: leave_one_out | last_out (see data.splits)
    loss: str | None = None  # bce|ce|gbce|sampled_softmax|cloze; rankers: listwise|pointwise (None: default)
    num_negatives: int = 1
    sampler: str = "uniform"  # negative sampler: uniform | popularity
    shared_negatives: bool = False  # one set of negatives per sequence (B, 1, K) instead of per position
    gbce_t: float = 0.75
    # rankers: candidate-list training (see data.batching.RankBatches) and held-out list evaluation
    cuts_per_user: int = 4  # training examples drawn per sequence per epoch
    retriever: str | None = None  # run dir of a retrieval model: mine hard negatives from its top-N
    hard_pool: int = 200  # N of that top-N
    hard_fraction: float = 0.5  # share of the negatives that are hard
    # > 0: train the ranker as a residual on the retriever: the loss (and validation) see
    # ranker + residual * retriever score, so the ranker spends its capacity on what the
    # retriever gets wrong; the pipeline then blends with this weight by default
    residual: float = 0.0
    eval_negatives: int = 100  # popularity negatives per held-out list
    init_from: str | None = None  # run dir whose item-id embeddings (same catalog and dim) start ours
    length_buckets: list = dataclasses.field(default_factory=list)  # e.g. [50, 100]: see TrainBatches
    model_args: dict = dataclasses.field(default_factory=dict)  # ModelConfig overrides
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    # after warmup: constant | cosine | linear (to 0 at the last epoch's end) | linear_time (to 0
    # at max_minutes of wall time: uses a time budget fully on any machine, but the schedule,
    # and so the metrics, then depend on the machine's speed)
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float = 1.0
    epochs: int = 200
    max_minutes: float | None = None  # stop training after this much wall time
    eval_every: int = 1  # epochs between validation runs
    patience: int = 10  # validation runs without improvement before stopping
    eval_batch_size: int = 256
    seed: int = 0
    keep_last: int = 2
    num_devices: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - names
        if bad:
            raise UserError(f"unknown config keys {sorted(bad)}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def apply_overrides(cfg: dict, sets: list[str]) -> dict:
    """``key=value`` (value parsed as JSON when it can be; ``model_args.dim=64`` nests)."""
    cfg = json.loads(json.dumps(cfg))
    for s in sets or []:
        if "=" not in s:
            raise UserError(f"--set expects key=value, got {s!r}")
        key, _, val = s.partition("=")
        target = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = _parse_value(val)
    return cfg


def load_config_file(path: str | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such config file")
    if p.suffix == ".json":
        return json.loads(p.read_text())
    spec = importlib.util.spec_from_file_location(f"jaxrec_config_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise UserError(f"{p}: a config file must define get_config()")
    return dict(mod.get_config())
