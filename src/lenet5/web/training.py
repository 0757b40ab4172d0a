"""Live training from the page: one ``lenet5 train`` subprocess at a time, watched through its files.

The worker is the ordinary command line (``python -m lenet5.cli train ... --out RUN_DIR``),
started with a lower CPU priority so that predictions stay quick while it trains. Stopping
sends SIGINT: the CLI finishes its step, saves a resumable checkpoint and exits with 130;
``lenet5 train --resume RUN_DIR`` continues it.

What the page sees comes from the run directory, re-read a few times a second through
``lenet5.runs.RunDir`` (unknown keys are passed on, a half-written last line waits for the next
read), and from the worker's exit status; its printed lines are never read for meaning:

- ``config.json`` appears once the data is loaded -> the state goes from "starting" to "running";
- ``metrics.jsonl``: one record per finished epoch -> an ``epoch`` event, with the test-set
  confusion matrix and C1's kernels of the weights just saved;
- ``batch_metrics.jsonl``: every batch's loss, per epoch -> a ``batches`` event;
- ``progress.json``: where the epoch under way stands (rewritten twice a second at most) -> a
  ``progress`` event when it changes;
- the exit status: 0 finished, 130 stopped (resumable once an epoch is saved), else failed (the
  worker's last line of output is passed on, verbatim, as the failure's detail).

Events carry increasing sequence numbers; a client that connects late gets the whole run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Lenet5Error
from ..runs import CONFIG, RunDir
from .models import ModelEntry, ModelRegistry, dataset_of, rounded

DATASETS = ("mnist", "fashion-mnist")
MAX_EPOCHS = 200
POLL_SECONDS = 0.2
#: seconds after SIGINT before a second SIGINT, then SIGKILL
STOP_GRACE = (15.0, 10.0)


class TrainingError(Lenet5Error):
    """A training request that cannot be done (bad settings: 400, unknown run: 404, not now: 409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Run:
    """A run directory this server created (the browser names it by ``id`` only)."""

    id: str
    dir: Path
    settings: dict[str, Any]
    model_id: str | None = None
    resumable: bool = False  # stopped before its epochs were done, with a saved state to go on from
    finished: bool = False  # all its epochs done, with a saved state (more epochs can follow)
    done: int = 0  # epochs finished (metrics.jsonl)
    note: str = ""  # why it cannot be resumed, in the page's words (when it cannot)

    @property
    def files(self) -> RunDir:
        """The run directory's files: every read goes through ``RunDir``."""
        return RunDir(self.dir)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) \
        else None


class TestSet:
    """The test split a run evaluates on, loaded once per data source (test images only)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def for_run(self, run: RunDir, dataset: str):
        try:
            config = run.read_config()
        except Lenet5Error:  # no config.json (yet): the dataset's usual directories
            config = {"settings": {}, "data": {}}
        source = str(config["data"].get("source") or "")
        data_dir = config["settings"].get("data_dir")
        key = f"{dataset}|{source}|{data_dir}"
        if key not in self._cache:
            self._cache[key] = self._load(dataset, source, data_dir)
        return self._cache[key]

    @staticmethod
    def _load(dataset: str, source: str, data_dir: str | None):
        from ..data import load_split
        from ..datasets import SAMPLE_DIR, candidates

        if source == "bundled-sample":
            directory = SAMPLE_DIR
        elif ":" in source and Path(source.split(":", 1)[1]).is_dir():
            directory = Path(source.split(":", 1)[1])
        elif data_dir:
            directory = Path(data_dir)
        else:
            found = [d for _, d in candidates(dataset) if d.is_dir()]
            if not found:
                return None
            directory = found[0]
        try:
            return load_split(directory, "test")
        except Lenet5Error:
            return None


def confusion_matrix(model, split, chunk: int = 500) -> list[list[int]]:
    """Rows: true class, columns: predicted, on the whole test split (one thread, in chunks)."""
    confusion = np.zeros((10, 10), dtype=np.int64)
    for i in range(0, len(split), chunk):
        predicted = model.infer(split.images[i:i + chunk]).argmax(axis=1)
        np.add.at(confusion, (split.labels[i:i + chunk], predicted), 1)
        time.sleep(0)  # let request threads have the interpreter between chunks
    return confusion.tolist()


@dataclass
class Job:
    """The worker process of one run, and what has been read from it so far."""

    run: Run
    process: subprocess.Popen
    epochs: int
    started: float = field(default_factory=time.monotonic)
    seen_epochs: set[int] = field(default_factory=set)
    seen_batch_epochs: set[int] = field(default_factory=set)
    file_errors: set[str] = field(default_factory=set)
    progress: dict | None = None  # progress.json as last read
    resuming: bool = False
    output_tail: list[str] = field(default_factory=list)  # the worker's last lines, kept verbatim
    tail_lock: threading.Lock = field(default_factory=threading.Lock)
    stop_requested: float | None = None
    asked_twice: bool = False


class TrainingManager:
    """Starts, watches and stops one training worker at a time; collects its events."""

    def __init__(self, runs_dir: Path, registry: ModelRegistry, nice: int = 10,
                 python: str = sys.executable, data_dir: str | Path | None = None) -> None:
        self.runs_dir = Path(runs_dir).absolute()  # workers and later reads agree whatever the cwd
        self.data_dir = Path(data_dir) if data_dir else None  # MNIST's files, for runs on "mnist"
        self.registry = registry
        self.nice = nice
        self.python = python
        self.runs: dict[str, Run] = {}
        self.job: Job | None = None
        self.state = "idle"  # idle, starting, running, stopping, finished, stopped, failed
        self.message = ""
        self.detail = ""
        self.events: list[dict] = []
        self.seq = 0
        self._lock = threading.RLock()
        self._tests = TestSet()
        self._run_counter = 0
        self._closed = False
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    @property
    def active(self) -> bool:
        """Whether a worker is starting, running or stopping (and this process watches it)."""
        return self.state in ("starting", "running", "stopping")

    # -- events ------------------------------------------------------------------------------
    def _emit(self, kind: str, data: dict) -> None:
        with self._lock:
            self.seq += 1
            self.events.append({"seq": self.seq, "event": kind, "data": data})

    def events_after(self, seq: int) -> list[dict]:
        with self._lock:
            if self.events and self.events[0]["seq"] > seq + 1:  # the client missed a reset: resend all
                return list(self.events)
            return [e for e in self.events if e["seq"] > seq]

    def status(self) -> dict:
        with self._lock:
            job = self.job
            return {"state": self.state, "message": self.message, "detail": self.detail,
                    "run": self._run_info(job.run) if job else None,
                    "epochs": job.epochs if job else None,
                    "runs": [self._run_info(r) for r in self.runs.values()],
                    "seq": self.seq}

    @staticmethod
    def _run_info(run: Run) -> dict:
        return {"id": run.id, "name": run.dir.name, "settings": run.settings, "model_id": run.model_id,
                "resumable": run.resumable, "done": run.done, "note": run.note}

    @staticmethod
    def _inspect(run: Run) -> None:
        """How far a run got and whether it can go on, from its files (``done``, ``resumable``, ``note``)."""
        files = run.files
        try:
            run.done = max((r["epoch"] for r in files.history(live=True)), default=0)
        except Lenet5Error:
            run.done = 0
        total = run.settings.get("epochs")
        run.resumable, run.finished, run.note = False, False, ""
        if not files.resumable():
            run.note = "It stopped before its first epoch ended: nothing was saved to continue from."
        elif isinstance(total, int) and run.done >= total:
            run.finished, run.note = True, f"It has finished all its {total} epochs."
        else:
            try:
                files.train_config()  # settings this version of lenet5 can still train with
            except Lenet5Error:
                run.note = "It was made with settings this version of lenet5 no longer offers."
            else:
                run.resumable = True

    def _set_state(self, state: str, message: str = "", detail: str = "") -> None:
        with self._lock:
            self.state, self.message, self.detail = state, message, detail
            self._emit("state", {"state": state, "message": message, "detail": detail,
                                 "run": self._run_info(self.job.run) if self.job else None,
                                 "epochs": self.job.epochs if self.job else None})

    # -- commands ----------------------------------------------------------------------------
    def start(self, preset: str, dataset: str, epochs: int, train_limit: int | None = None) -> dict:
        from ..model import PRESETS

        if preset not in PRESETS:
            raise TrainingError(f"unknown preset {preset[:40]!r}; choose one of: {', '.join(PRESETS)}")
        if dataset not in DATASETS:
            raise TrainingError(f"unknown dataset {dataset[:40]!r}; choose one of: {', '.join(DATASETS)}")
        if not 1 <= epochs <= MAX_EPOCHS:
            raise TrainingError(f"epochs must be 1..{MAX_EPOCHS}, got {epochs}")
        if train_limit is not None and not 1 <= train_limit <= 1_000_000:
            raise TrainingError(f"train_limit must be a positive number of images, got {train_limit}")
        with self._lock:
            self._check_idle()
            self._run_counter += 1
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = self.runs_dir / f"{stamp}-{preset}-{self._run_counter}"
            n = 1
            while run_dir.exists():
                n += 1
                run_dir = self.runs_dir / f"{stamp}-{preset}-{self._run_counter}-{n}"
            settings = {"preset": preset, "dataset": dataset, "epochs": epochs, "train_limit": train_limit}
            run = Run(f"run{self._run_counter}", run_dir, settings)
            self.runs[run.id] = run
            argv = ["train", "--preset", preset, "--dataset", dataset, "--epochs", str(epochs),
                    "--out", str(run_dir), "--no-plots"]
            if train_limit:
                argv += ["--train-limit", str(train_limit)]
            if self.data_dir is not None and dataset == "mnist":
                argv += ["--data-dir", str(self.data_dir)]
            self._launch(run, argv, epochs)
            return self.status()

    def resume(self, run_id: str, epochs: int | None = None) -> dict:
        """Continue a stopped run, to its own number of epochs or to ``epochs`` (which may also
        extend a finished run). Refused, in the page's words, where it cannot work."""
        with self._lock:
            self._check_idle()
            run = self.runs.get(run_id)
            if run is None:
                raise TrainingError(f"unknown run {run_id[:40]!r}", 404)
            self._inspect(run)
            total = epochs or int(run.settings.get("epochs") or 1)
            if not 1 <= total <= MAX_EPOCHS:
                raise TrainingError(f"epochs must be 1..{MAX_EPOCHS}, got {total}")
            if not (run.resumable or run.finished):
                raise TrainingError(f"Run {run.dir.name} cannot be resumed. {run.note}", 409)
            if total <= run.done:
                raise TrainingError(f"Run {run.dir.name} has finished all its {run.done} epochs; to train it "
                                    f"further, ask for more than {run.done}.", 409)
            argv = ["train", "--resume", str(run.dir), "--no-plots"] + (["--epochs", str(epochs)] if epochs else [])
            run.settings = {**run.settings, "epochs": total}
            self._launch(run, argv, total, resuming=True)
            return self.status()

    def stop(self) -> dict:
        with self._lock:
            job = self.job
            if job is None or self.state not in ("starting", "running"):
                raise TrainingError("no training run is going", 409)
            self._signal(job, signal.SIGINT)
            job.stop_requested = time.monotonic()
            self._set_state("stopping", "stopping after the current step")
            return self.status()

    def shutdown(self, timeout: float = 10.0) -> RunDir | None:
        """Stop a running worker (it saves its checkpoint) and wait for it, killing it if it hangs.
        Returns the directory of the run it stopped, if any."""
        self._closed = True
        job = self.job
        if job is None or job.process.poll() is not None:
            return None
        self._signal(job, signal.SIGINT)
        try:
            job.process.wait(timeout)
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        return job.run.files

    def discover(self) -> None:
        """Runs already in ``runs_dir`` (an earlier server's, same ``--runs-dir``): listed, resumable,
        and their models on the page's list (loaded when first used)."""
        for run_dir in sorted(p for p in self.runs_dir.iterdir() if p.is_dir()):
            files = RunDir(run_dir)
            try:
                settings = files.read_config()["settings"]
            except Lenet5Error:  # not a run directory, or one without its config.json
                continue
            self._run_counter += 1
            run = Run(f"run{self._run_counter}", run_dir,
                      {k: settings.get(k) for k in ("preset", "dataset", "epochs", "train_limit")})
            self._inspect(run)
            if files.model_path.is_file():
                entry = self.registry.add(run_dir.name, None, {"settings": settings}, source="training",
                                          loader=files.load_model, prefix="run")
                run.model_id = entry.id
            self.runs[run.id] = run

    def _check_idle(self) -> None:
        if self._closed:
            raise TrainingError("the server is shutting down", 409)
        if self.job is not None and self.job.process.poll() is None:
            raise TrainingError("a training run is already going; stop it first", 409)

    # -- the worker --------------------------------------------------------------------------
    def _launch(self, run: Run, argv: list[str], epochs: int, resuming: bool = False) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            # no preexec_fn: Python code run between fork and exec can deadlock on a lock that
            # another thread of this server held at the fork (seen: a watcher thread in NumPy)
            process = subprocess.Popen([self.python, "-m", "lenet5.cli", *argv, "--quiet"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, text=True, errors="replace")
        except OSError as e:
            raise TrainingError(f"cannot start the training worker: {e.strerror or e}") from None
        if self.nice and hasattr(os, "setpriority"):  # lower the worker's priority from here instead
            try:
                niceness = os.getpriority(os.PRIO_PROCESS, process.pid) + self.nice
                os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
            except OSError:
                pass
        run.resumable, run.note = False, ""
        job = Job(run, process, epochs, resuming=resuming)
        # a resumed run already has epochs on disk: they are sent again, as part of this run
        self.job = job
        self.events = []
        self._emit("start", {"run": self._run_info(run), "epochs": epochs})
        if resuming:
            self._set_state("running", f"resuming after epoch {run.done}")
        else:
            self._set_state("starting", "loading the data")
        threading.Thread(target=self._keep_tail, args=(job,), daemon=True).start()
        threading.Thread(target=self._watch, args=(job,), daemon=True, name=f"lenet5-watch-{run.id}").start()

    @staticmethod
    def _signal(job: Job, sig: int) -> None:
        try:
            job.process.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass

    @staticmethod
    def _keep_tail(job: Job) -> None:
        """Keep the worker's last lines of output (so that its pipe never fills): shown verbatim
        when it fails, never read for meaning."""
        for line in job.process.stdout:
            with job.tail_lock:
                job.output_tail = (job.output_tail + [line.rstrip("\n")])[-20:]

    def _watch(self, job: Job) -> None:
        """Poll the run directory until the worker has exited."""
        try:
            while True:
                exited = job.process.poll() is not None
                self._read_files(job)
                if exited:
                    break
                self._escalate_stop(job)
                time.sleep(POLL_SECONDS)
            time.sleep(POLL_SECONDS)  # the tail reader takes the last lines
            self._read_files(job)
            self._finish(job)
        except Exception as e:  # a watcher must never die silently
            self._set_state("failed", "watching the run failed (a bug: see the server's log)",
                            f"{type(e).__name__}: {e}")

    def _escalate_stop(self, job: Job) -> None:
        if job.stop_requested is None:
            return
        waited = time.monotonic() - job.stop_requested
        if waited > sum(STOP_GRACE):
            job.process.kill()
        elif waited > STOP_GRACE[0] and not job.asked_twice:
            self._signal(job, signal.SIGINT)  # a second Ctrl-C aborts at once
            job.asked_twice = True

    def _read_files(self, job: Job) -> None:
        files = job.run.files
        if self.state == "starting" and (files / CONFIG).is_file():
            self._set_state("running", "training")  # the worker has its data and has begun
        try:
            batches, history, progress = files.batch_losses(live=True), files.history(live=True), files.progress()
        except Lenet5Error as e:  # a damaged file: say so once (the run's name, not its path), keep watching
            text = str(e).replace(str(files.path), files.path.name)
            if text not in job.file_errors:
                job.file_errors.add(text)
                self._emit("log", {"level": "warning", "text": text})
            return
        for rec in batches:
            if rec["epoch"] not in job.seen_batch_epochs:
                job.seen_batch_epochs.add(rec["epoch"])
                self._emit("batches", {"epoch": rec["epoch"], "loss": [round(v, 5) if _number(v) is not None
                                                                       else None for v in rec["loss"]]})
        if progress is not None and progress != job.progress:
            job.progress = progress
            self._emit("progress", {k: progress[k] for k in ("epoch", "batch", "batches")}
                       | {"loss": round(progress["loss"], 5)})
        fresh = [rec for rec in history if rec["epoch"] not in job.seen_epochs]
        for i, rec in enumerate(fresh):
            job.seen_epochs.add(rec["epoch"])
            job.run.done = max(job.run.done, rec["epoch"])
            if self.state == "starting":
                self._set_state("running", "training")
            record = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()
                      if isinstance(v, (int, float, str, bool)) or v is None}
            if i == len(fresh) - 1:  # the checkpoint on disk is this epoch's (earlier ones: resumed history)
                record.update(self._epoch_model(job, rec["epoch"]))
            self._emit("epoch", record)

    def _epoch_model(self, job: Job, epoch: int) -> dict:
        """Load the checkpoint just saved: update the run's model entry; C1 kernels and confusion matrix."""
        try:
            model, meta = job.run.files.load_model()
        except Lenet5Error:
            return {}
        entry = self._model_entry(job.run, model, meta, epoch)
        out: dict[str, Any] = {"model_id": entry.id, "kernels": {"shape": list(model.params()["c1.weight"].shape),
                                                                 "values": rounded(model.params()["c1.weight"].ravel())}}
        try:
            split = self._tests.for_run(job.run.files, dataset_of(meta))
        except Exception:  # no test set, no matrix: the curves still come
            split = None
        if split is not None:
            out["confusion"] = confusion_matrix(model.replica(), split)  # one thread: predictions keep the other
        return out

    def _model_entry(self, run: Run, model, meta: dict, epoch: int) -> ModelEntry:
        name = f"{run.dir.name} (epoch {meta.get('epoch', epoch)})"
        meta = {**meta, "epoch": meta.get("epoch", epoch)}
        if run.model_id is not None:
            entry = self.registry.get(run.model_id)
            entry.replace(model, meta, name)
        else:
            entry = self.registry.add(name, model, meta, source="training", prefix="run")
            run.model_id = entry.id
        return entry

    def _finish(self, job: Job) -> None:
        code = job.process.returncode
        self._inspect(job.run)
        run = job.run
        if code == 0:
            self._set_state("finished", f"finished: {run.done} epochs")
        elif code == 130 or (job.stop_requested is not None and code in (-signal.SIGINT, -signal.SIGKILL)):
            if run.resumable:
                self._set_state("stopped", f"stopped after epoch {run.done}; Resume continues it")
            else:
                self._set_state("stopped", "stopped before the first epoch ended: nothing was saved")
        else:
            with job.tail_lock:
                lines = [line for line in job.output_tail if line.strip()]
            detail = lines[-1][:500] if lines else f"exit status {code}"
            self._set_state("failed", "training stopped with an error", detail)
