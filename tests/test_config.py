"""The typed config tree: overrides checked by name and type, one-line errors, old layouts."""

import dataclasses
import json

import pytest

from jaxrec.cli import main
from jaxrec.errors import UserError
from jaxrec.train.config import Config, Ranking, Retrieval, load_config_file

BAD = [  # (override, words the one-line error must contain)
    ("lr=abc", ["lr='abc'", "expected a number"]),
    ("epochs=-1", ["epochs=-1", ">= 1"]),
    ("model_args.dim=0", ["model_args.dim=0", ">= 1"]),
    ("model_args.dim=x", ["model_args.dim='x'", "an integer"]),
    ("lerning_rate=0.1", ["unknown setting 'lerning_rate'"]),
    ("retrieval.gbce=0.5", ["unknown setting 'retrieval.gbce'"]),
    ("model_args.candidate_attention=true", ["model_args.candidate_attention", "not a setting of sasrec"]),
    ("ranking.residual=1", ["ranking.residual", "sasrec is a retrieval model"]),
    ("residual=1", ["ranking.residual", "retrieval model"]),  # the flat name of a ranker setting
    ("schedule=cosin", ["schedule='cosin'", "one of"]),
    ("decay_fraction=0", ["decay_fraction=0", "> 0.0"]),
    ("decay_fraction=1.5", ["decay_fraction=1.5", "<= 1.0"]),
    ("dropout=0.1", ["unknown setting 'dropout'"]),
    ("noequals", ["--set expects key=value"]),
]


@pytest.mark.parametrize("override,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_override_is_one_line_naming_the_key(override, words, capsys, tmp_path):
    rc = main(["train", "--model", "sasrec", "--data", "synthetic:tiny", "--out", str(tmp_path / "r"),
               "--set", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "r").exists()  # refused before any work


def test_overrides_parse_to_the_fields_types():
    cfg = Config(model="sasrec/small").with_overrides(
        ["lr=2e-3", "epochs=3", "max_minutes=none", "length_buckets=16,32",
         "retrieval.shared_negatives=true", "model_args.dim=48", "model_args.features=[\"topic\"]"])
    assert cfg.lr == 0.002 and cfg.epochs == 3 and cfg.max_minutes is None
    assert cfg.retrieval == Retrieval(shared_negatives=True) and cfg.length_buckets == [16, 32]
    assert cfg.model_args == {"dim": 48, "features": ["topic"]}
    ranker = Config(model="target_attention/small").with_overrides(["ranking.retriever=runs/r", "hard_pool=50"])
    assert ranker.ranking == Ranking(retriever="runs/r", hard_pool=50)


def test_a_config_round_trips_through_json_and_reads_the_flat_layout():
    cfg = Config(model="target_attention", ranking=Ranking(residual=1.5, eval_negatives=20))
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    flat = {"model": "target_attention", "residual": 1.5, "eval_negatives": 20}
    assert Config.from_dict(flat) == cfg  # run directories written before the sections existed
    with pytest.raises(UserError, match="unknown setting 'ranking.bogus'"):
        Config.from_dict({"model": "bst", "ranking": {"bogus": 1}})
    with pytest.raises(UserError, match=r"batch_size='64': expected an integer"):
        Config.from_dict({"batch_size": "64"})


def test_config_files_build_on_each_other_by_import(tmp_path):
    (tmp_path / "base_cfg.py").write_text(
        "from jaxrec.train.config import Config\n\ndef get_config():\n"
        "    return Config(model='sasrec/small', lr=3e-3, expected={'dataset': 'x'})\n")
    (tmp_path / "child.py").write_text(
        "import dataclasses\nfrom base_cfg import get_config as base\n\ndef get_config():\n"
        "    return dataclasses.replace(base(), lr=1e-2)\n")
    cfg = load_config_file(str(tmp_path / "child.py"))
    assert cfg.lr == 1e-2 and cfg.model == "sasrec/small" and cfg.expected == {"dataset": "x"}
    (tmp_path / "bad.py").write_text(
        "from jaxrec.train.config import Config\n\ndef get_config():\n    return Config(epochs=0)\n")
    with pytest.raises(UserError, match="epochs=0: expected a value >= 1"):
        load_config_file(str(tmp_path / "bad.py"))


def test_epochs_default_follows_the_data_size():
    assert Config().resolved(num_interactions=50_000).epochs < Config().resolved(num_interactions=10**6).epochs
    assert dataclasses.replace(Config(), epochs=7).resolved(num_interactions=500).epochs == 7
