"""CPU-specific tricks, isolated here so the layers can read like the math.

Nothing in this module changes a result beyond float round-off; it only changes how fast
NumPy gets there on a commodity CPU. Two tricks:

1. **Keep freed memory.** A training step allocates a few megabytes of temporaries (im2col
   columns, activations). glibc's malloc hands large blocks back to the kernel on free and
   asks for them again on the next step, so every step pays thousands of page faults (each
   page is zeroed by the kernel). Measured here, that was ~40% of a LeNet-5 training step.
   We raise malloc's mmap/trim thresholds once at import, so the same pages are reused.
   This is a no-op on platforms without glibc.

2. **Long-K matrix products.** Weight gradients of a convolution are ``dY @ cols.T`` with a
   tiny output (6×25 for C1) and a huge inner dimension (28·28·batch). OpenBLAS runs that
   shape at a fraction of its speed; splitting K into a batch of slices and summing the
   partial products is 4-5x faster (``matmul_nt``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import numpy as np

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Stop glibc from returning freed blocks to the OS after every step. Returns success."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or an unusual libc: stay correct, just slower
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit; blocks below it come from
    # the heap, and the heap is trimmed only when 512 MiB sit free at its top.
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 512 * 1024 * 1024) == 1
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


_CHUNK = 2048
_LONG_K = 8 * _CHUNK


def matmul_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return ``a @ b.T`` for a (M, K) and b (P, K), fast when K is long and M, P are small."""
    m, k = a.shape
    p = b.shape[0]
    if k < _LONG_K or m * p > 4096:
        return a @ b.T
    c = k // _CHUNK
    head = c * _CHUNK
    # (c, M, chunk) @ (c, chunk, P) -> (c, M, P), then sum the c partial products.
    out = np.matmul(
        a[:, :head].reshape(m, c, _CHUNK).transpose(1, 0, 2),
        b[:, :head].reshape(p, c, _CHUNK).transpose(1, 2, 0),
    ).sum(axis=0)
    if head < k:
        out += a[:, head:] @ b[:, head:].T
    return out


tune_malloc()
