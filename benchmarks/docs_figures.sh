#!/usr/bin/env bash
# The run figures in docs/images/ (curves, confusion, kernels, feature maps, mistakes): the modern
# preset's recipe for 10 epochs on the MNIST sample bundled with lenet5 (offline on purpose, so
# anyone gets the same data), drawn by `lenet5 train` itself.
#   benchmarks/docs_figures.sh            # writes runs/mnist-sample-modern and copies its figures
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
LENET5_MIRRORS=http://127.0.0.1:9/ LENET5_DATA="$cache" \
  python -m lenet5.cli train --preset modern --epochs 10 --out runs/mnist-sample-modern --force --quiet
for f in curves confusion kernels feature_maps wrong; do
  cp "runs/mnist-sample-modern/$f.png" "docs/images/$f.png"
done
