"""The 1998 network on one image at a time, written out flat: SDLM's per-pattern training.

The paper updates the weights after every single pattern. Through the general layers, a batch
of one pays for machinery it does not need (batch-last layouts, the row-window im2col built
for many images, one Python call per layer and per cache). ``OneImage`` computes exactly the
same forward and backward for one image with a few dozen NumPy operations, reading the
model's parameter arrays and writing its gradient arrays in place, so the optimizer, the
checkpoints and everything else see no difference (``tests/test_persample.py`` checks it
against the layers to float round-off).

Layout: channels last, so each convolution is one im2col matrix times the weights; the matrix
is gathered with a precomputed index array (one ``np.take``). Its rows, the output positions,
come in four groups, one per corner (dy, dx) of the 2×2 blocks that the next subsampling layer
sums: then S2's and S4's block sums are a sum over the first axis of (4, positions, C), and
their backward needs no spreading at all, since broadcasting over that axis is the spread.

    C1   a1 = cols(x, 5×5) · W1ᵀ + b1               (4, 196, 6)  y1 = f(a1), f = A·tanh(S·)
    S2   a2 = c2 · Σ_corners y1 + b2                 (196, 6)     y2 = f(a2)    [(14, 14, 6)]
    C3   a3 = cols(y2, 5×5) · (W3·mask)ᵀ + b3        (4, 25, 16)  y3 = f(a3)
    S4   a4 = c4 · Σ_corners y3 + b4                 (25, 16)     y4 = f(a4)    [(5, 5, 16)]
    C5   a5 = W5 · y4 + b5                           (120,)       y5 = f(a5)
    F6   a6 = W6 · y5 + b6                           (84,)        y6 = f(a6)
    RBF  z_k = −Σ_j (y6_j − c_kj)²                   (10,)

and backward runs the chain rule down the same list; C3's input gradient is a col2im: each
window's gradient added back to the S2 positions it read, one ``np.bincount`` over the index.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .lecun1998 import A, S

_INDEX: dict[tuple[int, int, int, int], np.ndarray] = {}


def _window_index(h: int, w: int, c: int, k: int) -> np.ndarray:
    """For an (H, W, C) array read flat: the im2col matrix's positions, (4·Ho/2·Wo/2, C·k·k).

    Columns are ordered (c, i, j) like W.reshape(F, -1); rows are the output positions (y, x)
    ordered (y mod 2, x mod 2, y // 2, x // 2): the four corners of every 2×2 block, one group
    after another. Found once per shape by windowing the flat positions."""
    idx = _INDEX.get((h, w, c, k))
    if idx is None:
        flat = np.arange(h * w * c).reshape(h, w, c)
        windows = sliding_window_view(flat, (k, k), axis=(0, 1))  # (Ho, Wo, C, k, k)
        ho, wo = windows.shape[:2]
        by_corner = windows.reshape(ho // 2, 2, wo // 2, 2, c * k * k).transpose(1, 3, 0, 2, 4)
        idx = _INDEX[h, w, c, k] = np.ascontiguousarray(by_corner).reshape(-1, c * k * k)
    return idx


def _squash(a: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """tanh(S·(a + bias)), in place: the squashing function without its amplitude A."""
    a += bias
    a *= S
    return np.tanh(a, out=a)


def _slope(t: np.ndarray) -> np.ndarray:
    """f'(a) = A·S·(1 − tanh²(S·a)) from t = tanh(S·a)."""
    d = t * t
    np.subtract(A * S, d * (A * S), out=d)
    return d


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
        self.index1 = _window_index(32, 32, 1, 5)  # (784, 25): C1's windows of the input
        self.index3 = _window_index(14, 14, 6, 5)  # (100, 150): C3's windows of S2's maps

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (1, 1, 32, 32) -> outputs (1, 10), −distances to the RBF centres."""
        p = self.p
        self.cols1 = np.take(x.reshape(-1), self.index1)  # (784, 25)
        t1 = _squash(self.cols1 @ p["c1.weight"].reshape(6, 25).T, p["c1.bias"]).reshape(4, 196, 6)
        self.s2 = t1.sum(axis=0)
        self.s2 *= A  # Σ of each block of y1
        t2 = _squash(self.s2 * p["s2.weight"], p["s2.bias"])  # (196, 6)
        self.w3 = (p["c3.weight"] * self.mask).reshape(16, 150)
        self.cols3 = np.take((A * t2).reshape(-1), self.index3)  # (100, 150) windows of y2
        t3 = _squash(self.cols3 @ self.w3.T, p["c3.bias"]).reshape(4, 25, 16)
        self.s4 = t3.sum(axis=0)
        self.s4 *= A
        t4 = _squash(self.s4 * p["s4.weight"], p["s4.bias"])  # (25, 16)
        self.y4 = A * t4.T.reshape(400)  # C5 reads (c, h, w)
        t5 = _squash(p["c5.weight"].reshape(120, 400) @ self.y4, p["c5.bias"])
        self.y5 = A * t5
        t6 = _squash(p["f6.weight"] @ self.y5, p["f6.bias"])
        self.y6 = A * t6
        self.t = (t1, t2, t3, t4, t5, t6)
        diff = self.y6 - self.centres  # (10, 84)
        return -np.einsum("kj,kj->k", diff, diff)[None]

    def backward(self, dz: np.ndarray) -> None:
        """dz (1, 10) = dE/d(outputs) -> every parameter's gradient, written into ``grads``."""
        p, g = self.p, self.g
        t1, t2, t3, t4, t5, t6 = self.t
        dz = dz[0]
        da6 = 2 * (self.centres.T @ dz - self.y6 * dz.sum()) * _slope(t6)  # (84,)
        np.multiply(da6[:, None], self.y5, out=g["f6.weight"])
        g["f6.bias"][...] = da6
        da5 = (p["f6.weight"].T @ da6) * _slope(t5)  # (120,)
        np.multiply(da5[:, None], self.y4, out=g["c5.weight"].reshape(120, 400))
        g["c5.bias"][...] = da5
        da4 = (p["c5.weight"].reshape(120, 400).T @ da5).reshape(16, 25).T * _slope(t4)  # (25, 16)
        g["s4.weight"][...] = np.einsum("pc,pc->c", da4, self.s4)
        g["s4.bias"][...] = np.einsum("pc->c", da4)
        da4 *= p["s4.weight"]
        da3 = (_slope(t3) * da4).reshape(100, 16)  # every corner of a block gets the block's gradient
        np.matmul(da3.T, self.cols3, out=g["c3.weight"].reshape(16, 150))
        g["c3.weight"] *= self.mask
        g["c3.bias"][...] = np.einsum("pc->c", da3)
        # C3's input gradient: each window's gradient (da3·W3) added back to the S2 positions
        # it read (a col2im, as one bincount over the window index)
        dy2 = np.bincount(self.index3.reshape(-1), (da3 @ self.w3).reshape(-1), minlength=196 * 6)
        da2 = dy2.reshape(196, 6).astype(t2.dtype) * _slope(t2)
        g["s2.weight"][...] = np.einsum("pc,pc->c", da2, self.s2)
        g["s2.bias"][...] = np.einsum("pc->c", da2)
        da2 *= p["s2.weight"]
        da1 = (_slope(t1) * da2).reshape(784, 6)
        np.matmul(da1.T, self.cols1, out=g["c1.weight"].reshape(6, 25))
        g["c1.bias"][...] = np.einsum("pc->c", da1)
