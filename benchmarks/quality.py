"""Quality vs published numbers: train the configs in configs/ (or read finished runs) and
write the table of ours vs published into benchmarks/RESULTS.md.

    python benchmarks/quality.py --train ml1m_sasrec_ce --minutes 15   # train one config, then report
    python benchmarks/quality.py                                       # report every run under runs/

A run directory ``runs/<config name>`` holds ``results.json`` (written by ``jaxrec train``);
the published figure comes from the config's ``expected``. The table is printed, saved as
``benchmarks/quality.json`` and placed between markers in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from results_md import write_block

from jaxrec.train.config import load_config_file

ROOT = Path(__file__).resolve().parents[1]
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


def collect(runs: Path) -> list[dict]:
    rows = []
    for res_path in sorted(runs.glob("*/results.json")):
        name = res_path.parent.name
        # runs/<config>[_suffix]: the longest config name that prefixes the run's name
        names = sorted((p.stem for p in (ROOT / "configs").glob("*.py")), key=len, reverse=True)
        cfg_file = ROOT / "configs" / f"{next((n for n in names if name.startswith(n)), name)}.py"
        exp = load_config_file(str(cfg_file)).expected if cfg_file.exists() else {}
        if exp.get("ranker"):  # rankers are reported by benchmarks/rankers.py
            continue
        res = json.loads(res_path.read_text())
        pub = exp.get("NDCG@10")
        ours = res["metrics"]["NDCG@10"]
        rows.append({"config": name, "dataset": exp.get("dataset", "?"), "model": res["model"],
                     "loss": res["loss"], "NDCG@10": ours, "HR@10": res["metrics"]["HR@10"],
                     "published NDCG@10": pub, "ratio": ours / pub if pub else None,
                     "epochs": res["epochs"], "train min": res["train_seconds"] / 60,
                     "stop": res["stop_reason"], "device": res["device"], "protocol": res["protocol"]})
    return rows


def table(rows: list[dict]) -> str:
    head = "| config | model (loss) | test NDCG@10 | HR@10 | published NDCG@10 | ours/published | epochs | train min | stopped by | device |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pub = f"{r['published NDCG@10']:.4f}" if r["published NDCG@10"] else "-"
        ratio = f"{r['ratio']:.1%}" if r["ratio"] else "-"
        lines.append(f"| {r['config']} | {r['model']} ({r['loss']}) | {r['NDCG@10']:.4f} | {r['HR@10']:.4f} | "
                     f"{pub} | {ratio} | {r['epochs']} | {r['train min']:.1f} | {r['stop']} | {r['device']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--train", action="append", default=[], help="config name to train first (repeatable)")
    ap.add_argument("--minutes", type=float, default=None, help="training time budget per config")
    args = ap.parse_args()
    runs = Path(args.runs)
    for name in args.train:
        train(name, args.minutes, runs)
    rows = collect(runs)
    if not rows:
        raise SystemExit(f"no results.json under {runs}")
    md = table(rows)
    print(md)
    for proto in dict.fromkeys(r["protocol"] for r in rows):
        print("protocol: " + proto)
    (ROOT / "benchmarks" / "quality.json").write_text(json.dumps(rows, indent=2))
    print(f"updated {write_block('quality', md, 'Quality vs published (written by benchmarks/quality.py)')}")


if __name__ == "__main__":
    main()
