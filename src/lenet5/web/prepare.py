"""Pictures from the browser -> the digits in them, as ``lenet5 predict`` finds them, step by step.

Two kinds of upload reach the server:

- an encoded picture (PNG, JPEG, ... : a photo or a file dropped on the page), decoded with
  the same limits as ``lenet5 predict`` (``lenet5.predict.MAX_PIXELS``);
- the drawing canvas as raw grey bytes (one uint8 per pixel, ``width × height``), which
  costs neither side a PNG encode or decode.

Either way the server, never the browser, prepares the picture: ``lenet5.digits.read_picture``
finds each digit (left to right) and prepares it MNIST-style, and its named stages are sent
back to be shown (shrunk; a canvas itself is not sent back, the page has it).

What goes wrong is said in the page's own words (``PictureError``): a file that is not a
picture, one too large, a picture without a digit.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from .. import digits, predict
from ..errors import Lenet5Error
from ..predict import ImageError

#: the largest upload the server reads (a photo from a phone is 2-8 MB)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: the largest raw grey canvas, per side
MAX_RAW_SIDE = 4096
#: pictures and stages are sent back shrunk to at most this many pixels per side
PREVIEW_SIDE = 112


class PictureError(Lenet5Error):
    """A picture the page cannot read, in words for the person using the page (HTTP 422).
    ``detail``: the library's own account, when there is one."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


def raw_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """Raw uint8 grey pixels, row by row -> uint8 (height, width)."""
    if not (1 <= width <= MAX_RAW_SIDE and 1 <= height <= MAX_RAW_SIDE):
        raise PictureError(f"The drawing must be 1 to {MAX_RAW_SIDE} pixels per side, not {width}×{height}.")
    if len(data) != width * height:
        raise PictureError(f"A {width}×{height} drawing needs {width * height} bytes; {len(data)} came.")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width)


def grey_from_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """An encoded picture (PNG, JPEG, ...) -> float grey image in [0, 1] (H, W), read by ``predict.load_grey``
    (same pixel limit, EXIF orientation, transparency on white). ``PictureError`` for an empty
    file, one that is not a picture, or one over the pixel limit (checked from its header first)."""
    if not data:
        raise PictureError("The file is empty.")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # the header only: the size before any decoding
            w, h = im.size
    except Image.DecompressionBombError:  # Pillow refuses to open pictures of extreme sizes at all
        raise PictureError(f"The picture is far too large; the limit is {predict.MAX_PIXELS // 1_000_000} "
                           "megapixels.") from None
    except Exception:  # Pillow signals "not a picture" with many exception types
        raise PictureError("This file is not a picture the page can read: try a PNG or JPEG photo.") from None
    if w * h > predict.MAX_PIXELS:
        raise PictureError(f"The picture is too large ({w}×{h} pixels); "
                           f"the limit is {predict.MAX_PIXELS // 1_000_000} megapixels.")
    try:
        return predict.load_grey(data, name)
    except ImageError:  # no detail: Pillow's own words can hold a Python repr
        raise PictureError("This picture could not be decoded: the file may be damaged or cut short.") from None


def read_digits(grey: np.ndarray, name: str, judge=None) -> tuple[list[digits.Digit], dict[str, np.ndarray]]:
    """``digits.read_picture``: the digits left to right and the named stages; ``PictureError``
    when there is none. ``judge``: the network's probabilities, to decide where touching digits part."""
    try:
        found, stages = digits.read_picture(grey, name=name, judge=judge)
    except ImageError as e:
        raise PictureError("No digit found in the picture.", str(e)) from None
    if not found:
        raise PictureError("No digit found in the picture.")
    return found, stages


# --------------------------------------------------------------------------- encoding for the page
def to_uint8(image: np.ndarray) -> np.ndarray:
    """A step's image as uint8 for display: uint8 stays; floats in [0, 1] are scaled by 255;
    a boolean mask is 0 / 255."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    scaled = image.astype(np.float32)
    if image.dtype == bool or (scaled.size and float(scaled.max()) <= 1.0 + 1e-6):
        scaled *= 255
    scaled += 0.5
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def shrink(image: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """A uint8 image no larger than ``side`` pixels per side, for sending: shrunk by the smallest
    whole factor that fits (each pixel the mean of a block; a 280×280 canvas -> 94×94), which
    costs a quarter of a resampling to exactly ``side``."""
    h, w = image.shape
    if max(h, w) <= side:
        return image
    from PIL import Image

    factor = -(-max(h, w) // side)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))


def encode_image(image: np.ndarray) -> dict:
    """uint8 (H, W) -> {"w", "h", "data": base64 of the row-major bytes}."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return {"w": int(image.shape[1]), "h": int(image.shape[0]), "data": base64.b64encode(image.tobytes()).decode()}


def encode_steps(steps: dict[str, np.ndarray], skip: tuple[str, ...] = ()) -> list[dict]:
    """The named stages (2-D pictures only, in their order), shrunk and encoded for the page:
    [{"name", "w", "h", "data"}]."""
    out = []
    for name, image in steps.items():
        if name in skip or image is None or np.asarray(image).ndim != 2 or not np.asarray(image).size:
            continue
        out.append({"name": name, **encode_image(shrink(to_uint8(image)))})
    return out
