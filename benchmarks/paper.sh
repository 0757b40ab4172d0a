#!/usr/bin/env bash
# The 1998 paper's LeNet-5 table on full MNIST: lecun1998 with its default recipe (SDLM, the
# η schedule ×0.3, init ±2.4/√F, 20 passes, one pattern per update, MAP criterion), without and with the
# paper's distortions (--distort), for the seeds given (default 0 1 2).
#
#   MNIST=/path/to/mnist benchmarks/paper.sh [SEED...]      # runs into runs/paper/
#   python benchmarks/paper_table.py runs/paper              # the table (docs/paper.md)
#
# Each run is one process on one core (per-pattern training gains nothing from a second
# thread); two run side by side. A stopped run resumes with: lenet5 train --resume DIR
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
SEEDS=${*:-0 1 2}
export LENET5_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run() {  # variant seed [extra args]
  local out="runs/paper/$1-seed$2"
  if [ -f "$out/metrics.jsonl" ] && [ "$(wc -l < "$out/metrics.jsonl")" -ge 20 ]; then return; fi
  if [ -f "$out/train_state.safetensors" ]; then
    python -m lenet5.cli train --resume "$out" --quiet --no-plots
  else
    python -m lenet5.cli train --preset lecun1998 --data-dir "$MNIST" --seed "$2" "${@:3}" --out "$out" --force \
      --quiet --no-plots
  fi
}
for seed in $SEEDS; do
  run plain "$seed" &
  run distort "$seed" --distort &
  wait
done
