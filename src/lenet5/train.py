"""The training loop and evaluation, independent of the CLI.

>>> model = LeNet5("seed-tanh", seed=0)
>>> opt = SGD(model.params(), model.grads(), lr=0.1, momentum=0.9)
>>> history = fit(model, opt, data, epochs=2, batch_size=64, seed=0)
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ._cpu import blas_single_thread
from .data import Dataset, Split, batches
from .errors import Lenet5Error
from .model import LeNet5
from .schedules import Schedule, make_schedule


class DivergenceError(Lenet5Error):
    """The loss became NaN or infinite."""


class Progress:
    """A tqdm bar on a terminal; on a pipe or file, a plain line every 25% instead."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.desc, self.done, self.enabled = total, desc, 0, enabled
        self.bar = None
        self._next_mark = 0.25
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, file=self.stream)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)
        elif self.enabled and self.done >= self._next_mark * self.total and self.done < self.total:
            extra = " ".join(f"{k} {v:.4f}" for k, v in postfix.items())
            print(f"{self.desc}: {self.done}/{self.total} batches {extra}".rstrip(), file=self.stream, flush=True)
            while self._next_mark * self.total <= self.done:
                self._next_mark += 0.25

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(model: LeNet5, split: Split, batch_size: int = 500) -> dict:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, cols: predicted)."""
    n = len(split)
    confusion = np.zeros((10, 10), dtype=np.int64)
    total_loss = 0.0
    for idx in batches(n, batch_size):
        labels = split.labels[idx]
        logits = model.infer(split.images[idx])
        loss, _ = model.loss(logits, labels)
        total_loss += loss * len(idx)
        np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"n": n, "loss": total_loss / n, "accuracy": float(np.trace(confusion) / n),
            "per_class_accuracy": per_class.tolist(), "confusion": confusion.tolist()}


@dataclass
class TrainState:
    """Where a run stands, enough to continue it exactly.

    ``epoch`` epochs are complete and ``batch`` batches of the next one are done; ``rng_state``
    is the shuffling generator's state at the start of that next epoch (so its permutation can
    be drawn again), ``partial`` the running (loss sum, correct, seen) of that epoch.
    """

    epoch: int = 0
    batch: int = 0
    rng_state: dict | None = None
    partial: list[float] = field(default_factory=lambda: [0.0, 0, 0])
    history: list[dict] = field(default_factory=list)
    best_val_acc: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainState":
        return cls(**d)


class Interrupted(Lenet5Error):
    """Training stopped on request (Ctrl-C) after a complete step; ``state`` resumes it."""

    def __init__(self, state: TrainState) -> None:
        super().__init__(f"interrupted at epoch {state.epoch + 1}, batch {state.batch}")
        self.state = state


def train_epoch(model: LeNet5, optimizer, split: Split, batch_size: int, rng: np.random.Generator,
                progress: Progress | None = None, epoch: int = 1, schedule: Schedule | None = None,
                first_step: int = 0) -> tuple[float, float]:
    """One pass over the shuffled training split. Returns (mean loss, accuracy).

    ``schedule(t)`` sets the optimizer's learning rate before global step t (counted from
    ``first_step``).
    """
    totals = _run_batches(model, optimizer, split, list(batches(len(split), batch_size, rng)), 0, epoch,
                          schedule, first_step, progress, [0.0, 0, 0], None)
    return totals[0] / totals[2], totals[1] / totals[2]


def _run_batches(model, optimizer, split: Split, order: list[np.ndarray], start: int, epoch: int,
                 schedule: Schedule | None, first_step: int, progress: Progress | None, totals: list,
                 should_stop: Callable[[], bool] | None, on_batch: Callable[[int, int, float], None] | None = None,
                 augment: Callable | None = None, seed: int = 0) -> list:
    """Steps over order[start:]; returns [loss sum, correct, seen, batches done, stopped].

    Each step's randomness (augmentation, dropout) comes from a generator seeded with
    (seed, epoch, batch), so any step can be replayed on its own. With augmentation, the next
    batch is prepared on a helper thread while the current one trains.
    Stops early when ``should_stop()`` turns true after a complete step, so the weights are
    never left half-updated.
    """
    def inputs(b: int) -> np.ndarray:
        images = split.images[order[b]]
        if augment is not None:
            images = augment(images, np.random.default_rng([seed, epoch, b, 0]))
        return model.prepare(images)

    with contextlib.ExitStack() as stack:
        pool = pending = None
        if augment is not None:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            stack.enter_context(blas_single_thread())  # the helper thread has a core of its own
            pending = pool.submit(inputs, start) if start < len(order) else None
        for b in range(start, len(order)):
            idx = order[b]
            if pending is not None:
                x = pending.result()
                pending = pool.submit(inputs, b + 1) if b + 1 < len(order) else None
            else:
                x = inputs(b)
            if schedule is not None:
                optimizer.lr = schedule(first_step + b)
            if getattr(model, "stochastic", False):
                model.seed_step([seed, epoch, b, 1])
            labels = split.labels[idx]
            logits = model.forward(x)
            loss, dlogits = model.loss(logits, labels)
            if not math.isfinite(loss):
                raise DivergenceError(f"loss became {loss} at epoch {epoch}, batch {b + 1}; "
                                      "try a smaller learning rate (--lr)")
            model.backward(dlogits)
            optimizer.step()
            totals[0] += loss * len(idx)
            totals[1] += int((logits.argmax(axis=1) == labels).sum())
            totals[2] += len(idx)
            if on_batch is not None:
                on_batch(epoch, b + 1, loss)
            if progress is not None:
                progress.update(loss=totals[0] / totals[2], acc=totals[1] / totals[2])
            if should_stop is not None and should_stop():
                return [*totals[:3], b + 1, True]
    return [*totals[:3], len(order), False]


def fit(model: LeNet5, optimizer, data: Dataset, epochs: int, batch_size: int, seed: int | None = 0,
        progress: bool = True, on_epoch: Callable[[dict, TrainState], None] | None = None,
        eval_batch_size: int = 500, schedule: str = "constant", val: Split | None = None,
        state: TrainState | None = None, should_stop: Callable[[], bool] | None = None,
        on_batch: Callable[[int, int, float], None] | None = None, augment: Callable | None = None,
        warmup_steps: int = 0) -> list[dict]:
    """Train for ``epochs`` passes, evaluating on the test split after each one.

    ``schedule``: 'constant' keeps the optimizer's learning rate; 'cosine' decays it from
    there to 0 over the whole run (see ``lenet5.schedules``). ``val``: a held-out split,
    evaluated each epoch (``val_loss``, ``val_acc``). ``state``: continue a run exactly where
    it stopped. ``should_stop``: polled after every step; when true, raises ``Interrupted``
    carrying the state to resume from. ``on_batch(epoch, batch, loss)`` follows every step.
    ``augment(images, rng)``: a random transform of each training batch (``lenet5.augment``).

    Returns one dict per epoch (epoch, train_loss, train_acc, test_loss, test_acc, seconds)
    and calls ``on_epoch(record, state)`` as soon as each epoch is done.
    """
    state = state or TrainState()
    rng = np.random.default_rng(seed)
    step_seed = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    if state.rng_state is not None:
        rng.bit_generator.state = state.rng_state
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    lr_at = make_schedule(schedule, optimizer.lr, epochs * steps_per_epoch, warmup_steps,  # optimizer.lr: base
                          steps_per_epoch)
    history = list(state.history)
    for epoch in range(state.epoch + 1, epochs + 1):
        start = time.perf_counter()
        epoch_rng = rng.bit_generator.state
        order = list(batches(len(data.train), batch_size, rng))
        resume_at = state.batch if epoch == state.epoch + 1 else 0
        totals = list(state.partial) if resume_at else [0.0, 0, 0]
        bar = Progress(steps_per_epoch, f"epoch {epoch}/{epochs}", enabled=progress)
        if hasattr(model, "train"):
            model.train()
        if hasattr(optimizer, "prepare_epoch") and not resume_at:  # SDLM: curvature for this pass
            optimizer.prepare_epoch(model, data.train, np.random.default_rng([step_seed, epoch, 2]))
        if resume_at:
            bar.done = resume_at
        try:
            totals = _run_batches(model, optimizer, data.train, order, resume_at, epoch, lr_at,
                                  (epoch - 1) * steps_per_epoch, bar, totals, should_stop, on_batch, augment,
                                  step_seed)
        finally:
            bar.close()
        if totals[3] < len(order):
            raise Interrupted(TrainState(epoch - 1, totals[3], epoch_rng, totals[:3], history, state.best_val_acc))
        train_seconds = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": totals[0] / totals[2], "train_acc": totals[1] / totals[2]}
        if val is not None:
            v = evaluate(model, val, eval_batch_size)
            record.update(val_loss=v["loss"], val_acc=v["accuracy"])
        test = evaluate(model, data.test, eval_batch_size)
        record.update(test_loss=test["loss"], test_acc=test["accuracy"], seconds=time.perf_counter() - start,
                      train_seconds=train_seconds)
        history.append(record)
        best = state.best_val_acc
        if val is not None and (best is None or record["val_acc"] > best):
            record["best"] = True
            best = record["val_acc"]
        state = TrainState(epoch, 0, rng.bit_generator.state, [0.0, 0, 0], history, best)
        if on_epoch is not None:
            on_epoch(record, state)
        if totals[4] and epoch < epochs:  # asked to stop on the epoch's last step
            raise Interrupted(state)
    return history


def split_validation(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """Hold out ``fraction`` of a split (chosen at random, seeded) for validation."""
    n_val = int(round(fraction * len(split)))
    if not 0 < n_val < len(split):
        raise Lenet5Error(f"--val-split {fraction}: leaves {n_val} of {len(split)} images for validation")
    perm = rng.permutation(len(split))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (Split(split.images[train_idx], split.labels[train_idx], split.files),
            Split(split.images[val_idx], split.labels[val_idx], split.files))


def subset(split: Split, limit: int | None, rng: np.random.Generator) -> Split:
    """A random (seeded) subset of ``limit`` examples; files sorted by class stay balanced."""
    if limit is None or limit >= len(split):
        return split
    idx = np.sort(rng.choice(len(split), size=limit, replace=False))
    return Split(split.images[idx], split.labels[idx], split.files)

