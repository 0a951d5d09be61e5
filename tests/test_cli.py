import json

from jaxrec.cli import main
from jaxrec.data import leave_one_out, load_dataset
from jaxrec.metrics import evaluate
from jaxrec.models import MostPopular


def test_data_stats_json(write, capsys):
    p = write("d.txt", "1 1\n1 2\n1 3\n2 2\n2 3\n2 1\n")
    assert main(["data", "stats", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["users"], out["items"], out["interactions"]) == (2, 3, 6)


def test_eval_popular_json(capsys):
    """The command prints what the library computes: MostPopular under the full-ranking protocol."""
    assert main(["eval", "--model", "popular", "--data", "synthetic:tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    split = leave_one_out(load_dataset("synthetic:tiny"))
    want = evaluate(MostPopular.fit(split), split, "test")
    assert out["protocol"] == want.protocol and "full ranking" in out["protocol"]
    for k in ("HR@10", "NDCG@10", "MRR"):
        assert out["metrics"][k] == want.metrics[k], k


def test_eval_unknown_model(capsys):
    assert main(["eval", "--model", "nope", "--data", "synthetic:tiny"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_quickstart_runs(tmp_path, capsys):
    assert main(["quickstart", "--data", "synthetic:tiny", "--epochs", "2",
                 "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "MostPopular" in out and "SASRec" in out and "recommended:" in out
