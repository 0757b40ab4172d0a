"""Benchmark script: the same as `lenet5 bench`, runnable from a checkout.

    python benchmarks/bench.py --batch-sizes 1,16,64,256,1024
    python benchmarks/bench.py --profile
    python benchmarks/bench.py --json > bench.json

It measures, in one process, training and inference images/s and GFLOP/s of the NumPy engine and
of every installed peer (PyTorch eager, torch.compile, JAX jit, ONNX Runtime for inference),
interleaving repetitions, and prints medians, spreads and time ratios. See src/lenet5/bench.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a checkout, installed or not
from lenet5.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
