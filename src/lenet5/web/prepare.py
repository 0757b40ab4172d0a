"""Pictures from the browser -> the network's 28×28 input, step by step, as ``lenet5 predict`` does it.

Two kinds of upload reach the server:

- an encoded picture (PNG, JPEG, ... : a photo or a file dropped on the page), decoded with
  the same limits as ``lenet5 predict`` (``lenet5.predict.MAX_PIXELS``);
- the drawing canvas as raw grey bytes (one uint8 per pixel, ``width × height``), which
  costs neither side a PNG encode or decode.

Either way the server, never the browser, prepares the picture: ``lenet5.predict`` crops the
ink, scales it into a 20×20 box and centres it in 28×28, and every step is sent back to be shown.
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
    """A uint8 image no larger than ``side`` pixels per side (area-averaged), for sending."""
    h, w = image.shape
    if max(h, w) <= side:
        return image
    from PIL import Image

    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image, mode="L").resize(size, Image.BOX))


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
