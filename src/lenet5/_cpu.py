"""CPU-specific tricks, isolated here so the layers can read like the math.

Nothing in this module changes a result beyond float round-off; it only changes how fast
NumPy gets there on a commodity CPU. Three tricks:

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

3. **All cores for everything.** BLAS uses every core, but NumPy's elementwise ops and
   copies (im2col, tanh, pooling: over half of a step) use one. ``parallel_map`` runs the
   parts of a batch in threads (NumPy releases the GIL inside large ops), with BLAS held to
   one thread meanwhile (``blas_single_thread``) so the threads do not fight over cores:
   OpenBLAS's waiting threads spin, and with a core taken they slow every product down.
   The same holds while a helper thread prepares augmented batches. ``MicroBatches`` applies
   this to a model: it cuts a batch into parts, runs each part through a replica of the model
   (same parameter arrays, own caches) on its own thread, and sums the parts' gradients;
   ``infer`` runs large inputs through in cache-sized chunks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence, TypeVar

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
_LONG_K = 2 * _CHUNK


def matmul_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ over leading batch axes of ``a @ bᵀ``: a (..., M, K), b (..., P, K) -> (M, P).

    Fast when K is long and M, P are small: K is cut into slices of 2048 that become extra
    batch entries, and the partial products are summed.
    """
    m, k = a.shape[-2:]
    p = b.shape[-2]
    a = a.reshape(-1, m, k) if a.ndim != 3 else a
    b = b.reshape(-1, p, k) if b.ndim != 3 else b
    if k >= _LONG_K and m * p <= 4096:
        c = k // _CHUNK
        head = c * _CHUNK
        # (B, M, c, chunk) -> (B, c, M, chunk): views, so no copy before BLAS sees them
        parts = np.matmul(a[..., :head].reshape(-1, m, c, _CHUNK).transpose(0, 2, 1, 3),
                          b[..., :head].reshape(-1, p, c, _CHUNK).transpose(0, 2, 3, 1))
        out = parts.sum(axis=(0, 1))
        if head < k:
            out += np.matmul(a[..., head:], b[..., head:].transpose(0, 2, 1)).sum(axis=0)
        return out
    return np.matmul(a, b.transpose(0, 2, 1)).sum(axis=0)


T = TypeVar("T")
R = TypeVar("R")
_POOL: ThreadPoolExecutor | None = None
_BLAS = None


def default_threads() -> int:
    """Worker threads for one batch: $LENET5_THREADS, else the number of usable cores."""
    env = os.environ.get("LENET5_THREADS")
    if env and env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def blas_single_thread() -> contextlib.AbstractContextManager:
    global _BLAS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # still correct, just oversubscribed
        return contextlib.nullcontext()
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """[fn(item) for item in items], run on up to ``workers`` threads, results in order."""
    global _POOL
    if len(items) == 1 or workers <= 1:
        return [fn(item) for item in items]
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lenet5")
    with blas_single_thread():
        return list(_POOL.map(fn, items))


class Splittable(Protocol):
    """What ``MicroBatches`` needs of a model: one-thread passes, replicas, live gradients."""

    training: bool

    def forward_pass(self, x: np.ndarray) -> np.ndarray: ...
    def backward_pass(self, dlogits: np.ndarray) -> None: ...
    def replica(self) -> "Splittable": ...
    def grads(self) -> dict[str, np.ndarray]: ...
    def prepare(self, images: np.ndarray) -> np.ndarray: ...
    def train(self, mode: bool = True) -> object: ...


class MicroBatches:
    """Forward, backward and inference of a model over parts of a batch, on threads.

    A training batch of n images is cut into k parts, k = max(min(threads, n / 64),
    ceil(n / 128)): parts of at most 128 images keep each one's working set in cache, and
    below 64 images per thread the split costs more than it saves (measured on 2 cores:
    batch 64 gains nothing from two threads, batch 256 gains ~20%). Each part's gradient
    already carries the 1/n of the mean loss, so the parts' gradients are summed.
    """

    MIN_PER_THREAD = 64
    MAX_CHUNK = 128
    #: inference works through large inputs in chunks this big, which keeps im2col in cache
    INFER_CHUNK = 128

    def __init__(self, model: Splittable, threads: int) -> None:
        self.model, self.threads = model, threads
        self._replicas: list[Splittable] = []
        self._parts: list[slice] | None = None  # how the last forward split its batch

    def _workers(self, k: int) -> list[Splittable]:
        while len(self._replicas) < k - 1:
            self._replicas.append(self.model.replica())
        return [self.model, *self._replicas[: k - 1]]

    def forward(self, x: np.ndarray, whole: bool = False) -> np.ndarray:
        """Logits of x (N, ...); ``whole``: one pass over the whole batch (batch statistics)."""
        n = len(x)
        k = max(min(self.threads, n // self.MIN_PER_THREAD), -(-n // self.MAX_CHUNK))
        if k <= 1 or whole:
            self._parts = None
            return self.model.forward_pass(x)
        bounds = np.linspace(0, n, k + 1).astype(int)
        self._parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        jobs = list(zip(self._workers(k), self._parts))
        return np.concatenate(parallel_map(lambda job: job[0].forward_pass(x[job[1]]), jobs, self.threads))

    def backward(self, dlogits: np.ndarray) -> None:
        """Back-propagate dlogits as the last forward split it; the model's grads get the sum."""
        if self._parts is None:
            return self.model.backward_pass(dlogits)
        workers = self._workers(len(self._parts))
        parallel_map(lambda job: job[0].backward_pass(dlogits[job[1]]), list(zip(workers, self._parts)),
                     self.threads)
        total = self.model.grads()
        for replica in workers[1:]:
            for name, g in replica.grads().items():
                total[name] += g

    def infer(self, images: np.ndarray, n_out: int, dtype: np.dtype) -> np.ndarray:
        """Outputs (N, n_out) for uint8 images: each thread takes a contiguous share and runs it
        in cache-sized chunks through its own replica, in inference mode."""
        n = len(images)
        k = max(1, min(self.threads, n // self.INFER_CHUNK))
        bounds = np.linspace(0, n, k + 1).astype(int)
        workers = self._workers(k)
        was_training = self.model.training
        for w in workers:
            w.train(False)

        def run(job: tuple[Splittable, int, int]) -> np.ndarray:
            model, a, b = job
            return np.concatenate([model.forward_pass(model.prepare(images[i:min(i + self.INFER_CHUNK, b)]))
                                   for i in range(a, b, self.INFER_CHUNK)] or [np.zeros((0, n_out), dtype)])

        self._parts = None
        try:
            # BLAS on one thread even when this runs on one thread: the threads here are the
            # parallelism, and OpenBLAS's spinning threads on a busy machine cost up to 10x
            with blas_single_thread():
                return np.concatenate(parallel_map(run, list(zip(workers, bounds[:-1], bounds[1:])), self.threads))
        finally:
            for w in workers:
                w.train(was_training)


tune_malloc()
