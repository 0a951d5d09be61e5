"""Training cost of the default length buckets: the former halvings of max_len against the
windows chosen from the data (``jaxrec.data.batching.data_windows``), side by side.

    python benchmarks/length_buckets.py --data ../shared/data/beauty/beauty.txt --data synthetic:...

Per dataset, ``configs/beauty_sasrec_ce.py`` (SASRec+, full-softmax CE, max_len 50) trained for
``--epochs`` epochs twice, in one process each, one after the other: with
``length_buckets=[25]`` (what the halvings of 50 gave: windows 25 and 50) and with the default
(``None``: the data's windows). Reported: the windows, positions computed per real position,
steps per epoch, the last epoch's seconds (compiles are in the first), and test NDCG@10 after
the same epochs (a check that the grouping does not change what is learned, not a quality
figure); with ``--minutes M`` each trains for M minutes instead (as many epochs as fit,
validated every 2, the best checkpoint tested): the quality at equal cost. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def positions_ratio(split, max_len: int, windows: list[int]) -> float:
    lens = split.train_end - split.train_start
    pos = np.minimum(lens[lens >= 2] - 1, max_len)
    w = np.asarray(sorted(windows))
    return float(w[np.searchsorted(w, pos)].sum() / pos.sum())


def one(data: str, buckets, epochs: int, out: Path, minutes: float | None = None) -> dict:
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.data.batching import TrainBatches
    from jaxrec.train import train

    sys.path.insert(0, str(ROOT / "configs"))
    from beauty_sasrec_ce import get_config

    cfg = dataclasses.replace(get_config(), epochs=epochs, eval_every=epochs, patience=1000, data=data,
                              length_buckets=buckets)
    if minutes:  # the same wall time for both: as many epochs as fit, validated every 2
        cfg = dataclasses.replace(cfg, epochs=1000, eval_every=2, max_minutes=minutes)
    split = leave_one_out(load_dataset(data))
    max_len = cfg.model_args["max_len"]
    tb = TrainBatches(split, max_len, cfg.batch_size, length_buckets=buckets)
    res = train(cfg, out, progress=False)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ends = {r["epoch"]: r for r in logs if "epoch_s" in r}
    return {"data": data, "length_buckets": "data (default)" if buckets is None else str(buckets),
            "windows": tb.windows, "computed_per_real_position": positions_ratio(split, max_len, tb.windows),
            "steps_per_epoch": tb.batches_per_epoch, "last_epoch_s": ends[max(ends)]["epoch_s"],
            "test_ndcg10": res["metrics"]["NDCG@10"], "train_seconds": res.get("train_seconds"),
            "epochs": res.get("epochs"), "best_valid_ndcg10": res.get("best_valid", {}).get("NDCG@10")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead of --epochs: train each for this wall time (the quality at equal cost)")
    ap.add_argument("--out", default="benchmarks/length_buckets.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxrec-buckets-") as tmp:
        for i, data in enumerate(args.data):
            for j, buckets in enumerate(([25], None)):
                rows.append(one(data, buckets, args.epochs, Path(tmp) / f"{i}-{j}", args.minutes))
                print(json.dumps(rows[-1]), flush=True)
    cols = ["data", "length_buckets", "windows", "computed_per_real_position", "steps_per_epoch", "last_epoch_s",
            "epochs", "test_ndcg10"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
