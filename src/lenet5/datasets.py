"""Datasets that just work: find, download, verify and cache MNIST-format data.

Where a dataset comes from, in order:

1. ``--data-dir DIR`` (any directory with the four IDX files, plain or .gz);
2. the user cache: ``$LENET5_DATA/<name>``, else the platform cache (``~/.cache/lenet5/<name>``
   on Linux) — it only ever holds files whose checksum matched, each with a ``<file>.sha256``
   sidecar (SHA-256 and size, written when it was verified) that is compared on every load,
   so a file corrupted later is reported instead of used;
3. well-known system locations (Debian's ``dataset-fashion-mnist`` package, ...);
4. a download into the cache from the dataset's mirrors, tried in order. Each file is
   written to ``<file>.part`` (resumed with an HTTP Range request when a previous download
   was interrupted), within an overall deadline (``DOWNLOAD_DEADLINE``) and a size cap (the
   published size plus a margin), and renamed only after its checksum matches;
5. offline and nothing found: MNIST falls back to a small real sample bundled with the
   package (with a warning); other datasets stop with an error listing what was tried.

Data is known by its content, not its path: whatever directory the files come from, each is
matched against every dataset's published checksums (``recognise``), and the run records
what was recognised. ``--augment auto`` follows it; files that match no published checksum
are ``unrecognised`` (auto then asks for an explicit choice). KMNIST publishes checksums of its
.gz files only, so only its original .gz files are recognised.

A file verifies when the MD5 of its *uncompressed* content matches the published one, so
recompressed copies (Debian's Fashion-MNIST) and plain files verify too; a ``.gz`` whose own
MD5 matches the published ``.gz`` checksum is accepted without decompressing. A full disk
while downloading is an error of its own (``CacheWriteError``), never mistaken for being
offline.

``$LENET5_MIRRORS`` (comma-separated base URLs) replaces every dataset's mirror list, for
local mirrors and for tests.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from .data import CHUNK, MAX_PAYLOAD, SPLITS, Dataset, Split, load_dir, load_split
from .errors import DataError

FILES = [stem + ".gz" for pair in SPLITS.values() for stem in pair]
SAMPLE_DIR = Path(__file__).parent / "sample"
#: Size of each standard uncompressed IDX file (60,000 / 10,000 images of 28×28 and labels).
RAW_SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
             "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}
#: Seconds one file's download may take in all (connecting, resuming, every byte).
DOWNLOAD_DEADLINE = 1800.0
#: Seconds any single network operation may wait.
DOWNLOAD_TIMEOUT = 15.0
SIDECAR = ".sha256"

T = TypeVar("T")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # published MD5 of each .gz file
    system_dirs: tuple[str, ...] = ()
    licence: str = ""
    raw_md5: dict[str, str] = field(default_factory=dict)  # published MD5 of each uncompressed file (by stem)
    sizes: dict[str, int] = field(default_factory=dict)  # published size of each .gz file
    #: what ``--augment auto`` means for it: affine for written characters (a mirrored digit is
    #: not a digit), flip for Fashion-MNIST (a mirrored shirt is still a shirt)
    auto_augment: str = "affine"
    #: the names of its ten classes, by label
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo(
        "mnist", "MNIST handwritten digits",
        # The original host (yann.lecun.com) no longer serves the files reliably; like
        # torchvision, try the PyTorch mirror first.
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        ("/usr/share/datasets/mnist",),
        "Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0",
        {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
         "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
         "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
         "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        {"train-images-idx3-ubyte.gz": 9_912_422, "train-labels-idx1-ubyte.gz": 28_881,
         "t10k-images-idx3-ubyte.gz": 1_648_877, "t10k-labels-idx1-ubyte.gz": 4_542},
    ),
    DatasetInfo(
        "fashion-mnist", "Fashion-MNIST (Zalando article images)",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("/usr/share/datasets/fashion-mnist",),
        "Zalando Research; MIT",
        {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        {"train-images-idx3-ubyte.gz": 26_421_880, "train-labels-idx1-ubyte.gz": 29_515,
         "t10k-images-idx3-ubyte.gz": 4_422_102, "t10k-labels-idx1-ubyte.gz": 5_148},
        auto_augment="flip",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    ),
    DatasetInfo(
        "kmnist", "Kuzushiji-MNIST (cursive Japanese characters)",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
        ("/usr/share/datasets/kmnist",),
        "ROIS-DS Center for Open Data in the Humanities; CC BY-SA 4.0",
        {},  # no published MD5s of the uncompressed files: only the original .gz files verify
        {"train-images-idx3-ubyte.gz": 18_165_135, "train-labels-idx1-ubyte.gz": 29_497,
         "t10k-images-idx3-ubyte.gz": 3_041_136, "t10k-labels-idx1-ubyte.gz": 5_120},
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
]}


def dataset_of(meta: dict[str, Any]) -> str | None:
    """The dataset a checkpoint's metadata (or a run's config.json) says it was trained on."""
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    name = data.get("dataset") or settings.get("dataset") or meta.get("dataset")
    return name if isinstance(name, str) else None


def class_names(dataset: str | None) -> list[str]:
    """The names of the ten classes of ``dataset`` (a name of DATASETS, or one that begins with
    it); digits "0".."9" for MNIST, its sample, unrecognised data and anything unknown."""
    for name, info in DATASETS.items():
        if dataset and dataset.startswith(name):
            return list(info.classes)
    return [str(d) for d in range(10)]


#: The dataset name of files that match no published checksum (given by --data-dir).
UNRECOGNISED = "unrecognised"
#: The 5,000 / 2,000-image MNIST sample bundled with the package.
SAMPLE_NAME = "mnist-sample"


class Offline(DataError):
    """No mirror could be reached at all (as opposed to a bad or corrupt answer)."""


class MirrorError(DataError):
    """A mirror answered, but wrongly: bad checksum, too large, or too slow. The next is tried."""


class CacheWriteError(DataError):
    """The download could not be written (disk full, read-only cache): stop, never fall back."""


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        from difflib import get_close_matches

        near = get_close_matches(name, DATASETS, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise DataError(f"--dataset {name}: unknown dataset; {hint}choose one of: {', '.join(DATASETS)}") from None


def auto_augment(name: str, data_dir: str | Path | None = None) -> str:
    """What ``--augment auto`` becomes for the dataset ``name`` (as recognised or given)."""
    if name in DATASETS:
        return DATASETS[name].auto_augment
    if name == SAMPLE_NAME:
        return DATASETS["mnist"].auto_augment
    where = f"the files in --data-dir {data_dir}" if data_dir else f"dataset {name!r}"
    raise DataError(f"--augment auto follows the dataset, but {where} are not recognised as one of "
                    f"{', '.join(DATASETS)} by their checksums: choose --augment affine (written characters), "
                    "flip (mirror-symmetric classes such as clothing) or none, or name the data with --dataset")


# --------------------------------------------------------------------------- recognition
def _published() -> dict[str, tuple[str, str]]:
    """Every published MD5 (of a .gz file as distributed, or of an uncompressed file) ->
    (dataset, file stem)."""
    table = {}
    for info in DATASETS.values():
        table.update({md5: (info.name, f.removesuffix(".gz")) for f, md5 in info.md5.items()})
        table.update({md5: (info.name, stem) for stem, md5 in info.raw_md5.items()})
    return table


def recognise(data: Dataset, warn: Callable[[str], None] | None = None) -> str:
    """Which published dataset ``data``'s files are, by their content; sets ``data.recognised``.

    Each file counts for the dataset whose published checksum it matches, as that very file
    (a test file under a training file's name counts for none, with a warning). Returns the
    one dataset the recognised files agree on (a subset of the training set beside the
    official test files still counts), else ``UNRECOGNISED`` (none matched, or several did).
    """
    table = _published()
    found: dict[str, str | None] = {}
    for split in (data.train, data.test):
        for path, md5s in split.md5.items():
            name = Path(path).name
            match = next((table[m] for m in md5s if m in table), None)
            if match is not None and match[1] != name.removesuffix(".gz"):
                if warn:
                    warn(f"{path}: holds {match[0]}'s {match[1]}, not what its name says; counted as unrecognised")
                match = None
            found[name] = match[0] if match else None
    data.recognised = found
    names = {v for v in found.values() if v is not None}
    if len(names) > 1 and warn:
        warn(f"{data.directory or data.source}: the files belong to different datasets "
             f"({', '.join(f'{f}: {n}' for f, n in found.items() if n)}); recorded as {UNRECOGNISED}")
    return names.pop() if len(names) == 1 else UNRECOGNISED


def cache_root() -> Path:
    """$LENET5_DATA, else the platform's user cache directory + /lenet5."""
    if os.environ.get("LENET5_DATA"):
        return Path(os.environ["LENET5_DATA"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lenet5"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "lenet5" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet5"


def _check_url(url: str) -> str:
    """url with a trailing slash, if it is an http(s):// or file:// base URL; else a DataError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as e:
        raise DataError(f"LENET5_MIRRORS: {url!r} is not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise DataError(f"LENET5_MIRRORS: {url!r} is not an http://, https:// or file:// base URL")
    return url if url.endswith("/") else url + "/"


def mirrors(info: DatasetInfo) -> tuple[str, ...]:
    """The mirrors to try: $LENET5_MIRRORS (comma-separated base URLs, checked) or the dataset's."""
    env = os.environ.get("LENET5_MIRRORS")
    if env is None or not env.strip():
        return info.mirrors
    urls = tuple(_check_url(u.strip()) for u in env.split(",") if u.strip())
    if not urls:
        raise DataError(f"LENET5_MIRRORS: {env!r} holds no URL")
    return urls


# --------------------------------------------------------------------------- checksums
def _hash_file(path: Path, digest: "hashlib._Hash") -> str:
    try:
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    return _hash_file(path, hashlib.md5(usedforsecurity=False))


def sha256sum(path: Path) -> str:
    return _hash_file(path, hashlib.sha256())


def raw_md5sum(path: Path, limit: int = MAX_PAYLOAD + 64, gz: bool | None = None) -> str | None:
    """MD5 of a file's uncompressed content (gzip data, a .gz unless ``gz`` says otherwise, is
    decompressed in chunks up to ``limit`` bytes); None if it is not valid gzip data or expands
    beyond the limit."""
    gz = path.suffix == ".gz" if gz is None else gz
    digest, total = hashlib.md5(usedforsecurity=False), 0
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            while block := f.read(CHUNK):
                total += len(block)
                if total > limit:
                    return None
                digest.update(block)
    except (gzip.BadGzipFile, EOFError, zlib.error):
        return None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return digest.hexdigest()


def verify_file(info: DatasetInfo, path: Path) -> str:
    """'ok' (published checksum matches), 'differs', or 'unknown' (no published checksum applies).

    A .gz verifies by its own MD5 (the published .gz) or by its uncompressed content's MD5;
    a plain file by its content's MD5.
    """
    stem = path.name.removesuffix(".gz")
    gz_md5, raw_md5 = info.md5.get(stem + ".gz"), info.raw_md5.get(stem)
    if path.suffix == ".gz" and gz_md5 and md5sum(path) == gz_md5:
        return "ok"
    if raw_md5 is None:
        return "differs" if path.suffix == ".gz" and gz_md5 else "unknown"
    return "ok" if raw_md5sum(path, RAW_SIZES.get(stem, MAX_PAYLOAD) + 64) == raw_md5 else "differs"


def _present(directory: Path, f: str) -> Path | None:
    """The file data.load_dir would read for f (plain first, then .gz), if any."""
    for candidate in (directory / f[:-3], directory / f):
        if candidate.is_file():
            return candidate
    return None


def _has_all(directory: Path) -> bool:
    return all(_present(directory, f) is not None for f in FILES)


def verify_dir(info: DatasetInfo, directory: Path) -> dict[str, str]:
    """Per file (by the name found): 'ok', 'differs', 'unknown' (no checksum applies) or 'missing'."""
    status = {}
    for f in FILES:
        path = _present(directory, f)
        if path is None:
            status[f] = "missing"
        else:
            status[path.name] = verify_file(info, path)
    return status


# --------------------------------------------------------------------------- cache sidecars
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def write_sidecar(path: Path, sha256: str | None = None) -> None:
    """Record path's SHA-256 and size, so later loads can notice corruption cheaply."""
    sha256 = sha256 or sha256sum(path)
    tmp = path.with_name(f".{path.name}{SIDECAR}.tmp")
    tmp.write_text(f"{sha256} {path.stat().st_size}\n")
    os.replace(tmp, _sidecar(path))


def read_sidecar(path: Path) -> tuple[str, int] | None:
    """(sha256, size) recorded for path, or None if there is no (valid) sidecar."""
    try:
        sha, size = _sidecar(path).read_text().split()
        return (sha, int(size)) if len(sha) == 64 else None
    except (OSError, ValueError):
        return None


def _corrupt(path: Path, name: str, why: str) -> DataError:
    return DataError(f"{path}: cached file is corrupt ({why}); delete it or run "
                     f"'lenet5 data download {name}' to fetch it again")


def _check_cache(info: DatasetInfo, directory: Path, warn: Callable[[str], None]) -> dict[str, str]:
    """The recorded SHA-256 of each cached file (by path). Sizes are compared now; a file
    without a sidecar (an older cache) is verified in full once and gets one."""
    recorded = {}
    for f in FILES:
        path = _present(directory, f)
        assert path is not None  # _has_all was checked
        side = read_sidecar(path)
        if side is None:
            state = verify_file(info, path)
            if state == "differs":
                raise _corrupt(path, info.name, "its checksum differs from the published one")
            if state == "unknown":
                warn(f"{path}: no published checksum to verify it against; using it as it is")
            try:
                write_sidecar(path)
            except OSError:  # a read-only cache still loads; it is verified in full next time
                continue
            side = read_sidecar(path)
        if side is None:
            continue
        sha, size = side
        if path.stat().st_size != size:
            raise _corrupt(path, info.name, f"{path.stat().st_size:,} bytes, {size:,} when it was verified")
        recorded[str(path)] = sha
    return recorded


def _load_cache(info: DatasetInfo, directory: Path, warn: Callable[[str], None]) -> Dataset:
    """The cached dataset, each file compared with its sidecar (the SHA-256 comes free with reading)."""
    recorded = _check_cache(info, directory, warn)
    try:
        data = load_dir(directory, info.name)
    except DataError as e:
        raise DataError(f"{e} (a cached file; run 'lenet5 data download {info.name}' to fetch it again)") from None
    for split in (data.train, data.test):
        for path, sha in split.files.items():
            if path in recorded and recorded[path] != sha:
                raise _corrupt(Path(path), info.name, "its SHA-256 changed since it was verified")
    return data


# --------------------------------------------------------------------------- downloading
def max_download_size(info: DatasetInfo, f: str) -> int:
    """The most bytes we accept for f: the published size (else the uncompressed size) + 5% + 64 KiB."""
    size = info.sizes.get(f) or RAW_SIZES.get(f.removesuffix(".gz"), MAX_PAYLOAD)
    return size + size // 20 + (64 << 10)


def _local(part: Path, url: str, action: Callable[[], T]) -> T:
    """Run a local file operation of a download; an OSError becomes a CacheWriteError and
    the .part (which cannot be completed) is removed."""
    try:
        return action()
    except OSError as e:
        part.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheWriteError(f"{part}: no space left on device while downloading {url}; free some space "
                                  "or set LENET5_DATA to a directory on another disk") from None
        raise CacheWriteError(f"{part}: cannot write the download ({e.strerror or e})") from None


def download_file(url: str, dest: Path, md5: str, progress: bool = True, timeout: float = DOWNLOAD_TIMEOUT, *,
                  raw_md5: str | None = None, max_bytes: int | None = None,
                  deadline: float | None = None) -> None:
    """Fetch url into dest via dest.part (resuming it if present); rename only if it verifies.

    It verifies when its MD5 is ``md5`` (the published .gz) or its uncompressed content's MD5
    is ``raw_md5``. The whole download must finish within ``deadline`` seconds (default
    DOWNLOAD_DEADLINE; a partial file is kept to resume) and may not exceed ``max_bytes``
    (then, like a bad checksum, it is deleted): both raise MirrorError. Write errors raise
    CacheWriteError; network errors propagate (URLError, OSError, HTTPException).
    """
    part = dest.with_name(dest.name + ".part")
    deadline = DOWNLOAD_DEADLINE if deadline is None else deadline
    start = time.monotonic()
    for _ in range(2):  # a second try only after a 416 (stale .part) below
        offset = _local(part, url, lambda: part.stat().st_size if part.is_file() else 0)
        if max_bytes is not None and offset > max_bytes:
            _local(part, url, lambda: part.unlink())
            offset = 0
        headers = {"User-Agent": "lenet5", **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            resp = urlopen(Request(url, headers=headers), timeout=min(timeout, deadline))
            break
        except HTTPError as e:
            if e.code == 416 and offset:  # the .part is already complete (or bogus): start over
                _local(part, url, lambda: part.unlink())
                continue
            raise
    with resp:
        if offset and resp.status != 206:  # the server ignored the Range: start over
            offset = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + offset if length and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            _local(part, url, lambda: part.unlink(missing_ok=True))
            raise MirrorError(f"{dest.name} from {url}: the mirror announces {total:,} bytes, more than the "
                              f"{max_bytes:,} expected; nothing was kept")
        bar = None
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False)
        f = _local(part, url, lambda: part.open("ab" if offset else "wb"))
        try:
            written = offset
            while True:
                if time.monotonic() - start > deadline:
                    raise MirrorError(f"{dest.name} from {url}: not finished within the {deadline:g} s deadline "
                                      f"({written:,} bytes so far, kept in {part.name} to resume)")
                block = resp.read1(1 << 16)  # whatever has arrived: a trickle cannot stall the deadline
                if not block:
                    break
                written += len(block)
                if max_bytes is not None and written > max_bytes:
                    _local(part, url, f.close)
                    _local(part, url, lambda: part.unlink(missing_ok=True))
                    raise MirrorError(f"{dest.name} from {url}: more than the {max_bytes:,} bytes expected; "
                                      "stopped, the download was deleted")
                _local(part, url, lambda: f.write(block))
                if bar is not None:
                    bar.update(len(block))
        finally:
            if not f.closed:
                _local(part, url, f.close)
            if bar is not None:
                bar.close()
    got = md5sum(part)
    raw_limit = RAW_SIZES.get(dest.name.removesuffix(".gz"), MAX_PAYLOAD) + 64
    if got != md5 and (raw_md5 is None or raw_md5sum(part, raw_limit, gz=dest.suffix == ".gz") != raw_md5):
        part.unlink()
        raise MirrorError(f"{dest.name} from {url}: checksum mismatch (md5 {got}, expected {md5}); "
                          "the download was deleted")
    _local(part, url, lambda: write_sidecar(part))
    _local(part, url, lambda: os.replace(_sidecar(part), _sidecar(dest)))
    _local(part, url, lambda: os.replace(part, dest))


def _cached_ok(info: DatasetInfo, dest: Path) -> bool:
    """Whether dest is a verified cached file: its sidecar's size matches (cheap), or, with no
    sidecar, its checksum verifies (then it gets a sidecar)."""
    if not dest.is_file():
        return False
    side = read_sidecar(dest)
    if side is not None:
        return dest.stat().st_size == side[1] and sha256sum(dest) == side[0]
    if verify_file(info, dest) != "ok":
        return False
    try:
        write_sidecar(dest)
    except OSError:  # still verified; the next run verifies it in full again
        pass
    return True


def download(name: str, progress: bool = True) -> Path:
    """Make sure the cache holds the four verified files of ``name``; return the directory."""
    info = get_info(name)
    urls = mirrors(info)
    target = cache_root() / name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{target}: cannot create the data cache ({e.strerror or e}); set LENET5_DATA") from None
    reached_any = False
    for f in FILES:
        dest = target / f
        if _cached_ok(info, dest):
            continue
        errors = []
        for base in urls:
            url = base + f
            if progress:
                print(f"lenet5: downloading {url}", file=sys.stderr)
            try:
                download_file(url, dest, info.md5[f], progress, raw_md5=info.raw_md5.get(f[:-3]),
                              max_bytes=max_download_size(info, f))
                reached_any = True
                break
            except MirrorError as e:  # the mirror answered, but wrongly
                reached_any = True
                errors.append(str(e))
            except HTTPError as e:
                reached_any = True
                errors.append(f"{url}: HTTP {e.code}")
            except (URLError, OSError, HTTPException, socket.timeout) as e:
                reason = getattr(e, "reason", e)
                errors.append(f"{url}: {reason}")
        else:
            detail = "; ".join(errors)
            if not reached_any:
                raise Offline(f"{name}: no mirror reachable ({detail})")
            raise DataError(f"{name}: could not download {f} ({detail})")
    return target


# --------------------------------------------------------------------------- resolution
def candidates(name: str) -> list[tuple[str, Path]]:
    """Where ``name`` may already be, in the order they are tried: (kind, directory)."""
    info = get_info(name)
    return [("cache", cache_root() / name)] + [("system", Path(d)) for d in info.system_dirs]


def _warn(msg: str) -> None:
    print(f"lenet5: warning: {msg}", file=sys.stderr)


def load_data_dir(data_dir: str | Path, name: str | None = None, warn: Callable[[str], None] | None = None) -> Dataset:
    """The four IDX files in ``data_dir``, named by what their content is (see ``recognise``).

    ``name`` (--dataset) is the user's word for unrecognised files (taken silently: the run's
    record of what was recognised shows it); files recognised as another dataset are an error.
    """
    warn = warn or _warn
    if name not in (None, UNRECOGNISED):
        get_info(name)  # type: ignore[arg-type]
    data = load_dir(data_dir, UNRECOGNISED)
    found = recognise(data, warn)
    if name in (None, UNRECOGNISED) or found == name:
        data.name = found
    elif found != UNRECOGNISED:
        raise DataError(f"--data-dir {data_dir}: its files are {get_info(found).title} (recognised by their "
                        f"checksums), not --dataset {name}; leave out --dataset or pass --dataset {found}")
    else:  # the user's word; data.recognised (recorded with the run) says no file matched
        data.name = name  # type: ignore[assignment]
    return data


def load_dataset(name: str | None = "mnist", data_dir: str | Path | None = None, download_ok: bool = True,
                 progress: bool = True, warn: Callable[[str], None] | None = None) -> Dataset:
    """The dataset, from the first place in the resolution order that has it (see module doc).

    With ``data_dir``, the files there, recognised by their content (``name`` may be None:
    they say what they are).
    """
    warn = warn or _warn
    if data_dir is not None:
        return load_data_dir(data_dir, name, warn)
    name = name or "mnist"
    info = get_info(name)  # an unknown name is an error before anything is tried
    tried = []
    for kind, directory in candidates(name):
        if _has_all(directory):
            data = _load_cache(info, directory, warn) if kind == "cache" else load_dir(directory, name)
            data.source = f"{kind}:{directory}"
            if kind == "system":  # nothing verified these: make sure they are what the name says
                found = recognise(data, warn)
                if found not in (name, UNRECOGNISED):
                    raise DataError(f"{directory}: holds {get_info(found).title} (recognised by their checksums), "
                                    f"not {info.title}")
            else:
                recognise(data)
            return data
        tried.append(f"{kind} {directory}")
    if download_ok:
        try:
            directory = download(name, progress)
            data = _load_cache(info, directory, warn)
            data.source = f"cache:{directory}"
            recognise(data)
            return data
        except Offline as e:
            tried.append(f"download ({e})")
    if name == "mnist":
        data = load_dir(SAMPLE_DIR, SAMPLE_NAME)
        data.source = "bundled-sample"
        warn(f"no network and no MNIST found: using the bundled MNIST sample ({len(data.train):,} training / "
             f"{len(data.test):,} test images), NOT full MNIST. For the full set run "
             "'lenet5 data download mnist' when online, or pass --data-dir DIR.")
        return data
    raise DataError(f"{name}: not found and not downloadable; tried {'; '.join(tried)}. "
                    f"Put the four IDX files in a directory and pass --data-dir DIR, "
                    f"or copy them to {cache_root() / name}")


def status(name: str) -> dict:
    """For `lenet5 data list`: where the dataset is found and whether its checksums match."""
    info = get_info(name)
    for kind, directory in candidates(name):
        if _has_all(directory):
            files = verify_dir(info, directory)
            verified = all(v == "ok" for v in files.values())
            return {"name": name, "found": kind, "path": str(directory), "verified": verified, "files": files}
    return {"name": name, "found": None, "path": str(cache_root() / name), "verified": False, "files": {}}


def where(name: str) -> dict:
    """For `lenet5 data path`: every place ``name`` is looked for, in order, and which holds it.

    ``$LENET5_DATA`` (when set) replaces the platform cache as the *parent* of one folder per
    dataset: ``$LENET5_DATA/mnist``, ``$LENET5_DATA/fashion-mnist``, ...
    """
    info = get_info(name)
    places = [{"kind": kind, "path": str(directory), "found": _has_all(directory)}
              for kind, directory in candidates(name)]
    found = next((p for p in places if p["found"]), None)
    return {"name": name, "found": found["path"] if found else None, "places": places,
            "cache_root": str(cache_root()), "lenet5_data": os.environ.get("LENET5_DATA") or None,
            "mirrors": list(mirrors(info)), "sample": str(SAMPLE_DIR) if name == "mnist" else None}


def load_recorded_test(recorded: dict) -> tuple[Split | None, str]:
    """A run's test files again, from what its config.json recorded (``Dataset.describe()``).

    Returns (the test split, "") when every recorded test file is still in the recorded
    directory with the recorded SHA-256, else (None, why not).
    """
    directory, files = recorded.get("directory"), recorded.get("files")
    if not directory or not isinstance(files, dict):
        return None, "the run records no data directory"
    test_names = {f for f in files if f.removesuffix(".gz") in SPLITS["test"]}
    if len(test_names) != 2:
        return None, "the run records no test files"
    if not Path(directory).is_dir():
        return None, f"{directory} is gone"
    try:
        split = load_split(Path(directory), "test")
    except DataError as e:
        return None, str(e)
    now = {Path(p).name: sha for p, sha in split.files.items()}
    changed = sorted(f for f in test_names if now.get(f) != files[f])
    if changed:
        return None, f"{directory}: {', '.join(changed)} changed since the run (SHA-256 differs)"
    return split, ""
