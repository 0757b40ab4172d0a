"""The pieces that only the 1998 LeNet-5 uses, as the paper describes them.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998 — sections II.B (LeNet-5), Appendix A (squashing function,
initialisation) and Appendix C (stochastic diagonal Levenberg-Marquardt).

- ``squash``: f(a) = A·tanh(S·a), A = 1.7159, S = 2/3, so that f(±1) = ±1;
- the C3 connection table (which S2 maps feed each C3 map);
- the OUTPUT layer's fixed RBF centres: stylised 7×12 bitmaps of the digits, +1 ink, −1 paper.
  The paper shows them in Fig. 3 but never lists them; these are our own drawings in that
  style (see ``GLYPHS``), so they are a documented choice, not a transcription;
- the input coding: background −0.1, ink 1.175, 28×28 digits padded to 32×32.
"""

from __future__ import annotations

import numpy as np

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


def prepare_input(images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 1, 32, 32): paper −0.1, ink 1.175, padded with the background."""
    x = np.full((len(images), 1, 32, 32), -0.1, dtype=dtype)
    x[:, 0, 2:30, 2:30] = images.astype(dtype) * (1.275 / 255) - 0.1
    return x


def init_2_4(rng: np.random.Generator, name: str, w: np.ndarray, fan_in: int) -> np.ndarray:
    """Uniform in ±2.4/F, F the fan-in of the unit (Appendix A)."""
    return rng.uniform(-2.4 / fan_in, 2.4 / fan_in, size=w.shape)
