"""Checkpoints: safetensors files with PyTorch-compatible keys, written atomically.

``model.safetensors`` holds the state dict (``c1.weight`` ... ``output.bias``) and, in its
string metadata, the preset, dtype and training settings. A checkpoint saved here loads
with ``safetensors.torch.load_file`` into the PyTorch replica, and vice versa. No pickle is
ever involved: safetensors is a JSON header plus raw arrays, and .npz files are opened with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .errors import CheckpointError
from .model import DEFAULT_PRESET, PRESETS, LeNet5

FORMAT = "lenet5"


def atomic_write(path: str | Path, write: Any) -> None:
    """Call write(tmp_path), then rename tmp over path: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: LeNet5, metadata: dict[str, Any] | None = None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write the model's weights (plus optional extra arrays, e.g. optimizer state) to path."""
    meta = {"format": FORMAT, "preset": model.preset.name, "dtype": str(model.dtype)}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    # np.array (not ascontiguousarray, which turns 0-d counters into shape (1,)) keeps shapes
    tensors = {name: np.array(p, order="C") for name, p in model.state_dict().items()}
    for name, arr in (extra or {}).items():
        tensors[name] = np.array(arr, order="C")
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0]})") from None
    return tensors, meta


# Keys of the popular from-scratch notebook's .npz layout -> our names.
NOTEBOOK_KEYS = {"c1_kernel": "c1.weight", "c1_bias": "c1.bias", "c3_kernel": "c3.weight",
                 "c3_bias": "c3.bias", "c5_kernel": "c5.weight", "c5_bias": "c5.bias",
                 "f6_weights": "f6.weight", "f6_bias": "f6.bias",
                 "out_weights": "output.weight", "out_bias": "output.bias"}


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
    reference = LeNet5(DEFAULT_PRESET, seed=None).params()
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from None
    missing = sorted(set(NOTEBOOK_KEYS) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: .npz is missing keys {', '.join(missing)}")
    state = {}
    for key, name in NOTEBOOK_KEYS.items():
        arr, shape = arrays[key], reference[name].shape
        if name.endswith("weight") and len(shape) == 4:
            arr = _notebook_kernel(key, arr, shape, path)
        elif arr.size == int(np.prod(shape)) and name.endswith("bias"):
            arr = arr.reshape(shape)
        if arr.shape != shape:
            raise CheckpointError(f"{path}: {key} has shape {arr.shape}, expected {shape}")
        state[name] = arr
    return state


def load_checkpoint(path: str | Path, preset: str | None = None,
                    dtype: np.dtype | type = np.float32) -> tuple[LeNet5, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights.

    Returns (model, metadata). ``preset`` overrides the preset recorded in the file (needed
    for a bare state dict saved without lenet5 metadata, e.g. from plain PyTorch).
    """
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        state, meta = read_notebook_npz(path), {"preset": DEFAULT_PRESET, "source": "notebook-npz"}
    else:
        state, raw_meta = read_safetensors(path)
        meta = {}
        for key, value in raw_meta.items():
            try:
                meta[key] = json.loads(value)
            except json.JSONDecodeError:
                meta[key] = value
    name = preset or meta.get("preset") or DEFAULT_PRESET
    if name not in PRESETS:
        raise CheckpointError(f"{path}: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    model = LeNet5(name, seed=None, dtype=dtype, criterion=settings.get("criterion"),
                   map_j=0.1 if settings.get("map_j") is None else settings["map_j"], dropout=settings.get("dropout"))
    try:  # arrays under "optim." are optimizer state, saved beside the weights
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("optim.")})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None
    for name_, p in model.state_dict().items():
        if p.dtype.kind == "f" and not np.all(np.isfinite(p)):
            raise CheckpointError(f"{path}: {name_} contains NaN or infinite values")
    return model, meta
