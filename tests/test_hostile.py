"""Hostile inputs: every reader ends in a loaded file or one line of Lenet5Error, with memory
bounded by the work (measured in a fresh interpreter, never in the pytest process).

The hostile files are generated here and stay small on disk: a 1 GiB gzip bomb is 1 MB, a
"1 GiB" plain file is sparse.
"""

from __future__ import annotations

import builtins
import gzip
import io
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from lenet5 import LeNet5, load_checkpoint, load_dir, read_idx, save_checkpoint
from lenet5.checkpoint import read_notebook_npz, read_safetensors
from lenet5.data import IMAGE_MAGIC, LABEL_MAGIC
from lenet5.errors import CheckpointError, DataError, Lenet5Error
from lenet5.predict import ImageError, load_grey

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT_MB = 300


# --------------------------------------------------------------------------- helpers
def idx_header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def gzip_member(raw_deflate: bytes, crc: int, size: int) -> bytes:
    """A gzip member around an already deflated stream (RFC 1952: header, data, CRC32, ISIZE)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw_deflate + struct.pack("<II", crc, size & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def gib_of_zeros() -> tuple[bytes, int]:
    """(raw deflate stream, CRC32) of 1 GiB of zero bytes, about 1 MB.

    After a full flush, deflate starts afresh, so the compressed form of each MiB is the
    same bytes: compress one MiB and repeat it, instead of compressing a GiB.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(bytes(MiB), crc)
    return block * 1024 + c.flush(zlib.Z_FINISH), crc


def zip_with_member(name: str, raw_deflate: bytes, crc: int, size: int) -> bytes:
    """A zip file holding one deflated member, written by hand (zipfile cannot store
    pre-compressed data): local header, data, central directory, end record."""
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(raw_deflate), size, len(n), 0) + n
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(raw_deflate), size,
                          len(n), 0, 0, 0, 0, 0, 0) + n
    offset = len(local) + len(raw_deflate)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), offset, 0)
    return local + raw_deflate + central + end


def run_measured(code: str) -> tuple[str, float]:
    """Run code in a fresh Python; (its stdout, its peak resident memory in MB).

    The peak is the kernel's VmHWM of the child's own address space. Not ru_maxrss: Linux
    carries the parent's peak into a child started with vfork + exec (as subprocess does), so
    the child would report the pytest process's memory.
    """
    script = textwrap.dedent(code) + textwrap.dedent("""
        import resource
        try:
            with open("/proc/self/status") as f:
                peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):  # not Linux: ru_maxrss (bytes on macOS)
            import sys
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_kb //= 1024 if sys.platform == "darwin" else 1
        print("PEAK_KB", peak_kb)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    peak_mb = int(lines[-1].split()[1]) / 1024
    print(f"peak RSS {peak_mb:.0f} MB: {' | '.join(lines[:-1])[:200]}")
    return "\n".join(lines[:-1]), peak_mb


def reader_in_child(call: str) -> tuple[str, float]:
    """Run one reader call in a fresh Python: ('LOADED' or 'ERROR <message>', peak MB)."""
    return run_measured(f"""
        from lenet5.errors import Lenet5Error
        from lenet5.data import read_idx
        from lenet5.checkpoint import load_checkpoint, read_notebook_npz, read_safetensors
        try:
            {call}
            print("LOADED")
        except Lenet5Error as e:
            print("ERROR", e)
    """)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


# --------------------------------------------------------------------------- IDX: memory bounded
@pytest.mark.parametrize("layout", ["one-member", "second-member"])
def test_gzip_bomb_behind_a_valid_idx_header_is_rejected_in_bounded_memory(tmp_path, gib_of_zeros, layout):
    """1 MB of .gz expanding to 1 GiB, behind a header promising 200 images (157 kB)."""
    bomb, crc = gib_of_zeros
    header = idx_header(IMAGE_MAGIC, 200, 28, 28)
    images = bytes(range(256)) * (200 * 784 // 256) + bytes(200 * 784 % 256)
    if layout == "one-member":  # header, then the compressed zeros, as one stream
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, not final: the bomb follows
        crc = zlib.crc32(header)
        for _ in range(1024):
            crc = zlib.crc32(bytes(MiB), crc)
        body = gzip_member(head + bomb, crc, len(header) + GiB)
    else:  # a complete, valid member with header + 200 images, then a second member: the bomb
        body = gzip.compress(header + images) + gzip_member(bomb, crc, GiB)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(body)
    assert path.stat().st_size < 2 * MiB
    out, peak = reader_in_child(f"read_idx({str(path)!r}, {IMAGE_MAGIC})")
    assert out.startswith("ERROR") and "payload is too long" in out and str(path) in out
    assert peak < RSS_LIMIT_MB


def test_plain_idx_file_larger_than_its_header_is_rejected_before_reading(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with path.open("wb") as f:
        f.write(idx_header(IMAGE_MAGIC, 200, 28, 28))
        f.truncate(GiB)  # sparse: 1 GiB long, nothing on disk
    out, peak = reader_in_child(f"read_idx({str(path)!r}, {IMAGE_MAGIC})")
    assert out.startswith("ERROR") and "payload is too long: 1073741808 bytes" in out
    assert peak < RSS_LIMIT_MB


@pytest.mark.parametrize("content,message", [
    (idx_header(IMAGE_MAGIC, 2**32 - 1, 2**32 - 1, 2**32 - 1), "absurd dimensions 4294967295x4294967295x4294967295"),
    (idx_header(IMAGE_MAGIC, 2**31, 28, 28) + bytes(100), "absurd dimensions"),
    (idx_header(LABEL_MAGIC, 2**31 - 1) + bytes(10), ("payload is short", "bytes of gzip data can hold")),
])
def test_absurd_or_overflowing_idx_dimensions(tmp_path, content, message):
    plain_message, gz_message = (message, message) if isinstance(message, str) else message
    for name, data, expected in [("f", content, plain_message), ("f.gz", gzip.compress(content), gz_message)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as e:
            read_idx(tmp_path / name, int.from_bytes(content[:4], "big"))
        assert expected in one_line(e) and name in str(e.value)


def test_gzip_promising_more_than_it_can_hold_is_refused_at_once(tmp_path):
    """1 GiB promised by a 40-byte .gz: deflate cannot expand that much, so nothing is read."""
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx_header(IMAGE_MAGIC, 1_000_000, 28, 28)))
    with pytest.raises(DataError) as e:
        read_idx(tmp_path / "f.gz", IMAGE_MAGIC)
    assert "bytes of gzip data can hold" in one_line(e)


# --------------------------------------------------------------------------- npz: memory bounded
def npy_bytes(descr: str, shape: tuple, payload: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def npz_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_npz_member_declaring_8_tib_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "nb.npz"
    path.write_bytes(npz_with({"c1_kernel.npy": npy_bytes("<f8", (2**40,), bytes(64))}))
    out, peak = reader_in_child(f"read_notebook_npz({str(path)!r})")
    assert "declares shape (1099511627776,) (8,796,093,022,208 bytes) but holds 64 bytes" in out
    assert peak < RSS_LIMIT_MB


def test_npz_zip_bomb_member_is_refused_by_its_declared_size(tmp_path, gib_of_zeros):
    bomb, crc = gib_of_zeros
    path = tmp_path / "nb.npz"
    path.write_bytes(zip_with_member("c1_kernel.npy", bomb, crc, GiB))
    assert path.stat().st_size < 2 * MiB
    out, peak = reader_in_child(f"read_notebook_npz({str(path)!r})")
    assert "declares 1,073,741,824 bytes uncompressed" in out and str(path) in out
    assert peak < RSS_LIMIT_MB


def test_npz_zip_bomb_with_a_lying_directory_is_cut_off(tmp_path, gib_of_zeros):
    """The directory claims 1 kB, the data inflates to 1 GiB: reading stops at the claim."""
    bomb, crc = gib_of_zeros
    path = tmp_path / "nb.npz"
    path.write_bytes(zip_with_member("c1_kernel.npy", bomb, crc, 1024))
    out, peak = reader_in_child(f"read_notebook_npz({str(path)!r})")
    assert out.startswith("ERROR") and str(path) in out
    assert peak < RSS_LIMIT_MB


@pytest.mark.parametrize("members,message", [
    ({"c1_kernel": npy_bytes("<f4", (6, 1, 5, 5), bytes(600))}, "member 'c1_kernel' is not a .npy array"),
    ({"c1_kernel.npy": npy_bytes("|O", (1,), bytes(8))}, "holds object data, not numbers"),
    ({"c1_kernel.npy": b"\x93NUMPY\x03\x00" + bytes(20)}, "unsupported .npy version (3, 0)"),
    ({"c1_kernel.npy": b"not an npy file"}, "not a readable .npz file"),
])
def test_npz_members_that_are_not_plain_arrays(tmp_path, members, message):
    (tmp_path / "nb.npz").write_bytes(npz_with(members))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nb.npz")
    assert message in one_line(e) and "nb.npz" in str(e.value)


# --------------------------------------------------------------------------- pictures: memory bounded
DRAW_SEVEN = {
    "rgb": """
        from PIL import Image, ImageDraw
        im = Image.new("RGB", (6300, 6300), (250, 248, 240))
        ImageDraw.Draw(im).line([(1800, 1500), (4500, 1500), (2700, 5000)], fill=(20, 20, 30), width=420)
    """,
    "16-bit": """
        from PIL import Image, ImageDraw
        im = Image.new("I", (6300, 6300), 50000)
        ImageDraw.Draw(im).line([(1800, 1500), (4500, 1500), (2700, 5000)], fill=3000, width=420)
        im = im.convert("I;16")
    """,
}


@pytest.mark.parametrize("kind", DRAW_SEVEN)
def test_huge_png_is_predicted_in_bounded_memory(tmp_path, kind):
    """A 6300×6300 PNG (40 megapixels; 160 MB decoded as RGB): shrunk before any float copy."""
    path = tmp_path / "seven.png"
    run_measured(textwrap.dedent(DRAW_SEVEN[kind]) + f"im.save({str(path)!r}, compress_level=1)")
    out, peak = run_measured(f"""
        from lenet5 import LeNet5
        from lenet5.predict import prepare_files
        x = prepare_files([{str(path)!r}])
        print("SHAPE", x.shape, "INK", int(x.max()), "CLASS", int(LeNet5(seed=0).predict(x).argmax()))
    """)
    assert "SHAPE (1, 28, 28) INK 255" in out
    assert peak < RSS_LIMIT_MB


# --------------------------------------------------------------------------- not regular files
def make_directory(p: Path) -> None:
    p.mkdir()


def make_fifo(p: Path) -> None:
    os.mkfifo(p)


def make_loop(p: Path) -> None:
    os.symlink(p.name, p)


def make_dangling(p: Path) -> None:
    os.symlink(p.name + "-nowhere", p)


KINDS = [(make_directory, "is a directory"), (make_fifo, "is not a regular file (a FIFO)"),
         (make_loop, "symlink loop"), (make_dangling, "broken symlink")]


@pytest.mark.parametrize("make,message", KINDS)
def test_checkpoint_that_is_not_a_regular_file_is_named_as_such(tmp_path, make, message):
    for name in ("model.safetensors", "nb.npz"):
        make(tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / name)
        assert message in one_line(e) and name in str(e.value) and "no such" not in str(e.value)


@pytest.mark.parametrize("make,message", KINDS)
def test_data_file_that_is_not_a_regular_file_is_named_as_such(tmp_path, make, message):
    from test_data import make_dir

    d = make_dir(tmp_path)
    (d / "t10k-labels-idx1-ubyte").unlink()
    make(d / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError) as e:
        load_dir(d)
    assert message in one_line(e) and "t10k-labels-idx1-ubyte" in str(e.value) and "missing" not in str(e.value)


@pytest.mark.parametrize("make,message", KINDS)
def test_picture_that_is_not_a_regular_file_is_named_as_such(tmp_path, make, message):
    make(tmp_path / "seven.png")
    with pytest.raises(ImageError) as e:
        load_grey(tmp_path / "seven.png")
    assert message in one_line(e) and "seven.png" in str(e.value)


@pytest.mark.parametrize("make,message", KINDS[1:])
def test_data_directory_that_is_not_a_directory(tmp_path, make, message):
    make(tmp_path / "data")
    with pytest.raises(DataError) as e:
        load_dir(tmp_path / "data")
    assert ("not a directory" in str(e.value) or message in str(e.value)) and "data" in one_line(e)


@pytest.fixture
def deny_open(monkeypatch):
    """Simulate an unreadable file (tests run as root, where chmod 000 does not stop reading)."""
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file).endswith(("-denied", "denied.safetensors", "denied.npz", "denied.png")):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_unreadable_files_are_reported_as_unreadable(tmp_path, deny_open):
    save_checkpoint(tmp_path / "denied.safetensors", LeNet5(seed=0))
    (tmp_path / "denied.npz").write_bytes(b"x")
    (tmp_path / "idx-denied").write_bytes(idx_header(LABEL_MAGIC, 1) + b"\0")
    (tmp_path / "denied.png").write_bytes(b"x")
    cases = [(lambda: load_checkpoint(tmp_path / "denied.safetensors"), CheckpointError),
             (lambda: load_checkpoint(tmp_path / "denied.npz"), CheckpointError),
             (lambda: read_idx(tmp_path / "idx-denied", LABEL_MAGIC), DataError),
             (lambda: load_grey(tmp_path / "denied.png"), ImageError)]
    for call, error in cases:
        with pytest.raises(error) as e:
            call()
        assert "unreadable (Permission denied)" in one_line(e) and "denied" in str(e.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_file_is_unreadable(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, LeNet5(seed=0))
    path.chmod(0)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- property-based
def valid_files() -> dict[str, bytes]:
    """One small valid file of each kind the readers take: the seeds that are mutated."""
    from safetensors.numpy import save
    from test_checkpoint import notebook_arrays

    rng = np.random.default_rng(0)
    images = idx_header(IMAGE_MAGIC, 3, 28, 28) + rng.integers(0, 256, 3 * 784, dtype=np.uint8).tobytes()
    labels = idx_header(LABEL_MAGIC, 3) + bytes([1, 7, 9])
    model = LeNet5(seed=0)
    small = save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.int64)},
                 metadata={"preset": "seed-tanh", "settings": '{"criterion": null}'})
    full = save({k: np.ascontiguousarray(v) for k, v in model.state_dict().items()},
                metadata={"format": "lenet5", "preset": "seed-tanh", "settings": '{"lr": 0.1}'})
    npz, npz_compressed = io.BytesIO(), io.BytesIO()
    np.savez(npz, **notebook_arrays(model, False))
    np.savez_compressed(npz_compressed, **notebook_arrays(model, True))
    return {"images": images, "images.gz": gzip.compress(images), "labels": labels,
            "labels.gz": gzip.compress(labels), "small.safetensors": small, "model.safetensors": full,
            "nb.npz": npz.getvalue(), "nbz.npz": npz_compressed.getvalue()}


def mutate(data: bytes, ops: list[tuple[str, int, bytes]], near_ends: bool) -> bytes:
    """Apply bit flips, inserts, deletions, overwrites and truncations. Positions are taken
    modulo the length, or, with ``near_ends``, within 600 bytes of either end (where headers,
    zip directories and gzip trailers live)."""
    buf = bytearray(data)
    for op, pos, chunk in ops:
        n = max(len(buf), 1)
        if near_ends:
            pos = pos % 600 if pos % 2 else max(0, n - 1 - pos % 600)
        pos %= n
        if op == "flip" and buf:
            buf[pos] ^= 1 << (chunk[0] % 8)
        elif op == "insert":
            buf[pos:pos] = chunk
        elif op == "delete":
            del buf[pos:pos + len(chunk)]
        elif op == "overwrite":
            buf[pos:pos + len(chunk)] = chunk
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def outcome(call) -> str:
    """'loaded' or 'error' (a one-line Lenet5Error); any other exception fails the test."""
    try:
        call()
        return "loaded"
    except Lenet5Error as e:
        assert "\n" not in str(e), str(e)
        return "error"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    @pytest.mark.skip(reason="needs hypothesis (pip install hypothesis)")
    def test_property_readers():
        pass
else:
    VALID = valid_files()
    OPS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "overwrite", "truncate"]),
                             st.integers(0, 2**24), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)
    PROPERTY = settings(max_examples=100, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

    def hostile(kinds: list[str], seeds: dict[str, bytes] = VALID):
        """Random bytes, or a valid file of one of ``kinds`` mutated."""
        mutated = st.builds(lambda k, ops, ends: mutate(seeds[k], ops, ends), st.sampled_from(kinds), OPS,
                            st.booleans())
        return st.one_of(st.binary(max_size=600), mutated)

    @PROPERTY
    @given(data=hostile(["images", "images.gz", "labels", "labels.gz"]), gz=st.booleans())
    def test_property_idx_reader(scratch, data, gz):
        path = scratch / ("idx.gz" if gz else "idx")
        path.write_bytes(data)
        for magic in (IMAGE_MAGIC, LABEL_MAGIC):
            outcome(lambda: read_idx(path, magic))

    @PROPERTY
    @given(data=hostile(["small.safetensors", "model.safetensors"]))
    def test_property_safetensors_readers(scratch, data):
        path = scratch / "m.safetensors"
        path.write_bytes(data)
        outcome(lambda: read_safetensors(path))
        outcome(lambda: load_checkpoint(path))

    @PROPERTY
    @given(data=hostile(["nb.npz", "nbz.npz"]))
    def test_property_npz_readers(scratch, data):
        path = scratch / "nb.npz"
        path.write_bytes(data)
        outcome(lambda: read_notebook_npz(path))
        outcome(lambda: load_checkpoint(path))

    @PROPERTY
    @given(header=st.builds(mutate, st.just(npy_bytes("<f4", (6, 1, 5, 5), bytes(600))[:128]), OPS, st.just(True)),
           compressed=st.booleans())
    def test_property_npy_headers_inside_a_valid_zip(scratch, header, compressed):
        """Mutated .npy headers in an intact zip (the CRC cannot catch them)."""
        path = scratch / "h.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
            zf.writestr("c1_kernel.npy", header + bytes(600))
        outcome(lambda: read_notebook_npz(path))

    def picture_seeds() -> dict[str, bytes]:
        from PIL import Image

        grey = (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)
        pictures = [("PNG", Image.fromarray(grey)), ("JPEG", Image.fromarray(grey)), ("GIF", Image.fromarray(grey)),
                    ("BMP", Image.fromarray(grey)), ("PNG", Image.fromarray(grey).convert("RGBA")),
                    ("PNG", Image.fromarray(grey.astype(np.uint16) * 200)),
                    ("TIFF", Image.fromarray(grey.astype(np.float32)))]
        seeds = {}
        for i, (fmt, im) in enumerate(pictures):
            buf = io.BytesIO()
            im.save(buf, fmt)
            seeds[f"{i}.{fmt.lower()}"] = buf.getvalue()
        return seeds

    PICTURES = picture_seeds()

    @PROPERTY
    @given(data=hostile(sorted(PICTURES), PICTURES))
    def test_property_pictures(data):
        """Uploads of random or damaged pictures: a grey image or an ImageError, then a digit or one."""
        from lenet5.predict import to_mnist

        if outcome(lambda: load_grey(data, name="upload")) == "loaded":
            outcome(lambda: to_mnist(load_grey(data, name="upload"), "upload"))

    def test_property_seeds_are_valid(scratch):
        """The unmutated seeds load: the property tests start from files the readers accept."""
        for kind, data in VALID.items():
            (scratch / kind).write_bytes(data)
        assert read_idx(scratch / "images.gz", IMAGE_MAGIC).shape == (3, 28, 28)
        assert read_idx(scratch / "labels", LABEL_MAGIC).tolist() == [1, 7, 9]
        assert set(read_safetensors(scratch / "small.safetensors")[0]) == {"a", "b"}
        assert load_checkpoint(scratch / "model.safetensors")[0].preset.name == "seed-tanh"
        assert len(read_notebook_npz(scratch / "nb.npz")) == 10 == len(read_notebook_npz(scratch / "nbz.npz"))
        assert all(load_grey(data).shape == (20, 24) for data in PICTURES.values())


# --------------------------------------------------------------------------- issue 28: metadata, outputs, sizes, server
def cli_in_child(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenet5.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_short_line(r: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and one stderr line of readable length, no traceback, no warning beside it."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert len(lines[0]) <= 500 and "Warning" not in r.stderr and "unexpected" not in r.stderr, lines[0][:600]
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def rewritten(src: Path, dst: Path, meta_change=None, tensor_change=None) -> Path:
    """A copy of the checkpoint src with its metadata and/or tensors changed."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(src), "np") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    if meta_change:
        meta = meta_change(meta, json)
    if tensor_change:
        tensors = {k: tensor_change(v) for k, v in tensors.items()}
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def modern_ckpt(scratch) -> Path:
    path = scratch / "modern.safetensors"
    save_checkpoint(path, LeNet5("modern", seed=0), {"settings": {"preset": "modern"}})
    return path


@pytest.fixture(scope="module")
def digit_png(scratch) -> Path:
    from PIL import Image

    img = np.zeros((28, 28), np.uint8)
    img[6:9, 6:22] = 255
    img[8:24, 17:20] = 255
    Image.fromarray(img).save(scratch / "seven.png")
    return scratch / "seven.png"


def with_widths(widths):
    """Declare other widths where a checkpoint records its network (its model spec), and in its
    settings, where checkpoints of earlier versions recorded them."""
    def change(meta, json):
        settings = json.loads(meta.get("settings", "{}"))
        model = json.loads(meta.get("model", '{"preset": "modern"}'))
        return {**meta, "settings": json.dumps({**settings, "widths": list(widths)}),
                "model": json.dumps({**model, "widths": list(widths)})}
    return change


def test_metadata_widths_are_checked_against_the_tensors_before_allocation(modern_ckpt, scratch):
    wide = rewritten(modern_ckpt, scratch / "wide.safetensors", with_widths((1024, 1024, 1024)))
    assert wide.stat().st_size < 300_000
    out, peak = reader_in_child(f"load_checkpoint({str(wide)!r})")
    assert out.startswith("ERROR") and "declares widths [1024, 1024, 1024]" in out and "c1.weight" in out, out
    assert peak < 150, peak  # 642 MB before the check


if "given" in globals():
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(widths=st.tuples(st.integers(1, 1024), st.integers(1, 1024), st.integers(1, 1024)))
    def test_property_declared_widths_load_only_when_they_are_the_tensors_own(modern_ckpt, tmp_path, widths):
        """Whatever widths the metadata declares, a 6,16,120 checkpoint loads only under its own widths,
        and refusing any other costs no allocation of the declared size (traced by tracemalloc)."""
        import tracemalloc

        path = rewritten(modern_ckpt, tmp_path / "w.safetensors", with_widths(widths))
        tracemalloc.start()
        try:
            result = outcome(lambda: load_checkpoint(path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result == ("loaded" if widths == (6, 16, 120) else "error")
        assert peak < 20 * MiB, peak


@pytest.mark.parametrize("value,dtype", [(3e38, np.float32), (-3e38, np.float32), (1e300, np.float64)])
def test_huge_weights_are_refused_in_one_line_without_warnings(tmp_path, digit_png, value, dtype):
    ckpt = LeNet5("seed-tanh", seed=0)
    src = tmp_path / "ok.safetensors"
    save_checkpoint(src, ckpt, {})
    huge = rewritten(src, tmp_path / "huge.safetensors",
                     tensor_change=lambda v: np.full_like(v, value, dtype=dtype) if v.dtype.kind == "f" else v)
    line = assert_one_short_line(cli_in_child("predict", huge, digit_png), "huge.safetensors")
    assert "not finite" in line or "NaN or infinite" in line, line


def test_non_finite_outputs_are_an_error_naming_the_model(tmp_path):
    """Weights 3e38 are finite (so they load) but overflow inside the network: refused, never nan%."""
    from lenet5.predict import NotFiniteError, network_outputs

    model = LeNet5("seed-tanh", seed=0)
    with np.errstate(over="ignore"):
        model.load_state_dict({k: np.full_like(v, 3e38) for k, v in model.state_dict().items()})
    images = np.full((2, 28, 28), 200, np.uint8)
    with pytest.raises(NotFiniteError, match="^my.safetensors: .*not finite"):
        network_outputs(model, images, "my.safetensors")
    logits, probs = network_outputs(LeNet5("seed-tanh", seed=0), images, "ok")  # finite weights: finite outputs
    assert np.isfinite(logits).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("option,value,fragment", [("--infer-images", "1000000000000", "at most 1,000,000"),
                                                   ("--batch-sizes", "1000000000", "at most 16,384"),
                                                   ("--batch-sizes", "64,99999999999999999999", "at most 16,384"),
                                                   ("--batch-sizes", "64,x" + "9" * 100_000, "positive integers")],
                         ids=["infer-images", "batch-size", "batch-size-20-digits", "batch-size-100k-chars"])
def test_bench_size_options_have_ceilings_naming_the_memory(option, value, fragment):
    line = assert_one_short_line(cli_in_child("bench", option, value), option, fragment)
    assert "B" in line or "positive" in line  # the memory it would need, in bytes


def test_a_huge_header_value_is_echoed_short(tmp_path, digit_png):
    import json

    header = json.dumps({"w" * 300_000: {"dtype": "F" * 2_000_000, "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    assert len(assert_one_short_line(cli_in_child("predict", path, digit_png), "h.safetensors")) < 400


if "given" in globals():
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(field=st.sampled_from(["dtype", "shape", "data_offsets", "name", "__metadata__"]),
           text=st.text(min_size=300, max_size=3000))
    def test_property_header_values_of_any_length_give_short_messages(tmp_path, field, text):
        import json

        entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        name = text if field == "name" else "w"
        header = {name: {**entry, field: text} if field not in ("name", "__metadata__") else entry}
        if field == "__metadata__":
            header["__metadata__"] = {"preset": text}
        raw = json.dumps(header).encode()
        path = tmp_path / "h.safetensors"
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4))
        try:
            load_checkpoint(path)
        except Lenet5Error as e:
            assert len(str(e)) < 400 and "\n" not in str(e), str(e)[:500]


# --------------------------------------------------------------------------- the web server
web = pytest.importorskip("starlette") and __import__("lenet5.web.app", fromlist=["create_app"])


@pytest.fixture
def web_app(modern_ckpt, tmp_path):
    return web.create_app([modern_ckpt], runs_dir=tmp_path / "runs", list_pretrained=False)


def test_deeply_nested_json_is_a_400(web_app, caplog):
    from starlette.testclient import TestClient

    with TestClient(web_app, raise_server_exceptions=False) as c:
        for body in (b"[" * 16_000, b'{"a":' * 2000 + b"1" + b"}" * 2000):
            r = c.post("/api/train/stop", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and "JSON" in r.json()["error"], r.text
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_non_finite_outputs_are_a_422_with_a_message(modern_ckpt, tmp_path, caplog):
    from starlette.testclient import TestClient

    huge = rewritten(modern_ckpt, tmp_path / "huge.safetensors",
                     tensor_change=lambda v: np.full_like(v, 3e38) if v.dtype.kind == "f" else v)
    app = web.create_app([huge], runs_dir=tmp_path / "runs", list_pretrained=False)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 255
    with TestClient(app, raise_server_exceptions=False) as c:
        model_id = c.get("/api/models").json()["models"][0]["id"]
        r = c.post(f"/api/predict?model={model_id}&w=28&h=28", content=pixels.tobytes(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 422 and "not finite" in r.json()["error"], r.text
    assert "NaN" not in r.text and "Traceback" not in caplog.text


def test_a_client_that_leaves_mid_upload_is_one_log_line(web_app, caplog):
    """Drive the ASGI app directly: the body's first chunk, then the client is gone."""
    import asyncio
    import logging

    messages = [{"type": "http.request", "body": b"\x89PNG" + bytes(1000), "more_body": True},
                {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"),
                                          (b"content-length", b"100000")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}
    with caplog.at_level(logging.INFO, logger="lenet5.web"):
        asyncio.run(web_app(scope, receive, send))
    records = [r for r in caplog.records if r.name == "lenet5.web"]
    assert len(records) == 1 and "disconnected" in records[0].getMessage(), caplog.text
    assert "Traceback" not in caplog.text and records[0].exc_info is None


def test_serve_runs_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_short_line(cli_in_child("serve", "--runs-dir", tmp_path / "file", "--port", "0", "--no-browser",
                                       timeout=60), "not a directory")


def test_the_server_cuts_off_endless_request_headers_in_bounded_memory(modern_ckpt, tmp_path):
    """Eight clients sending header lines without end: each is cut off by the head-size limit."""
    import socket
    import time

    log = open(tmp_path / "server.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "lenet5.cli", "serve", str(modern_ckpt), "--port", "0",
                               "--no-browser", "--runs-dir", str(tmp_path / "runs")], stderr=log,
                              stdout=subprocess.DEVNULL)
    try:
        deadline, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < deadline:
            log.seek(0)
            text = log.read()
            if "serving http://127.0.0.1:" in text:
                port = int(text.split("serving http://127.0.0.1:")[1].split("/")[0])
            time.sleep(0.1)
        assert port, text
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        line = b"X-Filler: " + b"a" * 4000 + b"\r\n"
        cut = set()
        for c in conns:
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(2000):  # 8 MB a client, if nothing cut it off
            for i, c in enumerate(conns):
                if i not in cut:
                    try:
                        c.sendall(line)
                    except OSError:
                        cut.add(i)
            if len(cut) == len(conns):
                break
        assert cut == set(range(8))
        with open(f"/proc/{server.pid}/status") as f:
            peak_mb = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
        assert peak_mb < RSS_LIMIT_MB, peak_mb
        for c in conns:
            c.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.seek(0)
        assert "Traceback" not in log.read()


def test_serve_start_up_skips_a_run_whose_config_is_a_fifo(modern_ckpt, tmp_path):
    """--runs-dir is listed at start-up: a FIFO config.json there must not block it."""
    import threading

    bad = tmp_path / "runs" / "bad-run"
    bad.mkdir(parents=True)
    os.mkfifo(bad / "config.json")
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("app", web.create_app(
        [modern_ckpt], runs_dir=tmp_path / "runs", list_pretrained=False)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert "app" in result, "create_app blocked on the FIFO"
    assert result["app"].state.training.runs == {}
