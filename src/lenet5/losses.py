"""Training criteria: (outputs, labels) -> (mean loss, d loss / d outputs), and the class
probabilities a network's outputs imply.

Outputs are (N, K) with the batch first, as the model returns them. Every softmax here
subtracts the row maximum first (log-sum-exp), so no exponential overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np


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
    n = len(labels)
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


# --------------------------------------------------------------------------- torch
def torch_loss(name: str, outputs, labels, j: float):
    """The same criteria written with torch's own ops (log-sum-exp inside ``F.cross_entropy``
    and ``torch.logsumexp``), as a scalar tensor on the outputs' device."""
    import torch
    import torch.nn.functional as F

    rows = torch.arange(len(labels), device=outputs.device)
    if name == "cross-entropy":
        return F.cross_entropy(outputs, labels)
    if name == "mse":
        return -outputs[rows, labels].mean()
    extra = torch.full((len(labels), 1), -j, dtype=outputs.dtype, device=outputs.device)
    return (torch.logsumexp(torch.cat([outputs, extra], 1), 1) - outputs[rows, labels]).mean()


# --------------------------------------------------------------------------- the criterion
@dataclass(frozen=True)
class Criterion:
    """A training criterion by name ("cross-entropy", "map", "mse"), with the MAP constant j.

    ``loss(outputs, labels) -> (loss, doutputs)`` works on whatever arrays the engine returns:
    NumPy arrays (the functions above; the loss a float), or torch tensors, evaluated with
    torch on the tensors' own device (the loss a 0-d tensor, its gradient from torch's autograd
    through the criterion alone), so a training step on a GPU never copies outputs to the host.
    ``correct(outputs, labels)`` counts right answers the same way (an int, or a 0-d tensor).
    """

    name: str = "cross-entropy"
    map_j: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in CRITERIA:
            raise ValueError(f"unknown criterion {self.name!r}; choose one of: {', '.join(CRITERIA)}")

    def loss(self, outputs, labels):
        if isinstance(outputs, np.ndarray):
            if self.name == "cross-entropy":
                return softmax_cross_entropy(outputs, labels)
            if self.name == "map":
                return map_criterion(outputs, labels, self.map_j)
            return mse_criterion(outputs, labels)
        import torch

        labels = self.labels_for(outputs, labels)
        leaf = outputs.detach().requires_grad_()
        with torch.enable_grad():
            loss = torch_loss(self.name, leaf, labels, self.map_j)
            (doutputs,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), doutputs

    @staticmethod
    def values(numbers: list) -> list[float]:
        """Losses or counts as Python floats: floats as they are, tensors with one transfer."""
        if not numbers or not hasattr(numbers[0], "device"):
            return [float(v) for v in numbers]
        import torch

        return torch.stack(numbers).double().tolist()

    def correct(self, outputs, labels):
        """How many rows' largest output is the label."""
        if isinstance(outputs, np.ndarray):
            return int((outputs.argmax(axis=1) == labels).sum())
        return (outputs.argmax(dim=1) == self.labels_for(outputs, labels)).sum()

    @staticmethod
    def labels_for(outputs, labels):
        """``labels`` where ``outputs`` are: NumPy labels as they are for NumPy outputs, a tensor
        on the outputs' device for torch ones (a tensor already there is passed through, so a
        step copies its labels to the device once)."""
        if isinstance(outputs, np.ndarray) or not isinstance(labels, np.ndarray):
            return labels
        import torch

        return torch.as_tensor(labels, device=outputs.device).long()


#: the criteria by name; the first is what a logits network trains with
CRITERIA = ("cross-entropy", "map", "mse")


def probabilities(output: str, outputs: np.ndarray, map_j: float = 0.1) -> np.ndarray:
    """Class probabilities (N, K) from a network's outputs (N, K), by what the outputs are
    (``Preset.output``): softmax of "logits"; for "rbf" outputs (minus the RBF distances) the
    MAP criterion's posterior, a softmax over the K classes and a rubbish class fixed at −j that
    keeps its share (so a row may sum to less than one: the network's doubt, said honestly)."""
    if output == "logits":
        return softmax(outputs)
    if output == "rbf":
        return softmax(outputs, -map_j)
    raise ValueError(f"unknown output kind {output!r}")
