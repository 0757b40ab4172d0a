"""The validation runs behind the lecun1998 preset's η (README, "The 1998 network").

    python benchmarks/lecun1998_eta.py N_TRAIN LR PASSES [AUGMENT]       # the preset's ±2.4/√F init
    INIT=F python benchmarks/lecun1998_eta.py 55000 5e-5 20              # the printed ±2.4/F
    INIT=F MU=0.2 python benchmarks/lecun1998_eta.py 55000 5e-4 20       # ... with μ × 10
    INIT=F HSCALE=500 python benchmarks/lecun1998_eta.py 30000 5e-4 2    # ... h_kk summed, not averaged
    SEED=1 python benchmarks/lecun1998_eta.py 55000 1e-4 20              # another seed (init and order)

Trains lecun1998 (SDLM, the paper's schedule scaled by LR/5e-4, one pattern per update) on the
first N_TRAIN full-MNIST training images and evaluates on 5,000 held-out *training* images
(55,000-59,999) after each pass: the test set is not touched. Prints the loss by fifths of each
pass, the validation accuracy, the mean |w| of C1 and C3 (their growth shows saturation) and
the median curvature estimate h_kk of each weight tensor at the start of the pass.
Needs ../shared/data/mnist (or MNIST=/path). The runs behind the README are in
benchmarks/results/lecun1998_eta.txt.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import lenet5  # noqa: E402
import lenet5.lecun1998 as L  # noqa: E402
from lenet5.optim import SDLM  # noqa: E402


def main(n: int, lr: float, passes: int, augment: str = "none") -> None:
    full = lenet5.load_dir(os.environ.get("MNIST", Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    data = lenet5.Dataset(lenet5.Split(full.train.images[:n], full.train.labels[:n]),
                          lenet5.Split(full.train.images[55000:], full.train.labels[55000:]))
    seed = int(os.environ.get("SEED", 0))
    model = lenet5.LeNet5("lecun1998", seed=seed)
    init = os.environ.get("INIT", "sqrtF")
    if init == "F":
        for _, layer in model.layers:  # the preset's own draws, rescaled from ±2.4/√F to ±2.4/F
            for pn, p in layer.params.items():
                p /= np.sqrt(L.fan_in(layer)).reshape((-1,) + (1,) * (p.ndim - 1))
    losses: list[float] = []
    start = time.time()
    opt = SDLM(model.params(), model.grads(), lr=lr, mu=float(os.environ.get("MU", 0.02)))
    prepare = opt.prepare_epoch

    scale = float(os.environ.get("HSCALE", 1))  # e.g. 500: h_kk summed over the 500 patterns, not averaged

    def prepare_and_report(model, split, rng):  # the curvature estimate before each pass
        prepare(model, split, rng)
        for h in opt.state["hessian"].values():
            h *= scale
        medians = {k[:-7]: f"{np.median(h):.2g}" for k, h in opt.state["hessian"].items() if k.endswith(".weight")}
        print(f"  median h_kk of the weights: {medians}", flush=True)

    opt.prepare_epoch = prepare_and_report

    def on_epoch(rec, state):
        fifths = np.array(losses[-n:])[: n // 5 * 5].reshape(5, -1).mean(1)
        w = np.mean([np.abs(v).mean() for k, v in model.params().items() if k.startswith(("c1", "c3"))])
        print(f"init={init} lr={lr} mu={opt.mu} augment={augment} seed={seed} pass {rec['epoch']}: loss by fifths {np.round(fifths, 2)}, "
              f"validation {rec['test_acc']:.4f}, mean |w| C1,C3 {w:.2f}, {time.time() - start:.0f} s", flush=True)

    lenet5.fit(model, data, optimizer=opt, epochs=passes, lr=lr, augment=augment, seed=seed, progress=False,
               hooks=lenet5.Hooks(on_batch=lambda e, b, loss: losses.append(loss), on_epoch=on_epoch))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
