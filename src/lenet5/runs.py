"""A run directory: what a training run writes, and how a stopped run is picked up again.

    RUN_DIR/config.json        settings, data description, command line (written once)
    RUN_DIR/metrics.jsonl      one JSON object per finished epoch
    RUN_DIR/model.safetensors  weights + optimizer state ("optim.*") + training state in the
                               metadata; rewritten atomically after every epoch and on Ctrl-C
    RUN_DIR/best.safetensors   weights of the best validation epoch (with --val-split)

Every file is written to a temporary name and renamed, so a crash or ``kill -9`` at any moment
leaves the previous version intact and loadable.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, load_checkpoint, read_safetensors, save_checkpoint
from .errors import Lenet5Error
from .train import TrainState

MODEL = "model.safetensors"
BEST = "best.safetensors"


def create(out: str | Path | None, preset: str, force: bool) -> Path:
    """A fresh directory for a run. An existing non-empty ``out`` needs ``force``."""
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise Lenet5Error(f"--out {path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise Lenet5Error(f"--out {path}: directory is not empty; choose another or pass --force to overwrite")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{preset}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_config(run_dir: Path, config: dict) -> None:
    _write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl as exactly these epochs (atomic, so a resumed run never duplicates one)."""
    _write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def save(run_dir: Path, model, optimizer, state: TrainState, meta: dict[str, Any]) -> Path:
    """The resumable checkpoint: weights, optimizer state, training state (RNG included)."""
    extra = {f"optim.{k}": v for k, v in optimizer.state_dict().items()}
    last = state.history[-1] if state.history else {}
    save_checkpoint(run_dir / MODEL, model, {**meta, "epoch": state.epoch, "test_acc": last.get("test_acc"),
                                             "train_state": state.to_json()}, extra)
    return run_dir / MODEL


def save_best(run_dir: Path, model, meta: dict[str, Any], record: dict) -> None:
    save_checkpoint(run_dir / BEST, model, {**meta, "epoch": record["epoch"], "val_acc": record["val_acc"],
                                            "test_acc": record["test_acc"]})


def load_for_resume(run_dir: str | Path) -> tuple[dict, dict, dict, TrainState]:
    """(config, weights state dict, optimizer state, training state) of a stopped run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise Lenet5Error(f"--resume {run_dir}: no such run directory")
    try:
        config = json.loads((run_dir / "config.json").read_text())
        config["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Lenet5Error(f"--resume {run_dir}: config.json is missing or unreadable ({e})") from None
    if not (run_dir / MODEL).is_file():
        raise Lenet5Error(f"--resume {run_dir}: no {MODEL} yet (the run stopped before its first epoch ended); "
                          "start it again")
    model, meta = load_checkpoint(run_dir / MODEL, dtype=config["settings"].get("dtype", "float32"))
    tensors, _ = read_safetensors(run_dir / MODEL)
    optim = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
    if not isinstance(meta.get("train_state"), dict):
        raise Lenet5Error(f"--resume {run_dir}: {MODEL} holds no training state")
    return config, model.state_dict(), optim, TrainState.from_json(meta["train_state"])


def summarize(run_dir: str | Path) -> dict:
    """One row for ``lenet5 compare``: what was trained on what, and how well and fast."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        settings, data = config["settings"], config["data"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Lenet5Error(f"{run_dir}: not a run directory (config.json: {e})") from None
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    if not history:
        raise Lenet5Error(f"{run_dir}: no finished epoch in metrics.jsonl")
    train_seconds = sum(h.get("train_seconds", h["seconds"]) for h in history)
    return {"run": run_dir.name, "preset": settings["preset"], "dataset": data.get("dataset"),
            "train_size": data.get("train_size"), "test_size": data.get("test_size"),
            "epochs": len(history), "engine": settings.get("engine", "numpy"),
            "augment": settings.get("augment", "none"), "optimizer": settings.get("optimizer", "sgd"),
            "final_test_acc": history[-1]["test_acc"], "best_test_acc": max(h["test_acc"] for h in history),
            "seconds": sum(h["seconds"] for h in history), "train_seconds_per_epoch": train_seconds / len(history)}
