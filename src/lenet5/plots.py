"""Figures of a run: curves, confusion matrix, kernels, feature maps, confident mistakes.

``lenet5 plot RUN_DIR`` (and the end of ``lenet5 train``, when matplotlib is installed) writes
PNG files into the run directory. matplotlib runs with the non-interactive Agg backend, so
it works on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import Lenet5Error

FIGURES = ("curves.png", "confusion.png", "kernels.png", "feature_maps.png", "wrong.png")


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise Lenet5Error("plots need matplotlib: pip install 'lenet5[plots]'") from None
    return plt


def _caption(fig, text: str) -> None:
    fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=8, color="0.35")


#: how each criterion is labelled on a loss axis
LOSS_LABELS = {"cross-entropy": "cross-entropy", "map": "MAP criterion", "mse": "MSE (distance to the right centre)"}


def plot_curves(history: list[dict], batches: list[dict], caption: str, loss_name: str = "cross-entropy"):
    """Loss and accuracy per epoch (train, validation, test), and the smoothed loss of every step."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    if batches:
        x, y = [], []
        for rec in batches:
            n = len(rec["loss"])
            x += [rec["epoch"] - 1 + (i + 1) / n for i in range(n)]
            y += rec["loss"]
        ema, smooth = y[0], []
        alpha = 2 / (1 + max(10, len(y) // 50))
        for v in y:
            ema = (1 - alpha) * ema + alpha * v
            smooth.append(ema)
        ax_loss.plot(x, y, color="tab:blue", alpha=0.15, lw=0.6)
        ax_loss.plot(x, smooth, color="tab:blue", lw=1, label="train (per batch, smoothed)")
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train (epoch mean)")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", color="tab:red", label="test")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", color="tab:blue", label="train")
    if "val_acc" in history[0]:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "^-", color="tab:green", label="validation")
        ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "^-", color="tab:green", label="validation")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", color="tab:red", label="test")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel=LOSS_LABELS.get(loss_name, loss_name))
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training curves")
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_confusion(confusion: np.ndarray, caption: str, class_names: list[str]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6.2))
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="images")
    top = confusion.max()
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > top / 2 else "black")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted class", ylabel="true class",
           title=f"Test-set confusion matrix (accuracy {100 * np.trace(confusion) / confusion.sum():.2f}%)")
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_kernels(params: dict[str, np.ndarray], caption: str):
    plt = _plt()
    c1, c3 = params["c1.weight"], params["c3.weight"]
    fig = plt.figure(figsize=(9, 8.5))
    grid = fig.add_gridspec(c3.shape[0] + 2, c3.shape[1] * 2 + 1)
    lim1 = np.abs(c1).max()
    for k in range(c1.shape[0]):
        ax = fig.add_subplot(grid[0, k * 2:k * 2 + 2])
        ax.imshow(c1[k, 0], cmap="RdBu_r", vmin=-lim1, vmax=lim1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"C1 map {k}", fontsize=7)
    lim3 = np.abs(c3).max()
    for f in range(c3.shape[0]):
        for c in range(c3.shape[1]):
            ax = fig.add_subplot(grid[f + 2, c * 2:c * 2 + 2])
            ax.imshow(c3[f, c], cmap="RdBu_r", vmin=-lim3, vmax=lim3)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"C3 {f}", fontsize=6, rotation=0, labelpad=14)
            if f == c3.shape[0] - 1:
                ax.set_xlabel(f"from S2 {c}", fontsize=6)
    fig.suptitle("Learned 5x5 kernels: C1 (top row), C3 (rows: C3 map, columns: S2 input map); red > 0 > blue")
    _caption(fig, caption)
    return fig


def plot_feature_maps(model, image: np.ndarray, label: int, caption: str, index: int):
    plt = _plt()
    stages = [(n, t) for n, t in [("c1_act", "C1"), ("s2", "S2"), ("c3_act", "C3"), ("s4", "S4")]
              if n in dict(model.layers)]
    probs = model.forward(model.prepare(image[None]), keep=[n for n, _ in stages])
    maps = {n: model.activations[n][0] for n, _ in stages}
    pred = int(np.argmax(probs))
    cols = max(maps[n].shape[0] for n, _ in stages)
    fig, axes = plt.subplots(1 + len(stages), cols, figsize=(cols * 0.95, 1.15 * (1 + len(stages)) + 0.9),
                             gridspec_kw={"wspace": 0.08, "hspace": 0.35})
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    axes[0, 0].imshow(image, cmap="gray")
    axes[0, 0].set_ylabel("input\n28x28", fontsize=7, rotation=0, labelpad=20)
    for row, (name, title) in enumerate(stages, start=1):
        for k, fmap in enumerate(maps[name]):
            axes[row, k].imshow(fmap, cmap="viridis")
            axes[row, k].set_frame_on(True)
            if row == 1 or title in ("C3",):
                axes[row, k].set_title(str(k), fontsize=6, pad=2)
        axes[row, 0].set_ylabel(f"{title}\n{maps[name].shape[1]}x{maps[name].shape[2]}", fontsize=7,
                                rotation=0, labelpad=20)
    fig.suptitle(f"Feature maps of test image #{index} (true {label}, predicted {pred}): "
                 "one panel per map of C1, S2, C3, S4", fontsize=10)
    _caption(fig, caption)
    return fig


def plot_wrong(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, caption: str, class_names: list[str]):
    plt = _plt()
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != labels)[0]
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]])][:25]
    fig, axes = plt.subplots(5, 5, figsize=(8, 9))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), worst):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"#{i}: true {class_names[labels[i]]}\npred {class_names[pred[i]]} "
                     f"({100 * probs[i, pred[i]]:.0f}%)", fontsize=7)
    fig.suptitle(f"The {len(worst)} most confidently wrong test images (of {len(wrong)} errors)")
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return fig


CLASS_NAMES = {"fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Boot"],
               "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]}


def plot_run(run_dir: str | Path, sample: int = 0) -> list[Path]:
    """Write every figure of a run into its directory; returns the paths."""
    from .datasets import load_dataset
    from .runs import RunDir
    from .train import evaluate

    run = RunDir.open(run_dir)
    plt = _plt()
    config = run.read_config()
    settings, described = config["settings"], config["data"]
    history = run.history()
    if not history:
        raise Lenet5Error(f"{run.path}: metrics.jsonl has no finished epoch to plot")
    model, _ = run.load_model()
    dataset = settings.get("dataset") or "mnist"
    data = load_dataset(dataset, settings.get("data_dir"), progress=False, warn=lambda m: None)
    if not 0 <= sample < len(data.test):
        raise Lenet5Error(f"--sample {sample}: the test set has {len(data.test)} images (0-{len(data.test) - 1})")
    names = CLASS_NAMES.get(dataset, [str(d) for d in range(10)])
    caption = (f"{run.path.name} | preset {settings['preset']} | {described.get('dataset', dataset)}, "
               f"{described.get('train_size', '?')} training images | {settings.get('engine', 'numpy')} engine")
    probs = model.predict(data.test.images)
    confusion = np.array(evaluate(model, data.test)["confusion"])
    figures = {
        "curves.png": plot_curves(history, run.batch_losses(), caption, model.criterion.name),
        "confusion.png": plot_confusion(confusion, caption, names),
        "kernels.png": plot_kernels(model.params(), caption),
        "feature_maps.png": plot_feature_maps(model, data.test.images[sample], int(data.test.labels[sample]),
                                              caption, sample),
        "wrong.png": plot_wrong(data.test.images, data.test.labels, probs, caption, names),
    }
    paths = []
    for name, fig in figures.items():
        fig.savefig(run / name, dpi=110)
        plt.close(fig)
        paths.append(run / name)
    return paths
