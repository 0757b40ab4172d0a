"""An exponential moving average of the weights, kept for evaluation (``--ema DECAY``).

After every step the average moves a little towards the network's current weights,

    θ̄ ← d·θ̄ + (1 − d)·θ,    d = min(decay, (1 + t)/(10 + t)) at step t,

(the warm-up of d keeps the first steps from pinning θ̄ to the initial weights), and the loop
evaluates and saves θ̄ instead of θ: the average of the last ~1/(1 − d) steps' weights is a
smoother point than the last step's, often a better one (Polyak & Juditsky 1992). Batch-norm
running statistics are averaged with the weights, so the averaged network is normalised by
statistics of its own time (integer counters are copied, not averaged).

``Averaged`` wraps any engine's optimizer and keeps the average beside the optimizer's own
state, so it is saved with it and a resumed run continues exactly. It works through the
engine protocol alone (``state_dict``/``load_state_dict``), so both engines share it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from .engine import Engine, Optimizer
from .errors import Lenet5Error

PREFIX = "ema."


class Averaged:
    """``optimizer`` plus an exponential moving average of ``model``'s weights (see module doc)."""

    def __init__(self, optimizer: Optimizer, model: Engine, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.inner, self.model, self.decay = optimizer, model, decay
        self.average = model.state_dict()
        self.steps = 0

    @property
    def lr(self) -> float:
        return self.inner.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.inner.lr = value

    def step(self) -> None:
        self.inner.step()
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for name, value in self.model.state_dict().items():
            avg = self.average[name]
            if np.issubdtype(avg.dtype, np.floating):
                avg += (1 - d) * (value - avg)
            else:  # a counter (batches tracked): the current one
                avg[...] = value

    def prepare_epoch(self, model: Engine, split, rng: np.random.Generator) -> None:
        self.inner.prepare_epoch(model, split, rng)

    @contextlib.contextmanager
    def evaluating(self, model: Engine) -> Iterator[None]:
        """``model`` holds the averaged weights inside the block, its own ones again after it."""
        live = model.state_dict()
        model.load_state_dict(self.average)
        try:
            yield
        finally:
            model.load_state_dict(live)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**self.inner.state_dict(), **{PREFIX + k: v.copy() for k, v in self.average.items()},
                PREFIX + "steps": np.array(self.steps, dtype=np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """The inner optimizer's state and the average (every array of the model, same shapes)."""
        mine = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
        steps = mine.pop("steps", None)
        wrong = ([f"missing {PREFIX}{k}" for k in sorted(set(self.average) - set(mine))]
                 + [f"unexpected {PREFIX}{k}" for k in sorted(set(mine) - set(self.average))]
                 + [f"{PREFIX}{k} has shape {v.shape}, not {self.average[k].shape}" for k, v in mine.items()
                    if k in self.average and v.shape != self.average[k].shape]
                 + ([f"missing {PREFIX}steps"] if steps is None else []))
        if wrong:
            raise Lenet5Error(f"the weight average (--ema) does not match the model: {wrong[0]}")
        self.inner.load_state_dict({k: v for k, v in state.items() if not k.startswith(PREFIX)})
        self.average = {k: np.array(v, dtype=self.average[k].dtype) for k, v in mine.items()}
        self.steps = int(np.asarray(steps).reshape(-1)[0])


def with_average(optimizer: Optimizer, model: Engine, decay: float) -> Optimizer:
    """``optimizer`` as it is (``decay`` 0: no average), or wrapped in ``Averaged``."""
    return Averaged(optimizer, model, decay) if decay else optimizer
