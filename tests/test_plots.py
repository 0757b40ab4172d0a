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
