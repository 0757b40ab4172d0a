"""The training loop and evaluation, independent of the CLI.

>>> model = LeNet5("seed-tanh", seed=0)
>>> opt = SGD(model.params(), model.grads(), lr=0.1, momentum=0.9)
>>> history = fit(model, opt, data, epochs=2, batch_size=64, seed=0)
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

import numpy as np

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


def train_epoch(model: LeNet5, optimizer, split: Split, batch_size: int, rng: np.random.Generator,
                progress: Progress | None = None, epoch: int = 1, schedule: Schedule | None = None,
                first_step: int = 0) -> tuple[float, float]:
    """One pass over the shuffled training split. Returns (mean loss, accuracy).

    ``schedule(t)`` sets the optimizer's learning rate before global step t (counted from
    ``first_step``).
    """
    total_loss, correct, seen = 0.0, 0, 0
    for step, idx in enumerate(batches(len(split), batch_size, rng), start=1):
        if schedule is not None:
            optimizer.lr = schedule(first_step + step - 1)
        labels = split.labels[idx]
        logits = model.forward(model.prepare(split.images[idx]))
        loss, dlogits = model.loss(logits, labels)
        if not math.isfinite(loss):
            raise DivergenceError(f"loss became {loss} at epoch {epoch}, batch {step}; "
                                  "try a smaller learning rate (--lr)")
        model.backward(dlogits)
        optimizer.step()
        total_loss += loss * len(idx)
        correct += int((logits.argmax(axis=1) == labels).sum())
        seen += len(idx)
        if progress is not None:
            progress.update(loss=total_loss / seen, acc=correct / seen)
    return total_loss / seen, correct / seen


def fit(model: LeNet5, optimizer, data: Dataset, epochs: int, batch_size: int, seed: int | None = 0,
        progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
        eval_batch_size: int = 500, schedule: str = "constant") -> list[dict]:
    """Train for ``epochs`` passes, evaluating on the test split after each one.

    ``schedule``: 'constant' keeps the optimizer's learning rate; 'cosine' decays it from
    there to 0 over the whole run (see ``lenet5.schedules``).

    Returns one dict per epoch (epoch, train_loss, train_acc, test_loss, test_acc, seconds)
    and calls ``on_epoch`` with each as soon as it is known.
    """
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    lr_at = make_schedule(schedule, optimizer.lr, epochs * steps_per_epoch)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        bar = Progress(steps_per_epoch, f"epoch {epoch}/{epochs}", enabled=progress)
        try:
            train_loss, train_acc = train_epoch(model, optimizer, data.train, batch_size, rng, bar, epoch,
                                                lr_at, (epoch - 1) * steps_per_epoch)
        finally:
            bar.close()
        train_seconds = time.perf_counter() - start
        test = evaluate(model, data.test, eval_batch_size)
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                  "test_loss": test["loss"], "test_acc": test["accuracy"],
                  "seconds": time.perf_counter() - start, "train_seconds": train_seconds}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


def subset(split: Split, limit: int | None, rng: np.random.Generator) -> Split:
    """A random (seeded) subset of ``limit`` examples; files sorted by class stay balanced."""
    if limit is None or limit >= len(split):
        return split
    idx = np.sort(rng.choice(len(split), size=limit, replace=False))
    return Split(split.images[idx], split.labels[idx], split.files)

