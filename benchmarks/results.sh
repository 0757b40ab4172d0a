#!/usr/bin/env bash
# Every result table of this project, rerun and regenerated: the generated blocks of docs/results.md and docs/paper.md.
#
#   MNIST=../shared/data/mnist benchmarks/results.sh
#   benchmarks/results.sh --tables      # only regenerate the tables from the runs there are
#
# Runs already complete are kept (each script checks), so a rerun only trains what is missing.
# Single-threaded runs, two at a time on a 2-core machine; from scratch this is most of a day.
#   1. seed-tanh and seed-sigmoid on full MNIST, seeds 0, 1, 2 (seed 0 is the shipped weights'
#      run of benchmarks/pretrained.sh, the same command), and the seed notebook's protocol
#      (seed-tanh, 10,000 training images, 4 epochs, batch 64, lr 0.1, constant rate), seeds 0, 1, 2
#   2. modern: the recipes chosen on validation splits (benchmarks/record.sh; README, "The modern
#      preset's record"), seeds 0, 1, 2, on MNIST, Fashion-MNIST and the 5,000-image MNIST subset
#   3. lecun1998 as the 1998 paper trained it, with and without --distort (benchmarks/paper.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
export MNIST LENET5_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
out=runs/results-full

train() {  # run-dir args...: train unless its metrics.jsonl already has every epoch
  local dir=$1; shift
  if [ -f "$dir/metrics.jsonl" ] && python - "$dir" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
sys.exit(0 if len((d / "metrics.jsonl").read_text().splitlines())
         >= json.loads((d / "config.json").read_text())["settings"]["epochs"] else 1)
PY
  then return; fi
  python -m lenet5.cli train "$@" --out "$dir" --force --quiet --no-plots
}

tables_only=0; [ "${1:-}" = "--tables" ] && tables_only=1

# 1. the simplified networks and the notebook's protocol
[ $tables_only = 1 ] || for preset in seed-tanh seed-sigmoid; do
  SHIP=0 benchmarks/pretrained.sh "$preset"  # seed 0: trains runs/pretrained/$preset if missing
  mkdir -p "$out" && ln -sfn "../pretrained/$preset" "$out/$preset-seed0"
  for seed in 1 2; do train "$out/$preset-seed$seed" --preset "$preset" --data-dir "$MNIST" --seed "$seed" & done
  wait
done
[ $tables_only = 1 ] || for seed in 0 1 2; do
  train "$out/notebook-protocol-seed$seed" --preset seed-tanh --data-dir "$MNIST" --train-limit 10000 --epochs 4 \
    --batch-size 64 --lr 0.1 --schedule constant --seed "$seed"
done

# 2. the modern preset's record (the options each final uses were chosen on validation)
# (MNIST twice: the preset's own recipe, the modern row of the every-preset table, then the record's)
[ $tables_only = 1 ] || MNIST_FINAL="" MNIST5K_FINAL=${MNIST5K_FINAL:---epochs 100} \
  FASHION_FINAL=${FASHION_FINAL:---widths 16,32,56} benchmarks/record.sh final
[ $tables_only = 1 ] || MNIST_FINAL="--widths 16,32,56" benchmarks/record.sh final mnist  # an earlier round's choice
[ $tables_only = 1 ] || MNIST_FINAL=${MNIST_FINAL:---widths 16,32,56 --dropout 0 --epochs 60} benchmarks/record.sh final mnist

# 3. the 1998 paper's table
[ $tables_only = 1 ] || benchmarks/paper.sh 0 1 2
python benchmarks/paper_table.py runs/paper

# the generated block of docs/results.md, between its markers (the rest of the page is prose)
{
  echo "## Every preset on full MNIST (issue 17)"
  echo
  echo "60,000 training images, the official 10,000 test images; mean ± sd over the seeds;"
  echo "seconds per epoch are training time of one thread with another run on the second core."
  echo
  python benchmarks/full_mnist_table.py
  echo
  echo "## The modern preset's record (issue 13)"
  echo
  echo 'Validation candidates: `MNIST=../shared/data/mnist benchmarks/record.sh val`; finals (seeds 0, 1, 2):'
  echo '`benchmarks/record.sh final` with the chosen options; tables: `python benchmarks/record_table.py runs/record`.'
  echo
  python benchmarks/record_table.py runs/record
} > docs/results.block
python - <<'PY'
from pathlib import Path
page, block = Path("docs/results.md"), Path("docs/results.block")
start, end = "<!-- results.sh", "<!-- end results.sh -->"
before, rest = page.read_text().split(start, 1)
head, after = rest.split(end, 1)
page.write_text(before + start + head.split("\n", 1)[0] + "\n" + block.read_text() + end + after)
block.unlink()
PY
