"""Slow checks on the real data (``python -m pytest -m slow``; skipped without ../shared/data)."""

import pytest

from jaxrec.data import leave_one_out, load_dataset
from jaxrec.metrics import evaluate
from jaxrec.models import MostPopular
from jaxrec.train import Config, train


@pytest.mark.slow
def test_sasrec_ce_beats_popularity_on_ml1m_in_two_epochs(ml1m_path, tmp_path):
    split = leave_one_out(load_dataset(str(ml1m_path)))
    cfg = Config(model="sasrec/plus", data=str(ml1m_path), loss="ce", batch_size=32, lr=2e-3,
                 warmup_steps=100, epochs=2, eval_every=2, length_buckets=[32, 64, 100, 150],
                      model_args={"max_len": 100})
    res = train(cfg, tmp_path / "run", split=split, progress=False)
    pop = evaluate(MostPopular.fit(split), split, "test").metrics["NDCG@10"]
    assert res["metrics"]["NDCG@10"] > 2 * pop, (res["metrics"]["NDCG@10"], pop)
