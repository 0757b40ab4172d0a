"""lenet5 predict on ordinary pictures: real MNIST digits re-rendered as large, shifted pictures."""

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lenet5 import SGD, LeNet5, cli, fit, load_dir, save_checkpoint
from lenet5 import predict as P


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import MINI

    data = load_dir(MINI)
    model = LeNet5(seed=0)
    fit(model, SGD(model.params(), model.grads(), lr=0.1), data, epochs=6, batch_size=16, progress=False,
        schedule="cosine")
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, model)
    return model, path, data.test


def render(digit: np.ndarray, i: int, path) -> None:
    """A 28x28 MNIST digit as a picture someone might take: big, dark ink on light paper, off-centre."""
    size = 120 + 40 * (i % 5)
    big = Image.fromarray(255 - digit).resize((size, size), Image.BICUBIC)
    if i % 4 == 1:
        big = big.filter(ImageFilter.MinFilter(7))  # thicker (dark) strokes
    canvas = Image.new("RGB", (size * 2 + 37 * (i % 3), size + 90), (246, 243, 236))
    canvas.paste(big.convert("RGB"), (11 * (i % 7) + 5, 13 * (i % 6) + 3))
    if i % 3 == 2:  # light-on-dark, as on a blackboard
        canvas = Image.fromarray(255 - np.asarray(canvas))
    canvas.save(path, quality=92)


def test_rerendered_digits_get_the_same_answers(trained, tmp_path):
    model, ckpt, test = trained
    n = 120
    paths = []
    for i in range(n):
        p = tmp_path / f"digit{i}.{'jpg' if i % 2 else 'png'}"
        render(test.images[i], i, p)
        paths.append(p)
    seen = P.prepare_files(paths)
    assert seen.shape == (n, 28, 28) and seen.dtype == np.uint8
    original = model.predict(test.images[:n]).argmax(1)
    rerendered = model.predict(seen).argmax(1)
    agreement = (original == rerendered).mean()
    print(f"agreement {agreement:.3f}")
    assert agreement >= 0.93, agreement
    # what the network sees is close to the original digit (thin-stroke renders, i % 4 != 1)
    thin = [i for i in range(n) if i % 4 != 1]
    corr = [np.corrcoef(seen[i].ravel().astype(float), test.images[i].ravel().astype(float))[0, 1] for i in thin]
    assert np.median(corr) > 0.9


def test_cli_predict_json_and_show_input(trained, tmp_path, capsys):
    _, ckpt, test = trained
    render(test.images[0], 0, tmp_path / "seven.png")
    assert cli.main(["predict", str(ckpt), str(tmp_path / "seven.png"), "--json", "--show-input",
                     str(tmp_path / "seen")]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["prediction"] == int(test.labels[0]) == 7
    assert len(result["top"]) == 3 and sum(result["probabilities"]) == pytest.approx(1)
    assert Image.open(tmp_path / "seen" / "seven-input.png").size == (28, 28)
    assert cli.main(["predict", str(ckpt), str(tmp_path / "seven.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'seven.png'}: 7")


def test_bad_pictures_get_one_line_errors(trained, tmp_path, capsys, monkeypatch):
    _, ckpt, _ = trained
    (tmp_path / "text.png").write_text("not a picture")
    Image.new("L", (300, 200), 255).save(tmp_path / "blank.png")
    Image.new("L", (2000, 2000), 255).save(tmp_path / "huge.png")
    cases = [("text.png", "not a readable image"), ("blank.png", "no ink found"), ("missing.png", "no such file")]
    for name, message in cases:
        assert cli.main(["predict", str(ckpt), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}" in err and message in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(P, "MAX_PIXELS", 1_000_000)
    assert cli.main(["predict", str(ckpt), str(tmp_path / "huge.png")]) == 2
    assert "image is too large (2000x2000 pixels" in capsys.readouterr().err


def test_transparent_png_with_dark_ink(tmp_path):
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    for y in range(20, 80):
        for x in range(45, 52):
            rgba.putpixel((x, y), (0, 0, 0, 255))  # a black vertical bar: a "1" on a transparent page
    rgba.save(tmp_path / "one.png")
    seen = P.prepare_files([tmp_path / "one.png"])[0]
    assert seen.max() == 255 and seen[:, :4].max() == 0  # bright ink, dark border, centred
    ys, xs = np.nonzero(seen)
    assert abs(xs.mean() - 14) < 1.5 and ys.max() - ys.min() == 19  # 20 px tall, as MNIST
