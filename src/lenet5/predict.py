"""Your own digit pictures, prepared the way MNIST's digits were.

MNIST's creators size-normalised each digit to fit a 20×20 box (keeping its aspect ratio, with
anti-aliasing) and centred it by its centre of mass in a 28×28 field, bright ink on black.
``to_mnist`` does the same to any picture: any size, colour or grey, dark-on-light or
light-on-dark, off-centre, thick or thin strokes. ``prepare_steps`` returns every intermediate
image, so a web page can show the steps with the very same code.

Reading (``load_grey``) accepts a path, bytes or a file object (an upload), follows the EXIF
orientation of photos, scales 16-bit, 32-bit and float pictures by their real range, and
shrinks large pictures while decoding (JPEG draft mode, then ``Image.reduce``) before any
floating-point copy is made, so memory stays bounded by ``WORK_SIDE``, not by the picture.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Union

import numpy as np

from .data import open_file
from .errors import Lenet5Error
from .losses import probabilities

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest picture we decode
MAX_BYTES = 100 << 20  # the largest upload read from a stream that cannot seek
WORK_SIDE = 1024  # pictures are shrunk (by an integer factor) until their longer side is at most this
MIN_SIDE = 8  # a picture narrower than this cannot show a digit
MIN_INK_EXTENT = 5  # ink smaller than this in both directions is a speck, not a digit
EXIF_ORIENTATION = 0x0112

Source = Union[str, Path, bytes, bytearray, memoryview, BinaryIO]


class ImageError(Lenet5Error):
    """A picture that cannot be read or holds no digit."""


class NotFiniteError(Lenet5Error):
    """A network's outputs overflowed to infinity or NaN: its weights cannot give a result."""


def network_outputs(model, images: np.ndarray, source: str, map_j: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, class probabilities) of ``model`` on uint8 (N, 28, 28) ``images``, both finite
    (RBF outputs: the MAP criterion's posterior with rubbish-class constant ``map_j``).

    Weights that are finite but huge (3e38) overflow inside the network; that is refused as one
    error naming ``source`` (the checkpoint), never shown as ``nan%`` or sent as NaN in JSON, and
    without the RuntimeWarnings the overflow would print."""
    with np.errstate(all="ignore"):
        logits = model.infer(images)
        probs = probabilities(model.preset.output, logits, map_j)
    require_finite(source, logits, probs)
    return logits, probs


def require_finite(source: str, *arrays: np.ndarray) -> None:
    """Raise ``NotFiniteError`` naming ``source`` unless every value of ``arrays`` is finite."""
    if not all(np.isfinite(a).all() for a in arrays):
        raise NotFiniteError(f"{source}: the network's outputs are not finite numbers (its weights are too large "
                             "and overflow); this model cannot give a prediction")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise ImageError("reading pictures needs Pillow: pip install 'lenet5[predict]'") from None
    return Image


def _source_name(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return str(getattr(source, "name", "") or "image")


def _open_source(source: Source, name: str) -> BinaryIO:
    """A seekable binary stream for Image.open: the checked, opened file, or the bytes/upload."""
    if isinstance(source, (str, Path)):
        return open_file(source, ImageError, "file")[0]
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if not hasattr(source, "read"):
        raise ImageError(f"{name}: expected a path, bytes or a binary file object, got {type(source).__name__}")
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        return source
    data = source.read(MAX_BYTES + 1)
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(f"{name}: the file object is not binary (read() gave {type(data).__name__})")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: upload is larger than {MAX_BYTES >> 20} MB")
    return io.BytesIO(data)


def _transposes() -> dict[int, int]:
    """EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose)."""
    T = _pil().Transpose
    return {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
            6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}


def _block_mean(im, factor: int) -> np.ndarray:
    """A PIL image Image.reduce cannot handle (16/32-bit integer modes) downscaled by averaging
    factor×factor blocks (edges: partial blocks dropped), as float64. Read in bands of rows,
    so no full-size copy of the picture is ever made."""
    w, h = im.size
    rows, cols = h // factor, w // factor
    if factor <= 1 or rows == 0 or cols == 0:
        return np.asarray(im).astype(np.float64)
    out = np.empty((rows, cols))
    step = 16  # output rows per band
    for r in range(0, rows, step):
        n = min(step, rows - r)
        band = np.asarray(im.crop((0, r * factor, cols * factor, (r + n) * factor))).astype(np.float64)
        out[r:r + n] = band.reshape(n, factor, cols, factor).mean(axis=(1, 3))
    return out


def _by_range(a: np.ndarray, name: str) -> np.ndarray:
    """A 16/32-bit or float picture scaled to [0, 1] by its own minimum and maximum."""
    if not np.all(np.isfinite(a)):
        raise ImageError(f"{name}: the picture holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a, dtype=np.float64)


def _decode(im, name: str) -> tuple[np.ndarray, float]:
    """An opened PIL image -> (float grey (H, W) in [0, 1], shrunk to about WORK_SIDE while
    decoding; how many of the file's own pixels one pixel of it spans)."""
    Image = _pil()
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image is too large ({w}x{h} pixels; "
                         f"the limit is {MAX_PIXELS // 1_000_000} megapixels)")
    if im.format == "JPEG" and max(w, h) > WORK_SIDE:  # decode at 1/2, 1/4 or 1/8 scale directly
        scale = WORK_SIDE / max(w, h)
        im.draft("L" if im.mode in ("L", "RGB", "YCbCr") else None, (math.ceil(w * scale), math.ceil(h * scale)))
    im.load()
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:  # damaged EXIF: the picture itself is still fine
        orientation = 1
    factor = math.ceil(max(im.size) / WORK_SIDE)
    if im.mode.startswith("I;16") or im.mode in ("I;32", "I;32B", "I;32S"):  # Image.reduce cannot: numpy
        small = Image.fromarray(_block_mean(im, factor).astype(np.float32), mode="F")
    else:
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "L")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode not in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F"):
            im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        small = im.reduce(factor) if factor > 1 else im
    if orientation in _transposes():
        small = small.transpose(_transposes()[orientation])
    scale = (h if orientation in (5, 6, 7, 8) else w) / small.size[0]  # these orientations swap the sides
    if small.mode in ("I", "F"):
        return _by_range(np.asarray(small, dtype=np.float64), name), scale
    if small.mode in ("LA", "La", "RGBA", "RGBa"):  # transparency is laid on white paper
        rgba = small.convert("RGBA")
        small = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(small.convert("L"), dtype=np.float64) / 255, scale


# Pillow's decoders signal a damaged file with many exception types.
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError)


def load_grey(source: Source, name: str | None = None) -> np.ndarray:
    """A picture as a float grey image in [0, 1] (H, W); transparency is laid on white.

    ``source`` is a path, the file's bytes, or a binary file object (a web upload); ``name``
    is what error messages call it (default: the path, or the file object's name). Photos are
    turned upright by their EXIF orientation; pictures larger than WORK_SIDE are shrunk.
    """
    return load_picture(source, name)[0]


def load_picture(source: Source, name: str | None = None) -> tuple[np.ndarray, float]:
    """``load_grey``'s image and how many of the file's own pixels one of its pixels spans (a
    large picture is shrunk while decoding), to give positions in the file's pixels."""
    Image = _pil()
    name = _source_name(source, name)
    fp = _open_source(source, name)
    try:
        with warnings.catch_warnings():  # damaged files make Pillow warn; the error (if any) says it once
            warnings.simplefilter("ignore")
            with Image.open(fp) as im:
                return _decode(im, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image is too large ({e})") from None
    except _DECODE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: not a readable image ({reason})") from None
    finally:
        if isinstance(source, (str, Path)):
            fp.close()


def check_grey(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """``grey`` as float64 (H, W), or ImageError if it is too small to show a digit or not finite."""
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 2 or min(grey.shape) < MIN_SIDE:
        size = "x".join(map(str, grey.shape[::-1]))
        raise ImageError(f"{name}: no digit found (the picture is only {size} pixels)")
    if not np.all(np.isfinite(grey)):
        raise ImageError(f"{name}: the picture holds NaN or infinite values")
    return grey


def drawing_ink(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """The ink of a drawing (H, W) in [0, 1], bright on black: whatever differs from the
    background (the border's median), either polarity, scaled by its maximum; below 0.2 is
    paper texture, JPEG noise or shadow, not ink. ImageError if the picture is almost uniform."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = np.abs(grey - float(np.median(border)))
    if ink.max() < 0.15:
        raise ImageError(f"{name}: no ink found (the picture is almost uniform)")
    ink = ink / ink.max()
    ink[ink < 0.2] = 0
    return ink


def prepare_steps(grey: np.ndarray, name: str = "image") -> dict[str, np.ndarray]:
    """Every step of preparing a picture MNIST-style, for showing them (a web page) or using them.

    Returns ``picture`` (the grey input, (H, W) in [0, 1]), ``ink`` (the ink cropped to its
    bounding box, bright on black, [0, 1]), ``box`` (the ink scaled into at most 20×20, [0, 1])
    and ``input`` (uint8 (28, 28), the box centred by its centre of mass: what the network sees).
    A picture too small or thin to show a digit, or whose ink is a speck or a single line,
    raises ImageError "no digit found" rather than letting the network guess.
    """
    grey = check_grey(grey, name)
    ink = drawing_ink(grey, name)
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    if min(h, w) < 2 or max(h, w) < MIN_INK_EXTENT:
        what = "a single line" if min(h, w) < 2 else "a speck"
        raise ImageError(f"{name}: no digit found (the ink is {what}, {w}x{h} pixels)")
    box, image = mnist_input(ink)
    return {"picture": grey, "ink": ink, "box": box, "input": image}


def mnist_input(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's preparation of one digit's ink (H, W), bright on black in [0, 1], cropped to it.

    Returns ``box`` (the ink scaled, keeping its aspect ratio, so its longer side is 20 pixels,
    float [0, 1]) and ``input`` (uint8 (28, 28): the box placed so its centre of mass is at the
    centre, (14, 14)): what the network sees.
    """
    Image = _pil()
    h, w = ink.shape
    scale = 20 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS), dtype=np.float64)
    box = np.clip(box, 0, None)
    box /= box.max()  # thin strokes fade when shrunk a lot; restore full contrast
    ys, xs = np.indices(box.shape)
    total = box.sum()
    cy, cx = (ys * box).sum() / total, (xs * box).sum() / total
    out = np.zeros((28, 28))
    top = int(np.clip(round(14 - cy), 0, 28 - box.shape[0]))  # MNIST: centre of mass at (14, 14)
    left = int(np.clip(round(14 - cx), 0, 28 - box.shape[1]))
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return box, np.round(out * 255).astype(np.uint8)


def to_mnist(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey image in [0, 1] (H, W) -> uint8 (28, 28), bright digit on black, MNIST-style."""
    return prepare_steps(grey, name)["input"]


def prepare_files(sources: Iterable[Source]) -> np.ndarray:
    """Pictures (paths, bytes or file objects) -> uint8 (N, 28, 28) network inputs."""
    images = []
    for source in sources:
        name = _source_name(source, None)
        images.append(to_mnist(load_grey(source, name), name))
    return np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)


def save_input(image: np.ndarray, path: str | Path) -> None:
    """Write a uint8 2-D image (a 28×28 network input) as a PNG."""
    from .checkpoint import atomic_write  # never through a symlink, never over anything but a file

    Image = _pil()
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
    try:
        atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    except Lenet5Error as e:
        raise ImageError(str(e)) from None


def save_inputs(images: Iterable[np.ndarray], names: Iterable[str], directory: str | Path,
                create: bool = True, stage: str = "input") -> list[Path]:
    """Save each network input as ``<directory>/<stem of its name>-<stage>.png``; return the paths.

    Images are uint8, or floats in [0, 1] (a stage of ``digits.read_picture``), any 2-D size.
    Two inputs with the same file name (a/7.png, b/7.png) keep both: 7-input.png, 7-input-2.png.
    ``directory`` is created if missing (unless ``create`` is False, then a missing directory is
    an error); a path that exists but is not a directory is an error.
    """
    from .data import check_dir

    directory = Path(directory)
    if create and not directory.exists() and not directory.is_symlink():
        try:
            directory.mkdir(parents=True)
        except OSError as e:
            raise ImageError(f"{directory}: cannot create the output directory ({e.strerror or e})") from None
    check_dir(directory, ImageError, "output directory")
    written, used = [], set()
    for image, name in zip(images, names):
        stem = Path(str(name)).stem or "image"
        candidate, n = f"{stem}-{stage}.png", 1
        while candidate in used:
            n += 1
            candidate = f"{stem}-{stage}-{n}.png"
        used.add(candidate)
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        save_input(image, directory / candidate)
        written.append(directory / candidate)
    return written
