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


def test_runs_says_where_each_run_stands(tiny_run, tmp_path, capsys):
    """``jaxrec runs``: a finished run shows its test figure and why it stopped; one without
    results.json (killed, or still training) shows its checkpoint's epoch and best validation
    and says --resume continues it; a directory of runs lists each; anything else is an error."""
    import shutil
    results = json.loads((tiny_run / "results.json").read_text())
    cut = tmp_path / "runs" / "cut"
    shutil.copytree(tiny_run, cut)
    (cut / "results.json").unlink()
    assert main(["runs", str(tiny_run), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)[0]
    assert done["state"] == "finished" and done["test"] == results["metrics"]
    assert done["stopped_by"] == results["stop_reason"] and done["model"] == "sasrec/small"
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    (open_run,) = json.loads(capsys.readouterr().out)
    assert open_run["path"] == str(cut) and open_run["test"] is None and "--resume" in open_run["state"]
    assert open_run["epoch"] == 1 and open_run["best_valid"] == results["best_valid"]["NDCG@10"]
    assert main(["runs", str(tiny_run), str(cut)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run ") and f"{results['metrics']['NDCG@10']:.4f}" in lines[1]
    assert "finished" in lines[1] and "--resume continues" in lines[2]
    assert main(["runs", str(tmp_path / "nothing")]) == 2
    assert "not a jaxrec run directory" in capsys.readouterr().err
