"""The IDX reader on valid files and on every kind of broken one."""

import builtins
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from lenet5 import DataError, load_dir, read_idx
from lenet5.data import IMAGE_MAGIC, LABEL_MAGIC


def write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool = False) -> None:
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_dir(tmp_path: Path, n_train=5, n_test=3, gz=False) -> Path:
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28)), IMAGE_MAGIC, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n_train), LABEL_MAGIC, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28)), IMAGE_MAGIC, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n_test), LABEL_MAGIC, gz)
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip(tmp_path, gz):
    data = load_dir(make_dir(tmp_path, gz=gz))
    assert data.train.images.shape == (5, 28, 28) and data.train.images.dtype == np.uint8
    assert data.test.labels.shape == (3,)
    assert len(data.describe()["files"]) == 4


def test_reads_real_mnist_slice(mini_dir):
    data = load_dir(mini_dir)
    assert data.train.images.shape == (300, 28, 28)
    assert data.test.images.shape == (200, 28, 28)
    assert set(np.unique(data.train.labels)) == set(range(10))
    # MNIST digits: dark background, a bright stroke in the centre
    assert data.train.images[:, :2].max() == 0 and data.train.images.max() == 255


def corrupt(tmp_path: Path, name: str, content: bytes) -> Path:
    d = make_dir(tmp_path)
    (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("name,content,message", [
    ("train-images-idx3-ubyte", b"", "empty or too short"),
    ("train-images-idx3-ubyte", (2049).to_bytes(4, "big") + b"\0" * 8, "wrong magic number 2049"),
    ("train-images-idx3-ubyte", (IMAGE_MAGIC).to_bytes(4, "big") + (5).to_bytes(4, "big"), "truncated header"),
    ("train-images-idx3-ubyte", b"".join(v.to_bytes(4, "big") for v in (IMAGE_MAGIC, 5, 28, 28)) + b"\0" * 100,
     "payload is short"),
    ("train-images-idx3-ubyte", b"".join(v.to_bytes(4, "big") for v in (IMAGE_MAGIC, 5, 32, 32)) + b"\0" * 5120,
     "must be N x 28 x 28"),
    ("train-labels-idx1-ubyte", b"".join(v.to_bytes(4, "big") for v in (LABEL_MAGIC, 4)) + b"\0" * 4,
     "4 labels for 5 images"),
    ("train-labels-idx1-ubyte", b"".join(v.to_bytes(4, "big") for v in (LABEL_MAGIC, 5)) + bytes([1, 2, 12, 3, 4]),
     "label 12 at index 2 is out of range"),
    ("train-labels-idx1-ubyte", b"".join(v.to_bytes(4, "big") for v in (LABEL_MAGIC, 5)) + b"\0" * 9,
     "payload is too long"),
])
def test_corrupt_files_give_one_line_errors_naming_the_file(tmp_path, name, content, message):
    d = corrupt(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load_dir(d)
    text = str(e.value)
    assert message in text and name in text and "\n" not in text


def test_corrupt_and_truncated_gzip(tmp_path):
    d = make_dir(tmp_path, gz=True)
    good = (d / "t10k-images-idx3-ubyte.gz").read_bytes()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_dir(d)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load_dir(d)


def test_missing_file_and_directory(tmp_path):
    d = make_dir(tmp_path)
    os.remove(d / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dir(d)
    with pytest.raises(DataError, match="does not exist"):
        load_dir(tmp_path / "nope")


def test_unreadable_directory_and_file(tmp_path, monkeypatch):
    d = make_dir(tmp_path)
    real_open = builtins.open

    def deny(file, *args, **kwargs):  # tests run as root, where chmod 000 would not stop reading
        if Path(str(file)).name.startswith("t10k-images"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: unreadable .Permission denied"):
        load_dir(d)

    def deny_listing(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", deny_listing)
    with pytest.raises(DataError, match="cannot list directory"):
        load_dir(d)


def test_read_idx_returns_uint8_view(mini_dir):
    arr = read_idx(mini_dir / "t10k-labels-idx1-ubyte.gz", LABEL_MAGIC)
    assert arr.dtype == np.uint8 and arr.shape == (200,)


def test_read_idx_records_the_sha256_of_the_stored_file(tmp_path):
    import hashlib

    d = make_dir(tmp_path, gz=True)
    data = load_dir(d)
    for path, sha in {**data.train.files, **data.test.files}.items():
        assert sha == hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_data_after_the_payload_is_refused(tmp_path, gz):
    raw = b"".join(v.to_bytes(4, "big") for v in (LABEL_MAGIC, 3)) + bytes([1, 2, 3])
    path = tmp_path / ("labels.gz" if gz else "labels")
    path.write_bytes(gzip.compress(raw) + gzip.compress(b"more") if gz else raw + b"more")
    with pytest.raises(DataError, match="payload is too long"):
        read_idx(path, LABEL_MAGIC)
    if gz:
        path.write_bytes(gzip.compress(raw) + b"garbage after the gzip member")
        with pytest.raises(DataError, match="corrupt or truncated gzip data"):
            read_idx(path, LABEL_MAGIC)
