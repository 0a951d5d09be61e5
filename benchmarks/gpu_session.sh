#!/usr/bin/env bash
# Everything a session lent a GPU owes, as one device call (the device tool gives a session
# 15 minutes in all, machine start included: one prepared command, not many small ones).
#
#   bash benchmarks/gpu_session.sh --prepare     # here: data into .gpudata/, wheels into .whl/
#   bash benchmarks/gpu_session.sh --rehearse    # here: the whole script on the CPU, tiny budgets
#   device run: command "bash benchmarks/gpu_session.sh", carry [".gpudata", ".whl"], timeout_s 590
#
# What it runs (issue 21 seeds and rows that need an accelerator, issue 19's serving at scale):
#   1. QUALITY_MIN (5) minutes of training, all runs at once on the one GPU (each process takes a
#      slice of its memory): HSTU-large on the raw protocol x3 seeds, and with MoL
#      (ml1m_raw_hstu_large_mol) x3 seeds, SASRec BCE, BERT4Rec,
#      beauty SASRec+ and beauty BERT4Rec seeds 1 and 2 (seed 0 of each is in the quality table),
#      SASRec+ CE seed 1 (whose checkpoint step 2 serves);
#   2. serve_load.py against that SASRec+ run: unary and RecommendBatch of 64, --workers 1 and 4;
#   3. everything small enough to bring back packed in $OUT/gpu_session.tar.gz (the tool brings
#      back at most 8 files): run directories without checkpoints, logs, the serving JSON.
# Back here: tar xzf .../gpu_session.tar.gz -C . ; python benchmarks/quality.py --run runs/gpu_...
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-device}
QUALITY_MIN=${QUALITY_MIN:-5}
SERVE_SECONDS=${SERVE_SECONDS:-4}
D=.gpudata

if [ "$MODE" = "--prepare" ]; then
  SHARED=${JAXREC_SHARED_DATA:-../shared/data}
  mkdir -p $D .whl
  cp "$SHARED/ml-1m/ml-1m.txt" "$SHARED/ml-1m/movies.dat" \
     "$SHARED/ml-1m/user_movie_time_ordered_original_ids.txt" "$SHARED/beauty/beauty.txt" $D/
  # what the device image lacks or has too old (its pip list: tool library, device/KINDS.md)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "grpcio>=1.85.1" "grpcio-health-checking>=1.85.1" "grpcio-reflection>=1.85.1" "protobuf>=7.35.1"
  du -sh $D .whl
  exit 0
fi

OUT=${OUT:-out/gpu_session}
RUNS=runs  # the rehearsal's runs go under $OUT, out of the quality table's way
WORKERS=1,4
mkdir -p "$OUT"
LOG="$OUT/gpu_session.log"
exec > >(tee "$LOG") 2>&1
if [ "$MODE" = "--rehearse" ]; then
  export JAX_PLATFORMS=cpu
  QUALITY_MIN=${QUALITY_MIN_REHEARSE:-0.3}
  SERVE_SECONDS=1
  SEEDS="1"
  PY=${PY:-python}
  RUNS=$OUT/runs
  WORKERS=1,2
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
      --set max_minutes=$QUALITY_MIN "$@" > "$OUT/$run.log" 2>&1 &
  PIDS+=($!)
  echo "started $run (pid $!)"
}
RAW=user_movie_time_ordered_original_ids.txt
for s in 0 $SEEDS; do
  train ml1m_raw_hstu_large $RAW ml1m_raw_hstu_large_gpu_s$s --set seed=$s
  [ "$MODE" = "--rehearse" ] && break
done
for s in 0 $SEEDS; do  # the same with a mixture-of-logits similarity (RAILS' ML-1M setting)
  train ml1m_raw_hstu_large_mol $RAW ml1m_raw_hstu_large_mol_gpu_s$s --set seed=$s
  [ "$MODE" = "--rehearse" ] && break
done
for s in $SEEDS; do
  train ml1m_sasrec_ce ml-1m.txt ml1m_sasrec_ce_gpu_s$s --set seed=$s
  [ "$MODE" = "--rehearse" ] && break
  train ml1m_sasrec_bce ml-1m.txt ml1m_sasrec_bce_gpu_s$s --set seed=$s
  train ml1m_bert4rec ml-1m.txt ml1m_bert4rec_gpu_s$s --set seed=$s
  train beauty_sasrec_ce beauty.txt beauty_sasrec_ce_gpu_s$s --set seed=$s
  train beauty_bert4rec beauty.txt beauty_bert4rec_gpu_s$s --set seed=$s
done
FAILED=0
for p in "${PIDS[@]}"; do wait "$p" || FAILED=$((FAILED + 1)); done
echo "quality runs done, $FAILED failed"; date -u
for r in $RUNS/*/results.json; do
  $PY - "$r" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["metrics"]
print(sys.argv[1], {k: round(v, 4) for k, v in m.items() if k in ("NDCG@10", "HR@10")}, "epochs", r["epochs"],
      "best valid", r["best_valid"])
EOF
done

# ---- 2. serving at scale (issue 19, must-show 3): the SASRec+ run just trained
SERVE_RUN=$RUNS/ml1m_sasrec_ce_gpu_s1
if [ -f $SERVE_RUN/results.json ]; then
  $PY benchmarks/serve_load.py --checkpoint $SERVE_RUN --data $D/ml-1m.txt --batch-sizes 64 \
      --rpc unary,batch64 --workers $WORKERS --concurrency 8,32,128,512 --channels 8 \
      --seconds $SERVE_SECONDS --out "$OUT/serve_load_gpu.json" || echo "serve_load failed"
fi
date -u

# ---- 3. bring back what is small: run directories without checkpoints, logs, JSON
tar czf "$OUT/gpu_session.tar.gz" --exclude='checkpoints' -C "$(dirname "$RUNS")" "$(basename "$RUNS")" \
    -C "$OUT" $(cd "$OUT" && ls *.log *.json 2>/dev/null | grep -v gpu_session.log)
ls -la "$OUT"
