"""The fast batch-last ops against the slow reference ops (same signatures), random inputs."""

import numpy as np
import pytest

from lenet5 import ops

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("c_in,c_out,k,pad,hw,n", [(1, 6, 5, 2, 28, 3), (6, 16, 5, 0, 14, 2), (16, 120, 5, 0, 5, 4),
                                                  (3, 2, 3, 1, 9, 1)])
def test_conv_fast_matches_reference(dtype, tol, c_in, c_out, k, pad, hw, n):
    x = RNG.standard_normal((c_in, hw, hw, n)).astype(dtype)
    w = RNG.standard_normal((c_out, c_in, k, k)).astype(dtype)
    b = RNG.standard_normal(c_out).astype(dtype)
    y, cache = ops.conv2d_forward(x, w, b, pad)
    y_ref, cache_ref = ops.conv2d_forward_reference(x, w, b, pad)
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol * np.abs(y_ref).max())
    dy = RNG.standard_normal(y.shape).astype(dtype)
    for got, want in zip(ops.conv2d_backward(dy, cache), ops.conv2d_backward_reference(dy, cache_ref)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_conv_long_k_weight_gradient_path():
    """A batch big enough that dW goes through the chunked long-K product (28·100 > 2·2048)."""
    x = RNG.standard_normal((1, 28, 28, 100)).astype(np.float32)
    w = RNG.standard_normal((6, 1, 5, 5)).astype(np.float32)
    y, cache = ops.conv2d_forward(x, w, np.zeros(6, np.float32), 2)
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    _, dw, _ = ops.conv2d_backward(dy, cache, need_dx=False)
    _, dw_ref, _ = ops.conv2d_backward_reference(dy.astype(np.float64), (x.astype(np.float64), w.astype(np.float64), 2))
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-3)


def test_conv_reference_matches_direct_definition():
    """The reference itself, against a loop over every output pixel (tiny sizes)."""
    x = RNG.standard_normal((2, 5, 5, 2))
    w = RNG.standard_normal((3, 2, 3, 3))
    b = RNG.standard_normal(3)
    y, _ = ops.conv2d_forward_reference(x, w, b, 1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for f in range(3):
        for i in range(5):
            for j in range(5):
                for n in range(2):
                    assert y[f, i, j, n] == pytest.approx(b[f] + np.sum(w[f] * xp[:, i:i + 3, j:j + 3, n]))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_avgpool_fast_matches_reference(dtype, tol):
    x = RNG.standard_normal((6, 28, 28, 5)).astype(dtype)
    np.testing.assert_allclose(ops.avg_pool_forward(x), ops.avg_pool_forward_reference(x), atol=tol)
    dy = RNG.standard_normal((6, 14, 14, 5)).astype(dtype)
    np.testing.assert_allclose(ops.avg_pool_backward(dy), ops.avg_pool_backward_reference(dy), atol=tol)
    assert ops.avg_pool_forward(x).dtype == dtype and ops.avg_pool_backward(dy).dtype == dtype


def test_row_windows_are_the_im2col_matrix_of_each_output_row():
    """windows[y, (i, c, j), (x, n)] == xp[c, y+i, x+j, n], checked entry by entry."""
    c, h, w, n, k = 2, 7, 6, 3, 3
    xp = RNG.standard_normal((c, h, w, n))
    windows = ops.row_windows(ops.im2row(xp, k), k)
    ho, wo = h - k + 1, w - k + 1
    assert windows.shape == (ho, k * c * k, wo * n)
    for y in range(ho):
        for i in range(k):
            for ch in range(c):
                for j in range(k):
                    expected = xp[ch, y + i, j:j + wo, :].reshape(-1)
                    np.testing.assert_array_equal(windows[y, (i * c + ch) * k + j], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_fast_matches_reference(dtype):
    x = RNG.standard_normal((6, 28, 28, 5)).astype(dtype)
    x[:, ::3, ::3] = 0.5  # plenty of ties
    y, arg = ops.max_pool_forward(x)
    y_ref, arg_ref = ops.max_pool_forward_reference(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    dy = RNG.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(ops.max_pool_backward(dy, arg), ops.max_pool_backward_reference(dy, arg_ref))


def test_maxpool_ties_send_the_gradient_to_one_input_like_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 4, 4, 1))
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = x[0, 1, 0, 0] = x[0, 1, 1, 0] = 1.0  # a window of four equal maxima
    x[0, 2, 3, 0] = x[0, 3, 2, 0] = 2.0  # two equal maxima
    dy = np.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    _, arg = ops.max_pool_forward(x)
    dx = ops.max_pool_backward(dy, arg)
    t = torch.tensor(x[..., 0][None], requires_grad=True)  # (1, C, H, W)
    torch.nn.functional.max_pool2d(t, 2).backward(torch.tensor(dy[..., 0][None]))
    np.testing.assert_array_equal(dx[..., 0], t.grad[0].numpy())
    assert (dx != 0).sum() == 4  # one input per window
