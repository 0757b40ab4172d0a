"""Every layer's backward against central finite differences, in float64."""

import numpy as np
import pytest

from conftest import check_layer, numerical_grad, rel_error
from lenet5.layers import AvgPool2d, Conv2d, Flatten, Linear, Sigmoid, Tanh
from lenet5.losses import softmax_cross_entropy

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("c_in,c_out,k,pad,hw", [(1, 3, 5, 2, 8), (3, 4, 3, 0, 7), (2, 5, 5, 0, 5), (2, 2, 3, 1, 6)])
def test_conv2d_gradients(c_in, c_out, k, pad, hw):
    layer = Conv2d(c_in, c_out, k, pad=pad, dtype=np.float64)
    layer.params["weight"][...] = RNG.standard_normal(layer.params["weight"].shape)
    layer.params["bias"][...] = RNG.standard_normal(c_out)
    check_layer(layer, RNG.standard_normal((c_in, hw, hw, 3)))


def test_conv2d_without_input_grad_still_gives_parameter_grads():
    layer = Conv2d(1, 2, 3, pad=1, dtype=np.float64, input_grad=False)
    layer.params["weight"][...] = RNG.standard_normal(layer.params["weight"].shape)
    check_layer(layer, RNG.standard_normal((1, 5, 5, 2)))
    assert layer.backward(np.ones((2, 5, 5, 2))) is None


def test_avgpool_gradients():
    check_layer(AvgPool2d(), RNG.standard_normal((3, 6, 8, 2)))


@pytest.mark.parametrize("cls", [Tanh, Sigmoid])
def test_activation_gradients(cls):
    check_layer(cls(), RNG.standard_normal((4, 3, 3, 2)) * 2)


def test_linear_gradients():
    layer = Linear(7, 5, dtype=np.float64)
    layer.params["weight"][...] = RNG.standard_normal((5, 7))
    layer.params["bias"][...] = RNG.standard_normal(5)
    check_layer(layer, RNG.standard_normal((7, 4)))


def test_flatten_roundtrip_order_matches_torch_flatten():
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float64).reshape(2, 3, 2, 4)  # (C, H, W, N)
    y = Flatten().forward(x)
    # sample n's features in (c, h, w) order, as torch.flatten(x_nchw, 1)[n]
    expected = np.stack([x[..., n].reshape(-1) for n in range(4)], axis=1)
    np.testing.assert_array_equal(y, expected)
    check_layer(Flatten(), RNG.standard_normal((2, 3, 2, 4)))


def test_softmax_cross_entropy_gradient_and_value():
    logits = RNG.standard_normal((6, 10)) * 3
    labels = RNG.integers(0, 10, 6)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    # value from the textbook definition, written independently
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(6), labels])), rel=1e-12)
    numeric = numerical_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_error(dlogits, numeric) < 1e-6


@pytest.mark.parametrize("name", ["cross-entropy", "map", "mse"])
def test_criteria_on_numpy_and_on_torch_tensors_agree(name):
    """The step's criterion evaluates NumPy outputs with the hand-derived functions and torch
    outputs with torch's ops and autograd: two computations, one value and gradient; the
    NumPy gradient also against central differences."""
    import torch

    from lenet5.losses import Criterion

    criterion = Criterion(name, map_j=0.3)
    outputs = RNG.standard_normal((6, 10)) * 3
    labels = RNG.integers(0, 10, 6)
    loss, d = criterion.loss(outputs, labels)
    assert isinstance(loss, float)
    numeric = numerical_grad(lambda: criterion.loss(outputs, labels)[0], outputs)
    assert rel_error(d, numeric) < 1e-6
    t_loss, t_d = criterion.loss(torch.tensor(outputs), labels)
    assert isinstance(t_loss, torch.Tensor) and t_loss.ndim == 0 and not t_loss.requires_grad
    assert float(t_loss) == pytest.approx(loss, rel=1e-12)
    assert rel_error(d, t_d.numpy()) < 1e-10
    assert int(criterion.correct(torch.tensor(outputs), labels)) == criterion.correct(outputs, labels)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]])
    loss, d = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert loss == pytest.approx(5000.0, rel=1e-9)  # sample 0: ~0, sample 1: 10000 -> mean 5000


def test_sigmoid_does_not_overflow():
    y = Sigmoid().forward(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


def test_layers_reject_wrong_shapes():
    with pytest.raises(ValueError, match="input channels"):
        Conv2d(3, 4, 3).forward(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="even"):
        AvgPool2d().forward(np.zeros((1, 5, 4, 1)))
    with pytest.raises(ValueError, match="2-D"):
        Linear(4, 2).forward(np.zeros((4, 1, 1)))


def test_relu_gradients():
    from lenet5.layers import ReLU

    x = RNG.standard_normal((3, 4, 4, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    check_layer(ReLU(), x)


def test_maxpool_gradients():
    from lenet5.layers import MaxPool2d

    check_layer(MaxPool2d(), RNG.standard_normal((3, 6, 8, 2)))


def test_dropout_gradient_with_a_fixed_mask_and_identity_at_inference():
    from lenet5.layers import Dropout

    layer = Dropout(0.4)
    x = RNG.standard_normal((50, 40))
    layer.rng = np.random.default_rng(1)
    y = layer.forward(x)
    kept = y != 0
    assert 0.5 < kept.mean() < 0.7  # ~60% kept
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)
    dy = RNG.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dy), dy * kept / 0.6)
    layer.training = False
    assert layer.forward(x) is x


def test_batchnorm_gradients_in_training_mode():
    from lenet5.layers import BatchNorm2d

    layer = BatchNorm2d(3, dtype=np.float64)
    layer.params["weight"][...] = RNG.standard_normal(3)
    layer.params["bias"][...] = RNG.standard_normal(3)
    check_layer(layer, RNG.standard_normal((3, 4, 4, 2)) * 2 + 1)


def test_batchnorm_statistics_and_inference_mode():
    from lenet5.layers import BatchNorm2d

    layer = BatchNorm2d(2, dtype=np.float64)
    x = RNG.standard_normal((2, 3, 3, 4)) * np.array([2.0, 5.0])[:, None, None, None] + 3
    y = layer.forward(x)
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(1, 2, 3)), 1, rtol=1e-4)
    m = x[0].size
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * x.mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * x.var(axis=(1, 2, 3)) * m / (m - 1))
    layer.training = False
    expected = (x - layer.buffers["running_mean"][:, None, None, None]) / np.sqrt(
        layer.buffers["running_var"][:, None, None, None] + 1e-5)
    np.testing.assert_allclose(layer.forward(x), expected)
