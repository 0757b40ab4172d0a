"""The 1998 network as published: its parts, its parameter count, its second-order pass."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, check_layer, numerical_grad, rel_error
from lenet5 import LeNet5, cli, load_dir
from lenet5.layers import Conv2d, Linear
from lenet5.lecun1998 import RBF, Squash, Subsample2d
from lenet5.losses import Criterion, map_criterion, mse_criterion
from lenet5.lecun1998 import C3_TABLE, GLYPHS, rbf_centres
from lenet5.presets import PRESETS

RNG = np.random.default_rng(98)


def reference_table() -> np.ndarray:
    path = Path(os.environ.get("LENET5_REFERENCE", REPO.parent / "shared" / "reference" / "lenet5-1998.md"))
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the C3 table against {path}")
        pytest.skip("the reference file ../shared/reference/lenet5-1998.md is not here")
    rows = [line for line in path.read_text().splitlines() if re.match(r"^S2 \d ", line)]
    return np.array([[tok == "X" for tok in line.split()[2:]] for line in rows])


def test_c3_table_is_the_papers():
    table = reference_table()
    assert table.shape == (6, 16)
    np.testing.assert_array_equal(C3_TABLE, table)
    assert C3_TABLE.sum() == 60  # 60 kernels of 5x5 + 16 biases = 1,516 parameters


def test_exactly_60000_trainable_parameters(capsys):
    assert cli.main(["summary", "--preset", "lecun1998", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    per_layer = {r["name"]: r["params"] for r in info["layers"]}
    assert per_layer == {**per_layer, "c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164,
                         "output": 0}
    assert info["total_params"] == 60000
    shapes = {r["name"]: r["output_shape"] for r in info["layers"]}
    assert shapes["c1"] == [6, 28, 28] and shapes["s4"] == [16, 5, 5] and shapes["output"] == [10]


def test_init_is_uniform_in_2_4_over_root_fan_in_per_unit():
    """Every trainable value within ±2.4/√F of its unit (F: 25 for C1, 75/100/150 for C3 maps
    by their connections, 4 for S2/S4, 400 for C5, 120 for F6) and spread over that range;
    C3's unconnected kernels exactly zero."""
    model = LeNet5("lecun1998", seed=4, dtype=np.float64)
    p = model.params()
    connected = C3_TABLE.sum(axis=0)  # input maps of each C3 map
    expect = {"c1": np.full(6, 25.0), "s2": np.full(6, 4.0), "c3": 25.0 * connected, "s4": np.full(16, 4.0),
              "c5": np.full(120, 400.0), "f6": np.full(84, 120.0)}
    for layer, fan in expect.items():
        for kind in ("weight", "bias"):
            v = p[f"{layer}.{kind}"]
            bound = 2.4 / np.sqrt(fan).reshape((-1,) + (1,) * (v.ndim - 1))
            assert np.all(np.abs(v) <= bound), (layer, kind)
        w = p[f"{layer}.weight"]
        big = np.abs(w).reshape(len(fan), -1).max(axis=1) / (2.4 / np.sqrt(fan))
        if w.size > 100:  # enough draws per unit to come near its bound
            assert big.min() > 0.8, layer
    mask = C3_TABLE.T.astype(bool)
    assert np.all(p["c3.weight"][~mask] == 0) and np.all(p["c3.weight"][mask] != 0)


def test_input_coding():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 10, 10] = 255
    x = PRESETS["lecun1998"].prepare(images)
    assert x.shape == (2, 1, 32, 32)
    assert x[1].min() == x[1].max() == pytest.approx(-0.1)
    assert x[0, 0, 12, 12] == pytest.approx(1.175)


def test_rbf_centres_are_ten_distinct_7x12_bitmaps():
    assert all(len(GLYPHS[d]) == 12 and all(len(row) == 7 for row in GLYPHS[d]) for d in range(10))
    c = rbf_centres(np.float64)
    assert c.shape == (10, 84) and set(np.unique(c)) == {-1.0, 1.0}
    distances = ((c[:, None] - c[None]) ** 2).sum(-1)
    assert distances[~np.eye(10, dtype=bool)].min() >= 4 * 8  # every pair differs in >= 8 pixels


def test_squash_is_scaled_tanh_with_f_of_one_equal_one():
    layer = Squash()
    assert layer.forward(np.array([[1.0]]))[0, 0] == pytest.approx(1.0, abs=1e-4)
    check_layer(Squash(), RNG.standard_normal((3, 4, 4, 2)) * 2)


def test_subsampling_gradients_and_value():
    layer = Subsample2d(3, dtype=np.float64)
    layer.params["weight"][...] = [0.5, -1.0, 2.0]
    layer.params["bias"][...] = [0.1, 0.2, 0.3]
    x = RNG.standard_normal((3, 4, 6, 2))
    y = layer.forward(x)
    assert y[1, 0, 2, 1] == pytest.approx(-1.0 * x[1, 0:2, 4:6, 1].sum() + 0.2)
    check_layer(layer, x)


def test_partially_connected_c3_gradients_and_zero_kernels():
    layer = Conv2d(6, 16, 5, dtype=np.float64, connections=C3_TABLE.T)
    layer.params["weight"][...] = RNG.standard_normal((16, 6, 5, 5)) * layer.mask
    check_layer(layer, RNG.standard_normal((6, 9, 9, 2)))
    assert np.all(layer.grads["weight"][~C3_TABLE.T] == 0)  # unconnected kernels never move
    # C3 map 0 sees S2 maps 0, 1, 2 only: changing map 5 leaves it unchanged
    x = RNG.standard_normal((6, 9, 9, 1))
    y0 = layer.forward(x)[0].copy()
    x[5] += 1
    np.testing.assert_array_equal(layer.forward(x)[0], y0)


def test_rbf_output_gradients_and_distances():
    c = rbf_centres(np.float64)
    layer = RBF(c)
    x = RNG.standard_normal((84, 3))
    out = layer.forward(x)
    np.testing.assert_allclose(-out[:, 1], ((x[:, 1][None] - c) ** 2).sum(1))
    check_layer(layer, x)


@pytest.mark.parametrize("name", ["map", "mse"])
def test_criteria_gradients(name):
    z = -RNG.random((5, 10)) * 80  # minus distances
    labels = RNG.integers(0, 10, 5)
    fn = (lambda a, b: map_criterion(a, b, 0.1)) if name == "map" else mse_criterion
    loss, grad = fn(z, labels)
    assert rel_error(grad, numerical_grad(lambda: fn(z, labels)[0], z)) < 1e-6
    if name == "map":  # value from the paper's formula, written out
        y = -z
        expected = np.mean(y[np.arange(5), labels] + np.log(np.exp(-0.1) + np.exp(-y).sum(1)))
        assert loss == pytest.approx(expected, rel=1e-12)


def test_network_gradients_with_the_mse_criterion():
    model, mse = LeNet5("lecun1998", seed=1, dtype=np.float64), Criterion("mse")
    x = model.prepare(RNG.integers(0, 256, (2, 28, 28)).astype(np.uint8))
    labels = np.array([4, 9])
    _, d = mse.loss(model.forward(x), labels)
    model.backward(d)
    w = model.params()["f6.weight"]
    numeric = numerical_grad(lambda: mse.loss(model.forward(x), labels)[0], w)
    assert rel_error(model.grads()["f6.weight"], numeric) < 1e-6


def gauss_newton_diag_brute_force(f, theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """diag(Jᵀ·2I·J) for E = |f(θ) − c|²: the Jacobian by central differences, entry by entry."""
    jac = []
    for k in range(theta.size):
        old = theta.flat[k]
        theta.flat[k] = old + eps
        plus = f()
        theta.flat[k] = old - eps
        minus = f()
        theta.flat[k] = old
        jac.append((plus - minus) / (2 * eps))
    jac = np.array(jac)  # (params, outputs)
    return 2 * (jac ** 2).sum(axis=1)


def test_gauss_newton_diagonal_matches_brute_force_on_a_tiny_chain():
    """A chain of single units (one path from every weight to the output): there the paper's
    diagonal backpropagation is exactly the Gauss-Newton diagonal, computed here by brute force."""
    l1, a1, l2, a2 = Linear(1, 1, dtype=np.float64), Squash(), Linear(1, 1, dtype=np.float64), Squash()
    out = RBF(np.array([[0.7]]))
    for layer, (w, b) in ((l1, (0.8, 0.1)), (l2, (-1.3, 0.2))):
        layer.params["weight"][...] = w
        layer.params["bias"][...] = b
    x = np.array([[0.9]])
    chain = [l1, a1, l2, a2, out]

    def run():
        h = x
        for layer in chain:
            h = layer.forward(h)
        return h

    z = run()
    _, dz = mse_criterion(z.T, np.array([0]))
    d = dz.T
    estimates = {}
    for layer in reversed(chain):
        d, hess = layer.backward_diag(d)
        estimates.update({(id(layer), k): v for k, v in hess.items()})
    feature = lambda: a2.forward(l2.forward(a1.forward(l1.forward(x)))).ravel()  # noqa: E731
    for layer in (l1, l2):
        for name in ("weight", "bias"):
            brute = gauss_newton_diag_brute_force(feature, layer.params[name])
            np.testing.assert_allclose(estimates[(id(layer), name)].ravel(), brute, rtol=1e-6)


def test_gauss_newton_diagonal_of_f6_matches_brute_force_in_the_real_network():
    model = LeNet5("lecun1998", seed=2, dtype=np.float64)
    x = model.prepare(RNG.integers(0, 256, (1, 28, 28)).astype(np.uint8))
    hess = model.diag_hessian(x)
    f6, act = model.layer("f6"), model.layer("f6_act")
    model.forward(x, keep=["flatten"])
    u = model.activations["flatten"].T  # F6's input, (120, 1)
    w = f6.params["weight"]
    feature = lambda: act.forward(w @ u + f6.params["bias"][:, None]).ravel()  # noqa: E731
    brute = gauss_newton_diag_brute_force(feature, w)  # every F6 weight
    np.testing.assert_allclose(hess["f6.weight"].ravel(), brute, rtol=1e-6)


def test_sdlm_training_learns(mini_dir):
    from lenet5.optim import SDLM
    from lenet5.train import fit

    data = load_dir(mini_dir)
    model = LeNet5("lecun1998", seed=0)
    opt = SDLM(model.params(), model.grads())
    history = fit(model, data, optimizer=opt, epochs=3, progress=False)  # the preset's η schedule, per pattern
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.6
    assert set(opt.state["hessian"]) == set(model.params())
    assert all(np.all(h >= 0) for h in opt.state["hessian"].values())


def test_curvature_scale_by_hand():
    """The scale of h_kk, written out for the top of the network (Appendix C, Gauss-Newton):
    per pattern ∂²y_D/∂x_j² = 2 at the RBF input, ∂²E/∂a² = f'(a)²·∂²E/∂x², ∂²E/∂w_kj² =
    ∂²E/∂a_k²·x_j², ∂²E/∂x_j² = Σ_k w_kj²·∂²E/∂a_k², averaged over the patterns — the same for
    both criteria, so the seed does not depend on labels."""
    model = LeNet5("lecun1998", seed=4, dtype=np.float64)
    x = model.prepare(RNG.integers(0, 256, (3, 28, 28)).astype(np.uint8))
    hess = model.diag_hessian(x)
    model.eval()
    model.forward(x, keep=["c5", "c5_act", "f6"])
    a5, y5, a6 = (model.activations[k] for k in ("c5", "c5_act", "f6"))  # (3, 120, 1, 1), (3, 120, 1, 1), (3, 84)
    a5, y5 = a5.reshape(3, 120), y5.reshape(3, 120)

    def slope(a):  # f'(a) for f(a) = 1.7159·tanh(2a/3)
        return 1.7159 * (2 / 3) / np.cosh(2 / 3 * a) ** 2

    d2a6 = slope(a6) ** 2 * 2  # (3, 84)
    np.testing.assert_allclose(hess["f6.bias"], d2a6.mean(0), rtol=1e-10)
    np.testing.assert_allclose(hess["f6.weight"], np.einsum("pk,pj->kj", d2a6, y5 ** 2) / 3, rtol=1e-10)
    w6 = model.params()["f6.weight"]
    d2a5 = slope(a5) ** 2 * (d2a6 @ w6 ** 2)  # (3, 120)
    np.testing.assert_allclose(hess["c5.bias"], d2a5.mean(0), rtol=1e-10)
