"""The validation runs behind the lecun1998 preset's η (README, "The 1998 network").

    python benchmarks/lecun1998_eta.py N_TRAIN LR PASSES [AUGMENT]       # the preset's ±2.4/√F init
    INIT=F python benchmarks/lecun1998_eta.py 30000 5e-5 3               # the printed ±2.4/F

Trains lecun1998 (SDLM, the paper's schedule scaled by LR/5e-4, one pattern per update) on the
first N_TRAIN full-MNIST training images and evaluates on 5,000 held-out *training* images
(55,000-59,999) after each pass: the test set is not touched. Prints the loss by fifths of each
pass, the validation accuracy and the mean |w| of C1 and C3 (their growth shows saturation).
Needs ../shared/data/mnist (or MNIST=/path).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import lenet5  # noqa: E402
import lenet5.lecun1998 as L  # noqa: E402


def main(n: int, lr: float, passes: int, augment: str = "none") -> None:
    full = lenet5.load_dir(os.environ.get("MNIST", Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    data = lenet5.Dataset(lenet5.Split(full.train.images[:n], full.train.labels[:n]),
                          lenet5.Split(full.train.images[55000:], full.train.labels[55000:]))
    model = lenet5.LeNet5("lecun1998", seed=0)
    init = os.environ.get("INIT", "sqrtF")
    if init == "F":
        for _, layer in model.layers:  # the preset's own draws, rescaled from ±2.4/√F to ±2.4/F
            for pn, p in layer.params.items():
                p /= np.sqrt(L.fan_in(layer)).reshape((-1,) + (1,) * (p.ndim - 1))
    losses: list[float] = []
    start = time.time()

    def on_epoch(rec, state):
        fifths = np.array(losses[-n:])[: n // 5 * 5].reshape(5, -1).mean(1)
        w = np.mean([np.abs(v).mean() for k, v in model.params().items() if k.startswith(("c1", "c3"))])
        print(f"init={init} lr={lr} augment={augment} pass {rec['epoch']}: loss by fifths {np.round(fifths, 2)}, "
              f"validation {rec['test_acc']:.4f}, mean |w| C1,C3 {w:.2f}, {time.time() - start:.0f} s", flush=True)

    lenet5.fit(model, data, epochs=passes, lr=lr, augment=augment, progress=False,
               hooks=lenet5.Hooks(on_batch=lambda e, b, loss: losses.append(loss), on_epoch=on_epoch))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
