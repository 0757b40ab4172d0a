"""The 1998 network on one image at a time, written out flat: SDLM's per-pattern training.

The paper updates the weights after every single pattern. Through the general layers, a batch
of one pays for machinery it does not need (batch-last layouts, the row-window im2col built
for many images, one Python call per layer and per cache). ``OneImage`` computes exactly the
same forward and backward for one image with a few dozen NumPy operations, reading the
model's parameter arrays and writing its gradient arrays in place, so the optimizer, the
checkpoints and everything else see no difference (``tests/test_persample.py`` checks it
against the layers to float round-off).

Layout: channels last, (H, W, C), so each convolution is one im2col matrix times the weights;
the matrix is gathered with a precomputed index array (one ``np.take``, faster for these small
shapes than copying a strided window view):

    C1   a1 = cols(x, 5×5) · W1ᵀ + b1               (784, 6)     y1 = f(a1), f = A·tanh(S·)
    S2   a2 = c2 · Σ_2×2 y1 + b2                     (14, 14, 6)  y2 = f(a2)
    C3   a3 = cols(y2, 5×5) · (W3·mask)ᵀ + b3        (100, 16)    y3 = f(a3)
    S4   a4 = c4 · Σ_2×2 y3 + b4                     (5, 5, 16)   y4 = f(a4)
    C5   a5 = W5 · y4 + b5                           (120,)       y5 = f(a5)
    F6   a6 = W6 · y5 + b6                           (84,)        y6 = f(a6)
    RBF  z_k = −Σ_j (y6_j − c_kj)²                   (10,)

and backward runs the chain rule down the same list (``_input_grad`` sends C3's gradient back
to the S2 positions each kernel tap read).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .lecun1998 import A, S

_INDEX: dict[tuple[int, int, int, int], np.ndarray] = {}


def _cols(x: np.ndarray, k: int) -> np.ndarray:
    """(H, W, C) -> im2col matrix (Ho·Wo, C·k·k), columns ordered (c, i, j) like W.reshape(F, -1):
    cols[(y, x), (c, i, j)] = x[y + i, x + j, c]."""
    h, w, c = x.shape
    idx = _INDEX.get((h, w, c, k))
    if idx is None:  # where each entry comes from, found once by windowing the flat positions
        flat = np.arange(h * w * c).reshape(h, w, c)
        idx = _INDEX[h, w, c, k] = sliding_window_view(flat, (k, k), axis=(0, 1)).reshape(-1, c * k * k)
    return np.take(np.ascontiguousarray(x).reshape(-1), idx)


def _block_sums(y: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H/2, W/2, C): the sum of every 2×2 block (three adds of strided views)."""
    out = y[0::2, 0::2] + y[1::2, 0::2]
    out += y[0::2, 1::2]
    out += y[1::2, 1::2]
    return out


def _spread(d: np.ndarray) -> np.ndarray:
    """(h, w, C) -> (2h, 2w, C): every input of a 2×2 block gets its block's gradient."""
    h, w, c = d.shape
    out = np.empty((h, 2, w, 2, c), d.dtype)
    out[...] = d[:, None, :, None]
    return out.reshape(2 * h, 2 * w, c)


def _input_grad(da: np.ndarray, w: np.ndarray, h: int, width: int) -> np.ndarray:
    """dL/dx (H, W, C) of a stride-1 convolution from dL/da (Ho·Wo, F) and its weights
    w (F, C, k, k): every kernel tap (i, j) sends da·w[:, :, i, j] back to the inputs it read,
    shifted by (i, j) — one batched product for the k² taps, then k² slice additions."""
    f, c, k, _ = w.shape
    ho, wo = h - k + 1, width - k + 1
    taps = np.matmul(da, w.transpose(2, 3, 0, 1))  # (k, k, Ho·Wo, C)
    out = np.zeros((h, width, c), da.dtype)
    for i in range(k):
        for j in range(k):
            out[i:i + ho, j:j + wo] += taps[i, j].reshape(ho, wo, c)
    return out


class OneImage:
    """Forward and backward of the lecun1998 network for a single image (see module doc).

    ``params``/``grads``: the model's own dictionaries (live arrays, PyTorch layouts);
    ``mask``: C3's connection table (16, 6); ``centres``: the RBF centres (10, 84).
    """

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], mask: np.ndarray,
                 centres: np.ndarray) -> None:
        self.p, self.g = params, grads
        self.mask = mask.reshape(16, 6, 1, 1)
        self.centres = centres

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (1, 1, 32, 32) -> outputs (1, 10), −distances to the RBF centres."""
        p = self.p
        self.cols1 = _cols(x[0].transpose(1, 2, 0), 5)  # (784, 25)
        t1 = np.tanh(S * (self.cols1 @ p["c1.weight"].reshape(6, 25).T + p["c1.bias"]))  # (784, 6)
        self.s2 = _block_sums(t1.reshape(28, 28, 6)) * A
        t2 = np.tanh(S * (self.s2 * p["s2.weight"] + p["s2.bias"]))  # (14, 14, 6)
        self.w3 = (p["c3.weight"] * self.mask).reshape(16, 150)
        self.cols3 = _cols(A * t2, 5)  # (100, 150)
        t3 = np.tanh(S * (self.cols3 @ self.w3.T + p["c3.bias"]))  # (100, 16)
        self.s4 = _block_sums(t3.reshape(10, 10, 16)) * A
        t4 = np.tanh(S * (self.s4 * p["s4.weight"] + p["s4.bias"]))  # (5, 5, 16)
        self.y4 = A * t4.transpose(2, 0, 1).reshape(400)  # C5 reads (c, h, w)
        t5 = np.tanh(S * (p["c5.weight"].reshape(120, 400) @ self.y4 + p["c5.bias"]))
        self.y5 = A * t5
        t6 = np.tanh(S * (p["f6.weight"] @ self.y5 + p["f6.bias"]))
        self.y6 = A * t6
        self.t = (t1, t2, t3, t4, t5, t6)
        diff = self.y6 - self.centres  # (10, 84)
        return -np.einsum("kj,kj->k", diff, diff)[None]

    def backward(self, dz: np.ndarray) -> None:
        """dz (1, 10) = dE/d(outputs) -> every parameter's gradient, written into ``grads``."""
        p, g = self.p, self.g
        t1, t2, t3, t4, t5, t6 = self.t
        slope = A * S
        dz = dz[0]
        dy6 = -2 * (self.y6 * dz.sum() - self.centres.T @ dz)
        da6 = dy6 * slope * (1 - t6 * t6)
        np.outer(da6, self.y5, out=g["f6.weight"])
        g["f6.bias"][...] = da6
        da5 = (p["f6.weight"].T @ da6) * slope * (1 - t5 * t5)
        np.outer(da5, self.y4, out=g["c5.weight"].reshape(120, 400))
        g["c5.bias"][...] = da5
        dy4 = (p["c5.weight"].reshape(120, 400).T @ da5).reshape(16, 5, 5).transpose(1, 2, 0)
        da4 = dy4 * slope * (1 - t4 * t4)  # (5, 5, 16)
        g["s4.weight"][...] = np.einsum("hwc,hwc->c", da4, self.s4)
        g["s4.bias"][...] = da4.sum(axis=(0, 1))
        da3 = _spread(da4 * p["s4.weight"]).reshape(100, 16) * slope * (1 - t3 * t3)
        g["c3.weight"][...] = (da3.T @ self.cols3).reshape(16, 6, 5, 5) * self.mask
        g["c3.bias"][...] = da3.sum(axis=0)
        dy2 = _input_grad(da3, self.w3.reshape(16, 6, 5, 5), 14, 14)
        da2 = dy2 * slope * (1 - t2 * t2)
        g["s2.weight"][...] = np.einsum("hwc,hwc->c", da2, self.s2)
        g["s2.bias"][...] = da2.sum(axis=(0, 1))
        da1 = _spread(da2 * p["s2.weight"]).reshape(784, 6) * slope * (1 - t1 * t1)
        g["c1.weight"][...] = (da1.T @ self.cols1).reshape(6, 1, 5, 5)
        g["c1.bias"][...] = da1.sum(axis=0)
