"""The run configuration: one typed tree, set from a config file and ``--set a.b=c``.

    Config                      what every run has: model, data, optimisation, the loop
      .model_args               overrides of the model variant's settings, checked against the
                                family's config class (``jaxrec.models.base``)
      .retrieval: Retrieval     settings only retrieval models read
      .ranking: Ranking         settings only ranking models read (candidate lists, retriever)
      .expected                 the published figure the config aims at (benchmarks read it)

A config file is Python with ``get_config() -> Config`` (configs as code, big_vision style;
a config builds on another by a plain import of its ``get_config``); its docstring holds the
run command. Every value, from a file, an override or an old run directory, is checked
against its annotation and bounds (``jaxrec.settings``): a bad one is one line naming the
key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import field
from pathlib import Path

from jaxrec.errors import UserError
from jaxrec.models.registry import model_setting_type, model_settings, resolve
from jaxrec.settings import at_least, between, describe, from_text, one_of, parse_text, unknown_key, validate


@dataclasses.dataclass
class Retrieval:
    """Settings of retrieval training only."""

    shared_negatives: bool = False  # one set of negatives per sequence (B, 1, K) instead of per position
    # never a negative from the sequence's own training window (uniform sampler). With
    # shared_negatives (sampled_softmax): a sequence's K negatives are K distinct items from
    # outside its window (without replacement), as SASRec+ 3000's code draws them, instead of K
    # independent draws (which repeat items and include the sequence's own later targets; with
    # fewer than K such items the rest are padding, which no loss counts). Per position
    # (sampled_softmax, bce, gbce): K independent draws from outside the window at every
    # position, as SASRec's BCE figures were measured. ce: the softmax's classes at a position
    # are its target and the items outside the window (the limit K -> N)
    negatives_outside_sequence: bool = False
    gbce_t: float = field(default=0.75, metadata=between(0.0, 1.0))  # gBCE calibration (0: plain BCE)
    # update only the item-table rows a batch touches ("lazy" Adam, train/step.py SparseItemAdam):
    # for sampled negatives on large catalogs, where a dense Adam step over the table dominates
    sparse_items: bool = False
    # with a sharded item table (model_parallel > 1): each shard draws its share of the sampled
    # negatives from its own rows and scores them where they live (train/step.py), so logits,
    # not embedding rows, cross devices; logQ uses the stratified draw's probabilities
    shard_negatives: bool = False
    # knowledge distillation (loss ce): run directories of trained retrieval models on the same
    # catalog (an ensemble's members); the loss becomes (1 - distill) x the target's cross-entropy
    # + distill x the cross-entropy against the teachers' next-item distribution (the mean of their
    # log-probabilities over the same classes, softened by distill_temperature), so one model
    # learns what several learned together (Hinton et al. 2015). The teachers are frozen and
    # only read; the student is validated and saved alone
    teachers: list[str] = field(default_factory=list)
    distill: float = field(default=0.5, metadata=between(0.0, 1.0))
    distill_temperature: float = field(default=1.0, metadata=at_least(0.05))
    # loss ce: each position also predicts the next future_targets items after its target in the
    # window, at future_weight / future_targets each (PinnerFormer's dense all-action loss over a
    # short window; losses.catalog_ce): for data whose order within a short span is arbitrary
    future_targets: int = field(default=0, metadata=at_least(0))
    future_weight: float = field(default=0.5, metadata=at_least(0.0))
    # train on every target of a long sequence, not only its last max_len: the sequence is cut
    # into windows of max_len targets (data/batching.py TrainBatches), each a row of the epoch
    # (on ml-1m.txt the last 200 hold 66% of the training targets: 1,549 users have more)
    all_windows: bool = False
    # ce with negatives_outside_sequence: no item of the user's training sequence is a class at
    # any position (but its own target), not only the window's: with all_windows an earlier
    # window's later items, and for any long sequence the items before its window
    exclude_history: bool = False


@dataclasses.dataclass
class Ranking:
    """Settings of ranking (cross-attention) models only: candidate-list training, held-out lists."""

    cuts_per_user: int = field(default=4, metadata=at_least(1))  # training examples per sequence per epoch
    retriever: str | None = None  # run dir of a retrieval model: mine hard negatives from its top-N
    hard_pool: int = field(default=200, metadata=at_least(1))  # N of that top-N
    hard_fraction: float = field(default=0.5, metadata=between(0.0, 1.0))  # share of negatives that are hard
    # > 0: train as a residual on the retriever: the loss (and validation) see ranker +
    # residual * retriever score; the pipeline then blends with this weight by default
    residual: float = field(default=0.0, metadata=at_least(0.0))
    eval_negatives: int = field(default=100, metadata=at_least(1))  # popularity negatives per held-out list
    init_from: str | None = None  # run dir whose item-id embeddings (same catalog and dim) start ours


@dataclasses.dataclass
class Config:
    model: str = "sasrec"  # registry name, optionally /variant
    data: str = "synthetic"
    split: str = "leave_one_out"  # leave_one_out | last_out | temporal:TEST_TIME[,VALID_TIME] (data.splits)
    loss: str | None = None  # bce|ce|gbce|sampled_softmax|cloze; rankers: listwise|pointwise (None: the model's)
    num_negatives: int = field(default=1, metadata=at_least(1))
    sampler: str = field(default="uniform", metadata=one_of("uniform", "popularity"))
    model_args: dict = field(default_factory=dict)
    batch_size: int = field(default=128, metadata=at_least(1))
    # e.g. [50, 100]: batches of short histories are cut to these windows (retrieval: at the same
    # positions per step, see TrainBatches; rankers: see RankBatches); None: up to 4 windows chosen
    # from the data's sequence lengths (batching.data_windows); []: one window of max_len for all
    length_buckets: list[int] | None = None
    lr: float = field(default=1e-3, metadata=at_least(0.0, exclusive=True))
    weight_decay: float = field(default=0.0, metadata=at_least(0.0))
    # after warmup: constant | cosine | linear (to 0 at the last epoch's end) | linear_time (to 0
    # at max_minutes of wall time: uses a time budget fully on any machine, but the schedule,
    # and so the metrics, then depend on the machine's speed)
    schedule: str = field(default="constant", metadata=one_of("constant", "cosine", "linear", "linear_time"))
    # the share of training, at its end, over which cosine / linear / linear_time decay to 0; the
    # rate stays at lr before it (warmup-stable-decay: a constant rate's progress, then a settled end)
    decay_fraction: float = field(default=1.0, metadata=between(0.0, 1.0, lo_exclusive=True))
    warmup_steps: int = field(default=0, metadata=at_least(0))
    clip_norm: float = field(default=1.0, metadata=at_least(0.0))  # 0: no clipping
    # > 0: Polyak averaging. The train step also keeps an exponential moving average of the
    # parameters, ema <- d ema + (1 - d) params with d = min(ema_decay, (1 + t) / (10 + t)) at step t
    # (TensorFlow's ExponentialMovingAverage with num_updates, so the first steps are not buried
    # under the initial weights); validation, the best checkpoint, the test and everything that
    # loads the run use the average. Why: with a constant rate and heavy dropout the last
    # iterate wanders around the optimum; the average sits nearer to it at no extra step cost
    ema_decay: float = field(default=0.0, metadata=between(0.0, 1.0, hi_exclusive=True))
    # Adam's second-moment decay: 0.98 as in SASRec's TensorFlow code; 0.999 is PyTorch's default,
    # which the PyTorch reproductions (Klenitskiy & Vasilev 2023) trained with
    adam_b2: float = field(default=0.98, metadata=between(0.0, 1.0, hi_exclusive=True))
    # None: sized to the data, so a newcomer's first run finishes in minutes: 200 epochs, fewer
    # on small data (Config.resolved); give a number for a fixed count
    epochs: int | None = field(default=None, metadata=at_least(1))
    max_minutes: float | None = field(default=None, metadata=at_least(0.0, exclusive=True))
    # epochs between validation runs; None: 1 for retrieval models; for rankers as many epochs as
    # make the training work at least the validation's (scoring 1 + eval_negatives candidates
    # per user is often more than an epoch of training on a few cuts per user)
    eval_every: int | None = field(default=None, metadata=at_least(1))
    patience: int = field(default=10, metadata=at_least(1))  # validations without improvement before stopping
    eval_batch_size: int = field(default=256, metadata=at_least(1))
    # validate on a fixed random sample of this many users (gSASRec: 512; None: all); the test
    # always ranks for every user. Retrieval models (rankers validate on candidate lists)
    eval_users: int | None = field(default=None, metadata=at_least(1))
    seed: int = 0
    keep_last: int = field(default=2, metadata=at_least(1))
    num_devices: int | None = field(default=None, metadata=at_least(1))
    # devices per item-table shard group: the mesh is (devices / model_parallel) x model_parallel,
    # item tables split by rows over the second axis (jaxrec.sharding)
    model_parallel: int = field(default=1, metadata=at_least(1))
    retrieval: Retrieval = field(default_factory=Retrieval)
    ranking: Ranking = field(default_factory=Ranking)
    expected: dict = field(default_factory=dict)  # the published figure: {"dataset", "NDCG@10", "source"}

    # ------------------------------------------------------------ building

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A nested dict (a run directory's config.json), or the flat layout of run directories
        and config files written before the sections existed (ranker keys at the top level)."""
        d = nest_legacy(dict(d))
        kw = {}
        for key, value in d.items():
            if key in _SECTIONS:
                sec = _SECTIONS[key]
                if not isinstance(value, dict):
                    raise UserError(f"{key}: expected a mapping of {sec.__name__} settings, got {value!r}")
                for k in value:
                    if k not in {f.name for f in dataclasses.fields(sec)}:
                        raise unknown_key(key + ".", k, sec)
                kw[key] = sec(**value)
            elif key in _FIELDS:
                kw[key] = value
            else:
                raise unknown_key("", key, cls)
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Types and bounds of every field, and the model name and ``model_args`` against the
        model family (so a bad setting fails before any data is read)."""
        validate(self)
        model_settings(self.model, self.model_args)
        self.check_for(resolve(self.model)[0].cls.kind)
        return self

    def with_overrides(self, sets: list[str]) -> "Config":
        """``--set key=value`` (``retrieval.gbce_t=0.5``, ``model_args.dim=64``): each name and
        value is checked; the value's type is the field's."""
        cfg = dataclasses.replace(self, retrieval=dataclasses.replace(self.retrieval),
                                  ranking=dataclasses.replace(self.ranking),
                                  model_args=dict(self.model_args))
        for s in sets or []:
            key, eq, text = s.partition("=")
            key = _LEGACY.get(key.strip(), key.strip())  # flat names of the sectioned settings
            if not eq or not key:
                raise UserError(f"--set expects key=value, got {s!r}")
            head, _, rest = key.partition(".")
            if head == "model_args" and rest:  # names and types are the model family's
                tp = model_setting_type(cfg.model, rest)
                try:
                    cfg.model_args[rest] = parse_text(text, tp)
                except ValueError:
                    raise UserError(f"model_args.{rest}={text!r}: expected {describe(tp)}") from None
            elif head in _SECTIONS and rest:
                sec = getattr(cfg, head)
                if rest not in {f.name for f in dataclasses.fields(sec)}:
                    raise unknown_key(head + ".", rest, type(sec))
                setattr(sec, rest, from_text(type(sec), rest, text, head + "."))
            elif head in _FIELDS and not rest and head not in _SECTIONS:
                setattr(cfg, head, from_text(Config, head, text))
            else:
                raise unknown_key("", key, Config)
        return cfg.validate()

    def check_for(self, kind: str) -> None:
        """Settings of the other model kind are refused, not ignored."""
        other, name = (("ranking", Ranking) if kind == "retrieval" else ("retrieval", Retrieval))
        changed = [f.name for f in dataclasses.fields(name)
                   if getattr(getattr(self, other), f.name) != getattr(name(), f.name)]
        if changed:
            raise UserError(f"{other}.{changed[0]}: a {other} setting, but {self.model} is a {kind} model")

    def resolved(self, num_interactions: int) -> "Config":
        """Defaults that depend on the data, made explicit (and saved with the run)."""
        if self.epochs is not None:
            return self
        # Below 100k interactions (a smoke-test-sized set, synthetic data) 20 epochs show the
        # model learning in a minute or two on a laptop; real data keeps the long default, which
        # early stopping cuts short.
        return dataclasses.replace(self, epochs=200 if num_interactions >= SMALL_DATA else 20)


SMALL_DATA = 100_000  # interactions: below this the default epoch count is small (Config.resolved)
_SECTIONS = {"retrieval": Retrieval, "ranking": Ranking}
_FIELDS = {f.name for f in dataclasses.fields(Config)}
# the flat keys of run directories and config files written before the sections existed
_LEGACY = {f.name: f"{sec}.{f.name}" for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


def nest_legacy(d: dict) -> dict:
    """The flat layout (ranker keys at the top level) moved into its sections, in place."""
    for key in [k for k in d if k in _LEGACY]:
        sec, name = _LEGACY[key].split(".")
        section = d.setdefault(sec, {})
        if not isinstance(section, dict):
            break
        section[name] = d.pop(key)
    return d


def load_config_file(path: str | None) -> Config:
    """A config file's ``get_config()``: a ``Config`` (or a dict of its fields). The file's folder
    is importable while it runs, so a config extends another with ``from base_config import
    get_config as base``."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such config file")
    spec = importlib.util.spec_from_file_location(f"jaxrec_config_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(p.parent.resolve()))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(p.parent.resolve()))
    if not hasattr(mod, "get_config"):
        raise UserError(f"{p}: a config file must define get_config()")
    cfg = mod.get_config()
    return Config.from_dict(cfg) if isinstance(cfg, dict) else cfg.validate()
