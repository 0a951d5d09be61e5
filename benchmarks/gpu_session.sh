#!/usr/bin/env bash
# Everything a session lent a GPU owes, as one device call (the device tool gives a session
# 15 minutes in all, machine start included: one prepared command, not many small ones).
#
#   bash benchmarks/gpu_session.sh --prepare     # here: data into .gpudata/, wheels into .whl/,
#                                                #   the serving checkpoint into .gpuruns/
#   bash benchmarks/gpu_session.sh --rehearse    # here: the whole script on the CPU, tiny budgets
#   device run: command "bash benchmarks/gpu_session.sh", carry [".gpudata", ".whl", ".gpuruns"],
#               timeout_s 590
#
# What it runs (issue 21's rows that need an accelerator, issue 19's serving at scale):
#   1. QUALITY_MIN (4) minutes of training, all runs at once on the one GPU (each process takes
#      memory as it needs it), one length bucket each (session 31: 9 processes compiling 5
#      shapes each spent 200 s of a 240 s budget compiling; on a GPU padding costs nothing), the
#      configs' own schedules (a decay over the budget would be spent during the compile):
#      HSTU-large on the raw protocol x3 seeds with 128 negatives per position as the reference draws them
#      (session 31: shared per sequence, 101 epochs gave 0.1489), the same with MoL (ml1m_raw_hstu_large_mol) x3 seeds
#      (x2 on a GPU under 100 GiB: see memory below), BERT4Rec on ml-1m.txt and on beauty x3 seeds each
#      (their rows have one seed, session 50; ml-1m also has a CPU recipe, ml1m_bert4rec_cpu90, session 51); runs are named
#      <config>_<gpu>_s<seed>, <gpu> from nvidia-smi (h100, h200), so each device's seeds group into a row;
#      a watchdog stops (SIGTERM: a clean stop) what is still running two minutes
#      after the budget. Memory (XLA's memory analysis of one train step, compiled for the CPU,
#      batch 128, L=200; session 32): HSTU-large per-position 3.1 GiB of temporaries, with MoL
#      16.5 GiB (11.9 shared): HSTU-large x3 + MoL x3 ~59 GiB, the BERT4Rec runs a few GiB
#      together (3,416 / 54,542-item softmax over the masked positions only), plus ~0.5 GiB of
#      CUDA context a process: the H200's 139 GiB holds all twelve; on an H100 (~78 GiB) a third
#      MoL seed would leave under 5 GiB, so MoL runs two seeds there;
#   2. serve_load.py against a carried SASRec+ checkpoint (trained on the CPU: serving speed
#      does not depend on its quality): unary and RecommendBatch of 64, --workers 8 then 1 (one length bucket: fewer compiles),
#      the load from several client processes on cores of their own (one Python client offers
#      about one core's worth of calls), bounded by a timeout so that step 3 always runs;
#   3. everything small enough to bring back packed in $OUT/gpu_session.tar.gz (the tool brings
#      back at most 8 files): run directories without checkpoints, logs, the serving JSON.
# Back here: tar xzf .../gpu_session.tar.gz -C . ; python benchmarks/quality.py --run runs/NAME
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-device}
QUALITY_MIN=${QUALITY_MIN:-4}
SERVE_SECONDS=${SERVE_SECONDS:-3}
D=.gpudata

# SASRec+ (d=64) on ml-1m.txt; --prepare trains one for 2 CPU minutes when there is none (runs/ is
# not in git: a fresh checkout has no runs): serving speed does not depend on how well it learned
SERVE_SRC=${SERVE_SRC:-runs/gpu_serve_ml1m_sasrec_ce}
SERVE_RUN=.gpuruns/$(basename "$SERVE_SRC")

if [ "$MODE" = "--prepare" ]; then
  SHARED=${JAXREC_SHARED_DATA:-../shared/data}
  mkdir -p $D .whl "$SERVE_RUN/checkpoints"
  cp "$SHARED/ml-1m/ml-1m.txt" "$SHARED/ml-1m/movies.dat" \
     "$SHARED/ml-1m/user_movie_time_ordered_original_ids.txt" "$SHARED/beauty/beauty.txt" $D/
  if [ ! -f "$SERVE_SRC/results.json" ]; then
    python -m jaxrec.cli train --config configs/ml1m_sasrec_ce.py --data "$SHARED/ml-1m/ml-1m.txt" \
        --out "$SERVE_SRC" --set max_minutes=2 --quiet || exit 1
  fi
  # the serving checkpoint: the run directory with its best checkpoint only (what serve reads)
  cp "$SERVE_SRC"/*.json "$SERVE_SRC"/*.jsonl "$SERVE_SRC"/*.npy "$SERVE_RUN/"
  rm -rf "$SERVE_RUN/checkpoints/best" && cp -r "$SERVE_SRC/checkpoints/best" "$SERVE_RUN/checkpoints/"
  # what the device image lacks or has too old (its pip list: tool library, device/KINDS.md)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "grpcio>=1.85.1" "grpcio-health-checking>=1.85.1" "grpcio-reflection>=1.85.1" "protobuf>=7.35.1"
  du -sh $D .whl .gpuruns
  exit 0
fi

OUT=${OUT:-out/gpu_session}
RUNS=runs  # the rehearsal's runs go under $OUT, out of the quality table's way
WORKERS=8,1
CLIENT_PROCS=6
SERVER_CPUS=0-9
CLIENT_CPUS=10-15
mkdir -p "$OUT"
LOG="$OUT/gpu_session.log"
exec > >(tee "$LOG") 2>&1
if [ "$MODE" = "--rehearse" ]; then
  export JAX_PLATFORMS=cpu
  QUALITY_MIN=${QUALITY_MIN_REHEARSE:-0.3}
  SERVE_SECONDS=1
  SEEDS=""  # seed 0 of each only: the CPU has two cores
  GPU=cpu
  MOL_SEEDS="0"
  PY=${PY:-python}
  RUNS=$OUT/runs
  WORKERS=1,2
  CLIENT_PROCS=2
  SERVER_CPUS=0
  CLIENT_CPUS=1
  [ -d "$SERVE_RUN" ] || SERVE_RUN=$SERVE_SRC
else
  export JAX_PLATFORMS=cuda
  # many processes share the one GPU: each takes memory as it needs it, not 75% up front
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  SEEDS="1 2"
  PY=python3
  SITE=/tmp/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl || exit 1
  ln -sfn "$PWD/server" $SITE/jaxrec_server  # the package jaxrec_server lives in server/
  export PYTHONPATH=$SITE:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  # the device's short name for the run directories ("NVIDIA H200" -> h200), and its memory
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o -i -E 'h100|h200|a100|b200' | head -1 | tr A-Z a-z)
  GPU=${GPU:-gpu}
  MEM_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | tr -dc 0-9)
  if [ "${MEM_MIB:-0}" -ge 100000 ]; then MOL_SEEDS="0 1 2"; else MOL_SEEDS="0 1"; fi
  echo "device tag $GPU, ${MEM_MIB:-?} MiB: MoL seeds $MOL_SEEDS"
fi
mkdir -p "$RUNS"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
$PY -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
date -u

# ---- 1. quality runs, all at once
declare -a PIDS=()
train() {  # train CONFIG DATAFILE RUN [--set ...]
  local cfg=$1 data=$2 run=$3; shift 3
  $PY -m jaxrec.cli train --config configs/$cfg.py --data $D/$data --out $RUNS/$run --quiet \
      --set max_minutes=$QUALITY_MIN --set length_buckets=none "$@" > "$OUT/$run.log" 2>&1 &
  PIDS+=($!)
  echo "started $run (pid $!)"
}
RAW=user_movie_time_ordered_original_ids.txt
for s in 0 $SEEDS; do
  train ml1m_raw_hstu_large $RAW ml1m_raw_hstu_large_pp_${GPU}_s$s --set seed=$s --set retrieval.shared_negatives=false
done
for s in $MOL_SEEDS; do  # the same with a mixture-of-logits similarity (RAILS' ML-1M setting)
  train ml1m_raw_hstu_large_mol $RAW ml1m_raw_hstu_large_mol_pp_${GPU}_s$s --set seed=$s --set retrieval.shared_negatives=false
done
for s in 0 $SEEDS; do  # the published settings exactly, each config's own epochs and patience
  train ml1m_bert4rec ml-1m.txt ml1m_bert4rec_${GPU}_s$s --set seed=$s
  train beauty_bert4rec beauty.txt beauty_bert4rec_${GPU}_s$s --set seed=$s
done
# the watchdog: SIGTERM (a clean stop that saves) whatever outlives the budget by 120 s
( sleep $(awk "BEGIN {print int($QUALITY_MIN * 60 + 120)}"); kill -TERM "${PIDS[@]}" 2>/dev/null \
  && echo "watchdog: stopped runs still going" ) &
WATCHDOG=$!
FAILED=0
for p in "${PIDS[@]}"; do wait "$p" || FAILED=$((FAILED + 1)); done
kill $WATCHDOG 2>/dev/null
echo "quality runs done, $FAILED failed"; date -u
for r in $RUNS/*_${GPU}_s*/results.json; do
  [ -f "$r" ] || continue
  $PY - "$r" <<'EOF2'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["metrics"]
print(sys.argv[1], {k: round(v, 4) for k, v in m.items() if k in ("NDCG@10", "HR@10")}, "epochs", r["epochs"],
      "best valid", r["best_valid"])
EOF2
done

# ---- 2. serving at scale (issue 19, must-show 3), servers and load clients on separate cores
if [ -f $SERVE_RUN/results.json ]; then
  timeout -s INT -k 15 ${SERVE_TIMEOUT:-170} $PY benchmarks/serve_load.py --checkpoint $SERVE_RUN --data $D/ml-1m.txt \
      --batch-sizes 64 --rpc unary,batch64 --workers $WORKERS --concurrency 16,64,256 --serve-args="--length-buckets 200" \
      --channels 24 --client-procs $CLIENT_PROCS --server-cpus $SERVER_CPUS --client-cpus $CLIENT_CPUS \
      --seconds $SERVE_SECONDS --out "$OUT/serve_load_gpu.json" || echo "serve_load failed or timed out"
fi
date -u

# ---- 3. bring back what is small: run directories without checkpoints, logs, JSON
tar czf "$OUT/gpu_session.tar.gz" --exclude='checkpoints' -C "$(dirname "$RUNS")" \
    $(cd "$(dirname "$RUNS")" && ls -d "$(basename "$RUNS")"/*_${GPU}_s* 2>/dev/null) \
    -C "$OUT" $(cd "$OUT" && ls *.log *.json 2>/dev/null | grep -v gpu_session.log)
# the tool brings back at most 8 files: the runs' logs are in the archive
(cd "$OUT" && ls | grep -v -x -e gpu_session.log -e gpu_session.tar.gz -e serve_load_gpu.json | xargs -r rm -rf)
ls -la "$OUT"
