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


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and its gradient.

    logits (N, K), labels (N,) ints in [0, K) -> (loss, dlogits (N, K)).
    log softmax is computed with the log-sum-exp trick (subtract the row max first), so no
    exp ever overflows: log p = z − max − log Σ exp(z − max).  dlogits = (softmax − q)/N, q the
    target: one-hot, or with label smoothing ε (as torch's ``label_smoothing``) the mixture
    q = (1 − ε)·onehot + ε/K, so the loss is (1 − ε)·(−log p_y) + ε·mean_k(−log p_k).
    """
    n, k = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(z)
    sumexp = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    log_norm = np.log(sumexp[:, 0])
    loss = float((log_norm - z[rows, labels]).sum()) / n
    dlogits = exp / sumexp
    if smoothing:
        loss = (1 - smoothing) * loss + smoothing * float((log_norm - z.mean(axis=1)).sum()) / n
        dlogits -= smoothing / k
    dlogits[rows, labels] -= 1 - smoothing
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


def cross_entropy(label_smoothing: float = 0.0, **_: float) -> Criterion:
    if not label_smoothing:
        return Criterion("cross-entropy", softmax_cross_entropy, softmax)
    return Criterion("cross-entropy", lambda z, labels: softmax_cross_entropy(z, labels, label_smoothing), softmax)


def map_(map_j: float = 0.1, **_: float) -> Criterion:
    return Criterion("map", lambda z, labels: map_criterion(z, labels, map_j), lambda z: softmax(z, -map_j))


def mse(map_j: float = 0.1, **_: float) -> Criterion:
    """MSE trains on y_D alone; its probabilities are read the MAP way (rubbish class at −j)."""
    return Criterion("mse", mse_criterion, lambda z: softmax(z, -map_j))


#: criterion factories by name, called with keyword settings (map_j, label_smoothing); each
#: takes the ones it uses
CRITERIA: dict[str, Callable[..., Criterion]] = {"cross-entropy": cross_entropy, "map": map_, "mse": mse}
