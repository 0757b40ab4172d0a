"""Layers: forward(x) and backward(dy), CS231n style, on batch-last arrays.

Every layer keeps its parameters in ``params`` and the matching gradients in ``grads``
(name -> array, same shapes). ``backward`` only *computes* gradients; updating the
parameters is the optimizer's job (``lenet5.optim``). A layer remembers from ``forward``
just what its ``backward`` needs.

Shapes use the batch-last layout of ``lenet5.ops``: images (C, H, W, N), vectors (F, N).
Every layer works in float32 or float64, whatever dtype its parameters have.
"""

from __future__ import annotations

import numpy as np

from . import ops


class Layer:
    """Base class. Subclasses set ``params``/``grads`` in __init__ if they have any.

    ``buffers`` hold state that is saved but not trained (batch-norm running statistics);
    ``training`` switches layers that behave differently at inference (dropout, batch norm).
    """

    training = True

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for an input of ``input_shape`` (batch axis included)."""
        return input_shape

    # -- optional abilities, with the defaults that fit most layers -------------------------
    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Second-order backward (Gauss-Newton diagonal, the 1998 paper's Appendix C):
        ∂²E/∂y² (like y) -> (∂²E/∂x², {param: ∂²E/∂θ²}). Only the 1998 network's layers have it."""
        raise NotImplementedError(f"{self!r} has no second-order backward")

    def num_trainable(self) -> int:
        """Values an optimizer trains (a connection mask can fix some at zero)."""
        return sum(p.size for p in self.params.values())

    def reset_buffers(self) -> None:
        """Put saved, untrained state (batch-norm statistics) back to its initial values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_input(layer: Layer, x: np.ndarray, ndim: int, channels: int | None) -> None:
    if x.ndim != ndim:
        layout = "(C, H, W, N)" if ndim == 4 else "(F, N)"
        raise ValueError(f"{layer!r}: expected a {ndim}-D batch-last array {layout}, got shape {x.shape}")
    if channels is not None and x.shape[0] != channels:
        raise ValueError(f"{layer!r}: expected {channels} input channels/features on axis 0, got {x.shape[0]}")


class Conv2d(Layer):
    """2-D convolution, stride 1, zero padding ``pad``.

    forward:  x (C_in, H, W, N) -> y (C_out, H + 2·pad - k + 1, W + 2·pad - k + 1, N)
    backward: dy (like y) -> dx (like x), or None when ``input_grad`` is False (the first
              layer of a network never needs it, which saves a col2im per step).
    params:   weight (C_out, C_in, k, k), bias (C_out,)   [PyTorch's layout]
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pad: int = 0,
                 dtype: np.dtype | type = np.float32, input_grad: bool = True,
                 connections: np.ndarray | None = None) -> None:
        super().__init__()
        k = kernel_size
        self.pad = pad
        self.input_grad = input_grad
        # connections[c_out, c_in]: which input maps each output map sees (LeNet-5's C3);
        # unconnected kernels stay exactly zero: their gradients are masked out.
        self.mask = None if connections is None else np.asarray(connections, dtype)[:, :, None, None]
        self.params = {"weight": np.zeros((out_channels, in_channels, k, k), dtype),
                       "bias": np.zeros(out_channels, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.params["weight"]
        check_input(self, x, 4, w.shape[1])
        if self.mask is not None:
            w = w * self.mask
        y, self._cache = ops.conv2d_forward(x.astype(w.dtype, copy=False), w, self.params["bias"], self.pad)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        dx, dw, db = ops.conv2d_backward(dy, self._cache, need_dx=self.input_grad)
        self.grads["weight"][...] = dw if self.mask is None else dw * self.mask
        self.grads["bias"][...] = db
        return dx

    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """Gauss-Newton diagonal: ∂²E/∂w² = Σ ∂²E/∂a²·x², ∂²E/∂x² = Σ w²·∂²E/∂a² (same sums as
        backward, with squared inputs and weights)."""
        rows, wm, w_shape, padded_shape, pad = self._cache
        d2x, d2w, d2b = ops.conv2d_backward(d2y, (rows * rows, wm * wm, w_shape, padded_shape, pad),
                                            need_dx=self.input_grad)
        return d2x, {"weight": d2w if self.mask is None else d2w * self.mask, "bias": d2b}

    def num_trainable(self) -> int:
        w = self.params["weight"]
        kernels = w.shape[0] * w.shape[1] if self.mask is None else int(self.mask.sum())
        return kernels * w.shape[2] * w.shape[3] + w.shape[0]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c_out, _, k, _ = self.params["weight"].shape
        _, h, w, n = input_shape
        return (c_out, h + 2 * self.pad - k + 1, w + 2 * self.pad - k + 1, n)

    def __repr__(self) -> str:
        f, c, k, _ = self.params["weight"].shape
        return f"Conv2d({c}->{f}, {k}x{k}, pad={self.pad})"


class AvgPool2d(Layer):
    """2×2 average pooling with stride 2 (no parameters).

    forward:  x (C, H, W, N) with H, W even -> y (C, H/2, W/2, N)
    backward: dy (C, H/2, W/2, N) -> dx (C, H, W, N), dx = dy/4 spread over each window
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x, 4, None)
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"{self!r}: height and width must be even, got {x.shape[1]}x{x.shape[2]}")
        return ops.avg_pool_forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return ops.avg_pool_backward(dy)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w, n = input_shape
        return (c, h // 2, w // 2, n)


class Tanh(Layer):
    """y = tanh(x), elementwise, any shape. backward: dx = dy · (1 − y²)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._y
        g = y * y
        np.subtract(1, g, out=g)
        g *= dy
        return g


class Sigmoid(Layer):
    """y = 1/(1+e^(−x)), elementwise, any shape. backward: dx = dy · y(1 − y).

    Computed as ½(1 + tanh(x/2)): identical math, but it never overflows for large |x|.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x * 0.5)
        y += 1
        y *= 0.5
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._y
        g = 1 - y
        g *= y
        g *= dy
        return g


class Flatten(Layer):
    """(C, H, W, N) -> (C·H·W, N), features ordered (c, h, w) as torch.flatten(x, 1) does."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._shape)

    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray, dict]:
        return d2y.reshape(self._shape), {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape[:-1])), input_shape[-1])


class Linear(Layer):
    """Fully connected layer, y = W·x + b.

    forward:  x (in_features, N) -> y (out_features, N)
    backward: dy (out_features, N) -> dx = Wᵀ·dy; dW = dy·xᵀ, db = Σ_n dy
    params:   weight (out_features, in_features), bias (out_features,)   [PyTorch's layout]
    """

    def __init__(self, in_features: int, out_features: int, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        self.params = {"weight": np.zeros((out_features, in_features), dtype),
                       "bias": np.zeros(out_features, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.params["weight"]
        check_input(self, x, 2, w.shape[1])
        self._x = x.astype(w.dtype, copy=False)
        y = w @ self._x
        y += self.params["bias"][:, None]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        w = self.params["weight"]
        np.matmul(dy, self._x.T, out=self.grads["weight"])
        np.sum(dy, axis=1, out=self.grads["bias"])
        return w.T @ dy

    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Gauss-Newton diagonal: ∂²E/∂W² = ∂²E/∂a²·(x²)ᵀ, ∂²E/∂x² = (W²)ᵀ·∂²E/∂a²."""
        w = self.params["weight"]
        return (w * w).T @ d2y, {"weight": d2y @ (self._x * self._x).T, "bias": d2y.sum(axis=1)}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.params["weight"].shape[0], input_shape[-1])

    def __repr__(self) -> str:
        out_f, in_f = self.params["weight"].shape
        return f"Linear({in_f}->{out_f})"


class ReLU(Layer):
    """y = max(x, 0), elementwise, any shape. backward: dx = dy · [x > 0]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return x * self._mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._mask


class MaxPool2d(Layer):
    """2×2 max pooling with stride 2 (no parameters).

    forward:  x (C, H, W, N) with H, W even -> y (C, H/2, W/2, N)
    backward: dy -> dx, each window's gradient to its maximum (the first one on ties)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x, 4, None)
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"{self!r}: height and width must be even, got {x.shape[1]}x{x.shape[2]}")
        y, self._argmax = ops.max_pool_forward(x)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return ops.max_pool_backward(dy, self._argmax)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w, n = input_shape
        return (c, h // 2, w // 2, n)


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability p and scale the rest by
    1/(1-p), so inference needs no change (identity). Any shape.

    The random mask comes from ``self.rng`` (set by the model for each step, so a run is
    reproducible and resumable).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng(0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape, dtype=np.float32) >= self.p).astype(x.dtype) / (1 - self.p)
        return x * self._mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy if self._mask is None else dy * self._mask

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class BatchNorm2d(Layer):
    """Batch normalisation over each channel of (C, H, W, N) feature maps.

    training:  μ, σ² = mean and (biased) variance of channel c over (H, W, N);
               y = γ·(x − μ)/√(σ² + ε) + β; running averages updated as in PyTorch
               (momentum 0.1, unbiased variance for the running estimate).
    inference: the running averages replace μ and σ².
    backward:  with x̂ = (x − μ)/√(σ²+ε) and m = H·W·N,
               dx = (γ/√(σ²+ε)) · (dy − mean(dy) − x̂·mean(dy·x̂)),
               dγ = Σ dy·x̂,  dβ = Σ dy.
    params: weight γ (C,), bias β (C,); buffers: running_mean, running_var, num_batches_tracked.
    """

    def __init__(self, channels: int, dtype: np.dtype | type = np.float32, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.params = {"weight": np.ones(channels, dtype), "bias": np.zeros(channels, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.buffers = {"running_mean": np.zeros(channels, dtype), "running_var": np.ones(channels, dtype),
                        "num_batches_tracked": np.zeros((), np.int64)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x, 4, self.params["weight"].shape[0])
        gamma, beta = self.params["weight"], self.params["bias"]
        if not self.training:
            scale = gamma / np.sqrt(self.buffers["running_var"] + self.eps)
            y = x - self.buffers["running_mean"][:, None, None, None]
            y *= scale[:, None, None, None]
            y += beta[:, None, None, None]
            return y
        m = x[0].size
        # statistics accumulated in float64: normalising by a small σ magnifies their round-off
        mean = x.reshape(len(x), m).mean(axis=1, dtype=np.float64).astype(x.dtype)
        xhat = x - mean[:, None, None, None]
        var = np.einsum("chwn,chwn->c", xhat, xhat, dtype=np.float64).astype(x.dtype) / m
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat *= inv_std[:, None, None, None]
        self._xhat, self._inv_std = xhat, inv_std
        b = self.buffers
        b["running_mean"] *= 1 - self.momentum
        b["running_mean"] += self.momentum * mean
        b["running_var"] *= 1 - self.momentum
        b["running_var"] += self.momentum * var * (m / max(m - 1, 1))
        b["num_batches_tracked"] += 1
        y = xhat * gamma[:, None, None, None]
        y += beta[:, None, None, None]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xhat = self._xhat
        m = xhat[0].size
        sum_dy = dy.reshape(len(dy), m).sum(axis=1)
        sum_dy_xhat = np.einsum("chwn,chwn->c", dy, xhat)
        self.grads["bias"][...] = sum_dy
        self.grads["weight"][...] = sum_dy_xhat
        scale = (self.params["weight"] * self._inv_std)[:, None, None, None]
        dx = xhat * (-sum_dy_xhat / m)[:, None, None, None]
        dx += dy
        dx -= (sum_dy / m)[:, None, None, None]
        dx *= scale
        return dx

    def reset_buffers(self) -> None:
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1
        self.buffers["num_batches_tracked"][...] = 0

    def __repr__(self) -> str:
        return f"BatchNorm2d({self.params['weight'].shape[0]})"
