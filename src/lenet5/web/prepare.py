"""Pictures from the browser -> the network's 28×28 input, step by step, as ``lenet5 predict`` does it.

Two kinds of upload reach the server:

- an encoded picture (PNG, JPEG, ... : a photo or a file dropped on the page), decoded with
  the same limits as ``lenet5 predict`` (``lenet5.predict.MAX_PIXELS``);
- the drawing canvas as raw grey bytes (one uint8 per pixel, ``width × height``), which
  costs neither side a PNG encode or decode.

Either way the server, never the browser, prepares the picture: ``lenet5.predict`` crops the
ink, scales it into a 20×20 box and centres it in 28×28, and every step is sent back to be shown
(shrunk; a canvas itself is not sent back, the page has it). A canvas takes ``canvas_steps``:
the same steps, bit for bit, with the float work done on the ink's box only.
"""

from __future__ import annotations

import base64

import numpy as np

from .. import predict
from ..predict import ImageError

#: the largest upload the server reads (a photo from a phone is 2-8 MB)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: the largest raw grey canvas, per side
MAX_RAW_SIDE = 4096
#: pictures and ink crops are sent back shrunk to at most this many pixels per side
PREVIEW_SIDE = 112


def raw_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """Raw uint8 grey pixels, row by row -> uint8 (height, width)."""
    if not (1 <= width <= MAX_RAW_SIDE and 1 <= height <= MAX_RAW_SIDE):
        raise ImageError(f"raw canvas must be 1..{MAX_RAW_SIDE} pixels per side, got {width}x{height}")
    if len(data) != width * height:
        raise ImageError(f"raw canvas of {width}x{height} needs {width * height} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width)


def grey_from_raw(data: bytes, width: int, height: int) -> np.ndarray:
    """Raw uint8 grey pixels, row by row -> float grey image in [0, 1] (height, width)."""
    return raw_pixels(data, width, height) / 255


def grey_from_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """An encoded picture (PNG, JPEG, ...) -> float grey image in [0, 1] (H, W), read by ``predict.load_grey``
    (same pixel limit, EXIF orientation, transparency on white)."""
    if not data:
        raise ImageError(f"{name}: empty upload")
    return predict.load_grey(data, name)


def prepare_steps(grey: np.ndarray, name: str = "image") -> dict[str, np.ndarray]:
    """{"picture", "ink", "box", "input"}: ``predict.prepare_steps``, the code of ``lenet5 predict``."""
    return predict.prepare_steps(grey, name)


def canvas_steps(pixels: np.ndarray, name: str = "canvas") -> dict[str, np.ndarray]:
    """``prepare_steps(pixels / 255)`` for a uint8 grey canvas, bit for bit, at a fraction of the cost.

    ``predict.prepare_steps`` works in floating point on the whole picture, but only the ink's
    bounding box matters to it: the background is the median of the picture's border, the ink
    is what differs from it by at least a fifth of the largest difference. Both are found here
    on the uint8 pixels (a few row and column reductions), and ``predict.prepare_steps`` then
    runs on the ink's box framed by background: the same background (the frame's median), the
    same largest difference (it lies in the box), the same ink, box and input. ``picture`` is
    the canvas itself (uint8). Anything unusual (no ink, a tiny canvas) takes the plain path,
    whose errors are then the same as ever.
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    full = None
    if pixels.ndim != 2 or min(pixels.shape) < predict.MIN_SIDE:
        full = pixels
    else:
        # exactly predict's float values: the border's median; v / 255 for each grey level v
        background = median_level(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]))
        levels = np.abs(np.arange(256) / 255 - background)
        row_lo, row_hi = pixels.min(axis=1), pixels.max(axis=1)
        largest = max(levels[row_lo.min()], levels[row_hi.max()])  # |v/255 - b| is largest at an extreme
        if largest < 0.15:
            full = pixels  # no ink: predict says so
    if full is not None:
        steps = predict.prepare_steps(full / 255, name)
        steps["picture"] = pixels
        return steps
    # a grey level is ink when |v/255 - b| / largest >= 0.2 (predict's threshold). Rounding keeps
    # that monotonic in |v - 255 b|, so the ink levels are those at or below some level and those
    # at or above another, and a row holds ink exactly when its darkest or its lightest pixel is ink.
    ink_level = levels / largest >= 0.2
    rows = np.flatnonzero(ink_level[row_lo] | ink_level[row_hi])
    cols = np.flatnonzero(ink_level[pixels.min(axis=0)] | ink_level[pixels.max(axis=0)])
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = bottom - top, right - left
    margin = max(1, -(-(predict.MIN_SIDE - min(h, w)) // 2))  # a frame, and never too small a picture
    framed = np.full((h + 2 * margin, w + 2 * margin), background)
    framed[margin:margin + h, margin:margin + w] = pixels[top:bottom, left:right] / 255
    steps = predict.prepare_steps(framed, name)
    steps["picture"] = pixels
    return steps


def median_level(values: np.ndarray) -> float:
    """``float(np.median(values / 255))`` for uint8 ``values``, to the last bit, from their histogram."""
    n = values.size
    below = np.bincount(values, minlength=256).cumsum()  # below[v]: how many are <= v
    low, high = (int(np.searchsorted(below, k, side="right")) for k in ((n - 1) // 2, n // 2))
    return (low / 255 + high / 255) / 2 if n % 2 == 0 else low / 255


# --------------------------------------------------------------------------- encoding for the page
def to_uint8(image: np.ndarray) -> np.ndarray:
    """A step's image as uint8 for display: uint8 stays; floats in [0, 1] are scaled by 255."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    scaled = image.astype(np.float32)
    if scaled.size and float(scaled.max()) <= 1.0 + 1e-6:
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


def encode_steps(steps: dict[str, np.ndarray]) -> dict[str, dict]:
    """The preparation steps, shrunk and encoded for the page."""
    out = {}
    for key in ("picture", "ink", "box", "input"):
        if key in steps and steps[key] is not None and np.asarray(steps[key]).ndim == 2:
            out[key] = encode_image(shrink(to_uint8(steps[key])))
    return out
