"""``lenet5 bench``: training and inference speed of the NumPy engine next to PyTorch.

Both engines run the same network on the same random batches in one process. Repetitions
are interleaved (numpy, torch, numpy, torch, ...) so a burst of load from elsewhere on a
shared machine hits both, and each figure is the median over repetitions with its spread
(min-max). Times are per image; the ratio is NumPy time / PyTorch time (below 1: NumPy
is faster).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import numpy as np

from .model import LeNet5
from .optim import SGD
from .presets import get_preset
from .train import train_step


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch():
    try:
        import torch

        return torch
    except ImportError:
        return None


def numpy_engine(preset: str, batch: int, images: np.ndarray, labels: np.ndarray):
    """(train_step(i), infer(x_uint8), model) for the NumPy engine: the training loop's own step."""
    model = LeNet5(preset, seed=0)
    opt = SGD(model.params(), model.grads(), lr=0.01, momentum=0.9)

    def step(i: int) -> None:
        sl = slice(i * batch % (len(images) - batch + 1), None)
        train_step(model, opt, model.prepare(images[sl][:batch]), labels[sl][:batch])

    return step, model.infer, model


def torch_engine(preset: str, batch: int, images: np.ndarray, labels: np.ndarray):
    """The same for eager PyTorch: the replica, its criterion, torch.optim.SGD."""
    import torch

    from .torch_replica import build, criterion

    net = build(preset, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    prepare = get_preset(preset).prepare  # the preset's input coding (28x28 -> 32x32 for lecun1998)
    tlab = torch.from_numpy(labels)

    def step(i: int) -> None:
        start = i * batch % (len(images) - batch + 1)
        x = torch.from_numpy(prepare(images[start:start + batch], np.float32))
        opt.zero_grad(set_to_none=True)
        criterion(preset, net(x), tlab[start:start + batch]).backward()
        opt.step()

    def infer(x: np.ndarray) -> None:
        with torch.inference_mode():
            net(torch.from_numpy(prepare(x, np.float32)))

    return step, infer, net


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _stats(samples: list[float], images: int) -> dict:
    """Median and spread of per-repetition throughput, in images per second."""
    rates = sorted(images / s for s in samples)
    return {"images_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "repeats": len(rates)}


def measure(preset: str, batch: int, steps: int, repeats: int, infer_images: int, infer_batch: int = 500,
            engines: tuple[str, ...] = ("numpy", "torch")) -> dict:
    rng = np.random.default_rng(0)
    n = max(batch * min(steps, 200), infer_images, batch)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    built = {}
    for name in engines:
        make = numpy_engine if name == "numpy" else torch_engine
        built[name] = make(preset, batch, images, labels)[:2]
    train = {name: [] for name in built}
    infer = {name: [] for name in built}
    for name, (step, _) in built.items():  # warm-up: allocator, BLAS threads, torch kernels
        for i in range(3):
            step(i)
    for _ in range(repeats):
        for name, (step, run) in built.items():
            train[name].append(_time(lambda: [step(i) for i in range(steps)]))
            chunks = [images[i:i + infer_batch] for i in range(0, infer_images, infer_batch)]
            infer[name].append(_time(lambda: [run(c) for c in chunks]))
    out = {"batch_size": batch, "train": {}, "infer": {}}
    for name in built:
        out["train"][name] = _stats(train[name], steps * batch)
        out["infer"][name] = _stats(infer[name], infer_images)
    if "torch" in built:
        for kind in ("train", "infer"):
            # time ratio NumPy/PyTorch = inverse of the throughput ratio
            out[kind]["numpy_time_over_torch"] = (out[kind]["torch"]["images_per_s"]
                                                  / out[kind]["numpy"]["images_per_s"])
    return out


def profile(preset: str, batch: int, steps: int) -> list[dict]:
    """Seconds per training step spent in each layer's forward and backward, in the criterion and
    in the optimizer (NumPy engine, one thread): the training loop's own ``train_step``, with a
    stopwatch around each layer's methods."""
    model = LeNet5(preset, seed=0, threads=1)
    rng = np.random.default_rng(0)
    x = model.prepare(rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8))
    y = rng.integers(0, 10, batch)
    opt = SGD(model.params(), model.grads(), lr=0.01)
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
    model.loss = timed(("loss", "forward"), model.loss)
    opt.step = timed(("optimizer", "forward"), opt.step)
    for _ in range(2):  # warm-up: allocator, BLAS threads
        train_step(model, opt, x, y)
    spent.clear()
    for _ in range(steps):
        train_step(model, opt, x, y)
    rows = [{"layer": name, "kind": repr(layer), "forward_ms": 1e3 * spent.get((name, "forward"), 0) / steps,
             "backward_ms": 1e3 * spent.get((name, "backward"), 0) / steps} for name, layer in model.layers]
    rows += [{"layer": k, "kind": "", "forward_ms": 1e3 * spent[(k, "forward")] / steps, "backward_ms": 0.0}
             for k in ("loss", "optimizer")]
    return rows


def environment() -> dict:
    torch = _torch()
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__ if torch else None,
            "torch_threads": torch.get_num_threads() if torch else None}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads")} for d in threadpool_info()]
    except ImportError:
        cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
        blas = (cfg or {}).get("Build Dependencies", {}).get("blas", {})
        info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    return info


def run_bench(args) -> int:
    batches = []
    for part in str(args.batch_sizes).split(","):
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            print(f"lenet5: error: --batch-sizes: expected positive integers separated by commas, got {part!r}",
                  file=sys.stderr)
            return 2
        batches.append(value)
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
    engines = ("numpy", "torch") if env["torch"] else ("numpy",)
    if not env["torch"] and not args.json:
        print("PyTorch is not installed: reporting the NumPy engine alone "
              "(pip install torch==2.13.0 to compare).")
    results = [measure(args.preset, b, args.steps, args.repeats, args.infer_images, engines=engines) for b in batches]
    if args.json:
        print(json.dumps({"environment": env, "preset": args.preset, "steps": args.steps, "results": results}))
        return 0
    print(f"lenet5 bench: {args.preset}, {env['cpu']}, {env['cores']} cores, numpy {env['numpy']}, "
          f"torch {env['torch'] or 'absent'} ({env['torch_threads'] or '-'} threads)")
    print(f"median images/s over {args.repeats} interleaved repeats [min-max]; ratio = NumPy time / PyTorch time")
    for kind, label in (("train", "training"), ("infer", "inference")):
        print(f"\n{label}")
        print(f"{'batch':>6}  {'numpy img/s':>22}  {'torch img/s':>22}  {'ratio':>6}  {'epoch (60k) np/torch':>20}")
        for r in results:
            row = r[kind]
            def cell(e):
                if e not in row:
                    return "-"
                s = row[e]
                return f"{s['images_per_s']:>8.0f} [{s['min']:.0f}-{s['max']:.0f}]"
            ratio = f"{row['numpy_time_over_torch']:.2f}" if "numpy_time_over_torch" in row else "-"
            epoch = (f"{60000 / row['numpy']['images_per_s']:.1f}s / "
                     + (f"{60000 / row['torch']['images_per_s']:.1f}s" if "torch" in row else "-"))
            batch_label = r["batch_size"] if kind == "train" else 500
            print(f"{batch_label:>6}  {cell('numpy'):>22}  {cell('torch'):>22}  {ratio:>6}  {epoch:>20}")
            if kind == "infer" and len(results) > 1:
                break  # inference uses batch 500 regardless of the training batch size
    return 0
