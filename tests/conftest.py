"""Shared fixtures: the committed MNIST slice, and the offline MNIST data of this project."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lenet5 import gradcheck
from lenet5.gradcheck import numerical_grad, rel_error  # noqa: F401  (used by the test modules)

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "mnist-mini"
REPO = Path(__file__).resolve().parents[1]


RNG = np.random.default_rng(0)  # the random probes of check_layer


def check_layer(layer, x: np.ndarray, tol: float = 1e-6) -> None:
    """Every gradient of a layer (input and parameters) against finite differences."""
    errors = gradcheck.check_layer(layer, x, RNG)
    assert all(e < tol for e in errors.values()), errors


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
