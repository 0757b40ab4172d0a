"""Datasets that just work: find, download, verify and cache MNIST-format data.

Where a dataset comes from, in order:

1. ``--data-dir DIR`` (any directory with the four IDX files, plain or .gz);
2. the user cache: ``$LENET5_DATA/<name>``, else the platform cache (``~/.cache/lenet5/<name>``
   on Linux) — it only ever holds files whose checksum matched;
3. well-known system locations (Debian's ``dataset-fashion-mnist`` package, ...);
4. a download into the cache from the dataset's mirrors, tried in order. Each file is
   written to ``<file>.part`` (resumed with an HTTP Range request when a previous download
   was interrupted) and renamed only after its MD5 matches the published one;
5. offline and nothing found: MNIST falls back to a small real sample bundled with the
   package (with a warning); other datasets stop with an error listing what was tried.

``$LENET5_MIRRORS`` (comma-separated base URLs) replaces every dataset's mirror list, for
local mirrors and for tests.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from .data import SPLITS, Dataset, load_dir
from .errors import DataError

FILES = [stem + ".gz" for pair in SPLITS.values() for stem in pair]
SAMPLE_DIR = Path(__file__).parent / "sample"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # published MD5 of each .gz file
    system_dirs: tuple[str, ...] = ()
    licence: str = ""


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
    ),
]}


class Offline(DataError):
    """No mirror could be reached at all (as opposed to a bad or corrupt answer)."""


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"--dataset {name}: unknown dataset; choose one of: {', '.join(DATASETS)}") from None


def cache_root() -> Path:
    """$LENET5_DATA, else the platform's user cache directory + /lenet5."""
    if os.environ.get("LENET5_DATA"):
        return Path(os.environ["LENET5_DATA"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lenet5"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "lenet5" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet5"


def mirrors(info: DatasetInfo) -> tuple[str, ...]:
    env = os.environ.get("LENET5_MIRRORS")
    if env:
        return tuple(u if u.endswith("/") else u + "/" for u in env.split(",") if u.strip())
    return info.mirrors


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _has_all(directory: Path) -> bool:
    return all((directory / f).is_file() or (directory / f[:-3]).is_file() for f in FILES)


def verify_dir(info: DatasetInfo, directory: Path) -> dict[str, str]:
    """Per file: 'ok' (published MD5 matches), 'missing', or 'differs' (e.g. recompressed or plain)."""
    status = {}
    for f in FILES:
        path = directory / f
        if not path.is_file():
            status[f] = "differs" if (directory / f[:-3]).is_file() else "missing"
        else:
            status[f] = "ok" if md5sum(path) == info.md5[f] else "differs"
    return status


# --------------------------------------------------------------------------- downloading
def download_file(url: str, dest: Path, md5: str, progress: bool = True, timeout: float = 15) -> None:
    """Fetch url into dest via dest.part (resuming it if present); rename only if the MD5 matches."""
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lenet5", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # the .part is already complete (or bogus): start over
            part.unlink()
            return download_file(url, dest, md5, progress, timeout)
        raise
    with resp:
        if offset and resp.status != 206:  # the server ignored the Range: start over
            offset = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + offset if length and length.isdigit() else None
        bar = None
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False)
        with part.open("ab" if offset else "wb") as f:
            for block in iter(lambda: resp.read(1 << 16), b""):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DataError(f"{dest.name} from {url}: checksum mismatch (md5 {got}, expected {md5}); "
                        "the download was deleted")
    os.replace(part, dest)


def download(name: str, progress: bool = True) -> Path:
    """Make sure the cache holds the four verified files of ``name``; return the directory."""
    info = get_info(name)
    target = cache_root() / name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{target}: cannot create the data cache ({e.strerror or e}); set LENET5_DATA") from None
    reached_any = False
    for f in FILES:
        dest = target / f
        if dest.is_file() and md5sum(dest) == info.md5[f]:
            continue
        errors = []
        for base in mirrors(info):
            url = base + f
            if progress:
                print(f"lenet5: downloading {url}", file=sys.stderr)
            try:
                download_file(url, dest, info.md5[f], progress)
                reached_any = True
                break
            except DataError as e:  # checksum mismatch: the mirror answered, but wrongly
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


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None, download_ok: bool = True,
                 progress: bool = True, warn=None) -> Dataset:
    """The dataset, from the first place in the resolution order that has it (see module doc)."""
    get_info(name)  # an unknown name is an error before anything is tried
    warn = warn or (lambda msg: print(f"lenet5: warning: {msg}", file=sys.stderr))
    if data_dir is not None:
        return load_dir(data_dir, name)
    tried = []
    for kind, directory in candidates(name):
        if _has_all(directory):
            data = load_dir(directory, name)
            data.source = f"{kind}:{directory}"
            return data
        tried.append(f"{kind} {directory}")
    if download_ok:
        try:
            directory = download(name, progress)
            data = load_dir(directory, name)
            data.source = f"cache:{directory}"
            return data
        except Offline as e:
            tried.append(f"download ({e})")
    if name == "mnist":
        data = load_dir(SAMPLE_DIR, "mnist-sample")
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
