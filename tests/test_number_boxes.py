"""Digit boxes are given in the picture file's own pixels, also when a large photo was shrunk
while decoding: the boxes of a number read from a committed photo enclose the box where
benchmarks/make_photos.py put its handwriting (tests/fixtures/photos/labels.json)."""

import json

import pytest

from conftest import FIXTURES
from lenet5 import cli

PHOTOS = FIXTURES / "photos"


@pytest.mark.parametrize("name", ["number-plain-000.jpg", "number-specks-000.jpg"])
def test_number_boxes_are_in_the_files_pixels(name, capsys):
    truth = json.loads((PHOTOS / "labels.json").read_text())[name]
    assert cli.main(["predict", "--model", "modern", "--json", str(PHOTOS / name)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    boxes = [d["box"] for d in result["digits"]]
    union = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    x0, y0, x1, y1 = truth["box"]
    tolerance = 0.05 * max(x1 - x0, y1 - y0)  # pen edges and anti-aliasing, not a factor of 2
    assert all(abs(a - b) <= tolerance for a, b in zip(union, truth["box"])), (union, truth["box"])
