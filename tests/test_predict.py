"""lenet5 predict on ordinary pictures: real MNIST digits re-rendered as large, shifted pictures."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lenet5 import SGD, LeNet5, cli, fit, load_dir, save_checkpoint
from lenet5 import predict as P
import lenet5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import MINI

    data = load_dir(MINI)
    model = LeNet5(seed=0)
    fit(model, data, optimizer=SGD(model.params(), model.grads(), lr=0.1), lr=0.1, epochs=6, batch_size=16,
        schedule="cosine", progress=False)
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


# --------------------------------------------------------------------------- what the picture shows
def seven(size=(160, 200), ink=20, paper=240, mode="L") -> Image.Image:
    """A dark '7' on light paper (asymmetric: a rotated or mirrored one looks different)."""
    from PIL import ImageDraw

    im = Image.new(mode, size, paper)
    w, h = size
    ImageDraw.Draw(im).line([(w * 0.25, h * 0.2), (w * 0.75, h * 0.2), (w * 0.4, h * 0.85)], fill=ink,
                            width=max(3, w // 12))
    return im


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_followed(tmp_path, fmt):
    upright = seven()
    upright.save(tmp_path / "upright.png")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(tmp_path / f"photo.{fmt.lower()}", fmt, exif=exif.tobytes())
    want = P.to_mnist(P.load_grey(tmp_path / "upright.png"))
    got = P.to_mnist(P.load_grey(tmp_path / f"photo.{fmt.lower()}"))
    assert corr(got, want) > 0.95
    unrotated = P.to_mnist(np.asarray(stored, dtype=float) / 255)
    assert corr(unrotated, want) < 0.6  # the test would notice if orientation were ignored


@pytest.mark.parametrize("dtype,mode,paper,ink,fmt", [
    (np.uint16, "I;16", 4000, 300, "PNG"),  # 12-bit data in a 16-bit PNG: clipping to 8 bits erases it
    (np.uint16, "I;16", 65535, 60000, "PNG"),
    (np.int32, "I", 1_000_000, -2_000_000, "TIFF"),
    (np.float32, "F", 0.9, -3.5, "TIFF"),
])
def test_high_bit_depth_pictures_are_scaled_by_their_range(tmp_path, dtype, mode, paper, ink, fmt):
    mask = np.asarray(seven(paper=0, ink=255)) > 127
    values = np.where(mask, ink, paper).astype(dtype)
    Image.fromarray(values, mode=None).save(tmp_path / f"deep.{fmt.lower()}", fmt)
    grey = P.load_grey(tmp_path / f"deep.{fmt.lower()}")
    assert grey.min() == 0 and grey.max() == 1
    want = P.to_mnist(np.where(mask, 0.0, 1.0))
    assert corr(P.to_mnist(grey), want) > 0.98


def test_float_picture_with_nan_is_refused(tmp_path):
    values = np.full((50, 50), 0.5, np.float32)
    values[10, 10] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tiff")
    with pytest.raises(P.ImageError, match="nan.tiff: the picture holds NaN"):
        P.load_grey(tmp_path / "nan.tiff")


def picture(shape, ink_at=None) -> np.ndarray:
    grey = np.ones(shape)
    if ink_at is not None:
        grey[ink_at] = 0
    return grey


@pytest.mark.parametrize("grey,message", [
    (picture((1, 2)), "no digit found (the picture is only 2x1 pixels)"),
    (picture((1, 4000), (0, slice(100, 900))), "no digit found (the picture is only 4000x1 pixels)"),
    (picture((3, 4000), (1, slice(100, 900))), "no digit found (the picture is only 4000x3 pixels)"),
    (picture((100, 100), (slice(10, 90), 50)), "no digit found (the ink is a single line, 1x80 pixels)"),
    (picture((100, 100), (50, slice(10, 90))), "no digit found (the ink is a single line, 80x1 pixels)"),
    (picture((100, 100), (slice(40, 43), slice(40, 43))), "no digit found (the ink is a speck, 3x3 pixels)"),
])
def test_degenerate_pictures_find_no_digit(grey, message):
    with pytest.raises(P.ImageError) as e:
        P.to_mnist(grey, "pic.png")
    assert str(e.value) == f"pic.png: {message}"


def test_two_pixel_wide_stroke_is_still_a_one():
    grey = picture((100, 100), (slice(10, 90), slice(50, 52)))
    steps = P.prepare_steps(grey)
    assert steps["ink"].shape == (80, 2) and steps["input"].max() == 255


def test_bytes_and_file_objects_are_read_like_files(tmp_path):
    import io

    seven().save(tmp_path / "seven.png")
    data = (tmp_path / "seven.png").read_bytes()
    want = P.load_grey(tmp_path / "seven.png")

    class Upload(io.RawIOBase):  # a stream that cannot seek, like a socket
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.data.readinto(b)

    for source in (data, bytearray(data), io.BytesIO(data), Upload(data), (tmp_path / "seven.png").open("rb")):
        np.testing.assert_array_equal(P.load_grey(source, name="upload.png"), want)
    with pytest.raises(P.ImageError, match="^upload.png: not a readable image"):
        P.load_grey(b"GIF89a but not really", name="upload.png")
    with pytest.raises(P.ImageError, match="^image: not a readable image"):
        P.load_grey(io.BytesIO(b""))
    assert P.prepare_files([data, str(tmp_path / "seven.png")]).shape == (2, 28, 28)


def test_prepare_steps_shows_the_same_preparation_as_to_mnist(tmp_path):
    seven().save(tmp_path / "seven.png")
    grey = P.load_grey(tmp_path / "seven.png")
    steps = P.prepare_steps(grey, "seven.png")
    assert list(steps) == ["picture", "ink", "box", "input"]
    assert steps["picture"].shape == grey.shape
    assert 0 <= steps["ink"].min() and steps["ink"].max() == 1 and steps["ink"].shape[0] < grey.shape[0]
    assert max(steps["box"].shape) == 20 and steps["box"].max() == 1
    assert steps["input"].dtype == np.uint8 and steps["input"].shape == (28, 28)
    np.testing.assert_array_equal(steps["input"], P.to_mnist(grey))


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_result(tmp_path):
    big = seven(size=(3000, 3600))
    big.save(tmp_path / "big.jpg", quality=90)
    big.resize((300, 360), Image.LANCZOS).save(tmp_path / "small.png")
    grey = P.load_grey(tmp_path / "big.jpg")
    assert max(grey.shape) <= P.WORK_SIDE
    assert corr(P.to_mnist(grey), P.to_mnist(P.load_grey(tmp_path / "small.png"))) > 0.95


def test_save_inputs_keeps_inputs_with_the_same_file_name(tmp_path):
    images = [np.full((28, 28), v, np.uint8) for v in (10, 20, 30)]
    paths = P.save_inputs(images, ["a/7.png", "b/7.png", "c/8.jpg"], tmp_path / "seen")
    assert [p.name for p in paths] == ["7-input.png", "7-input-2.png", "8-input.png"]
    assert [int(np.asarray(Image.open(p)).max()) for p in paths] == [10, 20, 30]


def test_save_inputs_directory_errors(tmp_path):
    image = [np.zeros((28, 28), np.uint8)]
    (tmp_path / "file").write_text("x")
    with pytest.raises(P.ImageError, match="file: not a directory"):
        P.save_inputs(image, ["7.png"], tmp_path / "file")
    with pytest.raises(P.ImageError, match="missing: output directory does not exist"):
        P.save_inputs(image, ["7.png"], tmp_path / "missing", create=False)
    with pytest.raises(P.ImageError, match="cannot create the output directory"):
        P.save_inputs(image, ["7.png"], tmp_path / "file" / "sub")


# --------------------------------------------------------------------------- the command line (issue 29)
def number_picture(test, indices, path, gap=30):
    """MNIST test digits written side by side, dark on a photo-like (noisy, lit unevenly) page."""
    rng = np.random.default_rng(0)
    digits = [np.asarray(Image.fromarray(255 - test.images[i]).resize((112, 112), Image.BICUBIC)) for i in indices]
    h, w = 300, 180 + len(indices) * (112 + gap)
    page = 235 - 40 * np.linspace(0, 1, w)[None, :] + rng.normal(0, 3, (h, w))
    x = 90
    for d in digits:
        page[94:206, x:x + 112] = np.minimum(page[94:206, x:x + 112], d)
        x += 112 + gap
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(path, quality=90)


def test_predict_reads_a_number_with_boxes_and_options_anywhere(tmp_path, capsys):
    from conftest import MINI

    test = load_dir(MINI).test
    model = lenet5_pretrained()
    right = [i for i in range(60) if model.predict(test.images[i:i + 1]).argmax() == test.labels[i]]
    picks = right[:4]
    number_picture(test, picks, tmp_path / "number.jpg")
    truth = "".join(str(int(test.labels[i])) for i in picks)
    ckpt = Path(lenet5.__file__).parent / "weights" / "modern.safetensors"
    # an option between the checkpoint and the pictures, another after them
    assert cli.main(["predict", str(ckpt), "--json", str(tmp_path / "number.jpg"), "--top", "2"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["reading"] == truth
    boxes = [d["box"] for d in result["digits"]]
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
    for k, b in enumerate(boxes):  # each box holds its digit's pasted square
        centre = 90 + k * 142 + 56
        assert b[0] < centre < b[2] and 94 <= b[1] < b[3] <= 206
    assert all(len(d["top"]) == 2 and sum(d["probabilities"]) == pytest.approx(1) for d in result["digits"])
    assert cli.main(["predict", "--model", "modern", str(tmp_path / "number.jpg")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path / 'number.jpg'}: {truth}" and len(out) == 5 and out[1].startswith("  digit 1 at x ")
    # --single: all the writing is one digit
    assert cli.main(["predict", "--single", "--model", "modern", "--json", str(tmp_path / "number.jpg")]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["digits"]) == 1


def lenet5_pretrained():
    import lenet5

    return lenet5.pretrained("modern")


def test_a_bad_picture_is_reported_and_the_others_still_read(trained, tmp_path, capsys):
    _, ckpt, test = trained
    render(test.images[0], 0, tmp_path / "seven.png")
    (tmp_path / "text.png").write_text("not a picture")
    paths = [tmp_path / "text.png", tmp_path / "seven.png", tmp_path / "missing.png"]
    assert cli.main(["predict", str(ckpt), *map(str, paths)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and "text.png" in err[0] and "missing.png" in err[1]
    assert captured.out.startswith(f"{tmp_path / 'seven.png'}: 7")
    assert cli.main(["predict", str(ckpt), "--json", *map(str, paths)]) == 2
    results = json.loads(capsys.readouterr().out)
    assert [("error" in r) for r in results] == [True, False, True] and results[1]["prediction"] == 7


def test_fashion_models_print_class_names(tmp_path, capsys):
    from lenet5 import zoo

    model, meta = zoo.load("modern-fashion")
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    assert meta["data"]["dataset"] == "fashion-mnist"
    from lenet5.datasets import load_dataset

    test = load_dataset("fashion-mnist", download_ok=False).test
    i = next(i for i in range(50) if model.predict(test.images[i:i + 1]).argmax() == test.labels[i])
    Image.fromarray(test.images[i]).resize((140, 140)).save(tmp_path / "item.png")
    assert cli.main(["predict", "--model", "modern-fashion", "--json", str(tmp_path / "item.png")]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["class_name"] == names[result["prediction"]] == result["reading"]
    assert [t["class_name"] for t in result["top"]] == [names[t["class"]] for t in result["top"]]
    assert cli.main(["predict", "--model", "modern-fashion", str(tmp_path / "item.png"), "--top", "2"]) == 0
    top = result["top"]
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'item.png'}: {names[top[0]['class']]}    top: "
                                              f"{names[top[0]['class']]} (")
    # the names come from the checkpoint's dataset, whatever the file is called
    ckpt = tmp_path / "anything.safetensors"
    ckpt.write_bytes(zoo.path("modern-fashion").read_bytes())
    assert cli.main(["predict", str(ckpt), "--json", str(tmp_path / "item.png")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["class_name"] == result["class_name"]


def test_show_input_saves_every_stage(tmp_path, capsys):
    photo = Path(__file__).parent / "fixtures" / "photos" / "ruled-000.jpg"
    assert cli.main(["predict", "--model", "modern", str(photo), "--show-input", str(tmp_path / "seen")]) == 0
    saved = sorted(p.name for p in (tmp_path / "seen").iterdir())
    assert saved == sorted(f"ruled-000-{s}.png" for s in ["picture", "paper", "lines", "ink", "kept", "input", "box"])
    assert Image.open(tmp_path / "seen" / "ruled-000-input.png").size == (28, 28)


@pytest.mark.parametrize("map_j", [0.1, 2.0])
def test_a_lecun1998_checkpoint_is_read_and_evaluated_with_its_own_criterion(tmp_path, capsys, map_j):
    """A run trained with another MAP constant j is read with it: the rubbish class keeps
    exp(−j) / (Σ exp(−d_k) + exp(−j)) of the probability (computed here from the printed RBF
    distances), and evaluate's loss is the MAP criterion with that j."""
    from conftest import MINI
    from lenet5 import load_dir, zoo
    from lenet5.losses import map_criterion

    model, meta = zoo.load("lecun1998")
    ckpt = tmp_path / "run.safetensors"
    lenet5.save_checkpoint(ckpt, model, {**meta, "settings": {**meta["settings"], "criterion": "map", "map_j": map_j}})
    picture = tmp_path / "seven.png"
    Image.fromarray(load_dir(MINI).test.images[0]).save(picture)
    assert cli.main(["predict", str(ckpt), "--json", str(picture)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    d = np.array(result["rbf_distances"])
    shown = 1 - sum(result["probabilities"])
    assert shown == pytest.approx(np.exp(-map_j) / (np.exp(-d).sum() + np.exp(-map_j)), rel=1e-4)
    assert cli.main(["evaluate", str(ckpt), "--data-dir", str(MINI), "--json"]) == 0
    loss = json.loads(capsys.readouterr().out)["loss"]
    test = load_dir(MINI).test
    expected, _ = map_criterion(model.infer(test.images), test.labels, map_j)
    assert loss == pytest.approx(expected, rel=1e-4)
