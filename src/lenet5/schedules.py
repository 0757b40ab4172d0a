"""Learning-rate schedules: functions from the step number (0, 1, ...) to a learning rate."""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int], float]
SCHEDULES = ("cosine", "constant", "step", "onecycle", "lecun1998")

#: the paper's learning rates for passes 1-2, 3-5, 6-8, 9-12 and 13 on (×1e-6)
_LECUN1998 = [(2, 500), (5, 200), (8, 100), (12, 50), (10**9, 10)]


def _cos(start: float, end: float, pct: float) -> float:
    """From start (pct 0) to end (pct 1) along half a cosine."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  steps_per_epoch: int = 1) -> Schedule:
    """A schedule over ``total_steps`` steps, peaking at ``base_lr``.

    - 'constant': base_lr throughout.
    - 'cosine':   base_lr·½(1 + cos(π·t/T)), from base_lr to 0. The default for SGD: a constant
                  rate of 0.1 leaves the last epochs of a short run bouncing by several points
                  of test accuracy; decaying it settles them.
    - 'step':     base_lr, ×0.1 after 50% and again after 75% of the steps.
    - 'onecycle': torch.optim.lr_scheduler.OneCycleLR's defaults: up from base_lr/25 to base_lr
                  over the first 30% (cosine), then down to base_lr/25e4.
    - 'lecun1998': the paper's rates by pass: 5e-4 (passes 1-2), 2e-4 (3-5), 1e-4 (6-8),
                  5e-5 (9-12), 1e-5 (13 on) — scaled by base_lr/5e-4.
    ``warmup_steps`` (not with 'onecycle', which warms up itself): a linear ramp from 0 first.
    """
    total_steps = max(1, total_steps)
    if name == "lecun1998":
        def by_pass(step: int) -> float:
            epoch = step // max(steps_per_epoch, 1) + 1
            return base_lr / 500 * next(rate for last, rate in _LECUN1998 if epoch <= last)
        return by_pass
    if name == "onecycle":
        start, low = base_lr / 25, base_lr / 25 / 1e4
        peak = 0.3 * total_steps - 1

        def onecycle(step: int) -> float:
            if step <= peak:
                return _cos(start, base_lr, step / peak if peak > 0 else 1.0)
            return _cos(base_lr, low, (step - peak) / max(total_steps - 1 - peak, 1e-12))
        return onecycle
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    warmup = min(warmup_steps, total_steps - 1)
    rest = total_steps - warmup

    def main(t: int) -> float:
        if name == "constant":
            return base_lr
        if name == "cosine":
            return base_lr * 0.5 * (1 + math.cos(math.pi * min(t, rest) / rest))
        return base_lr * 0.1 ** ((t >= 0.5 * rest) + (t >= 0.75 * rest))  # step

    if warmup <= 0:
        return main
    return lambda step: base_lr * (step + 1) / warmup if step < warmup else main(step - warmup)
