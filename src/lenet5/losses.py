"""Training criteria: (outputs, labels) -> (mean loss, d loss / d outputs), and the class
probabilities each criterion implies.

Outputs are (N, K) with the batch first, as the model returns them. Every softmax here
subtracts the row maximum first (log-sum-exp), so no exponential overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def softmax(logits: np.ndarray, extra: float | None = None) -> np.ndarray:
    """softmax over each row of (N, K); with ``extra``, over K + 1 entries whose last is fixed
    at ``extra`` (the MAP criterion's rubbish class), returning only the K real classes."""
    top = logits.max(axis=1, keepdims=True)
    if extra is not None:
        top = np.maximum(top, extra)
    exp = np.exp(logits - top)
    total = exp.sum(axis=1, keepdims=True)
    if extra is not None:
        total += np.exp(extra - top)
    return exp / total


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and its gradient.

    logits (N, K), labels (N,) ints in [0, K) -> (loss, dlogits (N, K)).
    log softmax is computed with the log-sum-exp trick (subtract the row max first), so no
    exp ever overflows: log p = z − max − log Σ exp(z − max).  dlogits = (softmax − onehot)/N.
    """
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(z)
    sumexp = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float((np.log(sumexp[:, 0]) - z[rows, labels]).sum()) / n
    dlogits = exp / sumexp
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


def map_criterion(neg_dist: np.ndarray, labels: np.ndarray, j: float = 0.1) -> tuple[float, np.ndarray]:
    """LeNet-5's MAP criterion, from the RBF outputs z = −y (N, K):

        E = mean_p [ y_D + log(e^{−j} + Σ_i e^{−y_i}) ]

    The second term pushes wrong classes' distances up; e^{−j} is a "rubbish class" that
    keeps E from rewarding ever-larger distances. With z = −y this is a softmax
    cross-entropy over K + 1 entries, the extra one fixed at −j: computed with the max
    subtracted, so no exp overflows. dE/dz_i = p_i − [i = D], p_i = e^{z_i}/(e^{−j} + Σ e^{z}).
    """
    n = len(labels)
    top = np.maximum(neg_dist.max(axis=1, keepdims=True), -j)
    exp = np.exp(neg_dist - top)
    total = exp.sum(axis=1, keepdims=True) + np.exp(-j - top)
    rows = np.arange(n)
    loss = float((np.log(total[:, 0]) + top[:, 0] - neg_dist[rows, labels]).sum()) / n
    grad = exp / total
    grad[rows, labels] -= 1
    return loss, grad / n


def mse_criterion(neg_dist: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """The ML/MSE criterion: E = mean_p y_D (the distance to the correct centre)."""
    n = len(labels)
    rows = np.arange(n)
    grad = np.zeros_like(neg_dist)
    grad[rows, labels] = -1 / n
    return -float(neg_dist[rows, labels].sum()) / n, grad


@dataclass(frozen=True)
class Criterion:
    """A named criterion with what it says about the outputs.

    ``loss(outputs, labels) -> (loss, doutputs)``; ``probabilities(outputs)`` -> (N, K), the
    class posteriors the criterion implies (for MAP they leave out the rubbish class's share,
    so a row may sum to less than one).
    """

    name: str
    loss: LossFn
    probabilities: Callable[[np.ndarray], np.ndarray]


def cross_entropy() -> Criterion:
    return Criterion("cross-entropy", softmax_cross_entropy, softmax)


def map_(j: float = 0.1) -> Criterion:
    return Criterion("map", lambda z, labels: map_criterion(z, labels, j), lambda z: softmax(z, -j))


def mse(j: float = 0.1) -> Criterion:
    """MSE trains on y_D alone; its probabilities are read the MAP way (rubbish class at −j)."""
    return Criterion("mse", mse_criterion, lambda z: softmax(z, -j))


#: criterion factories by name; each takes the MAP constant j (ignored by cross-entropy)
CRITERIA: dict[str, Callable[[float], Criterion]] = {
    "cross-entropy": lambda j: cross_entropy(), "map": map_, "mse": mse}
