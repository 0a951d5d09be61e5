"""The run directory: one owner of its files; params-only restore; old layouts still load."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from jaxrec.cli import main
from jaxrec.errors import UserError
from jaxrec.inference import Recommender
from jaxrec.models import build_model
from jaxrec.train import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_run_directory_of_the_previous_layout_evaluates_the_same(capsys, tmp_path):
    run = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "legacy_run", run)
    assert (run / "checkpoints" / "best" / "2" / "state").exists()  # one Orbax item: params + opt + step
    assert main(["eval", "--checkpoint", str(run), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = json.loads((FIXTURES / "legacy_eval.json").read_text())
    assert got["protocol"] == want["protocol"]
    for k, v in want["metrics"].items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-7), k
    rd = RunDir.open(run)
    cfg = rd.config()  # the flat layout read into the sections
    assert cfg.model == "sasrec/small" and cfg.ranking.cuts_per_user == 4 and cfg.model_args == {"dim": 8}
    assert rd.model_info().kind == "retrieval" and rd.model_info().max_len == 50
    rec = Recommender.from_checkpoint(run)
    assert rec.step == 2 and len(rec.recommend(rec.catalog.ids[1:6].tolist(), k=5).items) == 5


def test_params_are_their_own_item_and_restore_without_an_optimizer(tiny_run):
    out = tiny_run
    rd = RunDir.open(out)
    step = rd.latest_step("best")
    items = {p.name for p in (rd.checkpoints_dir("best") / str(step)).iterdir() if p.is_dir()}
    assert {"params", "opt", "meta"} <= items
    model = build_model("sasrec/small", rd.catalog().num_items, 0)
    _, like = nnx.split(model)
    params, got_step = rd.restore_params(like)
    assert got_step == step
    rec = Recommender.from_checkpoint(out)
    for a, b in zip(nnx.to_flat_state(params), nnx.to_flat_state(rec.params)):
        np.testing.assert_array_equal(np.asarray(a[1].value), np.asarray(b[1].value))
    meta = json.loads((rd.checkpoints_dir("best") / str(step) / "meta" / "metadata").read_text())
    assert meta["step"] == step and meta["epoch"] == 1  # the loop state is the checkpoint's metadata


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a jaxrec run directory"):
        RunDir.open(tmp_path)
    with pytest.raises(UserError, match="checkpoint 'newest': use one of best, last"):
        RunDir(tmp_path).checkpoints_dir("newest")
