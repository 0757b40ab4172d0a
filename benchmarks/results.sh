#!/usr/bin/env bash
# Train every preset with its default recipe and write the comparison table (docs/results.md).
#
#   MNIST5K_DIR=../shared/data/mnist benchmarks/results.sh      # this project's offline data
#   FULL_MNIST=1 benchmarks/results.sh                           # also full MNIST (downloads it)
#
# MNIST5K_DIR holds train5k-*.gz (5,000 MNIST training images) and the official t10k-*.gz;
# Fashion-MNIST comes from the cache, /usr/share/datasets/fashion-mnist or a download.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/results}
mkdir -p "$out"
presets=${PRESETS:-"seed-tanh seed-sigmoid modern lecun1998"}  # lecun1998 on Fashion: ~25 min
runs=()
if [ -n "${MNIST5K_DIR:-}" ]; then
  d=$(mktemp -d)
  ln -s "$(realpath "$MNIST5K_DIR")/train5k-images-idx3-ubyte.gz" "$d/train-images-idx3-ubyte.gz"
  ln -s "$(realpath "$MNIST5K_DIR")/train5k-labels-idx1-ubyte.gz" "$d/train-labels-idx1-ubyte.gz"
  ln -s "$(realpath "$MNIST5K_DIR")/t10k-images-idx3-ubyte.gz" "$d/t10k-images-idx3-ubyte.gz"
  ln -s "$(realpath "$MNIST5K_DIR")/t10k-labels-idx1-ubyte.gz" "$d/t10k-labels-idx1-ubyte.gz"
  for p in $presets; do
    lenet5 train --preset "$p" --data-dir "$d" --out "$out/mnist5k-$p" --force --quiet --no-plots
    runs+=("$out/mnist5k-$p")
  done
fi
for p in $presets; do
  lenet5 train --preset "$p" --dataset fashion-mnist --out "$out/fashion-$p" --force --quiet --no-plots
  runs+=("$out/fashion-$p")
done
if [ -n "${FULL_MNIST:-}" ]; then
  for p in $presets; do
    lenet5 train --preset "$p" --dataset mnist --out "$out/mnist-$p" --force --quiet --no-plots
    runs+=("$out/mnist-$p")
  done
fi
mkdir -p docs
lenet5 compare "${runs[@]}" --markdown --output docs/results.md
