"""Convolution and pooling as plain functions, each in a fast and a reference version.

Layout: **batch-last**. Feature maps are ``(C, H, W, N)`` and vectors ``(F, N)``.
With the batch innermost, every copy moves long contiguous runs (``W·N`` floats), a
convolution is one (batched) matrix product whose result lands directly in
``(C_out, H, W, N)`` order, and flattening S4 for C5/F6 is a free reshape.
Weights keep PyTorch's layout, ``(C_out, C_in, kH, kW)``, so checkpoints move freely.

The fast and reference versions share one signature, so the slow, obviously-correct
reference can test the fast one (see tests/test_ops.py).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

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


def im2row(xp: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W, N) -> rows (H, C, k, Wo, N) with Wo = W-k+1: rows[h, c, j, x, n] = xp[c, h, x+j, n].

    k shifted copies (one per kernel column j) instead of im2col's k².
    """
    c, h, w, n = xp.shape
    wo = w - k + 1
    rows = np.empty((h, c, k, wo, n), dtype=xp.dtype)
    for j in range(k):
        rows[:, :, j] = xp[:, :, j : j + wo].transpose(1, 0, 2, 3)
    return rows


def row_windows(rows: np.ndarray, k: int) -> np.ndarray:
    """The im2col matrix of every output row, as overlapping views of ``rows`` (no copy).

    rows (H, C, k, Wo, N) -> windows (Ho, k·C·k, Wo·N), Ho = H-k+1, with
    windows[y, (i, c, j), (x, n)] = rows[y+i, c, j, x, n] = xp[c, y+i, x+j, n].
    Row block y starts C·k rows of ``rows`` after block y-1, so one stride describes it.
    """
    h, c, _, wo, n = rows.shape
    row = wo * n * rows.itemsize
    return as_strided(rows, (h - k + 1, k * c * k, wo * n), (c * k * row, row, rows.itemsize), writeable=False)


def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int
) -> tuple[np.ndarray, tuple]:
    """Stride-1 convolution (cross-correlation, as in every DL library).

    x (C, H, W, N), w (F, C, k, k), b (F,) -> y (F, H+2p-k+1, W+2p-k+1, N), cache.
    y[f, y, x, n] = b[f] + Σ_{c,i,j} w[f, c, i, j] · xpad[c, y+i, x+j, n]

    As a matrix product per output row y: Y[:, y] = W' · windows[y], where W' is w with its
    axes ordered (i, c, j) to match ``row_windows``. One batched matmul does all rows and
    writes straight into y's (F, Ho, Wo, N) layout.
    """
    f, c, k, _ = w.shape
    xp = pad_hw(x, pad)
    rows = im2row(xp, k)
    windows = row_windows(rows, k)
    ho, _, m = windows.shape
    wm = w.transpose(0, 2, 1, 3).reshape(f, k * c * k)
    y = np.empty((f, ho, m), dtype=x.dtype)
    np.matmul(wm, windows, out=y.transpose(1, 0, 2))
    y += b[:, None, None]
    return y.reshape(f, ho, rows.shape[3], rows.shape[4]), (rows, wm, w.shape, xp.shape, pad)


def conv2d_backward(
    dy: np.ndarray, cache: tuple, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dy (F, Ho, Wo, N) -> (dx (C, H, W, N) or None, dw (F, C, k, k), db (F,)).

    dW' = Σ_y dY[:, y] · windows[y]ᵀ,  db = Σ dY,  dwindows[y] = W'ᵀ · dY[:, y], and dx is
    the adjoint of the forward gather: overlapping windows summed back into rows (k adds),
    rows summed back into the image (k adds).
    """
    rows, wm, w_shape, padded_shape, pad = cache
    f, c, k, _ = w_shape
    windows = row_windows(rows, k)
    ho, kk, m = windows.shape
    dyr = dy.reshape(f, ho, m).transpose(1, 0, 2)  # (Ho, F, Wo·N) view
    db = dy.sum(axis=(1, 2, 3))
    dw = matmul_nt(dyr, windows).reshape(f, k, c, k).transpose(0, 2, 1, 3)
    if not need_dx:
        return None, np.ascontiguousarray(dw), db
    # dwindows for all rows in one plain matmul, laid out ((i, c, j), y, (x, n))
    dwin = (wm.T @ dy.reshape(f, ho * m)).reshape(k, c * k, ho, m)
    drows = np.zeros((rows.shape[0], c * k, m), dtype=dy.dtype)
    for i in range(k):  # window y's block i is row y+i
        drows[i : i + ho] += dwin[i].transpose(1, 0, 2)
    drows = drows.reshape(rows.shape)
    wo = rows.shape[3]
    dxp = np.zeros(padded_shape, dtype=dy.dtype)
    for j in range(k):
        dxp[:, :, j : j + wo] += drows[:, :, j].transpose(1, 0, 2, 3)
    dx = dxp[:, pad:-pad, pad:-pad] if pad else dxp
    return dx, np.ascontiguousarray(dw), db


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


def max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2×2 max pooling, stride 2: (C, H, W, N) -> (y (C, H/2, W/2, N), argmax (uint8, same shape)).

    The four window positions are strided views, taken in row-major order (0: top-left,
    1: top-right, 2: bottom-left, 3: bottom-right). On ties the first one wins, as in PyTorch,
    so each window sends its gradient to exactly one input.
    """
    taps = [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
    y = np.maximum(np.maximum(taps[0], taps[1]), np.maximum(taps[2], taps[3]))
    argmax = np.full(y.shape, 3, dtype=np.uint8)
    for k in (2, 1, 0):  # later writes win, so the first equal tap is the one recorded
        np.copyto(argmax, k, where=taps[k] == y)
    return y, argmax


def max_pool_backward(dy: np.ndarray, argmax: np.ndarray) -> np.ndarray:
    """(C, h, w, N) -> (C, 2h, 2w, N): each window's gradient goes to its (first) maximum."""
    c, h, w, n = dy.shape
    dx = np.empty((c, 2 * h, 2 * w, n), dtype=dy.dtype)
    for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.multiply(dy, argmax == k, out=dx[:, i::2, j::2])
    return dx


def max_pool_forward_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as max_pool_forward, written with a window axis and argmax."""
    c, h, w, n = x.shape
    windows = x.reshape(c, h // 2, 2, w // 2, 2, n).transpose(0, 1, 3, 5, 2, 4).reshape(c, h // 2, w // 2, n, 4)
    return windows.max(axis=-1), windows.argmax(axis=-1).astype(np.uint8)


def max_pool_backward_reference(dy: np.ndarray, argmax: np.ndarray) -> np.ndarray:
    """Same contract as max_pool_backward: scatter through one-hot windows."""
    c, h, w, n = dy.shape
    onehot = np.eye(4, dtype=dy.dtype)[argmax] * dy[..., None]  # (C, h, w, N, 4)
    return onehot.reshape(c, h, w, n, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(c, 2 * h, 2 * w, n)
