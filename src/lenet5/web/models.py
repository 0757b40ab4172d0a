"""The models the page can use, each behind an opaque id, and what one forward pass shows.

The browser only ever names a model by the id the server gave it (``m1``, ``run3``, ...): it
cannot make the server open a file. A model comes from a checkpoint or run directory named on
the command line, from ``lenet5.pretrained`` (loaded when first used), or from a training run
started in the page (replaced after every epoch).

A ``LeNet5`` keeps per-call caches (layer inputs, ``activations``), so concurrent requests
must not share one: each entry hands out private copies of its model from a small pool.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .. import datasets
from ..errors import Lenet5Error
from ..model import LeNet5
from ..predict import require_finite
from ..runs import RunDir

#: the paper's stages, in order; each is shown as the output of its last layer (after the activation)
STAGES = ["c1", "s2", "c3", "s4", "c5", "f6"]


class UnknownModel(Lenet5Error):
    """No model has this id."""


def stage_layers(model: LeNet5) -> dict[str, str]:
    """Stage -> the layer whose output shows it: c1 -> c1_act (modern: after batch norm and ReLU),
    s2 -> s2 (lecun1998: s2_act), ...; dropout and flatten are skipped."""
    return dict(_stage_layers(tuple(name for name, _ in model.layers)))


@functools.lru_cache(maxsize=64)
def _stage_layers(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``stage_layers`` by layer names (the same for every prediction of a model: computed once)."""
    out = {}
    for stage in STAGES:
        group = [n for n in names if (n == stage or n.startswith(stage + "_")) and not n.endswith("_drop")]
        if group:
            out[stage] = group[-1]
    return tuple(out.items())


def dataset_of(meta: dict[str, Any]) -> str:
    """The dataset a checkpoint was trained on, from its metadata ("mnist" when it does not say)."""
    return datasets.dataset_of(meta) or "mnist"


def output_kind(model: LeNet5) -> str:
    """"rbf" when the outputs are minus distances to fixed centres (LeNet-5's OUTPUT), else
    "softmax" (the outputs are logits): the preset's ``output`` field, not its name."""
    return "rbf" if model.preset.output == "rbf" else "softmax"


def rubbish_j(model: LeNet5, meta: dict[str, Any]) -> float | None:
    """The MAP criterion's rubbish-class constant j the model was trained with, or None when its
    criterion has no rubbish class (only "map" and "mse" read outputs the MAP way)."""
    from ..presets import trained_criterion

    criterion = trained_criterion(meta, model.preset)
    return criterion.map_j if criterion.name in ("map", "mse") else None


def glyph_rows(model: LeNet5) -> list[list[str]]:
    """The RBF centres as pictures: per class, 12 rows of 7 characters ("#": +1, ".": −1)."""
    centres = np.asarray(model.layers[-1][1].buffers["centres"])
    return [["".join("#" if v > 0 else "." for v in row) for row in c.reshape(12, 7)] for c in centres]


def private_copy(model: LeNet5) -> LeNet5:
    """A single-threaded model for one request at a time, in inference mode: it shares the
    weights (read only) but has its own layer caches and ``activations``."""
    return model.replica().eval()


# --------------------------------------------------------------------------- encoding
def quantize_stages(arrays: list[np.ndarray]) -> list[dict]:
    """Every stage's output at once -> uint8, base64: maps (C, H, W) each stretched over its own
    [min, max] ("min", "max": lists), strips (F,) or (F, 1, 1) over theirs ("min", "max": numbers).

    One pass over all of them (reductions per segment of one vector): a dozen NumPy calls per
    prediction rather than a dozen per stage."""
    is_maps = [a.ndim == 3 and a.shape[1:] != (1, 1) for a in arrays]
    segments = [(a.shape[0], a[0].size) if m else (1, a.size) for a, m in zip(arrays, is_maps)]
    flat = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])
    sizes = np.array([size for count, size in segments for _ in range(count)])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lo, hi = np.minimum.reduceat(flat, starts), np.maximum.reduceat(flat, starts)
    span = hi - lo
    scale = 255 / np.where(span > 1e-12, span, np.inf)  # a flat map: all 0
    q = flat - np.repeat(lo, sizes)
    q *= np.repeat(scale, sizes)
    q += 0.5  # rounds (q >= 0)
    data = q.astype(np.uint8).tobytes()
    lows, highs = rounded(np.stack([lo, hi]), 5)
    out, at, seg = [], 0, 0
    for a, m, (count, size) in zip(arrays, is_maps, segments):
        encoded = base64.b64encode(data[at:at + count * size]).decode()
        if m:
            out.append({"shape": list(a.shape), "data": encoded, "min": lows[seg:seg + count],
                        "max": highs[seg:seg + count]})
        else:
            out.append({"shape": [int(a.size)], "data": encoded, "min": lows[seg], "max": highs[seg]})
        at, seg = at + count * size, seg + count
    return out


def quantize_maps(a: np.ndarray) -> dict:
    """Feature maps (C, H, W) -> uint8, each map stretched over its own [min, max], base64."""
    return quantize_stages([a])[0]


def quantize_strip(v: np.ndarray) -> dict:
    """A vector (F,) -> uint8 over its [min, max], base64."""
    return quantize_stages([np.ravel(v)])[0]


def rounded(a: np.ndarray, digits: int = 4) -> list:
    return np.round(a.astype(np.float64), digits).tolist()


# --------------------------------------------------------------------------- entries
@dataclass
class ModelEntry:
    """One model on the page's list. ``model`` is None until a lazy entry is first used."""

    id: str
    name: str
    source: str  # "checkpoint", "pretrained", "training"
    model: LeNet5 | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    loader: Callable[[], tuple[LeNet5, dict]] | None = None
    named: bool = False  # named on the command line (a checkpoint, a run, --model NAME)
    version: int = 1
    _pool: list[LeNet5] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ensure_loaded(self) -> LeNet5:
        with self._lock:
            if self.model is None:
                if self.loader is None:
                    raise UnknownModel(f"model {self.id} has no weights")
                try:
                    model, meta = self.loader()
                except Lenet5Error:
                    raise
                except Exception as e:  # a pretrained download that failed, ...: one line for the page
                    raise Lenet5Error(f"{self.name}: cannot load the model ({type(e).__name__}: {e})") from None
                self.model, self.meta = model.eval(), {**self.meta, **dict(meta or {})}
            return self.model

    def replace(self, model: LeNet5, meta: dict[str, Any], name: str | None = None) -> None:
        """New weights (a training run finished another epoch)."""
        with self._lock:
            self.model, self.meta = model.eval(), dict(meta or {})
            self.name = name or self.name
            self.version += 1
            self._pool.clear()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[tuple[LeNet5, int]]:
        """A private copy of the model (and its version) for one request."""
        base = self.ensure_loaded()
        with self._lock:
            version = self.version
            model = self._pool.pop() if self._pool else None
        if model is None:
            model = private_copy(base)
        try:
            yield model, version
        finally:
            with self._lock:
                if version == self.version and len(self._pool) < 8:
                    self._pool.append(model)

    def summary(self) -> dict:
        """What the model list shows: never a server-side path."""
        meta = self.meta
        settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
        preset = self.model.preset.name if self.model is not None else (meta.get("preset") or settings.get("preset"))
        epoch = meta.get("epoch")
        test_acc = meta.get("test_acc")
        return {"id": self.id, "name": self.name, "source": self.source, "preset": preset,
                "dataset": dataset_of(meta) if meta else None, "loaded": self.model is not None,
                "epoch": epoch if isinstance(epoch, int) else None,
                "test_acc": float(test_acc) if isinstance(test_acc, (int, float)) else None,
                "version": self.version}


class ModelRegistry:
    """The server's models by opaque id; thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def add(self, name: str, model: LeNet5 | None, meta: dict | None = None, source: str = "checkpoint",
            loader: Callable[[], tuple[LeNet5, dict]] | None = None, prefix: str = "m",
            named: bool = False) -> ModelEntry:
        with self._lock:
            taken = {e.name for e in self._entries.values()}
            unique, n = name, 1
            while unique in taken:
                n += 1
                unique = f"{name} ({n})"
            entry = ModelEntry(self._new_id(prefix), unique, source, model.eval() if model else None,
                               dict(meta or {}), loader, named)
            self._entries[entry.id] = entry
            return entry

    def get(self, model_id: str) -> ModelEntry:
        with self._lock:
            entry = self._entries.get(model_id)
        if entry is None:
            raise UnknownModel(f"unknown model id {model_id[:40]!r}")
        return entry

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def default(self) -> ModelEntry | None:
        """The model the page shows first: the first one named on the command line; else the one
        with the highest measured test accuracy on handwritten digits (MNIST: the zoo's manifest or
        the checkpoint's own record); else the first."""
        entries = self.entries()
        named = [e for e in entries if e.named]
        if named:
            return named[0]
        measured = [(e.summary()["test_acc"], -i, e) for i, e in enumerate(entries)
                    if e.summary()["test_acc"] is not None and dataset_of(e.meta) == "mnist"]
        if measured:
            return max(measured, key=lambda t: t[:2])[2]
        return entries[0] if entries else None

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- what the page shows
def model_details(entry: ModelEntry) -> dict:
    """Everything about a model that does not depend on the input: stages, kernels, glyphs."""
    model = entry.ensure_loaded()
    params = model.params()
    stages = stage_layers(model)
    summary = {row["name"]: row for row in model.summary()}
    out: dict[str, Any] = {
        **entry.summary(),
        "description": model.preset.description,
        "params": model.num_parameters(),
        "input_size": model.preset.input_size,
        "classes": datasets.class_names(dataset_of(entry.meta)),
        "output": output_kind(model),
        "stages": [{"stage": s, "layer": layer, "shape": summary[layer]["output_shape"],
                    "kind": layer_kind(model, layer)} for s, layer in stages.items()],
        "layers": [name for name, _ in model.layers],
        "kernels": {"c1": kernels_payload(params["c1.weight"]), "c3": kernels_payload(params["c3.weight"])},
    }
    conv3 = model.layer("c3")
    if getattr(conv3, "mask", None) is not None:  # lecun1998's partial connection table: (16 C3 maps, 6 S2 maps)
        out["c3_connections"] = (np.asarray(conv3.mask)[:, :, 0, 0] > 0).astype(int).tolist()
    for s in ("s2", "s4"):
        if f"{s}.weight" in params:  # lecun1998's trainable subsampling: coefficient and bias per map
            out[f"{s}_coefficients"] = rounded(params[f"{s}.weight"].ravel())
            out[f"{s}_biases"] = rounded(params[f"{s}.bias"].ravel())
    if out["output"] == "rbf":
        out["glyphs"] = glyph_rows(model)
        out["rubbish_j"] = rubbish_j(model, entry.meta)
    return out


def layer_kind(model: LeNet5, layer: str) -> str:
    """A few words on what a stage's shown layer is, e.g. 'Conv2d + Tanh'."""
    names = [name for name, _ in model.layers]
    stage = layer.split("_")[0]
    parts = [type(lay).__name__ for name, lay in model.layers if name.split("_")[0] == stage
             and not name.endswith("_drop") and names.index(name) <= names.index(layer)]
    return " + ".join(parts)


def kernels_payload(w: np.ndarray) -> dict:
    """Convolution kernels (out, in, k, k) rounded, with the largest magnitude (for a shared colour scale)."""
    return {"shape": list(w.shape), "values": rounded(w.ravel(), 4), "absmax": round(float(np.abs(w).max()), 5)}


def analyse(model: LeNet5, images: np.ndarray, rubbish: float | None = None) -> list[dict]:
    """Digits (N, 28, 28) uint8 through the network at once: per digit, its class shares and every
    stage's output.

    ``probs``: for logits, their softmax. For an RBF output (lecun1998) the outputs are minus the
    distances from F6 to each class's centre, and ``probs`` is the softmax of −distance over the
    ten classes: how the classes share the evidence if the picture is one of them. The paper's
    MAP criterion also has a "rubbish" class at a constant −j; with ``rubbish`` (= j) the share
    that class takes under that criterion is given separately (``rubbish_share``), because it
    measures the constant j as much as the picture: a clean digit is typically near 50 %.
    ``model`` must be private to this call (see ``ModelEntry.borrow``).
    """
    from ..losses import softmax

    stages = stage_layers(model)
    model.eval()
    with np.errstate(all="ignore"):  # overflow is refused just below, without warnings in the log
        outputs = model.forward(model.prepare(images), keep=list(stages.values())).astype(np.float64)
        probs = softmax(outputs)
    require_finite("this model", outputs, probs, *(model.activations[layer] for layer in stages.values()))
    kind = output_kind(model)
    results = []
    for i in range(len(images)):
        quantized = quantize_stages([model.activations[layer][i] for layer in stages.values()])
        out: dict[str, Any] = {
            "probs": rounded(probs[i], 5), "outputs": rounded(outputs[i], 4), "prediction": int(outputs[i].argmax()),
            "maps": {stage: {"layer": layer, **q} for (stage, layer), q in zip(stages.items(), quantized)}}
        if kind == "rbf":
            out["rbf_distances"] = rounded(-outputs[i], 3)
            out["f6_values"] = rounded(model.activations[stages["f6"]][i].ravel(), 3)
            if rubbish is not None:
                out["rubbish_share"] = round(1 - float(softmax(outputs[i:i + 1], -rubbish).sum()), 5)
        results.append(out)
    return results


def load_path(path: str | Path) -> tuple[LeNet5, dict, str]:
    """A checkpoint file or run directory (its model.safetensors) -> (model, metadata, display name).

    Raises ``Lenet5Error`` (``CheckpointError``) with one line naming the path.
    """
    from ..checkpoint import load_checkpoint

    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if not run.model_path.is_file():
            raise Lenet5Error(f"{path}: a directory without {run.model_path.name} (not a run directory)")
        model, meta = run.load_model()
        return model, meta, path.name or str(path)
    model, meta = load_checkpoint(path)
    return model, meta, path.stem if path.stem != "model" else (path.parent.name or path.stem)
