"""The pretrained weights shipped in the package: intact, as accurate as their metadata says on
the official test set, and with the command that reproduces them."""

import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_mnist
import lenet5
from lenet5 import Lenet5Error, cli, zoo
from lenet5.data import load_dir
from lenet5.train import evaluate

NAMES = zoo.available()
FASHION = Path("/usr/share/datasets/fashion-mnist")


def official_test_set(dataset: str):
    directory = shared_mnist() if dataset == "mnist" else FASHION if dataset == "fashion-mnist" else None
    if directory is None or not Path(directory).is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the pretrained {dataset} models, but the test set is missing")
        pytest.skip(f"the official {dataset} test set is not on this machine")
    return load_dir(directory, dataset).test


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_has_the_accuracy_its_metadata_says(name):
    model, meta = zoo.load(name)
    entry = zoo.manifest()[name]
    test = official_test_set(entry["dataset"])
    assert len(test) == 10000 == meta["test_size"]
    accuracy = evaluate(model, test)["accuracy"]
    assert abs(accuracy - meta["test_acc"]) <= 0.0005, (accuracy, meta["test_acc"])
    assert entry["test_accuracy"] == meta["test_acc"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_names_a_command_that_reproduces_it(name):
    _, meta = zoo.load(name)
    argv = shlex.split(meta["command"])
    assert argv[:2] == ["lenet5", "train"]
    args = cli.build_parser().parse_args(argv[1:])  # a command the CLI accepts as it is
    assert (args.preset or "seed-tanh") == meta["preset"] == meta["settings"]["preset"]
    assert meta["data"]["files"] and all(len(h) == 64 for h in meta["data"]["files"].values())  # SHA-256s
    assert Path(zoo.path(name)).stat().st_size < 300_000


def test_a_damaged_file_is_refused(tmp_path, monkeypatch):
    if not NAMES:
        pytest.skip("no pretrained models in this checkout")
    name = NAMES[0]
    copy = tmp_path / "pretrained"
    copy.mkdir()
    for f in zoo.DIRECTORY.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    target = copy / zoo.manifest()[name]["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "DIRECTORY", copy)
    monkeypatch.setattr(zoo, "MANIFEST", copy / "MANIFEST.json")
    with pytest.raises(Lenet5Error, match="does not match the manifest"):
        zoo.load(name)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(Lenet5Error, match="no such pretrained model"):
        zoo.load("no-such-model")


@pytest.mark.parametrize("name", [n for n in NAMES if zoo.manifest()[n]["dataset"] == "mnist"])
def test_predict_a_picture_with_a_pretrained_digit_model(name, tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    test = official_test_set(zoo.manifest()[name]["dataset"])
    picture = tmp_path / "digit.png"
    Image.fromarray(255 - np.kron(test.images[0], np.ones((8, 8), np.uint8))).save(picture)  # dark on light, big
    assert cli.main(["predict", "--model", name, str(picture)]) == 0
    assert capsys.readouterr().out.startswith(f"{picture}: {test.labels[0]}")


def test_the_python_api_gives_the_shipped_network_ready_to_predict():
    """``lenet5.pretrained(name)``: the zoo's weights, in inference mode, predicting the official
    test images as well as its metadata says (dropout off: the same answer twice)."""
    if "modern" not in NAMES:
        pytest.skip("no modern pretrained model in this checkout")
    model = lenet5.pretrained("modern")
    reference, meta = zoo.load("modern")
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    test = official_test_set("mnist")
    first = model.predict(test.images[:500])
    np.testing.assert_array_equal(first, model.predict(test.images[:500]))
    assert (first.argmax(1) == test.labels[:500]).mean() >= meta["test_acc"] - 0.02
    with pytest.raises(Lenet5Error, match="no such pretrained model"):
        lenet5.pretrained("no-such-model")
