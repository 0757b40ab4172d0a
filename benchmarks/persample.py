"""Per-pattern training speed of lecun1998: the lean single-image path against the layers.

    python benchmarks/persample.py [IMAGES] [REPEATS]

Both paths run the training loop's own step (forward, MAP criterion, backward, SDLM update)
on the same images, interleaved, BLAS on one thread as in training; prints the median
images/s of each and their ratio. Needs no data (random images; the speed does not depend
on the pixels).
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import lenet5  # noqa: E402
from lenet5.data import Split  # noqa: E402
from lenet5.train import train_step  # noqa: E402


def main(n: int = 2000, repeats: int = 7) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    paths = {}
    for name in ("layers", "lean"):
        model = lenet5.LeNet5("lecun1998", seed=0)
        if name == "layers":
            model._one = None  # every step through the general layers
        opt = model.make_optimizer(lenet5.resolve("lecun1998"))
        opt.prepare_epoch(model, Split(images[:500], labels[:500]), np.random.default_rng(0))
        opt.lr = 1e-9  # the weights barely move, so every repeat does the same work
        x = [model.prepare(images[i:i + 1]) for i in range(n)]
        paths[name] = (model, opt, x)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (model, opt, x) in paths.items():
            with model.running():
                start = time.perf_counter()
                for i in range(n):
                    train_step(model, opt, x[i], labels[i:i + 1])
                seconds[name].append(time.perf_counter() - start)
    rate = {name: n / statistics.median(s) for name, s in seconds.items()}
    for name, r in rate.items():
        print(f"{name:7s} {r:7.0f} images/s  (median of {repeats}, {n} images each)")
    print(f"lean / layers: {rate['lean'] / rate['layers']:.2f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
