#!/usr/bin/env bash
# The modern preset's record (issue 13): recipes compared on validation splits, then the
# chosen ones trained on the whole training set for seeds 0, 1, 2 and tested once.
#
#   MNIST=../shared/data/mnist benchmarks/record.sh val [NAME...]     # the comparison (--val-split, --no-test)
#   MNIST=../shared/data/mnist benchmarks/record.sh final [NAME...]   # the chosen recipes, 3 seeds
#     (SEEDS="0 2" ... val|final: only those seeds, e.g. to run two at once on two cores)
#   python benchmarks/record_table.py runs/record                     # the tables (docs/results.md)
#
# Each run is single-threaded (LENET5_THREADS=1), so two can share a 2-core machine.
# A run already complete (its metrics.jsonl has every epoch) is not trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
out=${OUT:-runs/record}
export LENET5_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

five_k=$(mktemp -d)  # the 5,000-image MNIST subset with the official test set
ln -s "$(realpath "$MNIST")/train5k-images-idx3-ubyte.gz" "$five_k/train-images-idx3-ubyte.gz"
ln -s "$(realpath "$MNIST")/train5k-labels-idx1-ubyte.gz" "$five_k/train-labels-idx1-ubyte.gz"
ln -s "$(realpath "$MNIST")/t10k-images-idx3-ubyte.gz" "$five_k/t10k-images-idx3-ubyte.gz"
ln -s "$(realpath "$MNIST")/t10k-labels-idx1-ubyte.gz" "$five_k/t10k-labels-idx1-ubyte.gz"

# name | data directory, or dataset:NAME | options [| seeds]  (validation candidates; the chosen ones go
# in FINAL). Seeds default to 0 (MNIST 5k: 0 1 2, its 1,000 validation images are few).
# Candidates with options since removed (label smoothing, EMA, cutout, elastic-mild: each lost or
# tied on validation) ran with earlier versions; their results stay in docs/results.md and
# benchmarks/results/record_*.txt.
VAL=(
  "mnist-base|$MNIST|"
  "mnist-elastic|$MNIST|--augment elastic"
  "mnist-60|$MNIST|--epochs 60"
  "mnist-w12-24-80|$MNIST|--widths 12,24,80"
  "mnist-w16-32-56|$MNIST|--widths 16,32,56|0 1 2"
  "mnist-drop0|$MNIST|--dropout 0|0 1 2"
  "mnist-w16-32-56-wd0.01|$MNIST|--widths 16,32,56 --weight-decay 0.01|0 1 2"
  "mnist-w16-32-56-drop0|$MNIST|--widths 16,32,56 --dropout 0|0 1 2"
  "mnist-w16-32-56-drop0-lecun1998|$MNIST|--widths 16,32,56 --dropout 0 --augment lecun1998|0 1 2"
  "mnist-w16-32-56-drop0-60|$MNIST|--widths 16,32,56 --dropout 0 --epochs 60|0 1 2"
  "mnist-w20-40-38-drop0|$MNIST|--widths 20,40,38 --dropout 0|0 1 2"  # parameters moved from C5 to C1, C3
  "fashion-base|dataset:fashion-mnist|"
  "fashion-60|dataset:fashion-mnist|--epochs 60"
  "fashion-w12-24-80|dataset:fashion-mnist|--widths 12,24,80"
  "fashion-w16-32-56|dataset:fashion-mnist|--widths 16,32,56"
  "mnist5k-base|$five_k|"
  "mnist5k-elastic|$five_k|--augment elastic"
  "mnist5k-elastic-60|$five_k|--augment elastic --epochs 60"
  "mnist5k-100|$five_k|--epochs 100"
)
FINAL=(
  "mnist|$MNIST|${MNIST_FINAL:-}"
  "fashion|dataset:fashion-mnist|${FASHION_FINAL:-}"
  "mnist5k|$five_k|${MNIST5K_FINAL:-}"
)

complete() {  # run dir -> whether metrics.jsonl has as many epochs as config.json asks
  python - "$1" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
try:
    epochs = json.loads((d / "config.json").read_text())["settings"]["epochs"]
    done = len((d / "metrics.jsonl").read_text().splitlines())
except (OSError, KeyError, ValueError):
    sys.exit(1)
sys.exit(0 if done >= epochs else 1)
PY
}

train() {  # name data options [extra...]
  local name=$1 data=$2 opts=$3; shift 3
  local dir="$out/$name"
  if complete "$dir"; then echo "record: $dir complete"; return; fi
  local source=(--data-dir "$data")
  [[ $data == dataset:* ]] && source=(--dataset "${data#dataset:}")  # found in the cache or a system location
  # shellcheck disable=SC2086
  python -m lenet5.cli train --preset modern "${source[@]}" $opts "$@" --out "$dir" --force --quiet --no-plots
}

phase=${1:?val or final}; shift
want=" ${*:-} "
case "$phase" in
  val)
    for entry in "${VAL[@]}"; do
      IFS='|' read -r name data opts seeds <<<"$entry"
      [[ "$want" == "  " || "$want" == *" $name "* ]] || continue
      split=0.1
      [[ $name == mnist5k-* ]] && seeds=${seeds:-0 1 2} && split=0.2  # 1,000 validation images: three seeds
      seeds=${SEEDS:-${seeds:-0}}
      for s in $seeds; do train "val/$name-seed$s" "$data" "$opts" --val-split $split --no-test --seed "$s"; done
    done ;;
  final)
    for entry in "${FINAL[@]}"; do
      IFS='|' read -r name data opts <<<"$entry"
      [[ "$want" == "  " || "$want" == *" $name "* ]] || continue
      # a recipe other than the preset's gets its own directories: "--epochs 100" -> mnist5k-epochs-100
      tag=$(echo "$opts" | tr -s ' ' '-' | sed 's/--//g; s/^-//; s/-$//')
      for s in ${SEEDS:-0 1 2}; do train "final/$name${tag:+-$tag}-seed$s" "$data" "$opts" --seed "$s"; done
    done ;;
  *) echo "usage: $0 val|final [NAME...]" >&2; exit 2 ;;
esac
