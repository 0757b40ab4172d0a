"""The NumPy engine's training speed in two source trees, interleaved on one machine.

    python benchmarks/engine_regression.py BEFORE_SRC AFTER_SRC [--rounds 5] [--batch-sizes 16,64,256]

Each round runs, in a fresh process per tree and in alternating order, ``lenet5.bench.measure_train``
(the NumPy engine alone: the training loop's own step, BLAS on one thread, ``--steps`` steps per
repetition, 3 repetitions, median) at every batch size. A burst of load from elsewhere hits both
trees alike; the figure per tree is the median over rounds, and the ratio after/before is what a
change costs (1.00: nothing). Prints a table and, with --out, writes it with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys

PROBE = """
import json, sys
from lenet5.bench import measure_train
batches, steps = json.loads(sys.argv[1]), int(sys.argv[2])
print(json.dumps({b: measure_train("seed-tanh", b, steps, 3, ["numpy"])["peers"]["numpy"]["images_per_s"]
                  for b in batches}))
"""


def cpu() -> str:
    """The CPU's model, vector extensions and cores (lenet5.bench's naming, from this tree)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from lenet5.bench import cpu_model, vector_extensions, vector_summary

    return f"{cpu_model()} ({vector_summary(vector_extensions())}, {os.cpu_count()} cores)"


def run(src: str, batches: list[int], steps: int) -> dict[int, float]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(batches), str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--out")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    samples: dict[str, dict[int, list[float]]] = {"before": {b: [] for b in batches}, "after": {b: [] for b in batches}}
    for r in range(args.rounds):
        order = [("before", args.before), ("after", args.after)]
        for name, src in (order if r % 2 == 0 else order[::-1]):
            for b, v in run(src, batches, args.steps).items():
                samples[name][b].append(v)
    lines = [f"NumPy engine, seed-tanh training images/s, {cpu()}",
             f"median of {args.rounds} interleaved rounds (each: median of 3 repetitions of {args.steps} steps)",
             f"before: {args.before}", f"after:  {args.after}", "",
             f"{'batch':>5}  {'before':>9}  {'after':>9}  {'after/before':>12}  before rounds / after rounds"]
    for b in batches:
        m0, m1 = statistics.median(samples["before"][b]), statistics.median(samples["after"][b])
        lines.append(f"{b:>5}  {m0:>9.0f}  {m1:>9.0f}  {m1 / m0:>12.3f}  "
                     f"{' '.join(f'{v:.0f}' for v in samples['before'][b])} / "
                     f"{' '.join(f'{v:.0f}' for v in samples['after'][b])}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
