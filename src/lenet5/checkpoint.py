"""Checkpoints: safetensors files with PyTorch-compatible keys, written atomically.

``model.safetensors`` holds the state dict (``c1.weight`` ... ``output.bias``) and, in its
string metadata, the preset, dtype and training settings. A checkpoint saved here loads
with ``safetensors.torch.load_file`` into the PyTorch replica, and vice versa. No pickle is
ever involved: safetensors is a JSON header plus raw arrays, and .npz files are read member by
member as plain .npy arrays (``allow_pickle=False`` semantics: object arrays are refused).

Reading trusts nothing: every declared size (safetensors header, zip directory, .npy header)
is checked against the file before memory is allocated, the metadata's JSON types are
checked, weights stored as integers, booleans or complex numbers are refused rather than
cast, and every problem is one ``CheckpointError`` line naming the file.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import stat
import struct
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
from numpy.lib import format as npformat
from safetensors.numpy import save_file

from .data import file_kind, open_file, read_into, read_up_to
from .errors import CheckpointError, Lenet5Error, clip, clip_repr, os_error
from .model import DEFAULT_PRESET, PRESETS, LeNet5
from .presets import ModelSpec

FORMAT = "lenet5"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the longest file name most file systems allow, in bytes
NAME_MAX = 255


def check_replaceable(path: str | Path) -> Path:
    """path, if writing it replaces nothing but a regular file: a directory, device node, FIFO,
    socket or symlink of that name is refused (replacing a symlink would not write where it
    points; following it could write anywhere), as is a name longer than ``NAME_MAX`` bytes."""
    path = Path(path)
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise Lenet5Error(f"{clip(path)}: file name is {len(os.fsencode(path.name))} bytes long, "
                          f"more than the {NAME_MAX} a file system allows")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = path.parent
        if not parent.is_dir():
            raise Lenet5Error(f"{clip(path)}: cannot write, "
                              + ("its directory does not exist" if not os.path.lexists(parent)
                                 else f"{clip(parent.name, 60)} is not a directory")) from None
        return path
    except OSError as e:
        raise os_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise Lenet5Error(f"{clip(path)}: is {file_kind(st.st_mode)}; refusing to replace it with a file")
    return path


def atomic_write(path: str | Path, write: Any) -> None:
    """Call write(tmp_path), then rename tmp over path: readers see the old file or the new one.

    Only a regular file (or nothing) is ever replaced (``check_replaceable``); every failure is
    one ``Lenet5Error`` line naming the path. The file gets the permissions an ordinary new file
    would (0666 less the umask), not the private 0600 that mkstemp (and safetensors' own writer) use."""
    path = check_replaceable(path)
    # the temporary name stays within NAME_MAX however long the final one is
    prefix = "." + os.fsdecode(os.fsencode(path.name)[:NAME_MAX - 20]) + "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise os_error(path.parent, e) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        check_replaceable(path)  # once more: it may have changed while writing
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write named arrays and metadata (non-strings JSON-encoded) to a safetensors file, atomically."""
    meta = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    # np.array (not ascontiguousarray, which turns 0-d counters into shape (1,)) keeps shapes
    arrays = {name: np.array(arr, order="C") for name, arr in tensors.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=meta))


def save_checkpoint(path: str | Path, model: Any, metadata: dict[str, Any] | None = None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write the model's weights (plus optional extra arrays) to path, with its model spec
    (``model``: preset, widths, dropout, dtype — what any engine rebuilds the network from),
    the preset and dtype (for readers of earlier versions), and ``metadata``."""
    spec = model.spec
    meta = {"format": FORMAT, "preset": spec.preset, "dtype": spec.dtype, **(metadata or {}), "model": spec.to_json()}
    save_tensors(path, {**model.state_dict(), **(extra or {})}, meta)


# --------------------------------------------------------------------------- safetensors
#: safetensors' own limit on the JSON header
MAX_HEADER = 100 << 20
#: safetensors dtype -> numpy dtype (little-endian). BF16 is widened to float32 on reading.
ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
             "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
             "C64": "<c8"}


@dataclass(frozen=True)
class _Entry:
    dtype: str  # safetensors name
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {clip_repr(next(k for k in keys if keys.count(k) > 1))}")
    return dict(pairs)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_entry(name: str, value: Any, data_len: int) -> _Entry:
    """One tensor's header entry, checked against the data section; ValueError if wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"entry {clip_repr(name)} is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in ST_DTYPES:
        raise ValueError(f"{clip(name, 60)}: unsupported dtype {clip_repr(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ValueError(f"{clip(name, 60)}: shape {clip_repr(shape)} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_len):
        raise ValueError(f"{clip(name, 60)}: data_offsets {clip_repr(offsets)} lie outside the "
                         f"{data_len}-byte data section")
    nbytes = math.prod(shape) * np.dtype(ST_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(f"{clip(name, 60)}: shape {shape} of {dtype} needs {nbytes:,} bytes, "
                         f"data_offsets give {offsets[1] - offsets[0]:,}")
    return _Entry(dtype, tuple(shape), offsets[0], offsets[1])


def _parse_header(raw: BinaryIO, size: int) -> tuple[dict[str, _Entry], dict[str, str], int]:
    """(entries, metadata, start of the data section) of a safetensors file; ValueError if invalid.

    Checked like the reference implementation: the header is a JSON object within the file,
    every tensor's bytes lie in the data section, and the tensors tile it exactly.
    """
    if size < 8:
        raise ValueError(f"{size} bytes, too short for a safetensors header")
    n = int.from_bytes(read_up_to(raw, 8), "little")
    if n > min(MAX_HEADER, size - 8):
        raise ValueError(f"header length {n:,} exceeds the file ({size:,} bytes)")
    text = read_up_to(raw, n)
    if len(text) != n:
        raise ValueError("file shrank while reading")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_json_object)
    except RecursionError:
        raise ValueError("header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("__metadata__ is not an object of strings")
    data_len = size - 8 - n
    entries = {name: _parse_entry(name, value, data_len) for name, value in header.items()}
    end = 0
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin != end:
            raise ValueError(f"tensor data overlaps or leaves a gap at byte {end}")
        end = e.end
    if end != data_len:
        raise ValueError(f"{data_len - end} bytes after the last tensor")
    return entries, meta, 8 + n


def _read_tensor(raw: BinaryIO, start: int, e: _Entry) -> np.ndarray:
    raw.seek(start + e.begin)
    out = np.empty(e.end - e.begin, dtype=np.uint8)
    if read_into(raw, out) != len(out):
        raise ValueError("file shrank while reading")
    arr = out.view(ST_DTYPES[e.dtype]).reshape(e.shape)
    if e.dtype == "BF16":  # the top half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


class _Safetensors:
    """An open safetensors file: its header, checked on opening, and tensors read on demand
    (so a checkpoint's unknown tensors are refused before any of them is read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw, size = open_file(path, CheckpointError, "checkpoint file")
        with self._errors():
            try:
                self.entries, self.meta, self.start = _parse_header(self.raw, size)
            except BaseException:
                self.raw.close()
                raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (ValueError, OSError, EOFError) as e:
            reason = clip(str(e).splitlines()[0]) if str(e) else type(e).__name__
            raise CheckpointError(f"{clip(self.path)}: not a readable safetensors checkpoint ({reason})") from None

    def read(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        with self._errors():
            return {k: _read_tensor(self.raw, self.start, self.entries[k]) for k in names}

    def __enter__(self) -> "_Safetensors":
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, validated, with one-line errors.

    A strict pure-Python reader (the format is a JSON header plus raw little-endian arrays):
    sizes are checked against the file before anything is allocated.
    """
    with _Safetensors(Path(path)) as st:
        return st.read(st.entries), st.meta


# --------------------------------------------------------------------------- notebook .npz
#: a member of a notebook .npz larger than this is refused (the whole notebook model is 0.5 MB)
MAX_NPZ_MEMBER = 64 << 20
MAX_NPZ_MEMBERS = 256
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, TypeError,
               NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError, struct.error, KeyError, OverflowError)

# Keys of the popular from-scratch notebook's .npz layout -> our names.
NOTEBOOK_KEYS = {"c1_kernel": "c1.weight", "c1_bias": "c1.bias", "c3_kernel": "c3.weight",
                 "c3_bias": "c3.bias", "c5_kernel": "c5.weight", "c5_bias": "c5.bias",
                 "f6_weights": "f6.weight", "f6_bias": "f6.bias",
                 "out_weights": "output.weight", "out_bias": "output.bias"}


def _read_npy(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member: header checked against the member's declared size before reading data."""
    name = info.filename
    with zf.open(info) as fp:
        version = npformat.read_magic(fp)
        readers = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
        if version not in readers:
            raise CheckpointError(f"{path}: member {clip_repr(name)}: unsupported .npy version {version}")
        try:  # numpy parses the header as a Python literal: a mangled one warns or fails in many ways
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shape, fortran, dtype = readers[version](fp)
        except (ValueError, TypeError, SyntaxError, tokenize.TokenError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: member {clip_repr(name)} has an invalid .npy header ({reason})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
            raise CheckpointError(f"{path}: member {clip_repr(name)} holds {dtype} data, not numbers "
                                  "(Python objects are never unpickled)")
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{path}: member {clip_repr(name)} has an invalid shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        held = info.file_size - fp.tell()
        if nbytes != held:
            raise CheckpointError(f"{path}: member {clip_repr(name)} declares shape {shape} ({nbytes:,} bytes) "
                                  f"but holds {held:,} bytes")
        out = np.empty(nbytes, dtype=np.uint8)
        if read_into(fp, out) != nbytes or fp.read(1):
            raise CheckpointError(f"{path}: member {clip_repr(name)} is truncated")
    arr = out.view(dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, never unpickling and never trusting declared sizes.

    Each member must be a ``.npy`` array; its uncompressed size (zip directory) and its shape
    (.npy header) are checked before anything is allocated, so a zip bomb or a header claiming
    terabytes costs nothing.
    """
    path = Path(path)
    raw, _ = open_file(path, CheckpointError, "checkpoint file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with raw, zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise CheckpointError(f"{path}: {len(infos)} members, more than the {MAX_NPZ_MEMBERS} allowed")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {clip_repr(name)} is not a .npy array")
                if name[:-4] in arrays:
                    raise CheckpointError(f"{path}: member {clip_repr(name)} appears twice")
                if info.file_size > MAX_NPZ_MEMBER:
                    raise CheckpointError(f"{path}: member {clip_repr(name)} declares {info.file_size:,} bytes "
                                          f"uncompressed, more than the {MAX_NPZ_MEMBER:,} allowed")
                arrays[name[:-4]] = _read_npy(path, zf, info)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable .npz file ({reason})") from None
    return arrays


def _notebook_kernel(name: str, arr: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Accept (out, in, k, k), (k, k, in, out) and, with one input channel, (out, k, k) or (k, k, out)."""
    out_c, in_c, k, _ = shape
    if arr.shape == shape:
        return arr
    if arr.shape == (k, k, in_c, out_c):
        return arr.transpose(3, 2, 0, 1)
    if in_c == 1 and arr.shape == (out_c, k, k):
        return arr[:, None]
    if in_c == 1 and arr.shape == (k, k, out_c):
        return arr.transpose(2, 0, 1)[:, None]
    raise CheckpointError(f"{path}: {name} has shape {arr.shape}, expected {shape} or {(k, k, in_c, out_c)}")


def read_notebook_npz(path: Path) -> dict[str, np.ndarray]:
    """The notebook layout (tanh convolutions, sigmoid F6, i.e. our seed-tanh) as a state dict."""
    path = Path(path)
    reference = LeNet5(DEFAULT_PRESET, seed=None).params()
    arrays = read_npz(path)
    missing = sorted(set(NOTEBOOK_KEYS) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: .npz is missing keys {', '.join(missing)}")
    unexpected = sorted(set(arrays) - set(NOTEBOOK_KEYS))
    if unexpected:
        raise CheckpointError(f"{path}: .npz has unexpected keys {', '.join(unexpected)}")
    state = {}
    for key, name in NOTEBOOK_KEYS.items():
        arr, shape = arrays[key], reference[name].shape
        if name.endswith("weight") and len(shape) == 4:
            arr = _notebook_kernel(key, arr, shape, path)
        elif arr.size == math.prod(shape) and name.endswith("bias"):
            arr = arr.reshape(shape)
        if arr.shape != shape:
            raise CheckpointError(f"{path}: {key} has shape {arr.shape}, expected {shape}")
        state[name] = arr
    return state


# --------------------------------------------------------------------------- loading a model
def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else repr(value)


def _spec(path: Path, preset: str | None, meta: dict[str, Any], dtype: np.dtype | type) -> ModelSpec:
    """The network a checkpoint holds: its recorded model spec, or (files of earlier versions)
    its preset and the widths and dropout of its settings; ``preset`` overrides the recorded one
    and ``dtype`` is the one to compute in. Every value is checked for its JSON type."""
    recorded = meta.get("model")
    if recorded is None:
        settings = meta.get("settings")
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise CheckpointError(f"{path}: metadata 'settings' must be a JSON object, got {_kind(settings)}")
        recorded = {"preset": meta.get("preset") or DEFAULT_PRESET,
                    **{k: settings[k] for k in ("widths", "dropout") if settings.get(k) is not None}}
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{path}: metadata 'model' must be a JSON object, got {_kind(recorded)}")
    name = preset or recorded.get("preset")
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: metadata 'preset' must be a string, got {clip_repr(name)}")
    if name not in PRESETS:
        raise CheckpointError(f"{path}: unknown preset {clip_repr(name)} (known: {', '.join(PRESETS)})")
    try:
        return ModelSpec.from_json({**recorded, "preset": name, "dtype": np.dtype(dtype).name})
    except Lenet5Error as e:
        raise CheckpointError(f"{path}: the recorded network does not fit preset {name!r}: {clip(e)}") from None


def _decode_meta(raw_meta: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, value in raw_meta.items():
        try:
            meta[key] = json.loads(value)
        except (ValueError, RecursionError):
            meta[key] = value
    return meta


def _check_values(path: Path, name: str, value: np.ndarray, own: np.ndarray) -> None:
    """Weights must be stored as floats (counters as integers): never silently cast."""
    stored, wanted = value.dtype.kind, own.dtype.kind
    if wanted == "f" and stored != "f" or wanted in "iu" and stored not in "iu":
        what = "floating-point" if wanted == "f" else "integer"
        raise CheckpointError(f"{path}: {name} is stored as {value.dtype}; expected {what} values")


def _build_model(path: Path, preset: str | None, meta: dict[str, Any], dtype: np.dtype | type) -> LeNet5:
    """The untrained model the metadata describes (``preset`` overrides the recorded one)."""
    return LeNet5.from_spec(_spec(path, preset, meta, dtype), seed=None)


#: the tensors whose leading dimensions are the channel widths (C1, C3, C5): (out, in, k, k)
WIDTH_TENSORS = {"c1.weight": (0, None), "c3.weight": (1, 0), "c5.weight": (2, 1)}


def check_widths_fit(path: str | Path, widths: tuple[int, int, int] | None,
                     shapes: dict[str, tuple[int, ...]]) -> None:
    """Declared channel widths must be the ones the file's own tensors have, checked before any
    model is built: metadata alone must never make a reader allocate (a few hundred kB file
    declaring widths 1024,1024,1024 would otherwise cost most of a gigabyte)."""
    if widths is None:
        return
    for name, (out, into) in WIDTH_TENSORS.items():
        want = (widths[out],) if into is None else (widths[out], widths[into])
        shape = shapes.get(name)
        if shape is None or tuple(shape[:len(want)]) != want:
            found = "is missing" if shape is None else f"has shape {tuple(shape)}"
            raise CheckpointError(f"{clip(path)}: metadata declares widths {list(widths)}, but {name} {found} "
                                  f"(expected {want} leading)")


def _check_names(path: Path, model: LeNet5, names: Iterable[str]) -> list[str]:
    """The model's tensor names, if the file holds exactly those (plus optimizer state, "optim.*")."""
    own = list(model.state_dict())
    present = {k for k in names if not k.startswith("optim.")}
    missing, unexpected = sorted(set(own) - present), sorted(present - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state dict mismatch for preset {model.preset.name!r}: "
                              f"missing {clip(missing or 'none', 100)}, unexpected {clip(unexpected or 'none', 100)}")
    return own


def _load_state(path: Path, model: LeNet5, state: dict[str, np.ndarray]) -> None:
    """Copy state into the model: floats stay floats, shapes match, values are finite."""
    own = model.state_dict()
    for key, value in state.items():
        _check_values(path, key, value, own[key])
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range: refused below
            model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {clip(e.args[0] if e.args else e)}") from None
    for key, p in model.state_dict().items():
        if p.dtype.kind == "f" and not np.all(np.isfinite(p)):
            raise CheckpointError(f"{path}: {key} contains NaN or infinite values")


def load_checkpoint(path: str | Path, preset: str | None = None,
                    dtype: np.dtype | type = np.float32) -> tuple[LeNet5, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights.

    Returns (model, metadata). ``preset`` overrides the preset recorded in the file (needed
    for a bare state dict saved without lenet5 metadata, e.g. from plain PyTorch). Tensors
    named ``optim.*`` (optimizer state saved beside the weights) are ignored; any other
    tensor the model does not have is an error.
    """
    path = Path(path)
    if path.suffix == ".npz":
        state = read_notebook_npz(path)
        meta: dict[str, Any] = {"preset": DEFAULT_PRESET, "source": "notebook-npz"}
        model = _build_model(path, preset, meta, dtype)
        _check_names(path, model, state)
    else:
        with _Safetensors(path) as st:
            meta = _decode_meta(st.meta)
            spec = _spec(path, preset, meta, dtype)
            check_widths_fit(path, spec.widths, {k: e.shape for k, e in st.entries.items()})
            model = LeNet5.from_spec(spec, seed=None)
            state = st.read(_check_names(path, model, st.entries))
    _load_state(path, model, state)
    return model, meta
