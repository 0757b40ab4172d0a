#!/usr/bin/env bash
# End-to-end: one full-size (60k) epoch of `lenet5 train` with each engine, with peak memory.
# Needs Fashion-MNIST (apt-get install dataset-fashion-mnist) or pass DATASET=mnist when online.
set -euo pipefail
dataset=${DATASET:-fashion-mnist}
out=$(mktemp -d)
for engine in numpy torch; do
  /usr/bin/time -f "$engine: wall %e s, peak RSS %M KB" \
    lenet5 train --dataset "$dataset" --engine "$engine" --epochs 1 --out "$out/$engine" --quiet --no-plots
  python3 -c "import json,sys; r=json.loads(open('$out/$engine/metrics.jsonl').read().splitlines()[-1]); print('$engine: training %.2f s, epoch with test evaluation %.2f s, test acc %.2f%%' % (r['train_seconds'], r['seconds'], 100*r['test_acc']))"
done
rm -rf "$out"
