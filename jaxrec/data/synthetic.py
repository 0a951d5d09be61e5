"""A synthetic dataset with real sequential structure: the embedded default data.

Why not random sequences: a sequence model must have something to learn beyond
popularity, or the quickstart and the tests prove nothing. The generative story:

* items belong to topics and have Zipf-skewed popularity within their topic;
* each user has a few topics with Dirichlet weights (latent interests);
* each item has a few fixed "successor" items in its topic (think: the next episode);
  with probability ``p_follow`` the next event is a successor of the previous one
  (first-order Markov), otherwise a fresh draw: topic from the user's mixture, item by
  popularity within the topic.

So popularity explains part of the data, a first-order Markov model explains more, and a
model that also uses the user's topic mixture (any sequence model) explains more still.
Generation is vectorised over users (one NumPy step per sequence position): 10M events
take a few seconds. External item ids are "1".."N" and user ids "1".."U", as in the
SASRec files; deterministic by seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.features import categorical_feature
from jaxrec.data.types import ItemCatalog, SequenceData
from jaxrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2000
    items: int = 500
    mean_len: float = 30.0
    min_len: int = 5
    max_len: int = 200
    topics: int = 20
    successors: int = 3
    p_follow: float = 0.6
    zipf: float = 1.0
    user_topics: int = 3
    seed: int = 0


PRESETS = {
    "tiny": dict(users=200, items=100, mean_len=12, max_len=50, topics=8),
    "small": dict(users=2000, items=500, mean_len=30),
    "medium": dict(users=20_000, items=5_000, mean_len=50, topics=50),
    "large": dict(users=200_000, items=20_000, mean_len=50, topics=100),
}


def parse_spec(spec: str) -> SyntheticConfig:
    """``synthetic``, ``synthetic:small`` or ``synthetic:users=1000,items=300,seed=3`` -> config."""
    if spec != "synthetic" and not spec.startswith("synthetic:"):
        raise DataError(f"not a synthetic spec: {spec!r}")
    fields = {f.name: f.type for f in dataclasses.fields(SyntheticConfig)}
    kw: dict = dict(PRESETS["small"])
    rest = spec.partition(":")[2]
    for part in filter(None, rest.split(",")):
        if "=" not in part:
            if part not in PRESETS:
                raise DataError(f"unknown synthetic size {part!r}; presets: {', '.join(PRESETS)}")
            kw.update(PRESETS[part])
            continue
        key, _, val = part.partition("=")
        key = {"len": "mean_len"}.get(key.strip(), key.strip())
        if key not in fields:
            raise DataError(f"unknown synthetic option {key!r}; options: {', '.join(fields)}, len")
        try:
            kw[key] = float(val) if fields[key] == "float" else int(val)
        except ValueError:
            raise DataError(f"synthetic option {key}={val!r} is not a number") from None
    cfg = SyntheticConfig(**kw)
    if cfg.users < 1 or cfg.items < 2 or cfg.min_len < 1 or cfg.max_len < cfg.min_len:
        raise DataError(f"invalid synthetic config {cfg}")
    return cfg


def _grouped_sampler(group: np.ndarray, weight: np.ndarray):
    """Sample a member of group g with probability proportional to weight, vectorised over g.

    Members are sorted by group; key = group + (cumulative weight within group) in (g, g+1],
    so ``searchsorted(key, g + u)`` with u ~ U(0, 1) lands on a member of group g.
    """
    order = np.lexsort((np.arange(len(group)), group))
    g, w = group[order], weight[order]
    csum = np.cumsum(w)
    start = np.searchsorted(g, g, side="left")
    before = np.where(start > 0, csum[start - 1], 0.0)
    total = np.zeros(g.max() + 1)
    np.add.at(total, g, w)
    key = g + (csum - before) / total[g]
    key[np.r_[g[1:] != g[:-1], True]] = g[np.r_[g[1:] != g[:-1], True]] + 1.0  # exact group ends

    def sample(groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(key, groups + u, side="left")
        return order[np.minimum(pos, len(key) - 1)]

    return sample


def generate(cfg: SyntheticConfig) -> SequenceData:
    rng = np.random.default_rng(cfg.seed)
    n, t = cfg.items, cfg.topics
    topic = np.r_[np.arange(t), rng.integers(0, t, n - t)] if n >= t else rng.integers(0, t, n)
    pop = 1.0 / np.arange(1, n + 1) ** cfg.zipf
    pop = pop[rng.permutation(n)]  # (N,) popularity, item i -> pop[i]
    draw_in_topic = _grouped_sampler(topic, pop)
    # successors: each item's next items come from its own topic, by popularity
    succ = draw_in_topic(np.repeat(topic, cfg.successors), rng.random(n * cfg.successors))
    succ = succ.reshape(n, cfg.successors)  # (N, S)
    own = succ == np.arange(n)[:, None]  # an item is never its own successor (no self-loops)
    succ[own] = (succ[own] + 1) % n
    # latent interests: a few topics per user with Dirichlet weights
    utopics = rng.integers(0, t, (cfg.users, cfg.user_topics))  # (U, K)
    icdf = np.cumsum(rng.dirichlet(np.ones(cfg.user_topics), size=cfg.users), axis=1)  # (U, K)
    extra = rng.geometric(1.0 / max(1.0, cfg.mean_len - cfg.min_len + 1), cfg.users) - 1
    lens = np.minimum(cfg.min_len + extra, cfg.max_len)  # (U,)

    # Fresh draws for every (user, position) at once: the user's topic, then an item in it.
    ev_user = np.repeat(np.arange(cfg.users), lens)  # (E,)
    r = rng.random(len(ev_user))
    k = (r[:, None] > icdf[ev_user, :-1]).sum(1)  # which of the user's K topics
    tpc = utopics[ev_user, k]
    fresh = draw_in_topic(tpc, rng.random(len(ev_user)))
    steps = int(lens.max())
    mask = np.arange(steps)[:, None] < lens[None, :]  # (L, U) position-major
    seqs = np.zeros((steps, cfg.users), np.int64)
    seqs.T[mask.T] = fresh  # user-major fill of a position-major array
    follow = rng.random((steps, cfg.users)) < cfg.p_follow
    pick = rng.integers(0, cfg.successors, (steps, cfg.users))
    for step in range(1, steps):  # the Markov chain: one vectorised step per position
        seqs[step] = np.where(follow[step], succ[seqs[step - 1], pick[step]], seqs[step])
    seqs, mask = seqs.T, mask.T
    items = (seqs[mask] + 1).astype(np.int32)  # row-major keeps per-user chronological order
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    gaps = rng.exponential(3600.0, len(items)).astype(np.int64) + 1
    start_t = np.repeat(1_600_000_000 + rng.integers(0, 86400 * 365, cfg.users), lens)
    seg_first = np.repeat(offsets[:-1], lens)
    csum = np.cumsum(gaps)
    times = start_t + csum - csum[seg_first] + gaps[seg_first]
    # the generating topic is the items' side feature (``--set model_args.features=["topic"]``)
    topic_feature = categorical_feature([[]] + [[int(x)] for x in topic], vocab=list(range(t)))
    catalog = ItemCatalog(np.array([""] + [str(i) for i in range(1, n + 1)], dtype=object),
                          features={"topic": topic_feature})
    users = np.arange(1, cfg.users + 1)
    name = "synthetic:" + ",".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())
    return SequenceData(offsets, items, catalog, users, times=times, name=name)
