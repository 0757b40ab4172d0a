"""Optimizers: they own the update rule and read parameters and gradients by name.

Layers never update themselves; an optimizer is handed the model's ``params()`` and
``grads()`` dictionaries (the live arrays) and updates every parameter the same way.
"""

from __future__ import annotations

import math

import numpy as np


class SGD:
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    Same rule as torch.optim.SGD (dampening 0):
        g ← ∇θ + λ·θ                 (weight decay λ)
        v ← μ·v + g                  (momentum μ; v starts as g on the first step)
        θ ← θ − η·v                  (or θ − η·(g + μ·v) with nesterov=True)
    """

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        if set(params) != set(grads):
            raise ValueError("params and grads must have the same names")
        self.params, self.grads = params, grads
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.velocity: dict[str, np.ndarray] = {}

    def step(self) -> None:
        for name, p in self.params.items():
            g = self.grads[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity.get(name)
                if v is None:
                    v = self.velocity[name] = g.copy()
                else:
                    v *= self.momentum
                    v += g
                g = g + self.momentum * v if self.nesterov else v
            p -= self.lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        """Momentum buffers, keyed 'velocity.<param name>'."""
        return {f"velocity.{name}": v.copy() for name, v in self.velocity.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.velocity = {k.removeprefix("velocity."): np.array(v, dtype=self.params[k.removeprefix("velocity.")].dtype)
                         for k, v in state.items() if k.startswith("velocity.")}
