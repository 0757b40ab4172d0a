"""Reading MNIST-format (IDX) datasets, validated, and iterating over them in batches.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the payload. Images use magic 0x00000803 (2051,
d = 3: count, rows, cols), labels 0x00000801 (2049, d = 1: count).

Images stay uint8 in memory (60,000 × 28 × 28 = 47 MB) and are converted per batch.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DataError

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64, plus where they came from."""

    images: np.ndarray
    labels: np.ndarray
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of the file as stored

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n], self.files)


@dataclass
class Dataset:
    train: Split
    test: Split
    name: str = "mnist"
    source: str = ""

    def describe(self) -> dict:
        """What a run trained and tested on, for its metadata."""
        return {"dataset": self.name, "source": self.source, "train_size": len(self.train),
                "test_size": len(self.test),
                "files": {Path(p).name: h for s in (self.train, self.test) for p, h in s.files.items()}}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes (plain or .gz) and check its header and size."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: file is empty or too short for an IDX header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise DataError(f"{path}: wrong magic number {found} (expected {magic} for IDX {kind})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) if dims else 0
    payload = len(raw) - header
    if payload != expected:
        what = "short" if payload < expected else "too long"
        raise DataError(f"{path}: payload is {what}: {payload} bytes for dimensions "
                        f"{'x'.join(map(str, dims))} ({expected} bytes expected)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: missing {stem} (or {stem}.gz)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_split(directory: str | Path, split: str) -> Split:
    """Load the 'train' or 'test' images and labels from a directory of IDX files."""
    directory = Path(directory)
    image_path, label_path = (_find(directory, stem) for stem in SPLITS[split])
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{image_path}: images must be N x {IMAGE_SIZE} x {IMAGE_SIZE}, "
                        f"got dimensions {'x'.join(map(str, images.shape))}")
    if labels.ndim != 1:
        raise DataError(f"{label_path}: labels must have 1 dimension, got {labels.ndim}")
    if len(images) == 0:
        raise DataError(f"{image_path}: contains no images")
    if len(images) != len(labels):
        raise DataError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path.name}")
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{label_path}: label {labels[bad]} at index {bad} is out of range 0-{NUM_CLASSES - 1}")
    return Split(images, labels.astype(np.int64),
                 {str(image_path): _sha256(image_path), str(label_path): _sha256(label_path)})


def load_dir(directory: str | Path, name: str = "mnist") -> Dataset:
    """Both splits from a directory holding the four standard IDX files (plain or .gz)."""
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"{directory}: data directory does not exist")
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    try:
        next(directory.iterdir(), None)
    except OSError as e:
        raise DataError(f"{directory}: cannot list directory ({e.strerror or e})") from None
    return Dataset(load_split(directory, "train"), load_split(directory, "test"), name, str(directory))


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering range(n) in batches; shuffled when an rng is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
