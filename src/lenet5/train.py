"""The training loop and evaluation: one loop for every engine, independent of the CLI.

>>> model = LeNet5("seed-tanh", seed=0)
>>> history = fit(model, data)                        # the preset's whole recipe, as `lenet5 train`
>>> history = fit(model, data, epochs=3, lr=0.05)     # ... with some options changed

One training step, whatever the engine (``lenet5.engine.Engine``):
prepare (and augment) the batch -> forward -> criterion -> backward -> optimizer step, with the
learning rate set from the schedule before the step. The step owns the criterion
(``lenet5.losses.Criterion``); it evaluates the engine's outputs where they are, so the torch
engine's steps stay on its device. The loop reads the losses back every ``READ_EVERY`` steps
(every step when they are plain floats), for the progress bar and the divergence guard.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np

from ._cpu import blas_single_thread
from .augment import Augment, join_draws, make_augment
from .data import Dataset, Split, batches
from .engine import Engine, Optimizer
from .errors import Lenet5Error
from .losses import Criterion
from .presets import TrainConfig, resolve
from .schedules import Schedule, make_schedule


#: a training pass prepares its steps in chunks of about this many images (for small batches,
#: preparing one step at a time cost more than the step: per-image SDLM with distortions)
CHUNK_IMAGES = 256
#: losses held on an engine's device are read back (one transfer) after this many steps
READ_EVERY = 25


class DivergenceError(Lenet5Error):
    """The loss became NaN or infinite."""


class Progress:
    """A tqdm bar on a terminal; on a pipe or file, a plain line every 25% instead."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None, done: int = 0) -> None:
        self.stream = stream or sys.stderr
        self.total, self.desc, self.done, self.enabled = total, desc, done, enabled
        self.bar = None
        self._next_mark = 0.25
        while self._next_mark * total <= done and self._next_mark < 1:
            self._next_mark += 0.25
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="batch", leave=False, file=self.stream)

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


TTA = ("none", "flip")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """(classes, classes) counts: row = true label, column = predicted label."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def evaluate(model: Engine, split: Split, batch_size: int = 500, tta: str = "none",
             criterion: Criterion | None = None) -> dict:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, cols: predicted).

    ``criterion``: the loss reported (default: the preset's own criterion).
    ``tta="flip"`` (test-time augmentation, for classes that look the same mirrored, such as
    Fashion-MNIST's): each image's outputs are the mean of the network's outputs for the image
    and for its left-right mirror; loss and accuracy are those of the averaged outputs.
    """
    if tta not in TTA:
        raise Lenet5Error(f"unknown test-time augmentation {tta!r}; choose one of: {', '.join(TTA)}")
    criterion = criterion or Criterion(model.spec.definition.criteria[0])
    n = len(split)
    confusion = np.zeros((10, 10), dtype=np.int64)
    total_loss = 0.0
    for idx in batches(n, batch_size):
        labels = split.labels[idx]
        outputs = model.infer(split.images[idx])
        if tta == "flip":
            outputs = (outputs + model.infer(np.ascontiguousarray(split.images[idx][:, :, ::-1]))) / 2
        loss, _ = criterion.loss(outputs, labels)
        total_loss += loss * len(idx)
        confusion += confusion_matrix(labels, outputs.argmax(axis=1))
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {"n": n, "loss": total_loss / max(n, 1), "accuracy": float(np.trace(confusion) / max(n, 1)),
            "per_class_accuracy": per_class.tolist(), "confusion": confusion.tolist()}


@dataclass
class Totals:
    """Running sums of a pass: loss × images, correct answers, images seen."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, loss: float, correct: int, seen: int) -> None:
        self.loss += loss * seen
        self.correct += correct
        self.seen += seen


@dataclass
class TrainState:
    """Where a run stands, enough to continue it exactly.

    ``epoch`` epochs are complete and ``batch`` batches of the next one are done; ``rng_state``
    is the shuffling generator's state at the start of that next epoch (so its permutation can
    be drawn again), ``partial`` the running totals of that epoch.
    """

    epoch: int = 0
    batch: int = 0
    rng_state: dict | None = None
    partial: Totals = field(default_factory=Totals)
    history: list[dict] = field(default_factory=list)
    best_val_acc: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> "TrainState":
        """Checked: a state of the wrong shape is a Lenet5Error, never a crash later."""
        try:
            if not isinstance(d, dict) or set(d) - {f.name for f in fields(cls)}:
                raise TypeError("not an object with the expected keys")
            state = cls(**{**d, "partial": Totals(**d.get("partial", {}))})
            ints = (state.epoch, state.batch, state.partial.correct, state.partial.seen)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
                raise TypeError("counters must be integers >= 0")
            if not isinstance(state.history, list) or not all(isinstance(r, dict) for r in state.history):
                raise TypeError("history must be a list of objects")
            if len(state.history) != state.epoch:
                raise ValueError(f"history has {len(state.history)} epochs, state says {state.epoch}")
            if state.rng_state is not None:
                np.random.default_rng().bit_generator.state = state.rng_state  # validates it
            return state
        except (TypeError, ValueError, KeyError) as e:
            raise Lenet5Error(f"training state is damaged ({e})") from None


class Interrupted(Lenet5Error):
    """Training stopped on request (Ctrl-C, SIGTERM) after a complete step; ``state`` resumes it."""

    def __init__(self, state: TrainState) -> None:
        super().__init__(f"interrupted at epoch {state.epoch + 1}, batch {state.batch}")
        self.state = state


@dataclass
class Hooks:
    """What a caller hears from ``fit``: every step, every epoch, and a way to stop it."""

    on_batch: Callable[[int, int, float], None] | None = None  # (epoch, batch, loss)
    on_epoch: Callable[[dict, TrainState], None] | None = None  # (record, state to resume from)
    should_stop: Callable[[], bool] | None = None  # polled after every complete step


def train_step(model: Engine, criterion: Criterion, optimizer: Optimizer, x: np.ndarray, labels: np.ndarray,
               global_size: int | None = None) -> tuple[Any, Any]:
    """One step on a prepared batch: forward, criterion, backward, update. Returns (loss, right
    answers) as the engine holds them (a float and an int, or 0-d tensors on its device).

    In data-parallel training a process holds only its shard of a global batch of
    ``global_size`` images; its gradient is rescaled so that averaging over the processes
    gives the gradient of the mean loss over the whole global batch.
    """
    outputs = model.forward(x)
    here = criterion.labels_for(outputs, labels)  # on the engine's device, once for loss and count
    loss, doutputs = criterion.loss(outputs, here)
    if global_size is not None and model.world > 1:
        doutputs *= len(labels) * model.world / global_size
    model.backward(doutputs)
    optimizer.step()
    return loss, criterion.correct(outputs, here)


@dataclass
class PassResult:
    totals: Totals
    done: int  # batches of the epoch done
    stopped: bool  # asked to stop


@dataclass
class _Loop:
    """What stays the same over every step of one ``fit``: the engine and its optimizer, the
    schedule, the seed of each step's randomness, the augmentation and the caller's hooks."""

    model: Engine
    criterion: Criterion
    optimizer: Optimizer
    lr_at: Schedule
    steps_per_epoch: int
    seed: int
    augment: Augment | None
    hooks: Hooks

    def run_pass(self, split: Split, order: list[np.ndarray], epoch: int, start: int, totals: Totals,
                 bar: Progress) -> PassResult:
        """Steps over order[start:] of one epoch. Each step's randomness (augmentation, dropout)
        comes from a generator seeded with (seed, epoch, batch), so any step can be replayed on
        its own. Steps are prepared a chunk at a time (about ``CHUNK_IMAGES`` images: one
        gather, one augmentation call with every step's own draws, one input coding), and with
        augmentation the next chunk is prepared on a helper thread while the current one
        trains. Stops only after a complete step, so the weights are never left half-updated."""
        model, hooks, augment = self.model, self.hooks, self.augment
        per_chunk = max(1, CHUNK_IMAGES // len(order[0])) if order else 1  # batches are never empty

        def inputs(first: int) -> list[tuple[np.ndarray, np.ndarray]]:
            """(x, labels) of steps first, first + 1, ... of the chunk that starts there."""
            steps = range(first, min(first + per_chunk, len(order)))
            shards = [model.shard(order[b]) for b in steps]
            idx = np.concatenate(shards)
            images, labels = split.images[idx], split.labels[idx]
            if augment is not None:
                draws = join_draws([augment.draw(len(i), np.random.default_rng([self.seed, epoch, b, 0, model.rank]))
                                    for b, i in zip(steps, shards)])
                images, labels = augment.apply(images, draws), augment.labels(labels, draws)
            cuts = np.cumsum([len(i) for i in shards])[:-1]
            x = model.spec.definition.prepare(images, model.spec.dtype)
            return list(zip(np.split(x, cuts), np.split(labels, cuts)))

        pending: list[tuple[int, Any, Any, int]] = []  # (batch, loss, correct, images) not yet read

        def settle() -> None:
            """Read the pending steps' losses (one transfer), check them, report them."""
            losses = self.criterion.values([p[1] for p in pending])
            right = self.criterion.values([p[2] for p in pending])
            for (b, _, _, n), loss, correct in zip(pending, losses, right):
                if not math.isfinite(loss):
                    raise DivergenceError(f"loss became {loss} at epoch {epoch}, batch {b + 1}; "
                                          "try a smaller learning rate (--lr)")
                totals.add(loss, int(correct), n)
                if hooks.on_batch is not None:
                    hooks.on_batch(epoch, b + 1, loss)
            bar.update(len(pending), loss=totals.loss / totals.seen, acc=totals.correct / totals.seen)
            pending.clear()

        with contextlib.ExitStack() as stack:
            # this engine spreads big batches over the cores itself (``_cpu.MicroBatches``), and on
            # a busy machine OpenBLAS's spinning threads made small-batch steps up to 10x slower
            # (measured: batch 64, 566 vs 6,055 images/s); a torch engine does not use NumPy's BLAS
            stack.enter_context(blas_single_thread())
            firsts = range(start, len(order), per_chunk)
            pool = pending_chunk = None
            if augment is not None and firsts:
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
                pending_chunk = pool.submit(inputs, firsts[0])
            for c, first in enumerate(firsts):
                if pending_chunk is not None:
                    chunk = pending_chunk.result()
                    pending_chunk = pool.submit(inputs, firsts[c + 1]) if c + 1 < len(firsts) else None
                else:
                    chunk = inputs(first)
                for b, (x, labels) in enumerate(chunk, first):
                    self.optimizer.lr = self.lr_at((epoch - 1) * self.steps_per_epoch + b)
                    model.seed_step([self.seed, epoch, b, 1])
                    loss, correct = train_step(model, self.criterion, self.optimizer, x, labels, len(order[b]))
                    pending.append((b, loss, correct, len(labels)))
                    if isinstance(loss, float) or len(pending) >= READ_EVERY:
                        settle()
                    if hooks.should_stop is not None and hooks.should_stop():
                        settle()
                        return PassResult(totals, b + 1, True)
            if pending:
                settle()
        return PassResult(totals, len(order), False)


def _check_model(model: Engine, config: TrainConfig) -> None:
    """The network is the engine's own (built with it), so a recipe asking for another one
    would be silently ignored: refuse it instead."""
    if config.spec != model.spec:
        raise Lenet5Error(f"the recipe is for the network {config.spec.to_json()} but the model is "
                          f"{model.spec.to_json()}: build it from the recipe (LeNet5.from_config(config))")


def fit(model: Engine, data: Dataset, config: TrainConfig | None = None, *, optimizer: Optimizer | str | None = None,
        val: Split | None = None, state: TrainState | None = None, hooks: Hooks | None = None,
        progress: bool = True, eval_batch_size: int = 500, **overrides: Any) -> list[dict]:
    """Train ``model`` on ``data.train`` with ``config``'s recipe, evaluating after every epoch.

    ``config``: a ``TrainConfig`` (default: the preset's own recipe, as ``lenet5 train`` uses
    it); keyword ``overrides`` change single options (``epochs=3, lr=0.05``). The loop reads
    epochs, batch size, learning rate and schedule, warm-up, augmentation and seed from it,
    and builds the optimizer it names, unless ``optimizer`` is an optimizer object (a string
    names one: ``optimizer="adam"``, like the other overrides). The learning rate of
    every step comes from the schedule with ``config.lr`` as its base.
    ``val``: a held-out split evaluated each epoch (``val_loss``, ``val_acc``; the best epoch's
    record gets ``best: True``). ``state``: continue a run exactly where it stopped.
    ``hooks``: per-step and per-epoch callbacks and a stop request; a stop raises
    ``Interrupted`` carrying the state to resume from.

    Returns one record per epoch (epoch, train_loss, train_acc, [val_loss, val_acc,] [test_loss,
    test_acc (unless ``test_each_epoch`` is off),] seconds, train_seconds).
    """
    if isinstance(optimizer, str):
        overrides["optimizer"], optimizer = optimizer, None
    if config is None:
        spec = model.spec
        config = resolve(spec.preset, **{"widths": spec.widths, "dropout": spec.dropout, "dtype": spec.dtype,
                                         **overrides})
    elif overrides:
        config = config.replace(**overrides)
    _check_model(model, config)
    if optimizer is None:
        optimizer = model.make_optimizer(config)
    criterion = Criterion(config.criterion_name, config.map_j)
    state = state or TrainState()
    rng = np.random.default_rng(config.seed)
    if state.rng_state is not None:
        rng.bit_generator.state = state.rng_state
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    if model.world > 1 and (len(data.train) % config.batch_size or config.batch_size) < model.world:
        raise Lenet5Error(f"--batch-size {config.batch_size}: every batch needs at least one image for each of "
                          f"the {model.world} processes")
    lr_at = make_schedule(config.schedule, config.lr, config.epochs * steps_per_epoch,
                          round(config.warmup_epochs * steps_per_epoch), steps_per_epoch)
    loop = _Loop(model, criterion, optimizer, lr_at, steps_per_epoch, config.seed, make_augment(config.augment),
                 hooks or Hooks())
    history = list(state.history)
    best = state.best_val_acc
    for epoch in range(state.epoch + 1, config.epochs + 1):
        start = time.perf_counter()
        epoch_rng = rng.bit_generator.state
        order = list(batches(len(data.train), config.batch_size, rng))
        resume_at = state.batch if epoch == state.epoch + 1 else 0
        totals = Totals(**asdict(state.partial)) if resume_at else Totals()
        model.train()
        if not resume_at:
            optimizer.prepare_epoch(model, data.train, np.random.default_rng([config.seed, epoch, 2]))
        bar = Progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", enabled=progress and model.rank == 0,
                       done=resume_at)
        try:
            result = loop.run_pass(data.train, order, epoch, resume_at, totals, bar)
        finally:
            bar.close()
        if result.done < len(order):
            raise Interrupted(TrainState(epoch - 1, result.done, epoch_rng, result.totals, history, best))
        train_seconds = time.perf_counter() - start
        loss_sum, correct, seen = model.all_sum([totals.loss, totals.correct, totals.seen])
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen}
        splits = {"val": val, "test": data.test if config.test_each_epoch else None}
        for key, split in splits.items():
            if split is not None:
                e = evaluate(model, split, eval_batch_size, criterion=criterion)
                record.update({f"{key}_loss": e["loss"], f"{key}_acc": e["accuracy"]})
        record.update(seconds=time.perf_counter() - start, train_seconds=train_seconds)
        if val is not None and (best is None or record["val_acc"] > best):
            record["best"] = True
            best = record["val_acc"]
        history.append(record)
        state = TrainState(epoch, 0, rng.bit_generator.state, Totals(), history, best)
        if loop.hooks.on_epoch is not None:
            loop.hooks.on_epoch(record, state)
        if result.stopped and epoch < config.epochs:  # asked to stop on the epoch's last step
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


def prepare_data(data: Dataset, config: TrainConfig) -> tuple[Dataset, Split | None]:
    """The run's training data as ``config`` asks: a seeded ``train_limit`` subset, then a
    seeded validation split of ``val_split``. Returns (dataset, validation split or None)."""
    train = subset(data.train, config.train_limit, np.random.default_rng(config.seed))
    val = None
    if config.val_split:
        train, val = split_validation(train, config.val_split, np.random.default_rng(config.seed))
    return replace(data, train=train), val
