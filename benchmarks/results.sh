#!/usr/bin/env bash
# Rerun the modern preset's final recipes for seeds 0, 1, 2 and regenerate docs/results.md.
#
#   MNIST=../shared/data/mnist benchmarks/results.sh
#
# The recipes were chosen on validation splits (benchmarks/record.sh val; README, "The modern
# preset's record"): MNIST and Fashion-MNIST with the preset's recipe, the 5,000-image MNIST
# subset with --epochs 100. Runs already complete in runs/record/final are kept. The 1998
# paper's table has its own scripts (benchmarks/paper.sh, benchmarks/paper_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST5K_FINAL=${MNIST5K_FINAL:---epochs 100} benchmarks/record.sh final
earlier=$(sed -n '/^## Earlier runs/,$p' docs/results.md 2>/dev/null || true)
{
  echo "# Results, measured on this machine"
  echo
  echo "## The modern preset's record (issue 13)"
  echo
  echo 'Validation candidates: `MNIST=../shared/data/mnist benchmarks/record.sh val`; finals (seeds 0, 1, 2):'
  echo '`benchmarks/results.sh` (`benchmarks/record.sh final` with `MNIST5K_FINAL="--epochs 100"`); tables:'
  echo '`python benchmarks/record_table.py runs/record`.'
  echo
  python benchmarks/record_table.py runs/record
  echo
  echo "## The 1998 paper's table (issue 17)"
  echo
  echo 'See [paper.md](paper.md) (`benchmarks/paper.sh`, `benchmarks/paper_table.py`).'
  if [ -n "$earlier" ]; then echo; echo "$earlier"; fi
} > docs/results.md.new
mv docs/results.md.new docs/results.md
