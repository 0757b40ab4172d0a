#!/usr/bin/env bash
# Build the pretrained weights shipped in src/lenet5/weights/: each preset trained on full
# MNIST with its default recipe (modern also on Fashion-MNIST), then packed with its command,
# data checksums and test accuracy (benchmarks/ship_pretrained.py). modern on MNIST is trained
# with --augment affine-pen-junk: it reads other writers' digits and photos, and numbers whose
# digits touch, better at no cost on MNIST (benchmarks/pen_val.py); the shipped file is the
# seed-0 run of benchmarks/record.sh final with MNIST_FINAL="--augment affine-pen-junk" (the
# same command).
#
#   MNIST=/path/to/mnist benchmarks/pretrained.sh [NAME...]   # default: seed-tanh seed-sigmoid modern modern-fashion
#   SHIP=0 benchmarks/pretrained.sh NAME                      # train only (benchmarks/results.sh)
#
# lecun1998 ships from the paper run (benchmarks/paper.sh): python benchmarks/ship_pretrained.py
# lecun1998 runs/paper/plain-seed0
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
NAMES=${*:-seed-tanh seed-sigmoid modern modern-fashion}
export LENET5_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for name in $NAMES; do
  out="runs/pretrained/$name"
  case "$name" in
    modern-fashion) args=(--preset modern --dataset fashion-mnist) ;;
    modern) args=(--preset modern --data-dir "$MNIST" --augment affine-pen-junk) ;;
    *) args=(--preset "$name" --data-dir "$MNIST") ;;
  esac
  if [ ! -f "$out/metrics.jsonl" ]; then
    python -m lenet5.cli train "${args[@]}" --seed 0 --out "$out" --force --quiet --no-plots
  fi
  [ "${SHIP:-1}" = 0 ] || python benchmarks/ship_pretrained.py "$name" "$out"
done
