"""Reading MNIST-format (IDX) datasets, validated, and iterating over them in batches.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the payload. Images use magic 0x00000803 (2051,
d = 3: count, rows, cols), labels 0x00000801 (2049, d = 1: count).

Images stay uint8 in memory (60,000 × 28 × 28 = 47 MB) and are converted per batch.

Reading is hostile-input safe: the header is read first and only the bytes it promises are
decompressed (plus one, to detect trailing data), in chunks, so a small .gz that expands to
gigabytes costs no more memory than the dataset it claims to be; a plain file's size is
checked against its header before any payload is read.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import math
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import DataError, Lenet5Error, clip, os_reason

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
    #: path -> (MD5 of the file as stored, MD5 of its uncompressed content): what the published
    #: checksums are, so that the data can be recognised by its content (lenet5.datasets.recognise)
    md5: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)



@dataclass
class Dataset:
    train: Split
    test: Split
    name: str = "mnist"
    source: str = ""
    #: the absolute directory the files were read from (where ``lenet5 evaluate`` finds them again)
    directory: str = ""
    #: file name -> the dataset whose published checksum it matches, or None (lenet5.datasets.recognise)
    recognised: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> dict:
        """What a run trained and tested on, for its metadata."""
        return {"dataset": self.name, "source": self.source, "directory": self.directory,
                "train_size": len(self.train), "test_size": len(self.test),
                "files": {Path(p).name: h for s in (self.train, self.test) for p, h in s.files.items()},
                "recognised": dict(self.recognised)}


# --------------------------------------------------------------------------- files
#: Largest IDX payload we accept (bytes). The largest MNIST-format file known, EMNIST
#: "byclass", holds 0.55 GB; anything above this is a corrupt or hostile header.
MAX_PAYLOAD = 1 << 31
#: Deflate cannot compress better than about 1032:1, so a .gz file of n bytes never
#: expands to more than this many times n (plus a little): a bigger promise is a lie.
MAX_GZIP_RATIO = 1100
CHUNK = 1 << 20


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _os_problem(path: Path, e: OSError, what: str = "file") -> str:
    """What an OSError from stat/open says about path, in a few words."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "broken symlink (its target does not exist)" if os.path.islink(path) else f"no such {what}"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"unreadable ({e.strerror or 'Permission denied'})"
    if e.errno == errno.ENOTDIR:
        return f"no such {what} (a parent is not a directory)"
    return f"cannot read ({os_reason(e)})"


def check_file(path: str | Path, error: type[Lenet5Error] = DataError, what: str = "file") -> int:
    """Size of path if it is a regular file; otherwise raise ``error`` naming what it is instead.

    ``what`` names the expected file ("IDX file", "checkpoint file"). Directories, FIFOs,
    devices, sockets, symlink loops and broken symlinks each get their own one-line message
    (never "missing" for something that exists). Nothing is opened, so a FIFO cannot block.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise error(f"{clip(path)}: {_os_problem(path, e, what)}") from None
    except ValueError as e:  # a NUL byte in the name
        raise error(f"{clip(path)}: invalid file name ({e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{clip(path)}: is a directory, expected {_a(what)}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{clip(path)}: is not a regular file ({file_kind(st.st_mode)}), expected {_a(what)}")
    return st.st_size


def file_kind(mode: int) -> str:
    """What an ``st_mode`` (of ``lstat``) is, in words: "a regular file", "a symlink", ..."""
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a regular file"


def read_bounded(path: str | Path, limit: int, error: type[Lenet5Error] = DataError, what: str = "file") -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes (see check_file for what
    else is refused); a larger one is an error before anything is read, and a file that grows
    while being read is cut off at ``limit`` + 1 bytes."""
    path = Path(path)
    size = check_file(path, error, what)
    if size > limit:
        raise error(f"{clip(path)}: {size:,} bytes, more than the {limit:,} allowed for {_a(what)}")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, open does not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise error(f"{clip(path)}: {_os_problem(path, e, what)}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise error(f"{clip(path)}: is not a regular file, expected {_a(what)}")
            data = read_up_to(f, limit + 1)
        except OSError as e:
            raise error(f"{clip(path)}: {_os_problem(path, e, what)}") from None
    if len(data) > limit:
        raise error(f"{clip(path)}: grew past the {limit:,} bytes allowed for {_a(what)} while being read")
    return data


def open_file(path: str | Path, error: type[Lenet5Error] = DataError, what: str = "file") -> tuple[BinaryIO, int]:
    """(binary file object, size) of a regular file, with one-line errors (see check_file)."""
    path = Path(path)
    size = check_file(path, error, what)
    try:
        return open(path, "rb"), size
    except OSError as e:
        raise error(f"{path}: {_os_problem(path, e, what)}") from None


class _HashingReader:
    """A read-only file wrapper that feeds everything read through it to some hashes."""

    def __init__(self, raw: BinaryIO, *digests: "hashlib._Hash") -> None:
        self.raw, self.digests = raw, digests

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        for digest in self.digests:
            digest.update(data)
        return data

    def drain(self) -> None:
        """Hash the rest of the file."""
        while self.read(CHUNK):
            pass


def read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes; fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def read_into(stream: BinaryIO, out: np.ndarray) -> int:
    """Read into the uint8 array out in chunks; the number of bytes read (short only at the end)."""
    view, pos = memoryview(out), 0
    while pos < len(view):
        block = stream.read(min(CHUNK, len(view) - pos))
        if not block:
            break
        view[pos:pos + len(block)] = block
        pos += len(block)
    return pos


def _parse_idx(path: Path, stream: BinaryIO, magic: int, size: int, gz: bool) -> np.ndarray:
    """Header first, then exactly the payload the header promises (and one byte to spot extra)."""
    head = read_up_to(stream, 4)
    if len(head) < 4:
        raise DataError(f"{path}: file is empty or too short for an IDX header ({len(head)} bytes)")
    found = int.from_bytes(head, "big")
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise DataError(f"{path}: wrong magic number {found} (expected {magic} for IDX {kind})")
    ndim = head[3]
    header = 4 + 4 * ndim
    raw_dims = read_up_to(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated header ({4 + len(raw_dims)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    shape = "x".join(map(str, dims))
    expected = math.prod(dims)  # Python integers: no overflow
    if expected > MAX_PAYLOAD:
        raise DataError(f"{path}: absurd dimensions {shape} ({expected:,} bytes; the limit is {MAX_PAYLOAD:,})")
    if gz and expected > MAX_GZIP_RATIO * size + CHUNK:
        raise DataError(f"{path}: dimensions {shape} promise {expected:,} bytes, more than "
                        f"{size:,} bytes of gzip data can hold")
    if not gz and size - header != expected:
        payload = size - header
        what = "short" if payload < expected else "too long"
        raise DataError(f"{path}: payload is {what}: {payload} bytes for dimensions {shape} "
                        f"({expected} bytes expected)")
    out = np.empty(expected, dtype=np.uint8)
    got = read_into(stream, out)
    if got < expected:
        raise DataError(f"{path}: payload is short: {got} bytes for dimensions {shape} ({expected} bytes expected)")
    if stream.read(1):
        raise DataError(f"{path}: payload is too long: more than {expected} bytes for dimensions {shape} "
                        f"({expected} bytes expected)")
    return out.reshape(dims)


def _read_idx(path: Path, magic: int) -> tuple[np.ndarray, str, tuple[str, str]]:
    """(array, SHA-256 of the file as stored, (MD5 as stored, MD5 of the uncompressed content)),
    reading the file once, in bounded chunks."""
    gz = path.suffix == ".gz"
    raw, size = open_file(path, DataError, "IDX file")
    digest, stored_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with raw:
            hashed = _HashingReader(raw, digest, stored_md5)
            if gz:
                with gzip.GzipFile(fileobj=hashed, mode="rb") as stream:  # type: ignore[arg-type]
                    arr = _parse_idx(path, stream, magic, size, gz=True)  # type: ignore[arg-type]
            else:
                arr = _parse_idx(path, hashed, magic, size, gz=False)  # type: ignore[arg-type]
            hashed.drain()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: {_os_problem(path, e)}") from None
    # the uncompressed content is the header (magic, then each dimension) and the payload
    content_md5 = hashlib.md5(magic.to_bytes(4, "big"), usedforsecurity=False)
    content_md5.update(b"".join(d.to_bytes(4, "big") for d in arr.shape))
    content_md5.update(np.ascontiguousarray(arr).reshape(-1))
    return arr, digest.hexdigest(), (stored_md5.hexdigest(), content_md5.hexdigest())


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes (plain or .gz) and check its header and size.

    Memory is bounded by what the header promises (capped at MAX_PAYLOAD), never by what a
    file expands to: the payload is read in chunks and one byte beyond it reveals extra data.
    """
    return _read_idx(Path(path), magic)[0]


def _find(directory: Path, stem: str) -> Path:
    """The file for stem (plain or .gz). Anything there by that name counts: if it is a
    directory, FIFO or symlink loop, reading it says so rather than calling it missing."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if os.path.lexists(candidate):
            return candidate
    raise DataError(f"{directory}: missing {stem} (or {stem}.gz)")


def load_split(directory: str | Path, split: str) -> Split:
    """Load the 'train' or 'test' images and labels from a directory of IDX files."""
    directory = Path(directory)
    image_path, label_path = (_find(directory, stem) for stem in SPLITS[split])
    images, image_sha, image_md5 = _read_idx(image_path, IMAGE_MAGIC)
    labels, label_sha, label_md5 = _read_idx(label_path, LABEL_MAGIC)
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
    return Split(images, labels.astype(np.int64), {str(image_path): image_sha, str(label_path): label_sha},
                 {str(image_path): image_md5, str(label_path): label_md5})


def check_dir(directory: str | Path, error: type[Lenet5Error] = DataError, what: str = "data directory") -> Path:
    """directory, if it is a listable directory; else a one-line error saying what it is."""
    directory = Path(directory)
    try:
        st = os.stat(directory)
    except OSError as e:
        if e.errno == errno.ENOENT and not os.path.islink(directory):
            raise error(f"{directory}: {what} does not exist") from None
        raise error(f"{directory}: {_os_problem(directory, e)}") from None
    except ValueError as e:
        raise error(f"{directory}: invalid name ({e})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{directory}: not a directory")
    try:
        next(directory.iterdir(), None)
    except OSError as e:
        raise error(f"{directory}: cannot list directory ({e.strerror or e})") from None
    return directory


def load_dir(directory: str | Path, name: str = "mnist") -> Dataset:
    """Both splits from a directory holding the four standard IDX files (plain or .gz)."""
    directory = check_dir(directory)
    return Dataset(load_split(directory, "train"), load_split(directory, "test"), name, str(directory),
                   str(directory.resolve()))


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering range(n) in batches; shuffled when an rng is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
