"""Finding, downloading, verifying and caching datasets, against a local HTTP server only."""

import errno
import gzip
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lenet5 import cli, datasets
from lenet5.datasets import FILES, DatasetInfo

MINI = Path(__file__).parent / "fixtures" / "mnist-mini"
CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name -> bytes), honours Range, and can go slowly."""

    files: dict[str, bytes] = {}
    delay = 0.0
    requests: list[tuple[str, str | None]] = []
    trickle = False  # one byte every 0.3 s
    endless = False  # zeros without end (no Content-Length)
    announce: int | None = None  # a Content-Length to claim instead of the real one

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        type(self).requests.append((name, rng))
        if self.endless or self.trickle:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" if self.trickle else bytes(4096))
                    self.wfile.flush()
                    time.sleep(0.3 if self.trickle else 0)
            except (BrokenPipeError, ConnectionResetError):
                return
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body) and rng:
            self.send_error(416)
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(self.announce or len(body) - start))
        self.end_headers()
        for i in range(start, len(body), 4096):
            try:
                self.wfile.write(body[i:i + 4096])
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(self.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.files = {f: (MINI / f).read_bytes() for f in FILES}
    Handler.delay = 0.0
    Handler.requests = []
    Handler.trickle = Handler.endless = False
    Handler.announce = None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fake_info(tmp_path: Path, **changes) -> DatasetInfo:
    """'mnist' with the fixture's checksums (of the .gz files and of their content) and no system dir."""
    real = datasets.DATASETS["mnist"]
    fields = {"md5": {f: md5((MINI / f).read_bytes()) for f in FILES},
              "raw_md5": {f[:-3]: md5(gzip.decompress((MINI / f).read_bytes())) for f in FILES}, **changes}
    return DatasetInfo("mnist", real.title, real.mirrors, fields["md5"], (str(tmp_path / "no-system-dir"),),
                       raw_md5=fields["raw_md5"], sizes=fields.get("sizes", {}))


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """An empty cache, mirrors = [the local server], and 'mnist' checksums = the fixture's."""
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("LENET5_MIRRORS", server)
    real = datasets.DATASETS["mnist"]
    fake = DatasetInfo("mnist", real.title, real.mirrors, {f: md5((MINI / f).read_bytes()) for f in FILES},
                       (str(tmp_path / "no-system-dir"),))
    monkeypatch.setitem(datasets.DATASETS, "mnist", fake)
    return tmp_path / "cache" / "mnist"


def test_download_verifies_and_caches(env):
    data = datasets.load_dataset("mnist", progress=False)
    assert data.source.startswith("cache:") and len(data.train) == 300
    assert sorted(p.name for p in env.iterdir()) == sorted(FILES + [f + ".sha256" for f in FILES])
    for f in FILES:
        assert (env / f).read_bytes() == (MINI / f).read_bytes()
    Handler.requests.clear()
    datasets.load_dataset("mnist", progress=False)  # second run: from the cache, no network
    assert Handler.requests == []


def test_second_mirror_is_tried(env, monkeypatch, server):
    monkeypatch.setenv("LENET5_MIRRORS", f"{CLOSED},{server}")
    assert datasets.load_dataset("mnist", progress=False).source.startswith("cache:")


def test_checksum_mismatch_deletes_the_download_and_names_file_and_mirror(env, server):
    good = Handler.files["t10k-images-idx3-ubyte.gz"]
    Handler.files["t10k-images-idx3-ubyte.gz"] = good[:-10] + b"x" * 10
    with pytest.raises(datasets.DataError) as e:
        datasets.load_dataset("mnist", progress=False)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and server in msg and "checksum mismatch" in msg
    assert not (env / "t10k-images-idx3-ubyte.gz").exists()
    assert not list(env.glob("*.part"))
    # files that did verify stay cached and intact
    assert (env / "train-images-idx3-ubyte.gz").read_bytes() == (MINI / "train-images-idx3-ubyte.gz").read_bytes()


def test_corrupt_mirror_never_damages_the_cache(env, server):
    datasets.load_dataset("mnist", progress=False)
    before = {f: (env / f).read_bytes() for f in FILES}
    Handler.files = {f: b"garbage" for f in FILES}
    datasets.download("mnist", progress=False)  # everything cached is verified: nothing fetched
    assert {f: (env / f).read_bytes() for f in FILES} == before


def test_resume_after_interruption(env, server):
    name = "train-images-idx3-ubyte.gz"
    body = Handler.files[name]
    env.mkdir(parents=True)
    (env / (name + ".part")).write_bytes(body[:5000])
    datasets.download("mnist", progress=False)
    assert (env / name).read_bytes() == body
    assert (name, "bytes=5000-") in Handler.requests


def test_bogus_partial_download_is_not_trusted(env):
    name = "train-images-idx3-ubyte.gz"
    env.mkdir(parents=True)
    (env / (name + ".part")).write_bytes(b"\0" * 50)  # wrong bytes that a resume would keep
    with pytest.raises(datasets.DataError, match="checksum mismatch"):
        datasets.download("mnist", progress=False)
    assert not (env / name).exists() and not (env / (name + ".part")).exists()
    datasets.download("mnist", progress=False)  # the next run starts clean and succeeds
    assert (env / name).read_bytes() == (MINI / name).read_bytes()


def test_killed_download_leaves_nothing_trusted(tmp_path, server):
    """kill -9 in the middle of a download: no final file; a later run completes and verifies."""
    Handler.delay = 0.01
    Handler.files["train-images-idx3-ubyte.gz"] = os.urandom(2 << 20)  # ~5 s at this pace
    cache = tmp_path / "cache"
    env = {**os.environ, "LENET5_DATA": str(cache), "LENET5_MIRRORS": server}
    proc = subprocess.Popen([sys.executable, "-m", "lenet5.cli", "data", "download", "mnist"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = cache / "mnist" / "train-images-idx3-ubyte.gz.part"
    deadline = time.time() + 30
    while not (part.exists() and part.stat().st_size > 8192) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.exists(), "the download never started"
    assert not (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert len(list((cache / "mnist").glob("*.gz"))) == 0  # nothing a later run would trust


def test_no_network_mnist_falls_back_to_the_bundled_sample(env, monkeypatch):
    monkeypatch.setenv("LENET5_MIRRORS", CLOSED)
    warnings = []
    data = datasets.load_dataset("mnist", progress=False, warn=warnings.append)
    assert data.source == "bundled-sample" and data.name == "mnist-sample"
    assert len(data.train) == 5000 and len(data.test) == 2000
    assert np.bincount(data.train.labels).tolist() == [500] * 10
    assert "NOT full MNIST" in warnings[0] and "5,000" in warnings[0]


def test_no_network_other_datasets_fail_with_what_was_tried(env, monkeypatch):
    monkeypatch.setenv("LENET5_MIRRORS", CLOSED)
    monkeypatch.setitem(datasets.DATASETS, "kmnist", DatasetInfo("kmnist", "k", (), datasets.DATASETS["kmnist"].md5,
                                                                 ("/nonexistent/kmnist",)))
    with pytest.raises(datasets.DataError) as e:
        datasets.load_dataset("kmnist", progress=False)
    msg = str(e.value)
    assert "cache" in msg and "/nonexistent/kmnist" in msg and "no mirror reachable" in msg and "--data-dir" in msg


def test_data_commands(env, capsys):
    assert cli.main(["data", "download", "mnist"]) == 0
    assert cli.main(["data", "verify", "mnist"]) == 0
    assert cli.main(["data", "path", "mnist"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == 4 and str(env) in out
    (env / "t10k-labels-idx1-ubyte.gz").write_bytes((env / "t10k-labels-idx1-ubyte.gz").read_bytes()[:-1] + b"\1")
    assert cli.main(["data", "verify", "mnist"]) == 1
    assert cli.main(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])
    mnist = next(r for r in rows if r["name"] == "mnist")
    assert mnist["found"] == "cache" and mnist["verified"] is False
    assert mnist["files"]["t10k-labels-idx1-ubyte.gz"] == "differs"


def test_unknown_dataset_is_a_clean_cli_error(capsys):
    assert cli.main(["train", "--no-plots", "--dataset", "cifar10"]) == 2
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err


def test_first_run_offline_trains_on_the_sample_and_records_it(tmp_path):
    """The README's quickstart with no network: `lenet5 train` and no arguments (1 epoch here)."""
    env = {**os.environ, "LENET5_DATA": str(tmp_path / "cache"), "LENET5_MIRRORS": CLOSED}
    r = subprocess.run([sys.executable, "-m", "lenet5.cli", "train", "--no-plots", "--epochs", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bundled MNIST sample" in r.stderr and "NOT full MNIST" in r.stderr
    run = next((tmp_path / "runs").iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["dataset"] == "mnist-sample" and config["data"]["source"] == "bundled-sample"
    assert config["data"]["train_size"] == 5000 and config["data"]["test_size"] == 2000
    assert len(config["data"]["files"]) == 4


def fashion_dir():
    d = Path("/usr/share/datasets/fashion-mnist")
    if not (d / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail("CI installs dataset-fashion-mnist; /usr/share/datasets/fashion-mnist is missing")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return d


@pytest.mark.slow
def test_full_size_epoch_through_the_system_location(tmp_path, monkeypatch):
    fashion_dir()
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LENET5_MIRRORS", CLOSED)
    out = tmp_path / "run"
    assert cli.main(["train", "--no-plots", "--dataset", "fashion-mnist", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["source"] == "system:/usr/share/datasets/fashion-mnist"
    assert config["data"]["train_size"] == 60000 and config["data"]["test_size"] == 10000
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["test_acc"] > 0.75  # one epoch of seed-tanh on Fashion-MNIST: ~82% measured


# --------------------------------------------------------------------------- hostile mirrors and disks
def test_trickling_mirror_fails_at_the_deadline(env, monkeypatch):
    """One byte every 0.3 s never trips a per-read timeout; the overall deadline stops it."""
    monkeypatch.setattr(datasets, "DOWNLOAD_DEADLINE", 2.0)
    Handler.trickle = True
    start = time.monotonic()
    with pytest.raises(datasets.DataError) as e:
        datasets.load_dataset("mnist", progress=False)
    assert time.monotonic() - start < 20  # the documented deadline (2 s here), with a wide margin
    msg = str(e.value)
    assert "not finished within the 2 s deadline" in msg and "train-images-idx3-ubyte.gz" in msg and "\n" not in msg
    assert not (env / "train-images-idx3-ubyte.gz").exists()


def test_endless_response_is_stopped_and_the_part_removed(env, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "mnist", fake_info(tmp_path, sizes={f: 1000 for f in FILES}))
    Handler.endless = True
    with pytest.raises(datasets.DataError) as e:
        datasets.download("mnist", progress=False)
    msg = str(e.value)
    assert "more than the 66,586 bytes expected; stopped, the download was deleted" in msg
    assert not list(env.glob("*.part")) and not list(env.glob("*.gz"))


def test_announced_size_beyond_the_cap_is_refused_before_reading(env, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "mnist", fake_info(tmp_path, sizes={f: 1000 for f in FILES}))
    Handler.announce = 10**12
    with pytest.raises(datasets.DataError, match="announces 1,000,000,000,000 bytes"):
        datasets.download("mnist", progress=False)
    assert not list(env.glob("*.part"))


def test_disk_full_is_its_own_error_and_never_falls_back_to_the_sample(env, monkeypatch):
    real_open = Path.open

    class Full:
        def __init__(self, f):
            self.f = f
            self.closed = False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True
            self.f.close()

    def fake_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return Full(f) if self.name.endswith(".part") and "b" in mode and "r" not in mode else f

    monkeypatch.setattr(Path, "open", fake_open)
    warnings = []
    with pytest.raises(datasets.CacheWriteError) as e:
        datasets.load_dataset("mnist", progress=False, warn=warnings.append)
    msg = str(e.value)
    assert "no space left on device" in msg and "train-images-idx3-ubyte.gz.part" in msg and "\n" not in msg
    assert not isinstance(e.value, datasets.Offline) and warnings == []  # no silent fall-back to the sample
    assert not list(env.glob("*.part"))


@pytest.mark.parametrize("value,message", [
    ("foo", "'foo' is not an http://, https:// or file:// base URL"),
    ("ftp://example.com/", "is not an http://"),
    ("http://127.0.0.1:port/", "is not a valid URL"),
    (",", "holds no URL"),
])
def test_mirrors_variable_that_is_not_a_url(env, monkeypatch, value, message):
    monkeypatch.setenv("LENET5_MIRRORS", value)
    with pytest.raises(datasets.DataError) as e:
        datasets.load_dataset("mnist", progress=False)
    assert message in str(e.value) and str(e.value).startswith("LENET5_MIRRORS: ") and "\n" not in str(e.value)


def test_recompressed_and_plain_copies_verify_by_their_content(tmp_path):
    info = fake_info(tmp_path)
    recompressed, plain = tmp_path / "recompressed", tmp_path / "plain"
    recompressed.mkdir()
    plain.mkdir()
    for f in FILES:
        content = gzip.decompress((MINI / f).read_bytes())
        (recompressed / f).write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
        (plain / f[:-3]).write_bytes(content)
    assert (recompressed / FILES[0]).read_bytes() != (MINI / FILES[0]).read_bytes()
    assert set(datasets.verify_dir(info, recompressed).values()) == {"ok"}
    assert datasets.verify_dir(info, plain) == {f[:-3]: "ok" for f in FILES}
    (plain / "t10k-labels-idx1-ubyte").write_bytes(content[:-1] + b"\x01")
    assert datasets.verify_dir(info, plain)["t10k-labels-idx1-ubyte"] == "differs"


def test_recompressed_download_verifies_by_its_content(env, tmp_path, monkeypatch):
    """A mirror serving a recompressed copy (different .gz bytes, same content) is accepted."""
    monkeypatch.setitem(datasets.DATASETS, "mnist", fake_info(tmp_path))
    Handler.files = {f: gzip.compress(gzip.decompress((MINI / f).read_bytes()), compresslevel=1, mtime=7)
                     for f in FILES}
    assert Handler.files[FILES[0]] != (MINI / FILES[0]).read_bytes()
    data = datasets.load_dataset("mnist", progress=False)
    assert data.source.startswith("cache:") and len(data.train) == 300
    Handler.files = {f: gzip.compress(gzip.decompress((MINI / f).read_bytes())[:-1] + b"\x09") for f in FILES}
    for f in FILES:
        (env / f).unlink()
    with pytest.raises(datasets.DataError, match="checksum mismatch"):
        datasets.download("mnist", progress=False)


def test_published_checksums_match_real_copies():
    """Debian's recompressed Fashion-MNIST and the project's MNIST copy verify against the
    published MD5s of the uncompressed files (the .gz files themselves differ or match)."""
    from conftest import shared_mnist

    checked = 0
    for name, directory in [("fashion-mnist", Path("/usr/share/datasets/fashion-mnist")), ("mnist", shared_mnist())]:
        for f in FILES:
            if directory is not None and (directory / f).is_file():
                assert datasets.verify_file(datasets.DATASETS[name], directory / f) == "ok", directory / f
                checked += 1
    if not checked:
        pytest.skip("no real copy of MNIST or Fashion-MNIST here")


def test_corrupted_cache_file_is_reported_not_used(env, tmp_path):
    datasets.load_dataset("mnist", progress=False)
    name = "t10k-labels-idx1-ubyte.gz"
    assert (env / (name + ".sha256")).is_file()
    good = (env / name).read_bytes()
    (env / name).write_bytes(good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])  # same size, one byte flipped
    with pytest.raises(datasets.DataError) as e:
        datasets.load_dataset("mnist", progress=False)
    assert name in str(e.value) and "lenet5 data download mnist" in str(e.value) and "\n" not in str(e.value)
    (env / name).write_bytes(good + b"\0")  # a different size: caught before reading
    with pytest.raises(datasets.DataError, match="cached file is corrupt .* bytes, .* when it was verified"):
        datasets.load_dataset("mnist", progress=False)
    datasets.download("mnist", progress=False)  # `lenet5 data download` repairs it
    assert (env / name).read_bytes() == good
    assert datasets.load_dataset("mnist", progress=False).source.startswith("cache:")


def test_cache_without_sidecars_is_verified_once(env, monkeypatch):
    env.mkdir(parents=True)
    for f in FILES:
        (env / f).write_bytes((MINI / f).read_bytes())
    data = datasets.load_dataset("mnist", progress=False)
    assert data.source.startswith("cache:") and all((env / (f + ".sha256")).is_file() for f in FILES)
    monkeypatch.setattr(datasets, "verify_file", lambda *a: pytest.fail("verified again"))
    datasets.load_dataset("mnist", progress=False)  # sidecars now: no full verification


def test_cache_file_failing_its_checksum_is_reported(env):
    env.mkdir(parents=True)
    for f in FILES:
        (env / f).write_bytes((MINI / f).read_bytes())
    (env / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"other content"))
    with pytest.raises(datasets.DataError, match="train-labels-idx1-ubyte.gz: cached file is corrupt"):
        datasets.load_dataset("mnist", progress=False)


# --------------------------------------------------------------------------- data known by its content
def _toy_dataset(monkeypatch, directory: Path) -> None:
    """Register a dataset 'toy' whose published checksums are those of the files in directory,
    computed here with hashlib over the bytes on disk (the code under test hashes arrays)."""
    gz_md5 = {f: hashlib.md5((directory / f).read_bytes()).hexdigest() for f in FILES}
    raw_md5 = {f[:-3]: hashlib.md5(gzip.decompress((directory / f).read_bytes())).hexdigest() for f in FILES}
    monkeypatch.setitem(datasets.DATASETS, "toy", DatasetInfo("toy", "a toy dataset", (), gz_md5, (), "", raw_md5,
                                                              auto_augment="flip"))


def _copy(src: Path, dst: Path, names: dict[str, str] | None = None, plain: bool = False) -> Path:
    """Copy the four files of src into dst, optionally under other names or decompressed."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        body = (src / (names or {}).get(f, f)).read_bytes()
        if plain:
            (dst / f[:-3]).write_bytes(gzip.decompress(body))
        else:
            (dst / f).write_bytes(body)
    return dst


def test_files_are_recognised_by_content_whatever_their_directory_or_compression(tmp_path, monkeypatch):
    _toy_dataset(monkeypatch, MINI)
    # under a directory whose name says "mnist", and recompressed (level 1): the content decides
    recompressed = tmp_path / "mnist"
    recompressed.mkdir()
    for f in FILES:
        (recompressed / f).write_bytes(gzip.compress(gzip.decompress((MINI / f).read_bytes()), compresslevel=1))
    assert (recompressed / FILES[0]).read_bytes() != (MINI / FILES[0]).read_bytes()
    for d in (MINI, recompressed, _copy(MINI, tmp_path / "plain", plain=True)):
        data = datasets.load_dataset(None, d)
        assert data.name == "toy", d
        assert set(data.recognised.values()) == {"toy"} and len(data.recognised) == 4
        assert data.describe()["recognised"] == data.recognised and data.describe()["directory"] == str(d.resolve())


def test_a_test_file_under_a_training_name_is_not_recognised_as_training_data(tmp_path, monkeypatch):
    _toy_dataset(monkeypatch, MINI)
    swapped = _copy(MINI, tmp_path / "swapped", {"train-labels-idx1-ubyte.gz": "t10k-labels-idx1-ubyte.gz",
                                                 "train-images-idx3-ubyte.gz": "t10k-images-idx3-ubyte.gz"})
    warnings = []
    data = datasets.load_dataset(None, swapped, warn=warnings.append)
    assert data.recognised["train-images-idx3-ubyte.gz"] is None and data.recognised["t10k-images-idx3-ubyte.gz"] == "toy"
    assert any("t10k-images-idx3-ubyte" in w and "not what its name says" in w for w in warnings)


def test_unknown_files_are_unrecognised_and_auto_augment_asks_for_a_choice(tmp_path, capsys):
    data = datasets.load_dataset(None, MINI)  # a slice of MNIST matches no published checksum
    assert data.name == datasets.UNRECOGNISED and set(data.recognised.values()) == {None}
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "modern", "--data-dir", str(MINI), "--epochs", "1", "--out", str(out),
                     "--quiet", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--augment auto" in err and str(MINI) in err and "choose --augment" in err
    assert not out.exists()
    assert cli.main(["train", "--preset", "modern", "--data-dir", str(MINI), "--augment", "affine", "--epochs", "1",
                     "--train-limit", "64", "--out", str(out), "--quiet", "--no-plots"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dataset"] == "unrecognised" and config["settings"]["dataset"] == "unrecognised"
    assert config["settings"]["augment"] == "affine"


def test_dataset_contradicting_the_files_is_refused_and_unrecognised_files_take_its_word(tmp_path, monkeypatch,
                                                                                        capsys):
    _toy_dataset(monkeypatch, MINI)
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(MINI), "--out", str(tmp_path / "a"),
                     "--quiet", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "a toy dataset (recognised by their checksums), not --dataset mnist" in err and "--dataset toy" in err
    monkeypatch.delitem(datasets.DATASETS, "toy")
    data = datasets.load_dataset("fashion-mnist", MINI)
    assert data.name == "fashion-mnist" and set(data.describe()["recognised"].values()) == {None}


def test_auto_augment_follows_the_recognised_dataset(tmp_path, monkeypatch):
    _toy_dataset(monkeypatch, MINI)  # 'toy' asks for flip, like Fashion-MNIST
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "modern", "--data-dir", str(MINI), "--epochs", "1", "--train-limit", "64",
                     "--out", str(out), "--quiet", "--no-plots"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["dataset"] == "toy" and config["settings"]["augment"] == "flip"


@pytest.mark.slow
def test_fashion_mnist_given_by_data_dir_is_recorded_as_fashion_mnist_and_flipped(tmp_path):
    """The issue's case: --data-dir of Debian's Fashion-MNIST, --dataset unset."""
    d = fashion_dir()
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "modern", "--data-dir", str(d), "--epochs", "1", "--train-limit", "100",
                     "--out", str(out), "--quiet", "--no-plots"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["dataset"] == "fashion-mnist" and config["data"]["dataset"] == "fashion-mnist"
    assert config["settings"]["augment"] == "flip"
    assert config["data"]["recognised"] == {f: "fashion-mnist" for f in FILES}


def test_renamed_copy_of_mnist_is_still_mnist(tmp_path):
    """Official MNIST test files, decompressed, in a folder named fashion-mnist, beside a training
    subset: the test files are MNIST's, so the dataset is."""
    from conftest import shared_mnist

    src = shared_mnist()
    if src is None:
        pytest.skip("offline MNIST data (../shared/data/mnist) not found")
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (d / f).write_bytes(gzip.decompress((src / f"{f}.gz").read_bytes()))
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (d / f"{f}.gz").write_bytes((MINI / f"{f}.gz").read_bytes())
    data = datasets.load_dataset(None, d)
    assert data.name == "mnist"
    assert data.recognised == {"train-images-idx3-ubyte.gz": None, "train-labels-idx1-ubyte.gz": None,
                               "t10k-images-idx3-ubyte": "mnist", "t10k-labels-idx1-ubyte": "mnist"}


# --------------------------------------------------------------------------- evaluate finds the run's data
def _train_on_copy(tmp_path: Path) -> tuple[Path, Path]:
    data = _copy(MINI, tmp_path / "data")
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data), "--epochs", "1", "--out", str(out), "--quiet", "--no-plots"]) == 0
    return data, out


def test_evaluate_uses_the_runs_recorded_test_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LENET5_MIRRORS", CLOSED)
    data, run = _train_on_copy(tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "run")  # the recorded directory is absolute
    assert cli.main(["evaluate", str(run / "model.safetensors"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 200  # the mini test set, not the 2,000-image bundled sample
    assert f"the run's own test files in {data.resolve()}" in captured.err and len(captured.err.splitlines()) == 1


def test_evaluate_falls_back_clearly_when_the_runs_files_changed(tmp_path, capsys, env):
    """env: 'mnist' is the mini fixture (checksums and local mirror), so the copy is recognised
    as mnist and the fallback is mnist from the usual places (here: downloaded from the mirror)."""
    data, run = _train_on_copy(tmp_path)
    assert json.loads((run / "config.json").read_text())["data"]["dataset"] == "mnist"
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run / "model.safetensors"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "t10k-labels-idx1-ubyte.gz changed since the run" in captured.err
    assert "evaluating on mnist from the usual places" in captured.err
    assert json.loads(captured.out)["data"]["source"] == f"cache:{env}"


def test_evaluate_of_an_unrecognised_run_whose_files_are_gone_asks_for_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LENET5_MIRRORS", CLOSED)
    data, run = _train_on_copy(tmp_path)
    for f in data.iterdir():
        f.unlink()
    data.rmdir()
    capsys.readouterr()
    assert cli.main(["evaluate", str(run / "model.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"{data.resolve()} is gone" in err and "--data-dir" in err and len(err.strip().splitlines()) == 1


def test_data_path_names_every_place_and_the_role_of_lenet5_data(env, capsys):
    assert cli.main(["data", "download", "mnist"]) == 0
    assert cli.main(["data", "path", "kmnist"]) == 0
    out = capsys.readouterr().out
    assert str(env.parent / "kmnist") in out and "/usr/share/datasets/kmnist" in out
    assert "$LENET5_DATA" in out and "parent of one folder per dataset" in out and "not found" in out
    assert cli.main(["data", "path", "mnist", "--json"]) == 0
    w = json.loads(capsys.readouterr().out)
    assert w["found"] == str(env) and w["lenet5_data"] == str(env.parent)
