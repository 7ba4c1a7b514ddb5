#!/usr/bin/env bash
# The trainer on one GPU: pairs/s of the real entry point at d 64/128/160 and 5/10 negatives
# (and batch sizes 1024/4096/16384; dense Adam and RowAdam), then a per-phase profile of one
# step at d 128, K 5.
#
#   bash bench/gpu.sh [WALKS] [RESULTS_DIR]
#
# WALKS defaults to out/ml-latest-small/walks (build it on a machine with Java first:
# `make walks`); the output goes to RESULTS_DIR (default out/bench/gpu) as gpu.log. Python
# packages the GPU image lacks (gensim, dacite, smart_open: the export writes a gensim
# KeyedVectors file) can be given as wheels in .whl/ and are installed under /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
WALKS=${1:-out/ml-latest-small/walks}
RESULTS=${2:-out/bench/gpu}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu.log"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)"
    # Enough steps that the last epoch's rate is past CUDA start-up (the rate a run logs is
    # pairs since its epoch started over the time since then); epochs only bound max_steps.
    "$PY" bench/bench_train.py --walks "$WALKS" --steps 4000 --repeat 1 \
        --dims 128 64 160 --num-negatives 5 10 --batch-sizes 4096 1024 16384 \
        --optimizers adam sparse_adam \
        --set train.epochs=1000 --set train.log_every_n_steps=10
    for batch in 4096 16384; do
        "$PY" bench/profile_step.py --walks "$WALKS" --device cuda --dim 128 --num-negatives 5 \
            --batch-size "$batch" --steps 60 --ops 12
    done
} 2>&1 | tee "$LOG"
