"""Quality vs published numbers: train the configs in configs/ (or read finished runs) and
write the table of ours vs published into benchmarks/RESULTS.md.

    python benchmarks/quality.py --train ml1m_sasrec_ce --minutes 15   # train one config, then report
    python benchmarks/quality.py                                       # report every run under runs/
    python benchmarks/quality.py --run runs/ml1m_sasrec_ce3000_cpu40_s2   # add one run, report all

A run directory ``runs/<name>`` holds ``results.json`` and ``config.json`` (written by
``jaxrec train``); the published figure is the config's ``expected``. Each run reported is
kept as ``benchmarks/quality_runs/<name>.json``, so the table outlives ``runs/`` (which does
not survive a fresh machine) and seeds trained in different sessions add up. Runs named
``<name>_s<N>`` are seeds of one row: the table gives their mean +- sample standard
deviation and the count, and a figure counts as met when the mean is. The table is printed,
saved as ``benchmarks/quality.json`` and placed between markers in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from results_md import write_block

from jaxrec.train.config import load_config_file

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "benchmarks" / "quality_runs"
DATA = {"ml-1m": ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt",
        "beauty": ROOT.parent / "shared" / "data" / "beauty" / "beauty.txt",
        "ml-1m-raw": ROOT.parent / "shared" / "data" / "ml-1m" / "user_movie_time_ordered_original_ids.txt"}


def train(name: str, minutes: float | None, runs: Path) -> None:
    data = DATA[load_config_file(str(ROOT / "configs" / f"{name}.py")).expected["dataset"]]
    cmd = [sys.executable, "-m", "jaxrec.cli", "train", "--config", str(ROOT / "configs" / f"{name}.py"),
           "--data", str(data), "--out", str(runs / name), "--quiet"]
    if minutes:
        cmd += ["--set", f"max_minutes={minutes}"]
    subprocess.run(cmd, check=True)


def _expected(name: str, config: dict) -> dict:
    """The run's published figure: its saved config's ``expected``, else (older runs) the
    config file whose name is the longest prefix of the run's name."""
    exp = config.get("train", {}).get("expected")
    if exp is not None:
        return exp
    names = sorted((p.stem for p in (ROOT / "configs").glob("*.py")), key=len, reverse=True)
    cfg_file = ROOT / "configs" / f"{next((n for n in names if name.startswith(n)), name)}.py"
    return load_config_file(str(cfg_file)).expected if cfg_file.exists() else {}


def collect(run_dirs: list[Path]) -> list[dict]:
    """One row per finished run (rankers are reported by benchmarks/rankers.py)."""
    rows = []
    for res_path in sorted(d / "results.json" for d in run_dirs if (d / "results.json").exists()):
        name = res_path.parent.name
        cfg_path = res_path.with_name("config.json")
        config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        exp = _expected(name, config)
        if exp.get("ranker"):
            continue
        res = json.loads(res_path.read_text())
        pub = exp.get("NDCG@10")
        ours = res["metrics"]["NDCG@10"]
        rows.append({"config": name, "dataset": exp.get("dataset", "?"), "model": res["model"],
                     "loss": res["loss"], "NDCG@10": ours, "HR@10": res["metrics"]["HR@10"],
                     "published NDCG@10": pub, "ratio": ours / pub if pub else None,
                     "epochs": res["epochs"], "train min": res["train_seconds"] / 60,
                     "stop": res["stop_reason"], "device": res["device"], "protocol": res["protocol"],
                     "seed": config.get("train", {}).get("seed")})
    return rows


def archive(rows: list[dict], folder: Path = ARCHIVE) -> None:
    folder.mkdir(exist_ok=True)
    for r in rows:
        (folder / f"{r['config']}.json").write_text(json.dumps(r, indent=2) + "\n")


def archived(folder: Path = ARCHIVE) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def base_name(run: str) -> str:
    """``<name>_s<N>`` -> ``<name>``: the seeds of one configuration share a row."""
    return re.sub(r"_s\d+$", "", run)


def group(rows: list[dict]) -> list[dict]:
    """Rows of one configuration's seeds (same base name, model, loss and protocol) as one:
    mean and sample standard deviation of NDCG@10 (0 for one seed), the seeds' figures."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((base_name(r["config"]), r["model"], r["loss"], r["protocol"]), []).append(r)
    out = []
    for (name, *_), rs in sorted(groups.items()):
        nd = [r["NDCG@10"] for r in rs]
        mean, pub = statistics.fmean(nd), rs[0]["published NDCG@10"]
        out.append(rs[0] | {"config": name, "runs": [r["config"] for r in rs], "seeds": len(rs),
                            "NDCG@10": mean, "NDCG@10 std": statistics.stdev(nd) if len(nd) > 1 else 0.0,
                            "NDCG@10 each": nd, "HR@10": statistics.fmean(r["HR@10"] for r in rs),
                            "ratio": mean / pub if pub else None,
                            "epochs": [r["epochs"] for r in rs], "train min": statistics.fmean(r["train min"] for r in rs),
                            "device": ", ".join(dict.fromkeys(r["device"] for r in rs))})
    return out


def table(rows: list[dict]) -> str:
    head = ("| config | model (loss) | test NDCG@10 (mean +- std) | seeds | each seed | HR@10 | published NDCG@10 "
            "| ours/published | epochs | train min | stopped by | device |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        pub = f"{r['published NDCG@10']:.4f}" if r["published NDCG@10"] else "-"
        ratio = f"{r['ratio']:.1%}" if r["ratio"] else "-"
        nd = f"{r['NDCG@10']:.4f}" + (f" +- {r['NDCG@10 std']:.4f}" if r["seeds"] > 1 else "")
        each = ", ".join(f"{x:.4f}" for x in r["NDCG@10 each"]) if r["seeds"] > 1 else "-"
        epochs = ", ".join(f"{e:g}" for e in r["epochs"])
        lines.append(f"| {r['config']} | {r['model']} ({r['loss']}) | {nd} | {r['seeds']} | {each} | {r['HR@10']:.4f} | "
                     f"{pub} | {ratio} | {epochs} | {r['train min']:.1f} | {r['stop']} | {r['device']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="report every finished run under this folder ...")
    ap.add_argument("--run", action="append", default=[],
                    help="... or only these run directories (repeatable); runs named <name>_s<N> are seeds of one row")
    ap.add_argument("--train", action="append", default=[], help="config name to train first (repeatable)")
    ap.add_argument("--minutes", type=float, default=None, help="training time budget per config")
    args = ap.parse_args()
    runs = Path(args.runs)
    for name in args.train:
        train(name, args.minutes, runs)
    archive(collect([Path(r) for r in args.run] if args.run else sorted(runs.iterdir()) if runs.is_dir() else []))
    rows = group(archived())
    if not rows:
        raise SystemExit(f"no results.json under {runs} and nothing in {ARCHIVE}")
    md = table(rows)
    print(md)
    for proto in dict.fromkeys(r["protocol"] for r in rows):
        print("protocol: " + proto)
    (ROOT / "benchmarks" / "quality.json").write_text(json.dumps(rows, indent=2))
    print(f"updated {write_block('quality', md, 'Quality vs published (written by benchmarks/quality.py)')}")


if __name__ == "__main__":
    main()
