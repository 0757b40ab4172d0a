"""Gradient checking: compare a layer's backward with central finite differences.

    >>> layer = Conv2d(1, 3, 5, dtype=np.float64)          # float64: differences need the digits
    >>> errors = check_layer(layer, np.random.default_rng(0).standard_normal((1, 8, 8, 2)))
    >>> max(errors.values()) < 1e-6
    True

The loss is L = Σ y·r for a fixed random r, so dL/dy = r: one backward call gives every
input and parameter gradient, and each is compared with (L(θ+ε) − L(θ−ε)) / 2ε.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def numerical_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6,
                   entries: Sequence[int] | None = None) -> np.ndarray:
    """Central differences of the scalar f() with respect to x (perturbed in place, restored).

    With ``entries`` (flat indices), only those entries, as a 1-D array.
    """
    flat = x.reshape(-1)  # a view: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_grad needs a contiguous array (it perturbs x in place)")
    idx = range(flat.size) if entries is None else entries
    grad = np.zeros(len(idx))
    for out, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad[out] = (plus - minus) / (2 * eps)
    return grad.reshape(x.shape) if entries is None else grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a-b| / max(|a|, |b|): one number for a whole gradient, robust to tiny entries.

    A gradient that is zero in exact arithmetic (a conv bias right before batch norm) is
    round-off on both sides: when both are below 1e-8 everywhere they agree.
    """
    scale = max(np.abs(a).max(), np.abs(b).max())
    if scale < 1e-8:
        return 0.0
    return float(np.abs(a - b).max() / scale)


def check_layer(layer, x: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Relative errors of a layer's backward against finite differences, for its input ("x")
    and each parameter: {name: error}. Use float64 layers and inputs."""
    rng = rng or np.random.default_rng(0)
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r.copy())
    loss = lambda: float(np.sum(layer.forward(x) * r))  # noqa: E731
    errors = {}
    if dx is not None:
        if dx.shape != x.shape:
            raise ValueError(f"{layer!r}: backward returned shape {dx.shape} for an input of shape {x.shape}")
        errors["x"] = rel_error(dx, numerical_grad(loss, x))
    for name, p in layer.params.items():
        analytic = layer.grads[name].copy()
        errors[name] = rel_error(analytic, numerical_grad(loss, p))
    return errors
