"""Figures of a run: curves, confusion matrix, kernels, feature maps, confident mistakes.

``lenet5 plot RUN_DIR`` (and the end of ``lenet5 train``, when matplotlib is installed) writes
PNG files into the run directory. matplotlib runs with the non-interactive Agg backend, so
it works on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Split
from .datasets import class_names
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


#: the smallest text in a figure (points): readable when saved at 100 dpi
SMALL = 9


def _caption(fig, text: str) -> None:
    fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=SMALL, color="0.35")


def _integer_epochs(ax) -> None:
    """Ticks on whole epochs only (a 2-epoch run has no epoch 1.25)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _clip_loss_axis(ax, batch_losses: list[float], epoch_losses: list[float]) -> None:
    """Let the loss axis show the training, not the first few batches: its top is set by the
    per-epoch losses (and the per-batch losses once the first 2% of steps are over), so an
    early spike of a fresh network (cross-entropy near 7) that would flatten the rest of the
    curve runs off the top, with a note."""
    settled = batch_losses[len(batch_losses) // 50:]
    top = 1.1 * max(epoch_losses + ([float(np.percentile(settled, 99))] if settled else []))
    bottom = min(0.0, min(epoch_losses + batch_losses))
    if batch_losses and max(batch_losses) > 1.5 * top:  # a spike that would squash the rest
        ax.set_ylim(bottom, top)
        ax.text(0.99, 0.6, f"per-batch losses above the axis\n(up to {max(batch_losses):.3g})", transform=ax.transAxes,
                ha="right", va="top", fontsize=SMALL, color="0.35")


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
    tested = "test_acc" in history[0]
    if tested:
        ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", color="tab:red", label="test")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", color="tab:blue", label="train")
    if "val_acc" in history[0]:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "^-", color="tab:green", label="validation")
        ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "^-", color="tab:green", label="validation")
    if tested:
        ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", color="tab:red", label="test")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel=LOSS_LABELS.get(loss_name, loss_name))
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    epoch_losses = [h[k] for h in history for k in ("train_loss", "test_loss", "val_loss") if k in h]
    _clip_loss_axis(ax_loss, y if batches else [], epoch_losses)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=SMALL)
        _integer_epochs(ax)
    fig.suptitle("Training curves")
    _caption(fig, caption)
    fig.subplots_adjust(left=0.065, right=0.985, bottom=0.175, top=0.86, wspace=0.2)  # tight_layout costs a draw
    return fig


def plot_errors(history: list[dict], caption: str, paper: dict[str, float] | None = None):
    """Error rate per pass, training and test, on a log scale — the 1998 paper's Fig. 5.

    The training error is the running one of each pass (the weights change during the pass);
    ``paper``: the published final errors to mark, e.g. {"test": 0.95, "training": 0.35}.
    """
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, [100 * (1 - h["train_acc"]) for h in history], "o-", color="tab:blue",
            label="training set (during the pass)")
    if "test_acc" in history[0]:
        ax.plot(epochs, [100 * (1 - h["test_acc"]) for h in history], "s-", color="tab:red", label="test set")
    for name, value in (paper or {}).items():
        ax.axhline(value, color="tab:red" if name == "test" else "tab:blue", ls="--", lw=0.8,
                   label=f"paper, {name}: {value:.2f}%")
    ax.set_yscale("log")
    ax.set(xlabel="training pass", ylabel="error rate (%)", title="Error rate per pass (as the paper's Fig. 5)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=SMALL)
    _integer_epochs(ax)
    _caption(fig, caption)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.2, top=0.9)
    return fig


def plot_confusion(confusion: np.ndarray, caption: str, class_names: list[str]):
    """Counts of (true, predicted) test images; the empty cells are left blank."""
    plt = _plt()
    fig = plt.figure(figsize=(7, 6.2))
    ax = fig.add_axes((0.13, 0.12, 0.68, 0.77))
    cax = fig.add_axes((0.83, 0.12, 0.03, 0.77))
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, cax=cax, label="images")
    top = confusion.max()
    for i, j in zip(*np.nonzero(confusion)):
        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=SMALL,
                color="white" if confusion[i, j] > top / 2 else "black")
    ticks = range(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted class", ylabel="true class",
           title=f"Test-set confusion matrix (accuracy {100 * np.trace(confusion) / confusion.sum():.2f}%)")
    _caption(fig, caption)
    return fig


def _mosaic(tiles, cols: int, pad=1, fill=np.nan) -> np.ndarray:
    """Tiles (n, h, w) or (n, h, w, channels) -> one (rows*(h+py)-py, cols*(w+px)-px[, channels])
    array: tile k at row k // cols, column k % cols, the tiles separated by ``pad`` pixels
    (an int, or (py, px) between rows and between columns) of ``fill``, as are empty cells."""
    tiles = np.asarray(tiles, dtype=float)
    n, h, w = tiles.shape[:3]
    py, px = (pad, pad) if np.isscalar(pad) else pad
    rows = max(1, -(-n // cols))
    out = np.empty((rows * (h + py) - py, cols * (w + px) - px) + tiles.shape[3:])
    out[...] = fill
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + py):r * (h + py) + h, c * (w + px):c * (w + px) + w] = tiles[k]
    return out


def _centres(count: int, size: int, pad: int) -> np.ndarray:
    """Pixel coordinates of the centres of ``count`` tiles of ``size`` pixels, ``pad`` apart."""
    return np.arange(count) * (size + pad) + (size - 1) / 2


def _per_tile(tiles: np.ndarray) -> np.ndarray:
    """Each tile of (n, h, w) scaled to [0, 1] on its own (as one imshow per tile would; a
    constant tile is 0)."""
    tiles = np.asarray(tiles, dtype=float)
    lo = tiles.min(axis=(1, 2), keepdims=True)
    span = tiles.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(tiles - lo, span, out=np.zeros_like(tiles), where=span > 0)


def _rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] -> RGB through a matplotlib colormap."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.clip(values, 0, 1))[..., :3]


def _upscale(tiles: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (n, h, w[, c]) tiles by an integer factor."""
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


def _figure_px(plt, width: int, height: int):
    """A figure of width x height pixels at 100 dpi (``plot_run`` saves at 100 dpi)."""
    return plt.figure(figsize=(width / 100, height / 100), dpi=100)


def _axes_px(fig, img: np.ndarray, left: int, bottom: int, zoom: int, **imshow):
    """Axes showing ``img`` with its lower-left corner at pixel (left, bottom) of the figure, each
    image pixel ``zoom`` x ``zoom`` figure pixels: at 100 dpi no pixel is resampled unevenly, so
    the 1-pixel separators of a mosaic all come out equally thick. No frame; small tick labels."""
    fw, fh = fig.bbox.width, fig.bbox.height
    ax = fig.add_axes((left / fw, bottom / fh, zoom * img.shape[1] / fw, zoom * img.shape[0] / fh))
    ax.imshow(img, interpolation="nearest", **imshow)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0, labelsize=SMALL)
    return ax


WHITE, GREY, DARK = (1.0, 1.0, 1.0), (0.72, 0.72, 0.72), (0.25, 0.25, 0.25)


def _every(n: int, most: int = 20) -> list[int]:
    """Which of n tick positions to label so that at most about ``most`` are."""
    step = max(1, -(-n // most))
    return list(range(0, n, step))


def plot_kernels(params: dict[str, np.ndarray], caption: str):
    """The 5x5 kernels as a grid, wide rather than tall: C3's kernels with a row per S2 input map
    and a column per C3 map, and at the left of each row the C1 kernel that makes that map
    (C1 map c feeds S2 map c). Each layer has its own symmetric colour scale; kernels that are
    all zero (the C3 connections lecun1998's table leaves out) are grey."""
    plt = _plt()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    c1, c3 = np.asarray(params["c1.weight"], float), np.asarray(params["c3.weight"], float)
    n_out, n_in, k = c3.shape[:3]
    scale = max(1, 24 // k)  # enlarged, so that the 1-pixel separators are thin
    size = k * scale
    lim1, lim3 = np.abs(c1).max() or 1.0, np.abs(c3).max() or 1.0
    tiles1 = _rgb(0.5 + c1[:, 0] / (2 * lim1), "RdBu_r")
    by_input = c3.transpose(1, 0, 2, 3).reshape(-1, k, k)  # row: S2 input map, column: C3 map
    tiles3 = _rgb(0.5 + by_input / (2 * lim3), "RdBu_r")
    unconnected = ~np.any(by_input.reshape(len(tiles3), -1) != 0, axis=1)
    tiles3[unconnected] = GREY
    img1 = _mosaic(_upscale(tiles1, scale), cols=1, fill=DARK)  # not white: white is a zero weight
    img3 = _mosaic(_upscale(tiles3, scale), cols=n_out, fill=DARK)

    zoom = max(1, min(round(900 / img3.shape[1]), round(520 / img3.shape[0])))
    (h3, w3), (h1, w1) = (zoom * np.array(img.shape[:2]) for img in (img3, img1))
    left1, gap = 90, 90
    fig = _figure_px(plt, left1 + w1 + gap + w3 + 130, max(h3, h1) + 150)
    bottom = 75
    ax1 = _axes_px(fig, img1, left1, bottom + h3 - h1, zoom)
    ax3 = _axes_px(fig, img3, left1 + w1 + gap, bottom, zoom)
    ax1.set_xticks([])
    ax1.set_yticks(_centres(len(c1), size, 1), [str(i) for i in range(len(c1))])
    ax1.set_ylabel("C1 map = S2 map", fontsize=SMALL)
    ax1.set_title("C1", fontsize=SMALL + 1)
    cols = _every(n_out, 24)
    ax3.set_xticks(_centres(n_out, size, 1)[cols], [str(i) for i in cols])
    ax3.set_yticks(_centres(n_in, size, 1), [str(i) for i in range(n_in)])
    ax3.set_xlabel("C3 map", fontsize=SMALL + 1)
    ax3.set_ylabel("S2 input map", fontsize=SMALL + 1)
    missing = f"; grey: {unconnected.sum()} not connected" if unconnected.any() else ""
    ax3.set_title(f"C3: {n_out} maps x {n_in} inputs, max |w| = {lim3:.3g}{missing}", fontsize=SMALL + 1)
    fw, fh = fig.bbox.width, fig.bbox.height
    cax = fig.add_axes(((left1 + w1 + gap + w3 + 30) / fw, bottom / fh, 15 / fw, h3 / fh))
    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), "RdBu_r"), cax=cax, ticks=[-1, 0, 1])
    bar.set_label("w / max |w|\nof its layer", fontsize=SMALL)
    bar.ax.tick_params(labelsize=SMALL)
    fig.suptitle(f"Learned {k}x{k} kernels (red > 0 > blue); C1 max |w| = {lim1:.3g}", fontsize=SMALL + 2)
    _caption(fig, caption)
    return fig


def plot_feature_maps(model, image: np.ndarray, label: int, caption: str, index: int):
    """The input and every map of C1, S2, C3 and S4 for one test image, as one image: a row per
    stage, a column per map, each map on its own colour scale (viridis), small maps enlarged."""
    plt = _plt()
    stages = [(n, t) for n, t in [("c1_act", "C1"), ("s2", "S2"), ("c3_act", "C3"), ("s4", "S4")]
              if n in dict(model.layers)]
    probs = model.forward(model.prepare(image[None]), keep=[n for n, _ in stages])
    maps = {n: np.asarray(model.activations[n][0], float) for n, _ in stages}
    pred = int(np.argmax(probs))
    cols = max([maps[n].shape[0] for n, _ in stages] + [1])
    rows = [("input", _rgb(_per_tile(np.asarray(image, float)[None]), "gray"))]
    rows += [(title, _rgb(_per_tile(maps[name]), "viridis")) for name, title in stages]
    rows = [(title, _upscale(tiles, max(1, round(30 / tiles.shape[1])))) for title, tiles in rows]  # ~30 px
    cell = max(tiles.shape[1] for _, tiles in rows)
    grid = np.empty((len(rows) * cols, cell, cell, 3))
    grid[...] = WHITE
    for r, (_, tiles) in enumerate(rows):  # row r: the stage's maps, centred in cells of the same size
        top, left = (cell - tiles.shape[1]) // 2, (cell - tiles.shape[2]) // 2
        grid[r * cols:r * cols + len(tiles), top:top + tiles.shape[1], left:left + tiles.shape[2]] = tiles
    gap, zoom = 6, 2
    img = _mosaic(grid, cols=cols, pad=(gap, 1), fill=WHITE)
    fig = _figure_px(plt, max(1100, zoom * img.shape[1] + 110), zoom * img.shape[0] + 145)
    ax = _axes_px(fig, img, 85, 50, zoom)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xticks(_centres(cols, cell, 1), [str(i) for i in range(cols)])
    ax.set_xlabel("map", fontsize=SMALL)
    shapes = [image.shape] + [maps[n].shape[1:] for n, _ in stages]
    ax.set_yticks(_centres(len(rows), cell, gap),
                  [f"{title}\n{s[0]}x{s[1]}" for (title, _), s in zip(rows, shapes)])
    fig.suptitle(f"Feature maps of test image #{index} (true {label}, predicted {pred}): "
                 "one panel per map of C1, S2, C3, S4 (each on its own scale)", fontsize=10)
    _caption(fig, caption)
    return fig


def plot_wrong(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, caption: str, class_names: list[str]):
    """The 25 test images the model is most confident about and wrong, as one image, with the
    index, true class, predicted class and its probability under each."""
    plt = _plt()
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != labels)[0]
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:25]
    cols, (py, px), zoom = 5, (10, 3), 5
    size = images.shape[1]
    img = _mosaic(_per_tile(images[worst]) if len(worst) else np.empty((0, size, size)), cols=cols, pad=(py, px))
    img = np.pad(img, ((0, py), (0, 0)), constant_values=np.nan)  # room for the last row's labels
    fig = _figure_px(plt, zoom * img.shape[1] + 60, zoom * img.shape[0] + 100)
    ax = _axes_px(fig, img, 30, 35, zoom, cmap=plt.get_cmap("gray").with_extremes(bad="white"), vmin=0, vmax=1)
    ax.set_axis_off()
    for n, i in enumerate(worst):
        r, c = divmod(n, cols)
        ax.text(c * (size + px) + (size - 1) / 2, r * (size + py) + size, f"#{i}: true {class_names[labels[i]]}\n"
                f"pred {class_names[pred[i]]} ({100 * probs[i, pred[i]]:.0f}%)", ha="center", va="top", fontsize=SMALL)
    fig.suptitle(f"The {len(worst)} most confidently wrong test images (of {len(wrong)} errors)")
    _caption(fig, caption)
    return fig



def plot_run(run_dir: str | Path, sample: int = 0, test: Split | None = None) -> list[Path]:
    """Write every figure of a run into its directory; returns the paths. ``test``: the run's
    test set when the caller has it in memory (else it is loaded as the run's settings say).
    A run trained with ``--no-test`` gets only the figures that do not look at the test set
    (curves, error rates, kernels)."""
    from .checkpoint import atomic_write
    from .runs import RunDir

    run = RunDir.open(run_dir)
    plt = _plt()
    config = run.read_config()
    settings, described = config["settings"], config["data"]
    history = run.history()
    if not history:
        raise Lenet5Error(f"{run.path}: metrics.jsonl has no finished epoch to plot")
    model, _ = run.load_model()
    dataset = settings.get("dataset") or "mnist"
    caption = (f"{run.path.name} | preset {settings['preset']} | {described.get('dataset', dataset)}, "
               f"{described.get('train_size', '?')} training images | {settings.get('engine', 'numpy')} engine")
    figures = {
        "curves.png": plot_curves(history, run.batch_losses(), caption,
                                  settings.get("criterion") or model.preset.criteria[0]),
        **({"errors.png": plot_errors(history, caption, model.preset.paper_errors)} if model.preset.paper_errors
           else {}),
        "kernels.png": plot_kernels(model.params(), caption),
    }
    if settings.get("test_each_epoch", True):
        figures.update(_test_figures(model, dataset, settings, test, sample, caption))
    paths = []
    for name, fig in figures.items():
        # through the run's one writer: never through a symlink or over anything but a file
        atomic_write(run / name, lambda tmp: fig.savefig(tmp, format="png", dpi=100,
                                                         pil_kwargs={"compress_level": 1}))  # quick zlib level
        plt.close(fig)
        paths.append(run / name)
    return paths


def _test_figures(model, dataset: str, settings: dict, test: Split | None, sample: int, caption: str) -> dict:
    """The figures of a run that look at its test set: confusion, feature maps, confident mistakes."""
    from .datasets import load_dataset
    from .train import confusion_matrix

    if test is None:
        test = load_dataset(dataset, settings.get("data_dir"), progress=False, warn=lambda m: None).test
    if not 0 <= sample < len(test):
        raise Lenet5Error(f"--sample {sample}: the test set has {len(test)} images (0-{len(test) - 1})")
    names = class_names(dataset)
    probs = model.predict(test.images)
    return {
        "confusion.png": plot_confusion(confusion_matrix(test.labels, probs.argmax(axis=1)), caption, names),
        "feature_maps.png": plot_feature_maps(model, test.images[sample], int(test.labels[sample]), caption, sample),
        "wrong.png": plot_wrong(test.images, test.labels, probs, caption, names),
    }
