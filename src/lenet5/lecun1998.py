"""The pieces that only the 1998 LeNet-5 uses, as the paper describes them.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998 — sections II.B (LeNet-5), Appendix A (squashing function,
initialisation) and Appendix C (stochastic diagonal Levenberg-Marquardt).

- ``squash``: f(a) = A·tanh(S·a), A = 1.7159, S = 2/3, so that f(±1) = ±1;
- the C3 connection table (which S2 maps feed each C3 map);
- the OUTPUT layer's fixed RBF centres: stylised 7×12 bitmaps of the digits, +1 ink, −1 paper.
  The paper shows them in Fig. 3 but never lists them; these are our own drawings in that
  style (see ``GLYPHS``), so they are a documented choice, not a transcription;
- the input coding: background −0.1, ink 1.175, 28×28 digits padded to 32×32 (``BACKGROUND``, ``INK``, ``PAD``);
- its layers: ``Squash``, ``Subsample2d`` (trainable subsampling), ``RBF`` (the OUTPUT units),
  each with the second-order backward SDLM needs, and the initialisation (``init``: ±2.4/√F,
  where the paper prints ±2.4/F; see ``init``).
The criteria (MAP, MSE) are in ``lenet5.losses``.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .layers import Conv2d, Layer, check_input

#: the squashing function's amplitude and slope: f(a) = A·tanh(S·a), so f(±1) = ±1
A, S = 1.7159, 2 / 3

# C3_TABLE[s2_map][c3_map] = 1 where S2 map feeds C3 map (paper, Table I).
C3_TABLE = np.array([
    # 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1],
    [1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1],
    [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1],
    [0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1],
    [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1],
], dtype=bool)

GLYPHS = {
    0: ["..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."],
    1: ["...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
        "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."],
    2: [".#####.", "#.....#", "......#", "......#", ".....#.", "....#..",
        "...#...", "..#....", ".#.....", "#......", "#......", "#######"],
    3: [".#####.", "#.....#", "......#", "......#", "......#", "..####.",
        "......#", "......#", "......#", "......#", "#.....#", ".#####."],
    4: ["....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.", "#....#.",
        "#######", ".....#.", ".....#.", ".....#.", ".....#.", ".....#."],
    5: ["#######", "#......", "#......", "#......", "######.", "......#",
        "......#", "......#", "......#", "......#", "#.....#", ".#####."],
    6: ["..####.", ".#.....", "#......", "#......", "#.###..", "##...#.",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."],
    7: ["#######", "......#", ".....#.", ".....#.", "....#..", "....#..",
        "...#...", "...#...", "..#....", "..#....", "..#....", "..#...."],
    8: [".#####.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###..",
        ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."],
    9: ["..###..", ".#...#.", "#.....#", "#.....#", "#.....#", ".#...##",
        "..###.#", "......#", "......#", ".....#.", "....#..", ".###..."],
}


def rbf_centres(dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The OUTPUT layer's centres, (10, 84): glyph d read row by row, +1 for '#', −1 for '.'."""
    return np.array([[1.0 if ch == "#" else -1.0 for row in GLYPHS[d] for ch in row] for d in range(10)],
                    dtype=dtype)


#: the input coding: paper (pixel 0) is −0.1, full ink (255) 1.175, and the 28×28 digit is
#: padded with paper to 32×32, so that the mean input is near 0 and its variance near 1
BACKGROUND, INK, PAD = -0.1, 1.175, 2


def fan_in(layer: Layer) -> np.ndarray:
    """F, the number of inputs of each unit of a layer: 25·(connected input maps) per output map
    of a convolution, 4 for a subsampling unit, the input size of F6. (n_out,) floats."""
    if isinstance(layer, Conv2d):
        w = layer.params["weight"]
        connected = (np.full(w.shape[:2], True) if layer.mask is None else layer.mask[:, :, 0, 0] > 0).sum(axis=1)
        return (connected * w.shape[2] * w.shape[3]).astype(float)
    if isinstance(layer, Subsample2d):
        return np.full(layer.params["weight"].shape, 4.0)
    out_f, in_f = layer.params["weight"].shape
    return np.full(out_f, float(in_f))


def init(rng: np.random.Generator, name: str, p: np.ndarray, layer: Layer) -> np.ndarray:
    """Every trainable value (weights, biases, subsampling coefficients) uniform in ±2.4/√F,
    F the fan-in of its unit.

    The paper prints ±2.4/F_i, "to keep the total inputs within the operating range of the
    sigmoid". With inputs of unit variance, a sum of F terms with weights drawn from ±b has
    standard deviation b·√(F/3): ±2.4/√F gives every unit the same spread, 1.39, at the edge
    of the squashing function's linear range, whereas ±2.4/F gives 1.39/√F (0.07 in C5), so
    small that nearly every curvature estimate starts far below μ and nearly all of SDLM's steps
    are η/μ.
    Measured on a validation split (README, "The 1998 network"): ±2.4/√F with η × 0.3 reaches
    99.0% where the printed ±2.4/F, with η × 0.1 (the largest stable factor for it), stays
    near 98.8%; on the test set (seed 0, the code of that round), 98.72% against 98.07%."""
    bound = 2.4 / np.sqrt(fan_in(layer))  # per unit
    shape = (-1,) + (1,) * (p.ndim - 1)
    out = rng.uniform(-1, 1, size=p.shape) * bound.reshape(shape)
    if isinstance(layer, Conv2d) and layer.mask is not None and p.ndim == 4:
        out *= layer.mask  # unconnected C3 kernels stay exactly zero
    return out


class Squash(Layer):
    """LeNet-5's squashing function y = A·tanh(S·x), A = 1.7159, S = 2/3 (so f(±1) = ±1).

    backward: dx = dy·f'(x) with f'(x) = A·S·(1 − (y/A)²).
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._t = np.tanh(S * x)
        return A * self._t

    def _slope(self) -> np.ndarray:
        t = self._t
        return A * S * (1 - t * t)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._slope()

    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray, dict]:
        """Gauss-Newton: ∂²E/∂x² ≈ f'(x)²·∂²E/∂y² (the f'' term is dropped, as in the paper)."""
        slope = self._slope()
        return d2y * slope * slope, {}


class Subsample2d(Layer):
    """LeNet-5's trainable subsampling (S2, S4): per map, the sum of each 2×2 block times a
    trainable coefficient, plus a trainable bias (the squashing is a separate layer).

    forward:  x (C, H, W, N) -> a (C, H/2, W/2, N), a = coef_c·Σ_block x + bias_c
    backward: every input of a block gets coef_c·da; dcoef = Σ da·(block sums), dbias = Σ da
    params:   weight (C,) [the coefficients], bias (C,)
    """

    def __init__(self, channels: int, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        self.params = {"weight": np.zeros(channels, dtype), "bias": np.zeros(channels, dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_input(self, x, 4, self.params["weight"].shape[0])
        self._sums = 4 * ops.avg_pool_forward(x)  # Σ of each 2×2 block
        a = self._sums * self.params["weight"][:, None, None, None]
        a += self.params["bias"][:, None, None, None]
        return a

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["weight"][...] = np.einsum("chwn,chwn->c", dy, self._sums)
        self.grads["bias"][...] = dy.sum(axis=(1, 2, 3))
        return 4 * ops.avg_pool_backward(dy * self.params["weight"][:, None, None, None])

    def backward_diag(self, d2y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        coef = self.params["weight"][:, None, None, None]
        d2x = 4 * ops.avg_pool_backward(d2y * coef * coef)
        return d2x, {"weight": np.einsum("chwn,chwn->c", d2y, self._sums * self._sums),
                     "bias": d2y.sum(axis=(1, 2, 3))}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w, n = input_shape
        return (c, h // 2, w // 2, n)

    def __repr__(self) -> str:
        return f"Subsample2d({self.params['weight'].shape[0]})"


class RBF(Layer):
    """Euclidean radial basis units with fixed centres (LeNet-5's OUTPUT).

    forward:  x (F, N) -> distances y (K, N), y_k = Σ_j (x_j − c_kj)². The layer returns
              −y, so that, like logits, the largest output is the predicted class.
    backward: d(−y_k)/dx_j = −2(x_j − c_kj).
    buffers:  centres (K, F), fixed (not trained).
    """

    def __init__(self, centres: np.ndarray) -> None:
        super().__init__()
        self.buffers = {"centres": np.array(centres)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        c = self.buffers["centres"]
        check_input(self, x, 2, c.shape[1])
        self._x = x
        # Σ_j (x_j − c_kj)², summed directly: the expansion |x|² − 2c·x + |c|² would be one
        # product, but loses digits to cancellation near a centre, where the answer is decided
        diff = x[None, :, :] - c[:, :, None]  # (K, F, N)
        return -np.einsum("kfn,kfn->kn", diff, diff)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        c = self.buffers["centres"]
        # d(−y_k)/dx = −2(x − c_k): Σ_k dy_k·(−2)(x − c_k)
        return -2 * (self._x * dy.sum(axis=0)[None, :] - c.T @ dy)

    def backward_diag(self, dy: np.ndarray) -> tuple[np.ndarray, dict]:
        """∂²E/∂x_j², averaged over the N patterns of dy (K, N): the Gauss-Newton term of the
        paper's criterion y_D = Σ_j (x_j − c_Dj)², i.e. ∂²y_D/∂x_j² = 2 for every pattern.

        The same seed serves both criteria. MAP adds log(e^{−j} + Σ_i e^{−y_i}), whose exact
        second derivative through the quadratics, 2·Σ_k ∂E/∂y_k = 2·p(rubbish class), falls
        from 2 towards 0 as training succeeds, and whose own curvature (∂²E/∂y²) the paper
        leaves out; seeding with it made h_kk, and so the step sizes, depend on how well the
        network already does. dy only tells the batch size here."""
        n = dy.shape[1]
        return np.full(self._x.shape, 2 / n, dtype=self._x.dtype), {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.buffers["centres"].shape[0], input_shape[-1])

    def __repr__(self) -> str:
        k, f = self.buffers["centres"].shape
        return f"RBF({f}->{k}, fixed centres)"
