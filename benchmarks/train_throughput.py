"""Training throughput: jaxrec SASRec vs RecBole SASRec, same model size and loss, one run.

    python benchmarks/train_throughput.py                      # jaxrec only
    python benchmarks/train_throughput.py --recbole            # + RecBole 1.2.1 (own venv)

Reports training targets (predicted positions) per second, sequences per second, peak
RSS, and model FLOP/s as a fraction of this machine's measured f32 matmul peak. Each side
runs in its own process (peak RSS is its own). RecBole is installed by this script into
``benchmarks/.recbole-venv`` (CPU torch, numpy<2: RecBole 1.2.1 still uses ``np.float_``)
and fed ml-1m in its atomic format; it trains on every prefix of every sequence, so each
of its samples is one target. Writes ``benchmarks/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ML1M = HERE.parent.parent / "shared" / "data" / "ml-1m" / "ml-1m.txt"

JAXREC = textwrap.dedent(r"""
    import json, resource, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jaxrec.data import leave_one_out, load_dataset
    from jaxrec.train import Config, build_run
    from jaxrec.train.step import make_loss_fn, make_train_step
    args = json.loads(sys.argv[1])
    cfg = Config(model="sasrec/plus", data=args["data"], loss="ce", batch_size=args.get("batch", 128),
                 length_buckets=args["buckets"],
                 model_args=dict(dim=args["dim"], max_len=args["max_len"]))
    run = build_run(cfg, leave_one_out(load_dataset(cfg.data)))
    step = make_train_step(run.graphdef, make_loss_fn("ce", cfg, run.split.data.num_items), run.tx)
    state = run.state
    batches = list(run.batches.epoch(0))
    seen = set()
    for b in batches:  # compile every bucket shape first: throughput excludes compilation
        if b["inputs"].shape not in seen:
            seen.add(b["inputs"].shape)
            state, m = step(state, b, jax.random.PRNGKey(0)); m["loss"].block_until_ready()
    n = min(args["steps"], len(batches))
    t = time.perf_counter()
    for i, b in enumerate(batches[:n]):
        state, m = step(state, b, jax.random.PRNGKey(i))
    m["loss"].block_until_ready()
    dt = time.perf_counter() - t
    d, N = args["dim"], run.split.data.num_items
    targets = sum(float(b["weights"].sum()) for b in batches[:n])
    seqs = sum(int((b["weights"].sum(1) > 0).sum()) for b in batches[:n])
    flops = 0.0
    for b in batches[:n]:
        B, L = b["inputs"].shape
        per_tok = 2 * (2 * (4 * d * d + 2 * d * d) + 2 * 2 * L * d)  # 2 blocks: linears+FFN, attention
        flops += 3 * B * L * per_tok + 3 * 2 * float(b["weights"].sum()) * d * (N + 1)  # fwd+bwd
    print(json.dumps({"name": "jaxrec", "targets_per_s": targets / dt, "seq_per_s": seqs / dt,
                      "steps": n, "seconds": dt, "flop_per_s": flops / dt,
                      "epoch_s_est": dt / n * len(batches),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

PEAK = textwrap.dedent(r"""
    import time, jax, jax.numpy as jnp
    a = jnp.ones((2048, 2048), jnp.float32); f = jax.jit(lambda a: a @ a); f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(10): r = f(a)
    r.block_until_ready(); print(2 * 2048 ** 3 * 10 / (time.perf_counter() - t))
""")

RECBOLE = textwrap.dedent(r"""
    import json, resource, sys, time
    import torch
    torch.set_num_threads(2)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    args = json.loads(sys.argv[1])
    cfg = Config(model="SASRec", dataset="ml1m", config_dict={
        "data_path": args["atomic_dir"], "loss_type": "CE", "train_neg_sample_args": None,
        "hidden_size": args["dim"], "inner_size": args["dim"], "n_layers": 2, "n_heads": 1,
        "MAX_ITEM_LIST_LENGTH": args["max_len"], "train_batch_size": 128, "device": "cpu",
        "use_gpu": False, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "show_progress": False})
    ds = create_dataset(cfg)
    train, _, _ = data_preparation(cfg, ds)
    model = SASRec(cfg, train.dataset)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    it = iter(train)
    for _ in range(2):  # warm-up
        loss = model.calculate_loss(next(it)); opt.zero_grad(); loss.backward(); opt.step()
    n, samples = args["steps"], 0
    t = time.perf_counter()
    for _ in range(n):
        inter = next(it)
        loss = model.calculate_loss(inter); opt.zero_grad(); loss.backward(); opt.step()
        samples += len(inter)
    dt = time.perf_counter() - t
    print(json.dumps({"name": "recbole", "targets_per_s": samples / dt, "seq_per_s": samples / dt,
                      "steps": n, "seconds": dt, "epoch_s_est": dt / n * len(train),
                      "num_items": train.dataset.item_num - 1,  # RecBole counts the padding id
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def recbole_flop_per_sample(d: int, max_len: int, num_items: int) -> float:
    """FLOPs RecBole computes per training sample (fwd + bwd = 3x fwd): its SASRec runs both
    blocks over the whole padded window of max_len positions for every sample (one target),
    then the output layer for the last position only. Same per-position count as the jaxrec
    side (linears + FFN with inner size d, attention over max_len keys)."""
    per_pos = 2 * (2 * (4 * d * d + 2 * d * d) + 2 * 2 * max_len * d)
    return 3 * (max_len * per_pos + 2 * d * (num_items + 1))


def _last_json(cmd, env=None) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def recbole_python() -> str:
    venv = HERE / ".recbole-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "recbole==1.2.1",
                        "numpy<2", "scipy<1.13", "pandas<2.2", "ray<2.10", "thop", "tabulate",
                        "texttable", "colorlog", "colorama", "tensorboard", "psutil"], check=True)
    return str(py)


def write_atomic(src: Path, out_dir: Path) -> Path:
    """ml-1m.txt -> RecBole's ml1m.inter (file order becomes the timestamp)."""
    d = out_dir / "ml1m"
    d.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for t, line in enumerate(src.read_text().splitlines()):
        u, i = line.split()
        lines.append(f"{u}\t{i}\t{t}")
    (d / "ml1m.inter").write_text("\n".join(lines) + "\n")
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ML1M) if ML1M.exists() else "synthetic:medium")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--buckets", default="32,64,100,150", help="jaxrec length buckets ('' for none)")
    ap.add_argument("--batch", type=int, default=128, help="jaxrec sequences per batch (RecBole: 128)")
    ap.add_argument("--recbole", action="store_true", help="also measure RecBole 1.2.1 SASRec")
    ap.add_argument("--out", default=str(HERE / "train_throughput.json"))
    args = ap.parse_args()
    # the CPU unless JAX_PLATFORMS says otherwise (JAX_PLATFORMS=cuda on a GPU machine)
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    peak = float(subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True,
                                env=env, check=True).stdout.strip())
    buckets = [int(b) for b in args.buckets.split(",") if b]
    common = dict(data=args.data, steps=args.steps, dim=args.dim, max_len=args.max_len)
    rows = [_last_json([sys.executable, "-c", JAXREC, json.dumps(common | {"buckets": buckets, "batch": args.batch})], env)]
    if args.recbole:
        atomic = write_atomic(Path(args.data), HERE / ".recbole-data")
        rb = _last_json([recbole_python(), "-c", RECBOLE,
                         json.dumps(common | {"atomic_dir": str(atomic), "steps": min(args.steps, 20)})])
        rb["flop_per_s"] = rb["targets_per_s"] * recbole_flop_per_sample(args.dim, args.max_len, rb["num_items"])
        rows.append(rb)
    print(f"machine f32 matmul peak: {peak / 1e9:.1f} GFLOP/s; SASRec CE, d={args.dim}, L={args.max_len}, "
          f"batch {args.batch} (RecBole 128), 2 blocks, data {Path(args.data).name}")
    print(f"{'impl':<8} {'targets/s':>10} {'seq/s':>8} {'epoch s':>8} {'peak MiB':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        fl = r.get("flop_per_s")
        print(f"{r['name']:<8} {r['targets_per_s']:>10.0f} {r['seq_per_s']:>8.1f} {r['epoch_s_est']:>8.1f} "
              f"{r['peak_rss_mib']:>9.0f} {fl / 1e9 if fl else float('nan'):>8.1f} "
              f"{fl / peak if fl else float('nan'):>8.1%}")
    if len(rows) == 2:
        print(f"jaxrec / RecBole targets/s: {rows[0]['targets_per_s'] / rows[1]['targets_per_s']:.1f}x")
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                                          "cpus": os.cpu_count(), "matmul_peak_flop_s": peak, "rows": rows},
                                         indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
