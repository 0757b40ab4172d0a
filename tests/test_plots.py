"""Figures of a run: every file is written, decodes as a picture, and is not blank."""

import numpy as np
from PIL import Image

from lenet5 import cli
from lenet5.plots import FIGURES


def test_train_draws_every_figure_and_plot_redraws_them(tmp_path, mini_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(mini_dir), "--epochs", "2", "--val-split", "0.2",
                     "--out", str(out), "--quiet"]) == 0
    assert "plots in" in capsys.readouterr().err
    for name in FIGURES:
        im = np.asarray(Image.open(out / name).convert("L"))
        assert im.shape[0] > 300 and im.shape[1] > 300, name
        assert im.std() > 10, f"{name} looks blank"
    before = (out / "feature_maps.png").read_bytes()
    assert cli.main(["plot", str(out), "--sample", "5"]) == 0
    assert (out / "feature_maps.png").read_bytes() != before  # another test image


def test_plot_errors(tmp_path, mini_dir, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(mini_dir), "--epochs", "1", "--out", str(out), "--quiet",
                     "--no-plots"]) == 0
    assert not (out / "curves.png").exists()
    assert cli.main(["plot", str(out), "--sample", "999"]) == 2
    assert "--sample 999: the test set has 200 images" in capsys.readouterr().err


def test_mosaic_places_every_tile_where_expected():
    from lenet5.plots import _mosaic

    rng = np.random.default_rng(0)
    tiles = rng.random((7, 3, 4))
    got = _mosaic(tiles, cols=3, pad=1)
    # built independently: each tile padded with a NaN column on the right and a NaN row below,
    # the empty cells NaN, the grid assembled with np.block, the last separators cropped
    cells = [np.pad(t, ((0, 1), (0, 1)), constant_values=np.nan) for t in tiles]
    cells += [np.full((4, 5), np.nan)] * 2
    expected = np.block([cells[0:3], cells[3:6], cells[6:9]])[:-1, :-1]
    assert got.shape == (3 * 3 + 2, 3 * 4 + 2) == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaNs compare equal here
    assert got[4, 5] == tiles[4][0, 0] and got[8, 3] == tiles[6][0, 3]  # a few by hand

    # RGB tiles, other gaps between rows and between columns, a colour for the separators
    rgb = rng.random((5, 2, 2, 3))
    got = _mosaic(rgb, cols=2, pad=(3, 1), fill=(1.0, 0.5, 0.0))
    assert got.shape == (3 * 2 + 2 * 3, 2 * 2 + 1, 3)
    for k, tile in enumerate(rgb):
        r, c = divmod(k, 2)
        np.testing.assert_array_equal(got[5 * r:5 * r + 2, 3 * c:3 * c + 2], tile)
    np.testing.assert_array_equal(got[2:5, :], np.broadcast_to((1.0, 0.5, 0.0), (3, 5, 3)))  # row gap
    np.testing.assert_array_equal(got[:, 2], np.broadcast_to((1.0, 0.5, 0.0), (12, 3)))  # column gap
    np.testing.assert_array_equal(got[10:, 3:], np.broadcast_to((1.0, 0.5, 0.0), (2, 2, 3)))  # empty cell


def test_kernel_figure_is_a_wide_grid_with_unconnected_kernels_grey():
    import matplotlib.pyplot as plt

    from lenet5.plots import GREY, SMALL, plot_kernels

    rng = np.random.default_rng(1)
    params = {"c1.weight": rng.normal(size=(6, 1, 5, 5)), "c3.weight": rng.normal(size=(16, 6, 5, 5))}
    params["c3.weight"][2, 4] = 0  # C3 map 2 does not read S2 map 4
    fig = plot_kernels(params, "caption")
    try:
        assert len(fig.axes) == 3  # C1 column, C3 grid, colour bar: not one axes per kernel
        width, height = fig.get_size_inches()
        assert width > 1.5 * height  # laid out wide, not as a tall strip
        c3 = next(ax for ax in fig.axes if ax.get_title().startswith("C3"))
        assert "grey: 1 not connected" in c3.get_title()
        img = np.asarray(c3.images[0].get_array())
        size = (img.shape[1] + 1) // 16 - 1  # tiles and 1-pixel separators: 6 rows (S2), 16 columns (C3)
        assert (img.shape[0] + 1) == 6 * (size + 1)
        np.testing.assert_allclose(img[4 * (size + 1):4 * (size + 1) + size, 2 * (size + 1):2 * (size + 1) + size],
                                   np.broadcast_to(GREY, (size, size, 3)))
        assert not np.allclose(img[4 * (size + 1), 3 * (size + 1)], GREY)
        labels = [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
        assert labels and min(t.get_fontsize() for t in labels) >= SMALL >= 9
    finally:
        plt.close(fig)


def _history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 0.5 / e, "train_acc": 0.9, "test_loss": 0.4 / e, "test_acc": 0.9}
            for e in range(1, epochs + 1)]


def test_curves_clip_the_first_batch_spike_and_tick_whole_epochs():
    import matplotlib.pyplot as plt

    from lenet5.plots import plot_curves

    rng = np.random.default_rng(0)
    batches = [{"epoch": e, "loss": list(0.6 / e + 0.05 * rng.random(200))} for e in (1, 2)]
    batches[0]["loss"][0] = 7.0  # a fresh network's first batch
    fig = plot_curves(_history(2), batches, "caption")
    try:
        loss, acc = fig.axes[:2]
        assert loss.get_ylim()[1] < 1.0  # the axis shows losses of 0.2-0.7, not 0-7
        assert any("above the axis" in t.get_text() for t in loss.texts)
        fig.canvas.draw()
        for ax in (loss, acc):
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)
    calm = [{"epoch": e, "loss": list(0.6 / e + 0.05 * rng.random(200))} for e in (1, 2)]
    fig = plot_curves(_history(2), calm, "caption")
    try:  # nothing to clip: every per-batch loss stays in view
        assert fig.axes[0].get_ylim()[1] >= max(max(b["loss"]) for b in calm)
        assert not fig.axes[0].texts
    finally:
        plt.close(fig)
