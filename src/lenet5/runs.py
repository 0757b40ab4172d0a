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

import fcntl
import json
import math
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from .checkpoint import (atomic_write, check_widths_fit, load_checkpoint, read_safetensors,
                         save_checkpoint, save_tensors)
from .data import check_file, file_kind, read_bounded
from .errors import Lenet5Error, RunFileError, clip, clip_repr, os_error
from .presets import CONFIG_FIELDS, TrainConfig, resolve
from .train import TrainState

MODEL = "model.safetensors"
STATE = "train_state.safetensors"
BEST = "best.safetensors"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
BATCH_METRICS = "batch_metrics.jsonl"
PROGRESS = "progress.json"
LOCK = ".lock"
RUN_FILES = (MODEL, STATE, BEST, CONFIG, METRICS, BATCH_METRICS, PROGRESS)
#: the figures ``lenet5.plots`` draws into a run
FIGURES = ("curves.png", "errors.png", "kernels.png", "confusion.png", "feature_maps.png", "wrong.png")
#: the largest file of each kind a reader accepts: far above what any run writes (metrics.jsonl:
#: ~300 bytes an epoch; batch_metrics.jsonl: ~20 bytes a step, 60,000 steps an epoch at batch
#: size 1), far below what would strain memory
LIMITS = {CONFIG: 1 << 20, METRICS: 16 << 20, BATCH_METRICS: 64 << 20, PROGRESS: 4 << 10}


# --------------------------------------------------------------------------- value checks
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: what each checked key must hold: (test, description)
NUMBER = (lambda v: _is_number(v) and not math.isnan(v), "a number")
SECONDS = (lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "a finite number of seconds >= 0")
FRACTION = (lambda v: _is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]")
COUNT = (_is_count, "an integer >= 0")
TEXT = (lambda v: isinstance(v, str), "a string")
FLAG = (lambda v: isinstance(v, bool), "true or false")
OBJECT = (lambda v: isinstance(v, dict), "an object")
LOSSES = (lambda v: isinstance(v, list) and all(_is_number(x) for x in v), "a list of numbers")
OPTIONAL_TEXT = (lambda v: v is None or isinstance(v, str), "a string or null")

#: keys every reader relies on, by file (required ones first, then the optional ones' types)
CONFIG_KEYS = {"settings": OBJECT, "data": OBJECT}
SETTINGS_KEYS = {"preset": TEXT}
SETTINGS_TYPES = {"engine": TEXT, "augment": TEXT, "optimizer": TEXT, "dataset": TEXT, "epochs": COUNT,
                  "test_each_epoch": FLAG, "data_dir": OPTIONAL_TEXT, "world_size": COUNT}
DATA_TYPES = {"dataset": TEXT, "source": TEXT, "train_size": COUNT, "test_size": COUNT, "val_size": COUNT,
              "files": OBJECT}
METRICS_KEYS = {"epoch": COUNT, "train_loss": NUMBER, "train_acc": FRACTION, "seconds": SECONDS}
METRICS_TYPES = {"train_seconds": SECONDS, "test_loss": NUMBER, "test_acc": FRACTION, "val_loss": NUMBER,
                 "val_acc": FRACTION, "best": FLAG}
BATCH_KEYS = {"epoch": COUNT, "loss": LOSSES}
PROGRESS_KEYS = {"epoch": COUNT, "batch": COUNT, "batches": COUNT, "loss": NUMBER}


def check_keys(where: str, obj: dict, required: dict, optional: dict | None = None) -> dict:
    """obj, if each required key is present and every listed key holds the type it must; else
    one ``RunFileError`` line naming ``where`` (the file, and line) and the key."""
    for key, (ok, what) in required.items():
        if key not in obj:
            raise RunFileError(f"{where}: '{key}' is missing")
        if not ok(obj[key]):
            raise RunFileError(f"{where}: '{key}' must be {what}, got {clip_repr(obj[key])}")
    for key, (ok, what) in (optional or {}).items():
        if key in obj and not ok(obj[key]):
            raise RunFileError(f"{where}: '{key}' must be {what}, got {clip_repr(obj[key])}")
    return obj


def json_object(where: str, text: str) -> dict:
    """``text`` parsed as one JSON object; else one ``RunFileError`` line naming ``where``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise RunFileError(f"{where} is not valid JSON (truncated?)") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{where} is not a JSON object")
    return value


def _listing(path: Path) -> list[str]:
    """The names in a directory, sorted; one-line error if it cannot be listed."""
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        raise os_error(path, e) from None


def _is_own(name: str) -> bool:
    """Whether a file name is one a lenet5 run writes (its files, figures, their temporaries)."""
    ours = (*RUN_FILES, *FIGURES)
    return name in ours or name.endswith(".tmp") and any(name.startswith(f".{o}.") for o in ours)


def _open_private(path: Path, flags: int) -> BinaryIO:
    """A run's own file opened for writing: never through a symlink, never anything but a regular
    file (O_NONBLOCK: a FIFO planted there cannot make open block)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise Lenet5Error(f"{clip(path)}: is a symlink; a run's own files must be regular files") from None
        raise os_error(path, e) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Lenet5Error(f"{clip(path)}: is {file_kind(mode)}; a run's own files must be regular files")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+b" if flags & os.O_RDWR else "ab")


class RunDir:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: BinaryIO | None = None

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
        """A new run directory, locked. An existing non-empty ``out`` needs ``force``, and must be
        an earlier lenet5 run (see ``_check_replaceable_run``); then, with its lock held, the files a
        run writes are removed from it, and nothing else."""
        if out is None:
            base = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{preset}"
            path, n = base, 1
            while os.path.lexists(path):
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        else:
            path = Path(out)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if os.path.islink(path):
                    raise Lenet5Error(f"--out {clip(path)}: is a dangling symlink") from None
                st = None
            except OSError as e:
                raise Lenet5Error(f"--out {os_error(path, e)}") from None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise Lenet5Error(f"--out {clip(path)}: exists and is not a directory")
            if st is not None and _listing(path):
                if not force:
                    raise Lenet5Error(f"--out {clip(path)}: directory is not empty; choose another or pass --force "
                                      "to overwrite the lenet5 run in it")
                cls._check_replaceable_run(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(path, e) from None
        run = cls(path)
        run.lock()
        if force:
            run._remove(*run._own_names())
        return run

    @staticmethod
    def _check_replaceable_run(path: Path) -> None:
        """--force replaces only a lenet5 run: a directory with a readable config.json and a .lock,
        both regular files (or one holding nothing but files a run writes, as a run stopped
        before its config was written leaves). Anything else is refused, saying what is there."""
        if all(_is_own(n) or n == LOCK for n in _listing(path)):
            return
        try:
            RunDir(path).read_config()
            check_file(path / LOCK, RunFileError, "lock file")
        except Lenet5Error:
            names = _listing(path)
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise Lenet5Error(f"--out {clip(path)}: not a lenet5 run (no valid {CONFIG} and {LOCK}), so --force "
                              f"will not touch it; it holds {clip(shown, 100)}. Choose another directory") from None

    def _own_names(self) -> list[str]:
        """The names of the files a lenet5 run writes that are present here (temporaries included)."""
        return [n for n in _listing(self.path) if _is_own(n)]

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (for resume, plot, compare)."""
        path = Path(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise Lenet5Error(f"{clip(path)}: no such run directory") from None
        except OSError as e:
            raise os_error(path, e) from None
        if not stat.S_ISDIR(st.st_mode):
            raise Lenet5Error(f"{clip(path)}: not a directory")
        return cls(path)

    def lock(self) -> None:
        """Hold an exclusive lock for the life of this process: one run per directory."""
        lock_path = self.path / LOCK
        f = _open_private(lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = clip(f.read(64).decode("utf-8", "replace").strip(), 20) or "?"
            f.close()
            raise Lenet5Error(f"{clip(self.path)}: in use by another lenet5 run (process {holder}); "
                              "wait for it to finish or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n".encode())
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
                raise os_error(self.path / name, e) from None

    def _write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, lambda tmp: Path(tmp).write_text(text))

    def _append(self, name: str, line: str) -> None:
        try:
            with _open_private(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as f:
                f.write(line.encode())
        except OSError as e:
            raise os_error(self.path / name, e) from None

    def _read(self, name: str) -> bytes | None:
        """The bytes of one of the run's files (None if there is none): a regular file, within the
        run directory (a symlink may point only inside it), at most ``LIMITS[name]`` bytes."""
        path = self._inside(name)
        if not os.path.lexists(path):
            return None
        return read_bounded(path, LIMITS[name], RunFileError, "run file")

    def _inside(self, name: str) -> Path:
        """The path of one of the run's files, refused if it is a symlink leading out of the run."""
        path = self.path / name
        if os.path.islink(path):
            inside, target = os.path.realpath(self.path), os.path.realpath(path)
            if os.path.commonpath([inside, target]) != inside:
                raise RunFileError(f"{clip(path)}: is a symlink to {clip(target, 80)}, outside the run directory")
        return path

    # -- config ------------------------------------------------------------------------------
    def write_config(self, config: TrainConfig, data: dict[str, Any], command: list[str], world: int = 1) -> dict:
        """config.json, written once when the run starts; returns the metadata every
        checkpoint of the run carries (settings and data)."""
        meta = {"settings": {**config.to_json(), "world_size": world}, "data": data}
        self._write_text(CONFIG, json.dumps({**meta, "command": command,
                                             "started": datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")
        return meta

    def read_config(self) -> dict[str, Any]:
        """config.json as written by ``write_config``, checked for the keys (and their types)
        readers rely on."""
        path = self.path / CONFIG
        data = self._read(CONFIG)
        if data is None:
            raise RunFileError(f"{clip(path)}: missing (not a run directory?)")
        try:
            config = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RunFileError(f"{clip(path)}: not UTF-8 text (byte {e.start})") from None
        except ValueError as e:
            raise RunFileError(f"{clip(path)}: not valid JSON ({clip(e, 80)})") from None
        except RecursionError:
            raise RunFileError(f"{clip(path)}: not valid JSON (nested too deeply)") from None
        if not isinstance(config, dict):
            raise RunFileError(f"{clip(path)}: expected an object with 'settings' and 'data' objects")
        where = clip(path)
        check_keys(where, config, CONFIG_KEYS)
        check_keys(f"{where}: settings", config["settings"], SETTINGS_KEYS, SETTINGS_TYPES)
        check_keys(f"{where}: data", config["data"], {}, DATA_TYPES)
        return config

    def train_config(self) -> TrainConfig:
        """The run's settings as a checked TrainConfig."""
        settings = self.read_config()["settings"]
        try:
            return resolve(settings.get("preset"), **{k: v for k, v in settings.items() if k in CONFIG_FIELDS})
        except Lenet5Error as e:
            raise Lenet5Error(f"{self.path / CONFIG}: {e}") from None

    # -- metrics -----------------------------------------------------------------------------
    def _read_jsonl(self, name: str, required: dict, optional: dict, live: bool = False) -> list[dict]:
        """The records of a JSONL file (none if it is missing), each checked against ``required``
        and ``optional`` (see ``check_keys``). ``live``: the file may still be being appended to,
        so a last line without its newline is left for a later read."""
        path = self.path / name
        data = self._read(name) or b""
        if live and not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise RunFileError(f"{clip(path)}: not UTF-8 text (byte {e.start})") from None
        records = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{clip(path)}: line {i}"
            records.append(check_keys(where, json_object(where, line), required, optional))
        return records

    def history(self, live: bool = False) -> list[dict]:
        """The finished epochs, from metrics.jsonl. ``live``: read while the run is training
        (a last line still being written is ignored)."""
        return self._read_jsonl(METRICS, METRICS_KEYS, METRICS_TYPES, live)

    def batch_losses(self, live: bool = False) -> list[dict]:
        """Per epoch, {"epoch": k, "loss": [loss of every step]}, from batch_metrics.jsonl.
        ``live``: as for ``history``."""
        return self._read_jsonl(BATCH_METRICS, BATCH_KEYS, {}, live)

    def write_progress(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        """progress.json: where the epoch under way stands (replaced whole, a few times a second at
        most), for whoever follows the run (the web page) between two lines of metrics.jsonl."""
        self._write_text(PROGRESS, json.dumps({"epoch": epoch, "batch": batch, "batches": batches, "loss": loss}))

    def progress(self) -> dict | None:
        """progress.json as ``write_progress`` wrote it (None if there is none yet), checked."""
        data = self._read(PROGRESS)
        if data is None:
            return None
        where = clip(self.path / PROGRESS)
        return check_keys(where, json_object(where, data.decode("utf-8", "replace")), PROGRESS_KEYS)

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
        # atomic_write makes any failure one line naming the file
        save_tensors(self.path / STATE, tensors, {"format": "lenet5-train-state", "train_state": state.to_json(), **info})
        save_checkpoint(self.model_path, model, info)
        return self.model_path

    def save_best(self, model, optimizer, meta: dict[str, Any], record: dict) -> None:
        save_checkpoint(self.best_path, model, {**meta, "epoch": record["epoch"],
                                                "val_acc": record["val_acc"], "test_acc": record.get("test_acc")})

    def load_resume(self) -> tuple[TrainConfig, dict[str, Any], dict, dict, TrainState]:
        """(config, config.json, weights, optimizer state, training state) of a stopped run."""
        config_json = self.read_config()
        config = self.train_config()
        state_path = self._inside(STATE)
        if not os.path.lexists(state_path):
            raise Lenet5Error(f"{clip(self.path)}: no {STATE} yet (the run stopped before its first epoch ended); "
                              "start it again")
        tensors, meta = read_safetensors(state_path)
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        optim = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
        # the config's widths decide the model built next: they must be the state's own
        check_widths_fit(state_path, getattr(config, "widths", None), {k: v.shape for k, v in weights.items()})
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
        return load_checkpoint(self._inside(BEST if best else MODEL))

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

