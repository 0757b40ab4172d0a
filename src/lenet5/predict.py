"""Your own digit pictures, prepared the way MNIST's digits were.

MNIST's creators size-normalised each digit to fit a 20×20 box (keeping its aspect ratio, with
anti-aliasing) and centred it by its centre of mass in a 28×28 field, bright ink on black.
``to_mnist`` does the same to any picture: any size, colour or grey, dark-on-light or
light-on-dark, off-centre, thick or thin strokes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import Lenet5Error

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest picture we decode


class ImageError(Lenet5Error):
    """A picture that cannot be read or holds no digit."""


def load_grey(path: str | Path) -> np.ndarray:
    """A picture file as a float grey image in [0, 1] (H, W); transparency is laid on white."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover
        raise ImageError("reading pictures needs Pillow: pip install 'lenet5[predict]'") from None
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{path}: image is too large ({im.width}x{im.height} pixels; "
                                 f"the limit is {MAX_PIXELS // 1_000_000} megapixels)")
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            grey = np.asarray(im.convert("L"), dtype=np.float64) / 255
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from None
    return grey


def to_mnist(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey image in [0, 1] (H, W) -> uint8 (28, 28), bright digit on black, MNIST-style."""
    from PIL import Image

    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    ink = np.abs(grey - background)  # ink is whatever differs from the background, either polarity
    if ink.max() < 0.15:
        raise ImageError(f"{name}: no ink found (the picture is almost uniform)")
    ink = ink / ink.max()
    ink[ink < 0.2] = 0  # paper texture, JPEG noise and shadows are not ink
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = 20 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS))
    box = np.clip(box, 0, None)
    box /= box.max()  # thin strokes fade when shrunk a lot; restore full contrast
    ys, xs = np.indices(box.shape)
    total = box.sum()
    cy, cx = (ys * box).sum() / total, (xs * box).sum() / total
    out = np.zeros((28, 28))
    top = int(np.clip(round(14 - cy), 0, 28 - box.shape[0]))  # MNIST: centre of mass at (14, 14)
    left = int(np.clip(round(14 - cx), 0, 28 - box.shape[1]))
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return np.round(out * 255).astype(np.uint8)


def prepare_files(paths: list[str | Path]) -> np.ndarray:
    """Pictures -> uint8 (N, 28, 28) network inputs."""
    return np.stack([to_mnist(load_grey(p), str(p)) for p in paths])


def save_input(image: np.ndarray, path: str | Path) -> None:
    """Write a 28×28 uint8 network input as a PNG."""
    from PIL import Image

    Image.fromarray(image, mode="L").save(path)
