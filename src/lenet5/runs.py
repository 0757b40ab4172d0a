"""A run directory and its one owner, ``RunDir``: every file of a run is written and read here.

    RUN_DIR/config.json              settings (the TrainConfig), data description, command line
    RUN_DIR/metrics.jsonl            one JSON object per finished epoch
    RUN_DIR/batch_metrics.jsonl      per epoch, the loss of every training step
    RUN_DIR/model.safetensors        the weights: exactly the state dict (+ string metadata), so
                                     any strict loader (PyTorch's included) takes it as it is
    RUN_DIR/train_state.safetensors  what a resume needs: the same weights, the optimizer state and
                                     the training state (epoch, batch, RNG, history) in one file,
                                     so they can never come from different epochs
    RUN_DIR/best.safetensors         weights of the best validation epoch (with --val-split)
    RUN_DIR/*.png                    figures (``lenet5.plots``)
    RUN_DIR/.lock                    held (flock) by the process that is training in it

Every file is written to a temporary name and renamed, so a crash or ``kill -9`` at any moment
leaves the previous version intact and loadable; a resume removes the temporary files a kill
left behind and cuts the metrics back to the epoch it resumes from.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO


from .checkpoint import atomic_write, load_checkpoint, read_safetensors, save_checkpoint, save_tensors
from .errors import Lenet5Error
from .presets import CONFIG_FIELDS, TrainConfig, resolve
from .train import TrainState

MODEL = "model.safetensors"
STATE = "train_state.safetensors"
BEST = "best.safetensors"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
BATCH_METRICS = "batch_metrics.jsonl"
LOCK = ".lock"
RUN_FILES = (MODEL, STATE, BEST, CONFIG, METRICS, BATCH_METRICS)


def _os_error(path: Path, e: OSError) -> Lenet5Error:
    """A one-line error for a file-system failure, naming the path and what went wrong."""
    reason = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
              errno.EROFS: "read-only file system", errno.ENOTDIR: "a parent is not a directory",
              errno.ELOOP: "symlink loop", errno.EPERM: "operation not permitted"}.get(e.errno, e.strerror or str(e))
    return Lenet5Error(f"{path}: {reason}")


class RunDir:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: TextIO | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    # -- creating, locking ------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | Path | None, preset: str, force: bool = False) -> "RunDir":
        """A new run directory, locked. An existing non-empty ``out`` needs ``force``, which
        removes the earlier run's files first (after taking the lock)."""
        if out is None:
            base = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{preset}"
            path, n = base, 1
            while path.exists():
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        else:
            path = Path(out)
            if path.is_symlink() and not path.exists():
                raise Lenet5Error(f"--out {path}: is a dangling symlink")
            if path.exists() and not path.is_dir():
                raise Lenet5Error(f"--out {path}: exists and is not a directory")
            if path.is_dir() and any(path.iterdir()) and not force:
                raise Lenet5Error(f"--out {path}: directory is not empty; choose another or pass --force to overwrite")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error(path, e) from None
        run = cls(path)
        run.lock()
        if force:
            run._remove(*RUN_FILES, *(p.name for p in path.glob("*.png")), *(p.name for p in path.glob(".*.tmp")))
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (for resume, plot, compare)."""
        path = Path(path)
        if not path.is_dir():
            raise Lenet5Error(f"{path}: no such run directory" if not path.exists() else f"{path}: not a directory")
        return cls(path)

    def lock(self) -> None:
        """Hold an exclusive lock for the life of this process: one run per directory."""
        lock_path = self.path / LOCK
        try:
            f = open(lock_path, "a+")
        except OSError as e:
            raise _os_error(lock_path.parent, e) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise Lenet5Error(f"{self.path}: in use by another lenet5 run (process {holder}); "
                              "wait for it to finish or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def _remove(self, *names: str) -> None:
        for name in names:
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as e:
                raise _os_error(self.path / name, e) from None

    def _write_text(self, name: str, text: str) -> None:
        try:
            atomic_write(self.path / name, lambda tmp: Path(tmp).write_text(text))
        except OSError as e:
            raise _os_error(self.path / name, e) from None

    def _append(self, name: str, line: str) -> None:
        try:
            with open(self.path / name, "a") as f:
                f.write(line)
        except OSError as e:
            raise _os_error(self.path / name, e) from None

    # -- config ------------------------------------------------------------------------------
    def write_config(self, config: TrainConfig, data: dict[str, Any], command: list[str], world: int = 1) -> dict:
        """config.json, written once when the run starts; returns the metadata every
        checkpoint of the run carries (settings and data)."""
        meta = {"settings": {**config.to_json(), "world_size": world}, "data": data}
        self._write_text(CONFIG, json.dumps({**meta, "command": command,
                                             "started": datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")
        return meta

    def read_config(self) -> dict[str, Any]:
        """config.json as written by ``write_config``, checked for the keys readers rely on."""
        path = self.path / CONFIG
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise Lenet5Error(f"{path}: missing (not a run directory?)") from None
        except OSError as e:
            raise _os_error(path, e) from None
        except ValueError as e:
            raise Lenet5Error(f"{path}: not valid JSON ({e})") from None
        if not (isinstance(config, dict) and isinstance(config.get("settings"), dict)
                and isinstance(config.get("data"), dict)):
            raise Lenet5Error(f"{path}: expected an object with 'settings' and 'data' objects")
        return config

    def train_config(self) -> TrainConfig:
        """The run's settings as a checked TrainConfig."""
        settings = self.read_config()["settings"]
        try:
            return resolve(settings.get("preset"), **{k: v for k, v in settings.items() if k in CONFIG_FIELDS})
        except Lenet5Error as e:
            raise Lenet5Error(f"{self.path / CONFIG}: {e}") from None

    # -- metrics -----------------------------------------------------------------------------
    def _read_jsonl(self, name: str, required: tuple[str, ...], live: bool = False) -> list[dict]:
        """The records of a JSONL file (none if it is missing). ``live``: the file may still be
        being appended to, so a last line without its newline is left for a later read."""
        path = self.path / name
        try:
            data = path.read_bytes() if path.exists() else b""
        except OSError as e:
            raise _os_error(path, e) from None
        if live and not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise Lenet5Error(f"{path}: not UTF-8 text (byte {e.start})") from None
        records = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise Lenet5Error(f"{path}: line {i} is not valid JSON (truncated?)") from None
            if not isinstance(rec, dict) or any(k not in rec for k in required):
                raise Lenet5Error(f"{path}: line {i} lacks {', '.join(required)}")
            records.append(rec)
        return records

    def history(self, live: bool = False) -> list[dict]:
        """The finished epochs, from metrics.jsonl. ``live``: read while the run is training
        (a last line still being written is ignored)."""
        return self._read_jsonl(METRICS, ("epoch", "train_loss", "train_acc", "seconds"), live)

    def batch_losses(self, live: bool = False) -> list[dict]:
        """Per epoch, {"epoch": k, "loss": [loss of every step]}, from batch_metrics.jsonl.
        ``live``: as for ``history``."""
        records = self._read_jsonl(BATCH_METRICS, ("epoch", "loss"), live)
        for rec in records:
            if not isinstance(rec["loss"], list):
                raise Lenet5Error(f"{self.path / BATCH_METRICS}: 'loss' of epoch {rec['epoch']} is not a list")
        return records

    def log_epoch(self, record: dict, batch_losses: list[float]) -> None:
        """Append one finished epoch to metrics.jsonl and its step losses to batch_metrics.jsonl."""
        self._append(METRICS, json.dumps(record) + "\n")
        if batch_losses:
            self._append(BATCH_METRICS, json.dumps({"epoch": record["epoch"], "loss": batch_losses}) + "\n")

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, model, optimizer, state: TrainState, meta: dict[str, Any]) -> Path:
        """The resumable state first (weights + optimizer + training state, one file), then the
        weights: a kill between the two leaves model.safetensors one epoch behind, never a
        mismatched pair."""
        last = state.history[-1] if state.history else {}
        info = {**meta, "epoch": state.epoch, "test_acc": last.get("test_acc")}
        weights = model.state_dict()
        tensors = {**{f"model.{k}": v for k, v in weights.items()},
                   **{f"optim.{k}": v for k, v in optimizer.state_dict().items()}}
        target = self.path / STATE
        try:
            save_tensors(target, tensors, {"format": "lenet5-train-state", "train_state": state.to_json(), **info})
            target = self.model_path
            save_checkpoint(target, model, info)
        except OSError as e:
            raise _os_error(target, e) from None
        return self.model_path

    def save_best(self, model, optimizer, meta: dict[str, Any], record: dict) -> None:
        try:
            save_checkpoint(self.best_path, model, {**meta, "epoch": record["epoch"],
                                                    "val_acc": record["val_acc"], "test_acc": record.get("test_acc")})
        except OSError as e:
            raise _os_error(self.best_path, e) from None

    def load_resume(self) -> tuple[TrainConfig, dict[str, Any], dict, dict, TrainState]:
        """(config, config.json, weights, optimizer state, training state) of a stopped run."""
        config_json = self.read_config()
        config = self.train_config()
        state_path = self.path / STATE
        if not state_path.is_file():
            raise Lenet5Error(f"{self.path}: no {STATE} yet (the run stopped before its first epoch ended); "
                              "start it again")
        tensors, meta = read_safetensors(state_path)
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        optim = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
        try:
            state = TrainState.from_json(json.loads(meta.get("train_state", "null")))
        except ValueError as e:
            raise Lenet5Error(f"{state_path}: training state is not valid JSON ({e})") from None
        except Lenet5Error as e:
            raise Lenet5Error(f"{state_path}: {e}") from None
        return config, config_json, weights, optim, state

    def prepare_resume(self, state: TrainState) -> None:
        """Remove what a kill left behind and cut the metrics back to ``state.epoch`` epochs, so
        no epoch is logged twice."""
        self._remove(*(p.name for p in self.path.glob(".*.tmp")))
        self._write_text(METRICS, "".join(json.dumps(r) + "\n" for r in state.history))
        kept = [r for r in self.batch_losses() if r["epoch"] <= state.epoch]
        self._write_text(BATCH_METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    def resumable(self) -> bool:
        """Whether ``lenet5 train --resume`` can continue the run (its resumable state is saved)."""
        return (self.path / STATE).is_file()

    def load_model(self, best: bool = False):
        """(model, metadata) of the run's final (or best) checkpoint."""
        return load_checkpoint(self.best_path if best else self.model_path)

    # -- a table row -------------------------------------------------------------------------
    def summary(self) -> dict:
        """One row for ``lenet5 compare``: what was trained on what, and how well and fast."""
        config = self.read_config()
        settings, data = config["settings"], config["data"]
        history = self.history()
        if not history:
            raise Lenet5Error(f"{self.path / METRICS}: no finished epoch")
        train_seconds = sum(h.get("train_seconds", h["seconds"]) for h in history)
        return {"run": self.path.name, "preset": settings.get("preset"), "dataset": data.get("dataset"),
                "train_size": data.get("train_size"), "test_size": data.get("test_size"),
                "epochs": len(history), "engine": settings.get("engine", "numpy"),
                "augment": settings.get("augment", "none"), "optimizer": settings.get("optimizer", "sgd"),
                "final_test_acc": history[-1].get("test_acc"),
                "best_test_acc": max((h["test_acc"] for h in history if "test_acc" in h), default=None),
                "final_val_acc": history[-1].get("val_acc"),
                "seconds": sum(h["seconds"] for h in history), "train_seconds_per_epoch": train_seconds / len(history)}

