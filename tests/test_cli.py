import json

from jaxrec.cli import main


def test_data_stats_json(write, capsys):
    p = write("d.txt", "1 1\n1 2\n1 3\n2 2\n2 3\n2 1\n")
    assert main(["data", "stats", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["users"], out["items"], out["interactions"]) == (2, 3, 6)


def test_eval_popular_json(capsys):
    assert main(["eval", "--model", "popular", "--data", "synthetic:tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "full ranking" in out["protocol"]
    for k in ("HR@10", "NDCG@10", "MRR"):
        assert 0 <= out["metrics"][k] <= 1


def test_eval_unknown_model(capsys):
    assert main(["eval", "--model", "nope", "--data", "synthetic:tiny"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_quickstart_runs(tmp_path, capsys):
    assert main(["quickstart", "--data", "synthetic:tiny", "--epochs", "2",
                 "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "MostPopular" in out and "SASRec" in out and "recommended:" in out
