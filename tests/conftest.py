"""Shared fixtures: the committed MNIST slice, and the offline MNIST data of this project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "mnist-mini"
REPO = Path(__file__).resolve().parents[1]


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6, entries=None) -> np.ndarray:
    """Central differences of the scalar f() with respect to x (perturbed in place).

    With ``entries`` (flat indices), only those entries, as a 1-D array.
    """
    flat = x.reshape(-1)  # a view: x must be contiguous
    assert np.shares_memory(flat, x)
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


RNG = np.random.default_rng(0)  # the random probes of check_layer


def check_layer(layer, x: np.ndarray, tol: float = 1e-6) -> None:
    """Gradient check of L = Σ y·r for a fixed random r: dL/dx and dL/dparam vs finite differences."""
    y = layer.forward(x)
    r = RNG.standard_normal(y.shape)
    dx = layer.backward(r.copy())
    loss = lambda: float(np.sum(layer.forward(x) * r))  # noqa: E731
    if dx is not None:
        assert dx.shape == x.shape
        assert rel_error(dx, numerical_grad(loss, x)) < tol
    for name, p in layer.params.items():
        analytic = layer.grads[name].copy()
        assert rel_error(analytic, numerical_grad(loss, p)) < tol, name



@pytest.fixture(autouse=True)
def no_internet_and_private_cache(tmp_path_factory, monkeypatch):
    """No test may touch the internet or the user's cache: downloads go to a refused port."""
    monkeypatch.setenv("LENET5_DATA", str(tmp_path_factory.mktemp("lenet5-cache")))
    monkeypatch.setenv("LENET5_MIRRORS", "http://127.0.0.1:9/")


@pytest.fixture
def mini_dir() -> Path:
    return MINI


def shared_mnist() -> Path | None:
    """../shared/data/mnist beside the checkout (or $LENET5_SHARED_MNIST), if present."""
    env = os.environ.get("LENET5_SHARED_MNIST")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "mnist"]:
        if (candidate / "train5k-images-idx3-ubyte.gz").is_file():
            return candidate
    return None


@pytest.fixture
def mnist5k_dir(tmp_path: Path) -> Path:
    """A data dir with the 5,000-image MNIST training subset and the official test set.

    Skips where the offline data is absent, except in CI, where it must be there.
    """
    src = shared_mnist()
    if src is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the real-data test, but ../shared/data/mnist is missing")
        pytest.skip("offline MNIST data (../shared/data/mnist) not found")
    d = tmp_path / "mnist5k"
    d.mkdir()
    for dst, name in [("train-images-idx3-ubyte.gz", "train5k-images-idx3-ubyte.gz"),
                      ("train-labels-idx1-ubyte.gz", "train5k-labels-idx1-ubyte.gz"),
                      ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
                      ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]:
        (d / dst).symlink_to(src / name)
    return d
