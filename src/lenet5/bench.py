"""``lenet5 bench``: training and inference speed of the NumPy engine next to every CPU peer
that is installed.

Peers, all on the CPU, all running the same network from the same initial weights
(``LeNet5(preset, seed=0)``) on the same random batches:

- training (one SGD step per batch, lr 0.01, momentum 0.9, the preset's criterion):
  the NumPy engine (the training loop's own ``train_step``), PyTorch eager (the replica,
  ``torch.optim.SGD``), torch.compile (the replica's forward and criterion compiled by
  inductor, backward through the compiled graph, ``torch.optim.SGD`` eager), and JAX (the
  preset's layer list mapped, kind by kind, to ``jax.lax`` ops (``JAX_OPS``), the whole step —
  value_and_grad and the update — under ``jax.jit``);
- inference (``--infer-images`` uint8 images in chunks of 500, input preparation included):
  the same four, and ONNX Runtime on ``lenet5.onnx_export.build_onnx_model`` (CPU provider,
  one intra-op thread per core).

Everything runs in one process. Repetitions are interleaved (numpy, torch, torch.compile,
jax, numpy, ...) so a burst of load from elsewhere on a shared machine hits every peer, and
each figure is the median over repetitions with its spread (min-max). Compilation (the first
call of torch.compile and jax.jit on each input shape; for ONNX Runtime, export and session
creation) is timed on its own and never part of the throughput. GFLOP/s = ``lenet5.flops``'s
count per image × images/s. Ratios are NumPy time / peer time (below 1: NumPy is faster).

A peer that is not installed is skipped with one note; one that fails (torch.compile without a
working C++ compiler, say) is reported as "failed: <reason>" and the others go on; one that
has no version of the preset shows "-" and says why once.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import statistics
import time
import types
from functools import partial
from typing import Any, Callable

import numpy as np

from . import lecun1998
from ._cpu import blas_single_thread, default_threads
from .flops import CONVENTION, flops
from .layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import Criterion, torch_loss
from .model import LeNet5
from .optim import SGD
from .presets import ModelSpec, get_preset, scale_pixels
from .train import train_step

LR, MOMENTUM = 0.01, 0.9
#: peers in the order they run (and are printed)
TRAIN_PEERS = ("numpy", "torch", "torch.compile", "jax")
INFER_PEERS = ("numpy", "torch", "torch.compile", "jax", "onnxruntime")
#: peers whose first call on an input shape compiles (timed apart from the throughput)
COMPILED = ("torch.compile", "jax", "onnxruntime")
#: torch.compile's backend (tests swap in a cheaper one)
COMPILE_BACKEND: Any = "inductor"
INFER_CHUNK = 500
#: the MAP criterion's constant, as in the presets' recipes
MAP_J = 0.1


class Unsupported(Exception):
    """The peer has no version of this preset."""


def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Processor"), as every timing names it."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Vector extensions worth naming, as /proc/cpuinfo spells their flags (x86, then Arm), and
#: as numpy's __cpu_features__ does (the fallback where there is no /proc/cpuinfo)
_VECTOR_FLAGS = [("sse4_2", "SSE4.2", "SSE42"), ("avx", "AVX", "AVX"), ("avx2", "AVX2", "AVX2"),
                 ("fma", "FMA", "FMA3"), ("avx512f", "AVX-512F", "AVX512F"), ("avx512dq", "AVX-512DQ", "AVX512DQ"),
                 ("avx512bw", "AVX-512BW", "AVX512BW"), ("avx512vl", "AVX-512VL", "AVX512VL"),
                 ("avx512_vnni", "AVX-512VNNI", "AVX512VNNI"), ("avx512_bf16", "AVX-512BF16", "AVX512BF16"),
                 ("avx512_fp16", "AVX-512FP16", "AVX512FP16"), ("amx_tile", "AMX", None),
                 ("asimd", "NEON", "ASIMD"), ("sve", "SVE", "SVE"), ("sve2", "SVE2", None)]


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def vector_extensions() -> list[str]:
    """The SIMD extensions of this CPU that matter for BLAS and NumPy's loops, e.g. ["SSE4.2",
    "AVX", "AVX2", "FMA", "AVX-512F", ...]: from /proc/cpuinfo, else numpy's own detection."""
    flags = _cpu_flags()
    if flags is not None:
        return [name for flag, name, _ in _VECTOR_FLAGS if flag in flags]
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return []
    return [name for _, name, key in _VECTOR_FLAGS if key and features.get(key)]


def vector_summary(extensions: list[str]) -> str:
    """One short phrase: "AVX2, FMA, AVX-512 (F, DQ, BW, VL, VNNI), AMX"."""
    wide = [e.removeprefix("AVX-512") for e in extensions if e.startswith("AVX-512")]
    rest = [e for e in extensions if not e.startswith("AVX-512") and e not in ("SSE4.2", "AVX")]
    parts = rest[:2] + ([f"AVX-512 ({', '.join(wide)})"] if wide else []) + rest[2:]
    return ", ".join(parts) or "no AVX/NEON"


def _import(name: str):
    """The module, or None when it is not installed (or cannot be imported at all)."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken install (jaxlib mismatch raises RuntimeError)
        return None


def _torch():
    return _import("torch")


def _reason(e: BaseException) -> str:
    """One line saying why ``e`` happened: the innermost cause's type and first message line."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "inner_exception", None) or e.__cause__
        if inner is None:
            break
        e = inner
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def available_peers() -> tuple[list[str], list[str]]:
    """(installed peers, one note line per missing package)."""
    peers, notes = ["numpy"], []
    torch = _torch()
    if torch is None:
        notes.append("PyTorch is not installed: skipping PyTorch eager and torch.compile "
                     "(pip install torch==2.13.0 to compare).")
    else:
        peers.append("torch")
        if hasattr(torch, "compile"):
            peers.append("torch.compile")
        else:
            notes.append(f"torch {torch.__version__} has no torch.compile: skipping it (torch >= 2.0 has it).")
    if _import("jax") is None or _import("jax.numpy") is None:
        notes.append("JAX is not installed: skipping the JAX jit peer (pip install 'jax[cpu]' to compare).")
    else:
        peers.append("jax")
    if _import("onnxruntime") is None or _import("onnx") is None:
        notes.append("onnx/onnxruntime are not installed: skipping the ONNX Runtime peer "
                     "(pip install 'lenet5[onnx]' to compare).")
    else:
        peers.append("onnxruntime")
    return peers, notes


def _start(i: int, batch: int, n: int) -> int:
    """Where step ``i``'s batch starts (as the NumPy engine's step picks it)."""
    return i * batch % (n - batch + 1)


# --------------------------------------------------------------------------- training steps
def numpy_engine(preset: str, batch: int, images: np.ndarray, labels: np.ndarray):
    """(train_step(i), infer(x_uint8), model) for the NumPy engine: the training loop's own step."""
    model = LeNet5(preset, seed=0)
    opt = SGD(model.params(), model.grads(), lr=0.01, momentum=0.9)
    criterion = Criterion(model.preset.criteria[0], MAP_J)

    def step(i: int) -> None:
        sl = slice(i * batch % (len(images) - batch + 1), None)
        train_step(model, criterion, opt, model.prepare(images[sl][:batch]), labels[sl][:batch])

    return step, model.infer, model


def torch_engine(preset: str, batch: int, images: np.ndarray, labels: np.ndarray):
    """The same for eager PyTorch: the replica, its criterion, torch.optim.SGD."""
    import torch

    from .torch_replica import build

    net = build(preset, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    prepare = get_preset(preset).prepare  # the preset's input coding (28x28 -> 32x32 for lecun1998)
    criterion = get_preset(preset).criteria[0]
    tlab = torch.from_numpy(labels)

    def step(i: int) -> None:
        start = i * batch % (len(images) - batch + 1)
        x = torch.from_numpy(prepare(images[start:start + batch], np.float32))
        opt.zero_grad(set_to_none=True)
        torch_loss(criterion, net(x), tlab[start:start + batch], MAP_J).backward()
        opt.step()

    def infer(x: np.ndarray) -> None:
        with torch.inference_mode():
            net(torch.from_numpy(prepare(x, np.float32)))

    return step, infer, net


def torch_compile_step(preset: str, batch: int, images: np.ndarray, labels: np.ndarray) -> Callable[[int], None]:
    """torch.compile's training step: forward and criterion compiled (static shapes), backward
    through the compiled graph (AOTAutograd), torch.optim.SGD eager as in the eager peer."""
    import torch

    from .torch_replica import build

    torch._dynamo.reset()  # a fresh compilation for each batch size: its time is reported
    net = build(preset, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    prepare = get_preset(preset).prepare
    criterion = get_preset(preset).criteria[0]
    tlab = torch.from_numpy(labels)

    def loss_of(x, y):
        return torch_loss(criterion, net(x), y, MAP_J)

    compiled = torch.compile(loss_of, backend=COMPILE_BACKEND, dynamic=False)

    def step(i: int) -> None:
        start = _start(i, batch, len(images))
        x = torch.from_numpy(prepare(images[start:start + batch], np.float32))
        opt.zero_grad(set_to_none=True)
        compiled(x, tlab[start:start + batch]).backward()
        opt.step()

    return step


# --------------------------------------------------------------------------- the JAX network
def _jax_ops():
    """Every layer kind, and its jax.lax version: layer -> op(params, buffers, x, train, key)
    -> (y, {buffer name: new value}). NCHW, like the PyTorch replica."""
    from jax import lax, random
    import jax.numpy as jnp

    dims = ("NCHW", "OIHW", "NCHW")

    def conv(name, layer):
        mask, pad = (None if layer.mask is None else jnp.asarray(layer.mask)), layer.pad

        def op(p, b, x, train, key):
            w = p[f"{name}.weight"] if mask is None else p[f"{name}.weight"] * mask
            y = lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)], dimension_numbers=dims)
            return y + p[f"{name}.bias"][None, :, None, None], {}
        return op

    def linear(name, layer):
        return lambda p, b, x, train, key: (x @ p[f"{name}.weight"].T + p[f"{name}.bias"], {})

    def batch_norm(name, layer):
        eps, m = layer.eps, layer.momentum

        def op(p, b, x, train, key):
            if train:
                mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
                n = x.size // x.shape[1]
                new = {f"{name}.running_mean": (1 - m) * b[f"{name}.running_mean"] + m * mean,
                       f"{name}.running_var": (1 - m) * b[f"{name}.running_var"] + m * var * n / (n - 1)}
            else:
                mean, var, new = b[f"{name}.running_mean"], b[f"{name}.running_var"], {}
            scale = p[f"{name}.weight"] * lax.rsqrt(var + eps)
            return (x - mean[None, :, None, None]) * scale[None, :, None, None] + p[f"{name}.bias"][None, :, None, None], new
        return op

    def dropout(name, layer):
        keep = 1 - layer.p

        def op(p, b, x, train, key):
            if not train or layer.p == 0:
                return x, {}
            return jnp.where(random.bernoulli(key, keep, x.shape), x / keep, 0), {}
        return op

    def pool(kind):
        def make(name, layer):
            if kind == "avg":
                return lambda p, b, x, train, key: (
                    lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") * 0.25, {})
            return lambda p, b, x, train, key: (
                lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"), {})
        return make

    def elementwise(fn):
        return lambda name, layer: (lambda p, b, x, train, key: (fn(x), {}))

    def subsample(name, layer):
        def op(p, b, x, train, key):
            sums = lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            return sums * p[f"{name}.weight"][None, :, None, None] + p[f"{name}.bias"][None, :, None, None], {}
        return op

    def rbf(name, layer):
        def op(p, b, x, train, key):
            return -((x[:, None, :] - b[f"{name}.centres"][None]) ** 2).sum(-1), {}
        return op

    return {
        Conv2d: conv, Linear: linear, BatchNorm2d: batch_norm, Dropout: dropout,
        Tanh: elementwise(jnp.tanh), Sigmoid: elementwise(lax.logistic), ReLU: elementwise(lambda x: jnp.maximum(x, 0)),
        lecun1998.Squash: elementwise(lambda x: lecun1998.A * jnp.tanh(lecun1998.S * x)),
        AvgPool2d: pool("avg"), MaxPool2d: pool("max"), Flatten: elementwise(lambda x: x.reshape(x.shape[0], -1)),
        lecun1998.Subsample2d: subsample, lecun1998.RBF: rbf,
    }


def _spec(network: str | ModelSpec) -> ModelSpec:
    return network if isinstance(network, ModelSpec) else ModelSpec(network)


def jax_params(network: str | ModelSpec, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(trainable parameters, float buffers) of the NumPy engine's network (a preset name or a
    ModelSpec) initialised with ``seed``, float32, keyed like its state_dict (integer counters
    are left out: nothing here reads them)."""
    model = LeNet5.from_spec(_spec(network), seed=seed)
    params = {k: np.asarray(v, np.float32) for k, v in model.params().items()}
    buffers = {k: np.asarray(v, np.float32) for k, v in model.buffers().items() if v.dtype.kind == "f"}
    return params, buffers


def jax_forward(network: str | ModelSpec) -> Callable:
    """forward(params, buffers, x (N, 1, S, S), train, key) -> (outputs (N, 10), new buffers):
    the network's layers (a preset name or a ModelSpec), each mapped by kind (``_jax_ops``)."""
    from jax import random

    ops = _jax_ops()
    layers = [(name, ops[type(layer)](name, layer)) for name, layer in _spec(network).layers()]

    def forward(params, buffers, x, train=False, key=None):
        new: dict = {}
        for i, (_, op) in enumerate(layers):
            x, updates = op(params, buffers, x, train, None if key is None else random.fold_in(key, i))
            new.update(updates)
        return x, new

    return forward


def jax_loss(network: str | ModelSpec) -> Callable:
    """loss(params, buffers, x, labels, key) -> (the preset's criterion, mean over the batch;
    new buffers), in training mode."""
    import jax
    import jax.numpy as jnp

    forward, name = jax_forward(network), _spec(network).definition.criteria[0]

    def loss(params, buffers, x, labels, key):
        z, new = forward(params, buffers, x, True, key)
        right = jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0]
        if name == "cross-entropy":
            value = jax.nn.logsumexp(z, axis=1) - right
        elif name == "map":
            value = jax.nn.logsumexp(jnp.concatenate([z, jnp.full((len(z), 1), -MAP_J, z.dtype)], 1), axis=1) - right
        else:
            value = -right
        return value.mean(), new

    return loss


def jax_sgd_step(network: str | ModelSpec, lr: float = LR, momentum: float = MOMENTUM) -> Callable:
    """step(params, velocity, buffers, x, labels, key) -> (params, velocity, buffers, loss) under
    jax.jit, with torch.optim.SGD's rule (v ← μ·v + g, θ ← θ − η·v; velocity starting at zero
    makes the first v = g, as torch's). params, velocity and buffers are donated: updated in place."""
    import jax

    grad_fn = jax.value_and_grad(jax_loss(network), has_aux=True)

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, velocity, buffers, x, labels, key):
        (loss, new), grads = grad_fn(params, buffers, x, labels, key)
        velocity = jax.tree_util.tree_map(lambda v, g: momentum * v + g, velocity, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
        return params, velocity, {**buffers, **new}, loss

    return step


def _jax_cpu():
    import jax

    return jax.devices("cpu")[0]


def jax_step(preset: str, batch: int, images: np.ndarray, labels: np.ndarray) -> Callable[[int], None]:
    """JAX's training step: prepare the batch (NumPy, as the other peers), put it on the CPU
    device, one jitted SGD step, wait for it (block_until_ready)."""
    import jax

    cpu = _jax_cpu()
    sgd = jax_sgd_step(preset)
    params, buffers = (jax.device_put(t, cpu) for t in jax_params(preset))
    state = [params, jax.tree_util.tree_map(lambda p: jax.numpy.zeros_like(p), params), buffers]
    prepare = get_preset(preset).prepare
    labels32 = labels.astype(np.int32)
    key = jax.random.PRNGKey(0)

    def step(i: int) -> None:
        start = _start(i, batch, len(images))
        x = jax.device_put(prepare(images[start:start + batch], np.float32), cpu)
        y = jax.device_put(labels32[start:start + batch], cpu)
        state[0], state[1], state[2], loss = sgd(state[0], state[1], state[2], x, y, jax.random.fold_in(key, i))
        jax.block_until_ready((state[0], loss))

    return step


TRAIN_BUILDERS: dict[str, Callable] = {
    "numpy": lambda *a: numpy_engine(*a)[0],
    "torch": lambda *a: torch_engine(*a)[0],
    "torch.compile": torch_compile_step,
    "jax": jax_step,
}


# --------------------------------------------------------------------------- inference
def _numpy_infer(preset: str) -> Callable[[np.ndarray], Any]:
    return LeNet5(preset, seed=0).infer


def _torch_infer(preset: str, compiled: bool = False) -> Callable[[np.ndarray], Any]:
    import torch

    from .torch_replica import build

    if compiled:
        torch._dynamo.reset()
    net = build(preset, seed=0).eval()  # eval: batch norm on running statistics, no dropout
    fn = torch.compile(net, backend=COMPILE_BACKEND, dynamic=False) if compiled else net
    prepare = get_preset(preset).prepare

    def infer(x: np.ndarray):
        with torch.inference_mode():
            return fn(torch.from_numpy(prepare(x, np.float32)))

    return infer


def _jax_infer(preset: str) -> Callable[[np.ndarray], Any]:
    import jax

    cpu = _jax_cpu()
    forward = jax_forward(preset)
    run = jax.jit(lambda params, buffers, x: forward(params, buffers, x)[0])
    params, buffers = (jax.device_put(t, cpu) for t in jax_params(preset))
    prepare = get_preset(preset).prepare

    def infer(x: np.ndarray):
        return run(params, buffers, jax.device_put(prepare(x, np.float32), cpu)).block_until_ready()

    return infer


def ort_session(preset: str):
    """An ONNX Runtime session (CPU provider, one intra-op thread per core) on the exported
    ``LeNet5(preset, seed=0)``; its input is pixel/255 (N, 1, 28, 28) float32."""
    import onnxruntime as ort

    from .onnx_export import build_onnx_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    options.inter_op_num_threads = 1
    proto = build_onnx_model(LeNet5(preset, seed=0))
    return ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def _ort_infer(preset: str) -> Callable[[np.ndarray], Any]:
    session = ort_session(preset)
    name = session.get_inputs()[0].name

    def infer(x: np.ndarray):
        return session.run(None, {name: scale_pixels(x, np.float32)})  # the graph codes the input itself

    return infer


INFER_BUILDERS: dict[str, Callable[[str], Callable[[np.ndarray], Any]]] = {
    "numpy": _numpy_infer,
    "torch": _torch_infer,
    "torch.compile": partial(_torch_infer, compiled=True),
    "jax": _jax_infer,
    "onnxruntime": _ort_infer,
}


# --------------------------------------------------------------------------- measurement
def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _stats(samples: list[float], images: int) -> dict:
    """Median and spread of per-repetition throughput, in images per second."""
    rates = sorted(images / s for s in samples)
    return {"images_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "repeats": len(rates)}


def _prepare_peers(names: list[str], build: Callable[[str], tuple[Callable[[], Any], ...]]
                   ) -> tuple[dict[str, Callable[[], Any]], dict[str, dict]]:
    """Build each peer and warm it up: ``build(name)`` -> (one timed repetition, its first calls
    (one per input shape: compilation), more warm-up). Returns ({name: repetition}, {name: entry}),
    where an entry holds the compile time (build and first calls, for compiled peers), or why the
    peer has no figure ("unsupported" / "failed")."""
    runs: dict[str, Callable[[], None]] = {}
    entries: dict[str, dict] = {}
    for name in names:
        start = time.perf_counter()
        try:
            run, first, more = build(name)
            first()
            compile_s = time.perf_counter() - start
            more()
        except Unsupported as e:
            entries[name] = {"unsupported": str(e)}
            continue
        except Exception as e:  # noqa: BLE001 - a peer that breaks must not stop the others
            if name == "numpy":
                raise  # the engine under test: a failure is a bug to see whole
            entries[name] = {"failed": _reason(e)}
            continue
        runs[name] = run
        entries[name] = {"compile_s": compile_s if name in COMPILED else None}
    return runs, entries


def _interleave(runs: dict[str, Callable[[], None]], repeats: int, entries: dict[str, dict]) -> dict[str, list[float]]:
    """Seconds of each repetition of each peer, the peers taking turns; a peer that raises
    is dropped with its reason."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in list(runs.items()):
            try:
                samples[name].append(_time(run))
            except Exception as e:  # noqa: BLE001
                if name == "numpy":
                    raise
                entries[name] = {"failed": _reason(e)}
                del runs[name], samples[name]
    return samples


def _ratios(entries: dict[str, dict]) -> dict:
    """NumPy time / PyTorch eager time and / the fastest peer's time (= inverse throughput ratios)."""
    out: dict[str, Any] = {"numpy_time_over_torch": None, "numpy_time_over_fastest": None, "fastest": None}
    mine = entries.get("numpy", {}).get("images_per_s")
    if not mine:
        return out
    if "images_per_s" in entries.get("torch", {}):
        out["numpy_time_over_torch"] = entries["torch"]["images_per_s"] / mine
    others = {k: v["images_per_s"] for k, v in entries.items() if k != "numpy" and "images_per_s" in v}
    if others:
        out["fastest"] = max(others, key=others.get)
        out["numpy_time_over_fastest"] = others[out["fastest"]] / mine
    return out


def _finish(entries: dict[str, dict], samples: dict[str, list[float]], images: int, flop: int) -> None:
    for name, s in samples.items():
        stats = _stats(s, images)
        entries[name] = {**stats, "gflop_per_s": flop * stats["images_per_s"] / 1e9,
                         "gflop_per_s_min": flop * stats["min"] / 1e9, "gflop_per_s_max": flop * stats["max"] / 1e9,
                         "compile_s": entries[name]["compile_s"]}


def measure_train(preset: str, batch: int, steps: int, repeats: int, peers: tuple[str, ...] | list[str],
                  pool: int = 0) -> dict:
    """Training images/s of each peer at ``batch``: ``steps`` steps per repetition, after a
    warm-up of 3 steps (for compiled peers, building and the first step are the compile time)."""
    rng = np.random.default_rng(0)
    n = max(batch * min(steps, 200), pool, batch)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)

    def build(name: str):
        step = TRAIN_BUILDERS[name](preset, batch, images, labels)

        def repetition() -> None:
            # the NumPy engine trains as `lenet5 train` runs it: BLAS on one thread (LeNet5.running)
            with blas_single_thread() if name == "numpy" else contextlib.nullcontext():
                for i in range(steps):
                    step(i)

        # warm-up, 3 steps: compilation (the first), allocator, BLAS threads, torch kernels
        return repetition, (lambda: step(0)), (lambda: [step(i) for i in (1, 2)])

    names = [p for p in TRAIN_PEERS if p in peers]
    runs, entries = _prepare_peers(names, build)
    samples = _interleave(runs, repeats, entries)
    _finish(entries, samples, steps * batch, flops(preset, 1, training=True))
    return {"batch_size": batch, "peers": {p: entries[p] for p in names}, **_ratios(entries)}


def measure_infer(preset: str, images: int, repeats: int, peers: tuple[str, ...] | list[str],
                  chunk: int = INFER_CHUNK) -> dict:
    """Inference images/s of each peer: ``images`` uint8 images in chunks of ``chunk``, input
    preparation included. Warm-up: one call on each distinct chunk shape (compilation), then one more."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (images, 28, 28), dtype=np.uint8)
    chunks = [data[i:i + chunk] for i in range(0, images, chunk)]
    shapes = list({len(c): c for c in chunks}.values())

    def build(name: str):
        infer = INFER_BUILDERS[name](preset)
        return (lambda: [infer(c) for c in chunks]), (lambda: [infer(c) for c in shapes]), (lambda: infer(chunks[0]))

    names = [p for p in INFER_PEERS if p in peers]
    runs, entries = _prepare_peers(names, build)
    samples = _interleave(runs, repeats, entries)
    _finish(entries, samples, images, flops(preset, 1, training=False))
    return {"chunk": chunk, "images": images, "peers": {p: entries[p] for p in names}, **_ratios(entries)}


def measure(preset: str, batches: list[int], steps: int, repeats: int, infer_images: int,
            peers: tuple[str, ...] | list[str] | None = None) -> dict:
    """Every peer (default: every installed one): training at each batch size, then inference."""
    notes: list[str] = []
    if peers is None:
        peers, notes = available_peers()
    train = [measure_train(preset, b, steps, repeats, peers, pool=infer_images) for b in batches]
    infer = measure_infer(preset, infer_images, repeats, peers)
    return {"train": train, "infer": infer, "notes": notes}


def profile(preset: str, batch: int, steps: int) -> list[dict]:
    """Seconds per training step spent in each layer's forward and backward, in the criterion and
    in the optimizer (NumPy engine, one thread): the training loop's own ``train_step``, with a
    stopwatch around each layer's methods."""
    model = LeNet5(preset, seed=0, threads=1)
    rng = np.random.default_rng(0)
    x = model.prepare(rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8))
    y = rng.integers(0, 10, batch)
    opt = SGD(model.params(), model.grads(), lr=0.01)
    criterion = Criterion(model.preset.criteria[0], MAP_J)
    spent: dict[tuple[str, str], float] = {}

    def timed(key: tuple[str, str], fn: Callable) -> Callable:
        def run(*args):
            start = time.perf_counter()
            out = fn(*args)
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
            return out
        return run

    for name, layer in model.layers:  # instance attributes shadow the methods
        layer.forward = timed((name, "forward"), layer.forward)
        layer.backward = timed((name, "backward"), layer.backward)
    criterion = types.SimpleNamespace(labels_for=criterion.labels_for,  # what train_step calls
                                      loss=timed(("loss", "forward"), criterion.loss),
                                      correct=timed(("loss", "forward"), criterion.correct))
    opt.step = timed(("optimizer", "forward"), opt.step)
    for _ in range(2):  # warm-up: allocator, BLAS threads
        train_step(model, criterion, opt, x, y)
    spent.clear()
    for _ in range(steps):
        train_step(model, criterion, opt, x, y)
    rows = [{"layer": name, "kind": repr(layer), "forward_ms": 1e3 * spent.get((name, "forward"), 0) / steps,
             "backward_ms": 1e3 * spent.get((name, "backward"), 0) / steps} for name, layer in model.layers]
    rows += [{"layer": k, "kind": "", "forward_ms": 1e3 * spent[(k, "forward")] / steps, "backward_ms": 0.0}
             for k in ("loss", "optimizer")]
    return rows


def environment() -> dict:
    torch = _torch()
    jax = _import("jax")
    ort = _import("onnxruntime")
    info = {"cpu": cpu_model(), "vector_extensions": vector_extensions(), "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__, "numpy_engine_threads": default_threads(),
            "torch": torch.__version__ if torch else None,
            "torch_threads": torch.get_num_threads() if torch else None,
            "jax": getattr(jax, "__version__", None), "onnxruntime": getattr(ort, "__version__", None),
            "onnxruntime_threads": default_threads() if ort else None}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads")} for d in threadpool_info()]
    except ImportError:
        cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
        blas = (cfg or {}).get("Build Dependencies", {}).get("blas", {})
        info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    return info


# --------------------------------------------------------------------------- the report
def _cell(entry: dict) -> str:
    if "images_per_s" in entry:
        return f"{entry['images_per_s']:.0f} [{entry['min']:.0f}-{entry['max']:.0f}] {entry['gflop_per_s']:.2f}"
    return "failed" if "failed" in entry else "-"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]


def _ratio(value: float | None, peer: str | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ({peer})" if peer else "")


def _block_notes(blocks: list[dict], names: list[str], label: str, said: set) -> list[str]:
    """Compile times, and why a peer has no figure (each reason once in the whole report: ``said``)."""
    lines = []
    compile_parts = []
    for name in names:
        times = [(b.get("batch_size"), b["peers"][name]["compile_s"]) for b in blocks
                 if b["peers"].get(name, {}).get("compile_s") is not None]
        if times:
            compile_parts.append(f"{name} " + ", ".join(f"{t:.1f}" + (f" (batch {bs})" if bs else "")
                                                        for bs, t in times))
    if compile_parts:
        lines.append(f"compile s ({label}, first calls, not in the figures above): " + "; ".join(compile_parts))
    for name in names:
        for b in blocks:
            entry = b["peers"].get(name, {})
            for kind in ("failed", "unsupported"):
                if kind in entry and (name, entry[kind]) not in said:
                    said.add((name, entry[kind]))
                    lines.append(f"{name}: " + ("failed: " if kind == "failed" else "- ") + entry[kind])
    return lines


def report(env: dict, preset: str, repeats: int, result: dict) -> list[str]:
    """The text tables: one block for training (a row per batch size), one for inference, a
    column per peer."""
    versions = [f"numpy {env['numpy']}"]
    if env["torch"]:
        versions.append(f"torch {env['torch']} ({env['torch_threads']} threads)")
    if env["jax"]:
        versions.append(f"jax {env['jax']}")
    if env["onnxruntime"]:
        versions.append(f"onnxruntime {env['onnxruntime']} ({env['onnxruntime_threads']} threads)")
    lines = [f"lenet5 bench: {preset}, {env['cpu']} ({vector_summary(env.get('vector_extensions', []))}), "
             f"{env['cores']} cores, " + ", ".join(versions),
             f"cell: median images/s [min-max] over {repeats} interleaved repeats, then GFLOP/s "
             f"({flops(preset, 1, True):,} FLOPs per training image, {flops(preset, 1, False):,} per inference: "
             "lenet5.flops)",
             "ratio: NumPy time / peer time (below 1: NumPy is faster)"]
    lines += result["notes"]
    train = result["train"]
    names = [p for p in TRAIN_PEERS if train and p in train[0]["peers"]]
    lines += ["", f"training (SGD lr {LR}, momentum {MOMENTUM}, {get_preset(preset).criteria[0]})"]
    lines += _table(["batch", *names, "np/torch", "np/fastest"],
                    [[str(b["batch_size"]), *(_cell(b["peers"][n]) for n in names), _ratio(b["numpy_time_over_torch"]),
                      _ratio(b["numpy_time_over_fastest"], b["fastest"])] for b in train])
    said: set = set()
    lines += _block_notes(train, names, "training", said)
    infer = result["infer"]
    names = [p for p in INFER_PEERS if p in infer["peers"]]
    lines += ["", f"inference ({infer['images']:,} images in chunks of {infer['chunk']})"]
    lines += _table(["chunk", *names, "np/torch", "np/fastest"],
                    [[str(infer["chunk"]), *(_cell(infer["peers"][n]) for n in names),
                      _ratio(infer["numpy_time_over_torch"]),
                      _ratio(infer["numpy_time_over_fastest"], infer["fastest"])]])
    lines += _block_notes([infer], names, "inference", said)
    return lines


def run_bench(args) -> int:
    batches = [int(part) for part in str(args.batch_sizes).split(",")]  # checked by the CLI (cli.batch_sizes)
    env = environment()
    if args.profile:
        rows = {b: profile(args.preset, b, args.steps) for b in batches}
        if args.json:
            print(json.dumps({"environment": env, "preset": args.preset, "profile": rows}))
            return 0
        for b, table in rows.items():
            total = sum(r["forward_ms"] + r["backward_ms"] for r in table)
            print(f"per-layer time of one training step, {args.preset}, batch {b} ({total:.2f} ms in all)")
            print(f"{'layer':<10}{'kind':<28}{'forward ms':>11}{'backward ms':>12}{'share':>8}")
            for r in table:
                share = (r["forward_ms"] + r["backward_ms"]) / total
                print(f"{r['layer']:<10}{r['kind']:<28}{r['forward_ms']:>11.3f}{r['backward_ms']:>12.3f}{share:>8.1%}")
        return 0
    result = measure(args.preset, batches, args.steps, args.repeats, args.infer_images)
    if args.json:
        print(json.dumps({"environment": env, "preset": args.preset, "steps": args.steps, "repeats": args.repeats,
                          "flops_per_image": {"train": flops(args.preset, 1, True),
                                              "infer": flops(args.preset, 1, False)},
                          "flops_convention": CONVENTION, **result}))
        return 0
    print("\n".join(report(env, args.preset, args.repeats, result)))
    return 0
