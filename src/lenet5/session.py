"""A training session, as ``lenet5 train`` runs it: options -> config -> engine, data and run
directory -> the training loop -> checkpoints, metrics and figures.

Each piece lives in its own module; this one only wires them together in order:
``presets.resolve`` (the recipe), ``datasets.load_dataset`` (the data), ``make_engine`` (NumPy,
PyTorch, or PyTorch under torchrun), ``runs.RunDir`` (every file of the run), ``train.fit`` (the
one loop). Signals: the first Ctrl-C, SIGTERM or SIGHUP stops after the current step and saves
a resumable checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .data import Split
from .engine import Engine
from .errors import CheckpointError, Lenet5Error, clip
from .presets import DEFAULT_PRESET, REMOVED_AUGMENTS, REMOVED_OPTIONS, TrainConfig, resolve
from .runs import STATE, RunDir
from .train import DivergenceError, Hooks, Interrupted, TrainState, fit, prepare_data


#: progress.json is rewritten at most this often (seconds): cheap beside any step, fresh for a page
PROGRESS_SECONDS = 0.5


def log(message: str) -> None:
    print(f"lenet5: {message}", file=sys.stderr, flush=True)


def make_engine(config: TrainConfig) -> Engine:
    """The engine ``config`` asks for; under torchrun, the torch engine joins the process group."""
    if config.engine == "numpy":
        from .model import LeNet5

        return LeNet5.from_config(config)
    from . import ddp  # a clear error without PyTorch

    if ddp.under_torchrun():
        rank, world, device = ddp.setup(config.device)
        return ddp.DDPModel(config.replace(device=str(device)), rank, world)
    from .torch_replica import TorchModel

    return TorchModel.from_config(config)


class StopRequest:
    """While active, the first SIGINT/SIGTERM/SIGHUP asks training to stop after the current
    step; a second SIGINT aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log(f"{signal.Signals(signum).name}: stopping after this step and saving (Ctrl-C again to abort at once)")

    def __enter__(self) -> "StopRequest":
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


@dataclass
class Resumed:
    run_dir: RunDir
    config: TrainConfig
    meta: dict[str, Any]
    weights: dict
    optim: dict
    state: TrainState


def _resume(path: str | Path, options: dict[str, Any]) -> Resumed:
    """Open a stopped run; options that contradict its settings are refused (only --epochs
    may grow)."""
    run_dir = RunDir.open(path)
    _check_not_removed(run_dir)
    config, config_json, weights, optim, state = run_dir.load_resume()
    conflicts = [k for k, v in options.items() if k != "epochs" and v != getattr(config, k)]
    if conflicts:
        said = ", ".join(f"--{k.replace('_', '-')} {options[k]} (run: {getattr(config, k)})" for k in conflicts)
        raise Lenet5Error(f"--resume {path}: a resumed run keeps its settings; conflicting: {said}. "
                          "Only --epochs may change")
    if "epochs" in options:
        config = config.replace(epochs=options["epochs"])
    if state.epoch >= config.epochs and state.batch == 0:
        raise Lenet5Error(f"--resume {path}: the run already finished {state.epoch} epochs; "
                          "pass --epochs N to train further")
    meta = {"settings": {**config_json["settings"], "epochs": config.epochs}, "data": config_json["data"]}
    return Resumed(run_dir, config, meta, weights, optim, state)


def _check_not_removed(run_dir: RunDir) -> None:
    """A run that used an option this version no longer offers cannot be continued as it began
    (its checkpoints still evaluate and predict)."""
    settings = run_dir.read_config()["settings"]
    used = [f"--{k.replace('_', '-')} {settings[k]}" for k, off in REMOVED_OPTIONS.items()
            if settings.get(k, off) not in (off, None)]
    if settings.get("augment") in REMOVED_AUGMENTS:
        used.append(f"--augment {settings['augment']}")
    if used:
        raise Lenet5Error(f"--resume {run_dir.path}: the run used {', '.join(used)}, which this version no longer "
                          "offers (its measured results are in docs/results.md), so it cannot continue as it began; "
                          "its checkpoints still evaluate and predict")


def train(options: dict[str, Any], *, resume: str | Path | None = None, out: str | Path | None = None,
          force: bool = False, force_data: bool = False, progress: bool = True, plots: bool = True,
          command: Sequence[str] = ()) -> int:
    """Run ``lenet5 train``: ``options`` are the TrainConfig fields the user set. Returns the
    exit status (0, or 130 when stopped by a signal after saving)."""
    from .datasets import load_dataset

    resumed = _resume(resume, options) if resume else None
    given_dir = None
    if not resumed and options.get("data_dir") is not None:
        # files say what they are: the recognised dataset is the run's, and --augment auto follows it
        given_dir = load_dataset(options.get("dataset"), options["data_dir"], progress=progress)
        options = {**options, "dataset": given_dir.name}
    config = resumed.config if resumed else resolve(options.get("preset", DEFAULT_PRESET), **options)
    engine = make_engine(config)
    main = engine.rank == 0
    if resumed and main:  # under torchrun every rank reads the run; rank 0 alone holds and writes it
        resumed.run_dir.lock()
    clock = {"data": -time.perf_counter()}
    if not main:  # rank 0 fetches the data first, so ranks never download into the cache at once
        _barrier(engine)
    data = given_dir or load_dataset(config.dataset, config.data_dir, progress=progress and main)
    clock["data"] += time.perf_counter()
    if main:
        _barrier(engine)
    if resumed and not force_data:
        _check_same_data(resumed, data.describe())
    data, val = prepare_data(data, config)
    optimizer = engine.make_optimizer(config)
    described = {**data.describe(), "val_size": len(val) if val else 0}

    run_dir: RunDir | None = None
    if resumed:
        try:
            engine.load_state_dict(resumed.weights)
        except (KeyError, ValueError) as e:  # the state of another preset or widths than config.json's
            raise CheckpointError(f"{resumed.run_dir.path / STATE}: does not fit the run's config.json "
                                  f"({clip(e.args[0] if e.args else e, 150)})") from None
        try:
            optimizer.load_state_dict(resumed.optim)
        except (Lenet5Error, KeyError, ValueError) as e:
            raise CheckpointError(f"{resumed.run_dir.path / STATE}: {clip(e.args[0] if e.args else e, 150)}") from None
        state, meta = resumed.state, resumed.meta
        if main:
            run_dir = resumed.run_dir
            run_dir.prepare_resume(state)
            where = f"epoch {state.epoch + 1}" + (f", batch {state.batch + 1}" if state.batch else "")
            log(f"resuming {run_dir.path} at {where}")
    else:
        state = None
        if main:
            run_dir = RunDir.create(out, config.preset, force)
            meta = run_dir.write_config(config, described, list(command), engine.world)
        else:
            meta = {}
    if main:
        log(f"training {engine!r}{f' on {engine.world} processes' if engine.world > 1 else ''} on {data.name} "
            f"({len(data.train)} train{f' / {len(val)} validation' if val else ''} / {len(data.test)} test "
            f"images from {data.source}) -> {run_dir.path}")

    batch_losses: list[float] = []

    def on_epoch(record: dict, st: TrainState) -> None:
        clock["training"] = clock.get("training", 0) + record["train_seconds"]
        clock["evaluation"] = clock.get("evaluation", 0) + record["seconds"] - record["train_seconds"]
        if run_dir is not None:
            start = time.perf_counter()
            run_dir.log_epoch(record, batch_losses)
            run_dir.save(engine, optimizer, st, meta)
            if record.get("best"):
                run_dir.save_best(engine, optimizer, meta, record)
            clock["saving"] = clock.get("saving", 0) + time.perf_counter() - start
            val_text = f"  val acc {100 * record['val_acc']:6.2f}%" if "val_acc" in record else ""
            test_text = (f"  test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:6.2f}%"
                         if "test_acc" in record else "")
            print(f"epoch {record['epoch']:>3}/{config.epochs}  train loss {record['train_loss']:.4f} acc "
                  f"{100 * record['train_acc']:6.2f}%{val_text}{test_text}  {record['seconds']:.1f}s", flush=True)
        batch_losses.clear()

    steps = math.ceil(len(data.train) / config.batch_size)
    shown = {"at": 0.0}

    def on_batch(epoch: int, batch: int, loss: float) -> None:
        batch_losses.append(loss)
        now = time.monotonic()
        if run_dir is not None and (now - shown["at"] >= PROGRESS_SECONDS or batch == steps):
            shown["at"] = now
            run_dir.write_progress(epoch, batch, steps, loss)

    stop = StopRequest()
    hooks = Hooks(on_batch=on_batch, on_epoch=on_epoch, should_stop=stop)
    try:
        with stop:
            fit(engine, data, config, optimizer=optimizer, val=val, state=state, hooks=hooks, progress=progress)
    except Interrupted as e:
        if run_dir is not None:
            path = run_dir.save(engine, optimizer, e.state, meta)
            log(f"{e}; saved {path}. Resume with: lenet5 train --resume {run_dir.path}")
        return 130
    except DivergenceError as e:
        kept = f"; the last good checkpoint is {run_dir.model_path}" if run_dir and run_dir.model_path.exists() else ""
        raise Lenet5Error(f"{e}{kept}") from None
    finally:
        if engine.world > 1:
            from . import ddp

            ddp.teardown()
    if run_dir is None:
        return 0
    log(f"saved {run_dir.model_path}" + (f" (best validation epoch: {run_dir.best_path})" if val else ""))
    if plots:
        start = time.perf_counter()
        if _plot(run_dir, data.test):
            clock["figures"] = time.perf_counter() - start
    run_dir.unlock()
    log("time: " + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in clock.items()))
    return 0


def _barrier(engine: Engine) -> None:
    if engine.world > 1:
        from . import ddp

        ddp.barrier()


def _check_same_data(resumed: Resumed, described: dict) -> None:
    """A resumed run must see the very files it started with (their SHA-256 is in config.json)."""
    before = resumed.meta["data"].get("files") or {}
    now = described.get("files") or {}
    changed = sorted(name for name in set(before) | set(now) if before.get(name) != now.get(name))
    if changed:
        raise Lenet5Error(f"--resume {resumed.run_dir.path}: the data files changed since the run started "
                          f"({', '.join(changed)}); pass --force-data to continue on the new files")


def _plot(run_dir: RunDir, test: Split) -> bool:
    """Draw the run's figures; False (with a hint) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("install matplotlib (pip install 'lenet5[plots]') for plots of this run")
        return False
    from .plots import plot_run

    paths = plot_run(run_dir.path, test=test)  # the test set in memory: no second copy of the data
    log(f"plots in {run_dir.path}: {', '.join(p.name for p in paths)}")
    return True
