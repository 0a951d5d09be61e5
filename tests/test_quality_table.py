"""benchmarks/quality.py: seeds of one configuration become one row (mean +- std), and the
rows outlive runs/ in benchmarks/quality_runs/."""

import json
import runpy
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its neighbour results_md
    return runpy.run_path(str(ROOT / "benchmarks" / "quality.py"))


def _run(root: Path, name: str, ndcg: float, seed: int, expected=0.18) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "model": "sasrec/plus", "loss": "ce", "protocol": "leave-one-out, test",
        "metrics": {"NDCG@10": ndcg, "HR@10": 2 * ndcg}, "epochs": 10, "train_seconds": 60.0,
        "stop_reason": "time budget", "device": "1x cpu"}))
    (d / "config.json").write_text(json.dumps({"train": {"seed": seed, "expected": {"dataset": "ml-1m",
                                                                                  "NDCG@10": expected}}}))
    return d


def test_seeds_group_into_one_row_with_mean_and_sample_std(quality, tmp_path):
    dirs = [_run(tmp_path, f"cfg_a_s{s}", x, s) for s, x in enumerate([0.17, 0.18, 0.19])]
    dirs.append(_run(tmp_path, "cfg_b", 0.2, 0))
    rows = quality["group"](quality["collect"](dirs))
    a, b = sorted(rows, key=lambda r: r["config"])
    assert a["config"] == "cfg_a" and a["seeds"] == 3 and a["runs"] == ["cfg_a_s0", "cfg_a_s1", "cfg_a_s2"]
    assert a["NDCG@10"] == pytest.approx(0.18) and a["NDCG@10 std"] == pytest.approx(statistics.stdev([0.17, 0.18, 0.19]))
    assert a["ratio"] == pytest.approx(1.0) and a["HR@10"] == pytest.approx(0.36)
    assert b["seeds"] == 1 and b["NDCG@10 std"] == 0.0
    md = quality["table"](rows)
    assert "| cfg_a | sasrec/plus (ce) | 0.1800 +- 0.0100 | 3 | 0.1700, 0.1800, 0.1900 |" in md
    assert "| cfg_b | sasrec/plus (ce) | 0.2000 | 1 | - |" in md


def test_reported_runs_are_kept_for_later_tables(quality, tmp_path):
    folder = tmp_path / "archive"
    quality["archive"](quality["collect"]([_run(tmp_path, "cfg_a_s0", 0.17, 0)]), folder)
    quality["archive"](quality["collect"]([_run(tmp_path / "later", "cfg_a_s1", 0.19, 1)]), folder)
    rows = quality["group"](quality["archived"](folder))
    assert len(rows) == 1 and rows[0]["seeds"] == 2 and rows[0]["NDCG@10"] == pytest.approx(0.18)


def test_the_gpu_session_script_parses_and_names_configs_and_data_that_exist():
    """benchmarks/gpu_session.sh runs once, on a lent GPU, with no chance to fix it there: its
    shell must parse, every config it trains must exist, and every data file it reads must be
    one that its --prepare step copies."""
    import re
    import subprocess

    script = ROOT / "benchmarks" / "gpu_session.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    copied = set(re.findall(r'"\$SHARED/[\w-]+/([\w.-]+)"', text))
    assert {"ml-1m.txt", "beauty.txt", "user_movie_time_ordered_original_ids.txt"} <= copied
    variables = dict(re.findall(r"^(\w+)=([\w.-]+)$", text, re.M))  # RAW=user_movie_...
    trained = re.findall(r"^\s*train (\w+) (\$?[\w.-]+) ", text, re.M)
    assert len(trained) >= 3  # each a loop over seeds
    for cfg, data in trained:
        assert (ROOT / "configs" / f"{cfg}.py").exists(), cfg
        assert variables.get(data.lstrip("$"), data) in copied, (cfg, data)
