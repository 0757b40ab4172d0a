"""Per-pattern SDLM training speed, this tree against an earlier commit, measured in one run.

    python benchmarks/sdlm_speedup.py [--old REV] [--images N] [--repeats R] [--augment NAME]

Issue 17 asks for per-pattern training "at least 3x faster" than when it was filed. The only
honest way to say that on a noisy shared machine is to run both versions of the code in the
same minutes: this script checks REV out (default ad99999, the tree the issue was measured on,
before the single-image path) into a temporary git worktree, then alternates the two, each in
a fresh single-threaded process (as ``benchmarks/paper.sh`` trains), for R repeats.

Each process trains lecun1998 with its preset's own recipe (SDLM, MAP, one image per update)
for one pass over the first N full-MNIST training images through ``lenet5.fit`` and reports
N / train_seconds (the loop's own figure: the curvature estimate, input coding, every step);
``--augment lecun1998`` distorts every image (``--distort``: lecun1998-pool, nine in ten).
Prints each repeat and the median images/s of each side, and their ratio. Needs
../shared/data/mnist (or MNIST=/path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import sys, numpy as np, lenet5
n = int(sys.argv[1])
full = lenet5.load_dir(sys.argv[2])
data = lenet5.Dataset(lenet5.Split(full.train.images[:n], full.train.labels[:n]),
                      lenet5.Split(full.test.images[:10], full.test.labels[:10]))
model = lenet5.LeNet5("lecun1998", seed=0)
history = lenet5.fit(model, data, epochs=1, augment=sys.argv[3], progress=False)
print(n / history[0]["train_seconds"])
"""


def rate(src: Path, n: int, mnist: str, augment: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "LENET5_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(n), mnist, augment], env=env, check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    return float(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="ad99999", help="the earlier commit (default: ad99999)")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--augment", default="none", help="e.g. lecun1998; default none")
    args = ap.parse_args()
    mnist = os.environ.get("MNIST", str(ROOT.parent / "shared/data/mnist"))
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old],
                       check=True, capture_output=True)
        try:
            sides = {f"old ({args.old})": old / "src", "this tree": ROOT / "src"}
            rates: dict[str, list[float]] = {name: [] for name in sides}
            for r in range(args.repeats):
                for name, src in sides.items():
                    rates[name].append(rate(src, args.images, mnist, args.augment))
                print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " images/s",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, m in med.items():
        print(f"{name:>16s}: {m:6.0f} images/s (median of {args.repeats}, {args.images} images, one thread, "
              f"augment {args.augment})")
    old_rate, new_rate = med.values()
    print(f"this tree / old: {new_rate / old_rate:.2f}x")


if __name__ == "__main__":
    main()
