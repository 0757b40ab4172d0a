"""Convolution and pooling as plain functions, each in a fast and a reference version.

Layout: **batch-last**. Feature maps are ``(C, H, W, N)`` and vectors ``(F, N)``.
With the batch innermost, every im2col copy moves long contiguous runs (``W·N`` floats),
a convolution is one matrix product whose result is already in ``(C_out, H, W, N)``
order (no transpose afterwards), and flattening S4 for C5/F6 is a free reshape.
Weights keep PyTorch's layout, ``(C_out, C_in, kH, kW)``, so checkpoints move freely.

The fast and reference versions share one signature, so the slow, obviously-correct
reference can test the fast one (see tests/test_ops.py).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._cpu import matmul_nt


# --------------------------------------------------------------------------- convolution
def pad_hw(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the H and W axes of a (C, H, W, N) array (copies; also makes x contiguous)."""
    if pad == 0:
        return x
    c, h, w, n = x.shape
    xp = np.zeros((c, h + 2 * pad, w + 2 * pad, n), dtype=x.dtype)
    xp[:, pad:-pad, pad:-pad] = x
    return xp


def im2col(xp: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W, N) -> columns (C, k, k, Ho, Wo, N) with Ho = H-k+1, Wo = W-k+1.

    cols[c, i, j, y, x, n] = xp[c, y+i, x+j, n]. One slice copy per kernel offset (k² copies),
    each vectorised over channels, pixels and batch.
    """
    c, h, w, n = xp.shape
    ho, wo = h - k + 1, w - k + 1
    cols = np.empty((c, k, k, ho, wo, n), dtype=xp.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = xp[:, i : i + ho, j : j + wo]
    return cols


def col2im(dcols: np.ndarray, padded_shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of im2col: scatter-add (C, k, k, Ho, Wo, N) columns back into (C, H, W, N)."""
    _, k, _, ho, wo, _ = dcols.shape
    dxp = np.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, i : i + ho, j : j + wo] += dcols[:, i, j]
    return dxp


def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int
) -> tuple[np.ndarray, tuple]:
    """Stride-1 convolution (cross-correlation, as in every DL library).

    x (C, H, W, N), w (F, C, k, k), b (F,) -> y (F, H+2p-k+1, W+2p-k+1, N), cache.
    y[f, y, x, n] = b[f] + Σ_{c,i,j} w[f, c, i, j] · xpad[c, y+i, x+j, n]
    """
    f, c, k, _ = w.shape
    xp = pad_hw(x, pad)
    cols = im2col(xp, k)
    _, _, _, ho, wo, n = cols.shape
    y = w.reshape(f, c * k * k) @ cols.reshape(c * k * k, ho * wo * n)
    y += b[:, None]
    return y.reshape(f, ho, wo, n), (cols, w, xp.shape, pad)


def conv2d_backward(
    dy: np.ndarray, cache: tuple, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dy (F, Ho, Wo, N) -> (dx (C, H, W, N) or None, dw (F, C, k, k), db (F,)).

    dw = dY · colsᵀ, db = Σ dY, dcols = Wᵀ · dY followed by col2im (the adjoint of im2col).
    """
    cols, w, padded_shape, pad = cache
    f, c, k, _ = w.shape
    dy2 = dy.reshape(f, -1)
    db = dy2.sum(axis=1)
    dw = matmul_nt(dy2, cols.reshape(c * k * k, -1)).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = w.reshape(f, c * k * k).T @ dy2
    dxp = col2im(dcols.reshape(cols.shape), padded_shape)
    dx = dxp[:, pad:-pad, pad:-pad] if pad else dxp
    return dx, dw, db


def conv2d_forward_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int
) -> tuple[np.ndarray, tuple]:
    """Same contract as conv2d_forward, written as the definition: one einsum over windows."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[2]
    win = sliding_window_view(xp, (k, k), axis=(1, 2))  # (C, Ho, Wo, N, k, k)
    y = np.einsum("chwnij,fcij->fhwn", win, w) + b[:, None, None, None]
    return y, (x, w, pad)


def conv2d_backward_reference(
    dy: np.ndarray, cache: tuple, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Same contract as conv2d_backward; every sum written out as in the chain rule."""
    x, w, pad = cache
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = sliding_window_view(xp, (k, k), axis=(1, 2))
    dw = np.einsum("fhwn,chwnij->fcij", dy, win)
    db = dy.sum(axis=(1, 2, 3))
    if not need_dx:
        return None, dw, db
    dxp = np.zeros_like(xp)
    ho, wo = dy.shape[1], dy.shape[2]
    for i in range(k):  # each kernel tap (i, j) sent w[:, :, i, j]·dy to xpad[:, y+i, x+j]
        for j in range(k):
            dxp[:, i : i + ho, j : j + wo] += np.einsum("fc,fhwn->chwn", w[:, :, i, j], dy)
    dx = dxp[:, pad : dxp.shape[1] - pad, pad : dxp.shape[2] - pad]
    return dx, dw, db


# --------------------------------------------------------------------------- pooling 2x2/2
def avg_pool_forward(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling, stride 2: (C, H, W, N) -> (C, H/2, W/2, N); H and W even.

    Rows are paired first (contiguous runs of W·N floats), then columns (runs of N).
    """
    c, h, w, n = x.shape
    rows = x.reshape(c, h // 2, 2, w * n)
    half = (rows[:, :, 0] + rows[:, :, 1]).reshape(c, h // 2, w // 2, 2, n)
    y = half[:, :, :, 0] + half[:, :, :, 1]
    y *= 0.25
    return y


def avg_pool_backward(dy: np.ndarray) -> np.ndarray:
    """(C, h, w, N) -> (C, 2h, 2w, N): each input of a 2×2 window receives dy/4."""
    c, h, w, n = dy.shape
    q = dy * 0.25
    return np.broadcast_to(q[:, :, None, :, None, :], (c, h, 2, w, 2, n)).reshape(c, 2 * h, 2 * w, n)


def avg_pool_forward_reference(x: np.ndarray) -> np.ndarray:
    """Same contract as avg_pool_forward: the mean of each 2×2 window."""
    c, h, w, n = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2, n).mean(axis=(2, 4))


def avg_pool_backward_reference(dy: np.ndarray) -> np.ndarray:
    """Same contract as avg_pool_backward, by repeating along both spatial axes."""
    return np.repeat(np.repeat(dy, 2, axis=1), 2, axis=2) / 4
