"""The pretrained weights shipped in the package: intact, as accurate as their metadata says on
the official test set, and with the command that reproduces them."""

import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_mnist
from lenet5 import Lenet5Error, cli, pretrained
from lenet5.data import load_dir
from lenet5.train import evaluate

NAMES = pretrained.available()
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
    model, meta = pretrained.load(name)
    entry = pretrained.manifest()[name]
    test = official_test_set(entry["dataset"])
    assert len(test) == 10000 == meta["test_size"]
    accuracy = evaluate(model, test)["accuracy"]
    assert abs(accuracy - meta["test_acc"]) <= 0.0005, (accuracy, meta["test_acc"])
    assert entry["test_accuracy"] == meta["test_acc"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_names_a_command_that_reproduces_it(name):
    _, meta = pretrained.load(name)
    argv = shlex.split(meta["command"])
    assert argv[:2] == ["lenet5", "train"]
    args = cli.build_parser().parse_args(argv[1:])  # a command the CLI accepts as it is
    assert (args.preset or "seed-tanh") == meta["preset"] == meta["settings"]["preset"]
    assert meta["data"]["files"] and all(len(h) == 64 for h in meta["data"]["files"].values())  # SHA-256s
    assert Path(pretrained.path(name)).stat().st_size < 300_000


def test_a_damaged_file_is_refused(tmp_path, monkeypatch):
    if not NAMES:
        pytest.skip("no pretrained models in this checkout")
    name = NAMES[0]
    copy = tmp_path / "pretrained"
    copy.mkdir()
    for f in pretrained.DIRECTORY.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    target = copy / pretrained.manifest()[name]["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "DIRECTORY", copy)
    monkeypatch.setattr(pretrained, "MANIFEST", copy / "MANIFEST.json")
    with pytest.raises(Lenet5Error, match="does not match the manifest"):
        pretrained.load(name)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(Lenet5Error, match="no such pretrained model"):
        pretrained.load("no-such-model")


@pytest.mark.parametrize("name", [n for n in NAMES if pretrained.manifest()[n]["dataset"] == "mnist"])
def test_predict_a_picture_with_a_pretrained_digit_model(name, tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    test = official_test_set(pretrained.manifest()[name]["dataset"])
    picture = tmp_path / "digit.png"
    Image.fromarray(255 - np.kron(test.images[0], np.ones((8, 8), np.uint8))).save(picture)  # dark on light, big
    assert cli.main(["predict", "--model", name, str(picture)]) == 0
    assert capsys.readouterr().out.startswith(f"{picture}: {test.labels[0]}")
