"""Data augmentation on the fly: random affine maps and elastic distortions, batched in NumPy.

Every image of a batch gets its own random map, and the whole batch is resampled at once
(bilinear interpolation, zeros outside), so there is no Python loop over images or pixels.
The randomness comes from the generator passed in; the training loop seeds one per step from
(seed, epoch, batch), so a run is reproducible and resumes exactly.

- affine: shift ±2 px, rotation ±10°, scale 0.9-1.1, horizontal shear ±0.2;
- lecun1998: the 1998 paper's distortions: translation (±2 px), scaling (0.9-1.1), squeezing
  (±10%) and horizontal shear (±0.2), no rotation;
- lecun1998-pool: the same, one image in ten left as it is, as when drawing from the paper's
  training set of 60,000 originals and 540,000 distortions (``lenet5 train --distort``);
- flip: a random mirror image (half the time) and a shift of ±1 px — for Fashion-MNIST,
  where a mirrored shirt is still a shirt (a mirrored 3 is not a 3);
- affine-pen: affine, with half the images first redrawn with another pen (``repen``): bolder or
  finer, coarser strokes, as other writers' pens and phone photos give them (it reads other
  writers better, docs/presets.md);
- affine-pen-junk: affine-pen, with one image in ten replaced by a picture that is not one digit
  (``not_one_digit``: two digits touching, a piece of one) under a random label, so the network
  learns to be unsure of such pictures: reading a photo of a number, its sureness then tells
  where touching digits are cut (the shipped modern network is trained with it, docs/presets.md);
- elastic: Simard, Steinkraus & Platt (2003): a random displacement field, smoothed by a
  Gaussian (σ = 4 px) and scaled by α = 34 (their values), applied on top of the affine map
  (1.7 px root-mean-square displacement per axis, on top of the affine map's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SIZE = 28
_CENTRE = (SIZE - 1) / 2
_GRID = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij"), axis=-1).reshape(-1, 2) - _CENTRE


@dataclass(frozen=True)
class Augment:
    """A random image transform; call it with uint8 images (N, 28, 28) and a generator."""

    shift: float = 2.0
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 0.2
    squeeze: float = 0.0
    flip: bool = False
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    #: the share of images left exactly as they are (drawn per image)
    clean: float = 0.0
    #: the share of images redrawn with another pen (``repen``): bolder or finer, coarser strokes
    pen: float = 0.0
    #: the share of images replaced by pictures that are not one digit (``not_one_digit``: two
    #: digits touching, a piece of one), each given a random label, so that the network learns
    #: to be unsure of them (reading photos, the network judges where touching digits are cut)
    junk: float = 0.0

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(images, self.draw(len(images), rng))

    def draw(self, n: int, rng: np.random.Generator) -> Draws:
        """The random numbers for ``n`` images, drawn from ``rng`` in a fixed order. Draws of
        several calls can be joined (``join_draws``) and applied at once: the same images as
        applying each, at the cost of one batched call (per-image training augments one image
        per step, where the per-call overhead was most of the work)."""
        d: Draws = {}
        d["angle"] = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg, n))
        d["scale"] = rng.uniform(*self.scale, n)
        d["shear"] = rng.uniform(-self.shear, self.shear, n)
        d["shift"] = rng.uniform(-self.shift, self.shift, (n, 2))
        d["squeeze"] = rng.uniform(-self.squeeze, self.squeeze, n)
        if self.flip:  # a mirror image, for half the images
            d["mirror"] = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        if self.elastic_alpha:
            d["field"] = rng.uniform(-1, 1, (n, 2, SIZE, SIZE)).astype(np.float32)
        if self.clean:
            d["clean"] = rng.random(n) < self.clean
        if self.pen:
            d["pen"] = rng.random(n) < self.pen
            d["pen_blur"] = rng.uniform(*PEN_BLUR, n)
            d["pen_level"] = rng.uniform(*PEN_LEVEL, n)
        if self.junk:
            d["junk"] = rng.random(n) < self.junk
            d["junk_label"] = rng.integers(0, 10, n)
            d["junk_pair"] = rng.random(n) < JUNK_PAIRS
            d["junk_partner"] = rng.integers(0, n, n) - np.arange(n)  # relative: draws can be joined
            d["junk_gap"] = rng.uniform(*JUNK_GAP, n)
            d["junk_drop"] = rng.uniform(-JUNK_DROP, JUNK_DROP, n)
            d["junk_cut"] = rng.uniform(*JUNK_CUT, n)
            d["junk_left"] = rng.random(n) < 0.5
        return d

    def labels(self, labels: np.ndarray, d: Draws) -> np.ndarray:
        """The labels (N,) of the images ``apply`` makes from these draws: a random one for each
        image replaced by one that is not one digit (over many steps, a uniform target)."""
        return np.where(d["junk"], d["junk_label"], labels) if self.junk else labels

    def apply(self, images: np.ndarray, d: Draws) -> np.ndarray:
        """uint8 images (N, 28, 28) transformed with the numbers ``d`` drawn for them (the labels
        of what it makes: ``labels``)."""
        written = images
        if self.pen and d["pen"].any():  # only the images drawn for another pen are redrawn
            pen = d["pen"]
            written = images.copy()
            written[pen] = repen(images[pen], d["pen_blur"][pen], d["pen_level"][pen])
        if self.junk and d["junk"].any():
            written = written.copy() if written is images else written
            junk = np.nonzero(d["junk"])[0]
            written[junk] = not_one_digit(written, junk, junk + d["junk_partner"][junk], d["junk_pair"][junk],
                                          d["junk_gap"][junk], d["junk_drop"][junk], d["junk_cut"][junk],
                                          d["junk_left"][junk])
        coords = self.source_coords(d)
        if self.elastic_alpha:
            coords += self.elastic_alpha * smooth(d["field"], self.elastic_sigma)
        out = np.clip(np.rint(bilinear(written.astype(np.float32), coords)), 0, 255).astype(np.uint8)
        if self.clean:
            out = np.where(d["clean"][:, None, None], images, out)
        return out

    @staticmethod
    def source_coords(d: Draws) -> np.ndarray:
        """For each image and output pixel, where to read the input: (N, 28, 28, 2) as (row, col).

        The forward map is x' = R·H·Q·S·x + t about the image centre (S: scale, Q: squeezing
        and mirroring, H: horizontal shear, R: rotation); we need its inverse,
        x = (R·H·Q·S)⁻¹(x' − t).
        """
        n = len(d["angle"])
        cos, sin = np.cos(d["angle"]), np.sin(d["angle"])
        # coordinates are (row, col); rotation by +angle, shear moves columns by shear·row
        rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (N, 2, 2)
        shr = np.zeros((n, 2, 2))
        shr[:, 0, 0] = shr[:, 1, 1] = 1
        shr[:, 1, 0] = d["shear"]
        # squeezing: rows stretched by (1 + q) while columns shrink by (1 − q), or the reverse
        sq = np.zeros((n, 2, 2))
        sq[:, 0, 0], sq[:, 1, 1] = 1 + d["squeeze"], 1 - d["squeeze"]
        if "mirror" in d:  # columns reversed
            sq[:, 1, 1] *= d["mirror"]
        forward = rot @ shr @ sq * d["scale"][:, None, None]
        inverse = np.linalg.inv(forward)
        diff = _GRID[None] - d["shift"][:, None, :]  # (N, 784, 2): output pixel minus shift
        src = np.empty((n, SIZE * SIZE, 2), dtype=np.float32)
        for i in (0, 1):  # a 2x2 matrix-vector product per pixel, written out
            src[..., i] = inverse[:, i, 0, None] * diff[..., 0] + inverse[:, i, 1, None] * diff[..., 1] + _CENTRE
        return src.reshape(n, SIZE, SIZE, 2)


#: an augmentation's random numbers for N images: arrays with N first, by name
Draws = dict[str, np.ndarray]


def join_draws(draws: list[Draws]) -> Draws:
    """The draws of several calls as the draws of one call over all their images, in order."""
    return {key: np.concatenate([d[key] for d in draws]) for key in draws[0]} if draws else {}


def _gaussian_matrix(sigma: float) -> np.ndarray:
    """G with (G·f) = f blurred by a Gaussian along one axis (zero outside)."""
    d = np.arange(SIZE)[:, None] - np.arange(SIZE)[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum(axis=1, keepdims=True)


def smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Random displacement fields (N, 28, 28, 2) from uniform(−1, 1) draws (N, 2, 28, 28),
    Gaussian-blurred (Simard et al.'s recipe; multiply by α). The blur is separable: two
    batched matrix products, G·F·Gᵀ."""
    g = _gaussian_matrix(sigma).astype(np.float32)
    return (g @ field @ g.T).transpose(0, 2, 3, 1)


#: repen's Gaussian blur σ (pixels) and inking level (share of full ink), drawn per image, and
#: the width of the inked edge (share of full ink over which ink goes from none to full)
PEN_BLUR, PEN_LEVEL, PEN_EDGE = (0.5, 1.5), (0.1, 0.45), 0.3


def repen(images: np.ndarray, sigma: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The same digits written with another pen and seen more coarsely: uint8 (N, 28, 28) blurred
    by a Gaussian of σ = ``sigma[i]`` pixels, then inked where the blur is above ``level[i]`` of
    full ink with a soft edge (a low level gives bold strokes, a high one fine strokes; the blur
    rounds corners and closes small gaps as a low-resolution picture does)."""
    d = np.arange(SIZE)[:, None] - np.arange(SIZE)[None, :]
    g = np.exp(-0.5 * (d[None] / sigma[:, None, None]) ** 2)
    g = (g / g.sum(axis=2, keepdims=True)).astype(np.float32)  # (N, 28, 28): one blur per image
    blurred = g @ (images.astype(np.float32) / 255) @ g.transpose(0, 2, 1)
    ink = (blurred / blurred.max(axis=(1, 2), keepdims=True).clip(1e-6) - level[:, None, None]) / PEN_EDGE
    return np.rint(np.clip(ink, 0, 1) * 255).astype(np.uint8)


#: pictures that are not one digit: this share are two digits side by side, the rest pieces of one
JUNK_PAIRS = 0.6
#: a pair's gap, as a share of the first digit's height (below 0 they overlap), and how much lower
#: the second digit sits (± this share of the height)
JUNK_GAP, JUNK_DROP = (-0.25, 0.05), 0.1
#: where a piece is cut, as a share of the digit's width from its left; a piece narrower than
#: JUNK_PIECE of its height could be a whole 1, so that image is made a pair instead
JUNK_CUT, JUNK_PIECE = (0.3, 0.7), 0.5


def _boxes(images: np.ndarray) -> np.ndarray:
    """Each image's ink box (N, 4) as (top, bottom, left, right), inclusive; ink: above a quarter."""
    ink = images > 63
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    last = SIZE - 1
    return np.stack([rows.argmax(1), last - rows[:, ::-1].argmax(1),
                     cols.argmax(1), last - cols[:, ::-1].argmax(1)], -1).astype(np.float32)


def not_one_digit(images: np.ndarray, first: np.ndarray, second: np.ndarray, pair: np.ndarray,
                  gap: np.ndarray, drop: np.ndarray, cut: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Pictures (uint8 (M, 28, 28)) that are not one digit, in MNIST's frame: where ``pair``,
    digits ``images[first]`` and ``images[second]`` side by side, the second ``gap`` of the
    first's height to the right of it (overlapping when below 0) and ``drop`` of it lower;
    elsewhere the piece of ``images[first]`` left (``left``) or right of a cut at ``cut`` of its
    width. What a picture of touching digits gives when read whole, or cut in the wrong place.
    A piece narrower than JUNK_PIECE of its height (a 1 has that shape) is made a pair instead.

    The box scaled so its longer side is 20 pixels is the pair's ink box, or for a piece its
    columns with its whole digit's rows, and it is centred in the 28×28 frame by the box, not
    by the centre of mass as ``predict.mnist_input`` centres, and resampled bilinearly
    without smoothing first (one batched resampling, as ``Augment.apply``).
    """
    a_images = images[first]
    a = a_images.astype(np.float32)
    box_a, box_b = _boxes(a_images), _boxes(images[second])
    height = box_a[:, 1] - box_a[:, 0] + 1
    # where the second digit's pixels go on the first one's canvas: (rows, cols) added
    move = np.stack([(box_a[:, 0] + box_a[:, 1] - box_b[:, 0] - box_b[:, 1]) / 2 + drop * height,
                     box_a[:, 3] + 1 + gap * height - box_b[:, 2]], -1)
    split = box_a[:, 2] + cut * (box_a[:, 3] - box_a[:, 2] + 1)
    piece = np.where(left, split - box_a[:, 2], box_a[:, 3] + 1 - split)
    pair = pair | (piece < JUNK_PIECE * height)
    top = np.where(pair, np.minimum(box_a[:, 0], box_b[:, 0] + move[:, 0]), box_a[:, 0])
    bottom = np.where(pair, np.maximum(box_a[:, 1], box_b[:, 1] + move[:, 0]), box_a[:, 1])
    lo = np.where(pair | left, box_a[:, 2], split)
    hi = np.where(pair, box_b[:, 3] + move[:, 1], np.where(left, split - 1, box_a[:, 3]))
    scale = 20 / np.maximum(bottom - top + 1, hi - lo + 1)
    centre = np.stack([(top + bottom) / 2, (lo + hi) / 2], -1)
    # each output pixel, on the canvas
    canvas = _GRID[None] / scale[:, None, None] + centre[:, None, :]  # (M, 784, 2)
    out = bilinear(a, canvas.reshape(-1, SIZE, SIZE, 2))
    if pair.any():  # the second digit, where there is one
        b = images[second[pair]].astype(np.float32)
        out[pair] = np.maximum(out[pair], bilinear(b, (canvas[pair] - move[pair, None, :]).reshape(-1, SIZE, SIZE, 2)))
    # a piece: nothing beyond the cut
    col = canvas[..., 1].reshape(-1, SIZE, SIZE)
    beyond = np.where(left[:, None, None], col >= split[:, None, None], col < split[:, None, None])
    out = np.where(~pair[:, None, None] & beyond, 0, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def bilinear(images: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample images (N, H, W) at real-valued (row, col) coords (N, h, w, 2); zero outside."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), images.dtype)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(n, -1)
    r, c = coords[..., 0].reshape(n, -1), coords[..., 1].reshape(n, -1)
    rf, cf = np.floor(r), np.floor(c)
    fr, fc = (r - rf).astype(np.float32), (c - cf).astype(np.float32)
    # neighbours' indices in the padded image; anything outside lands on its zero border
    r0, c0 = rf.astype(np.int64), cf.astype(np.int64)
    r0, r1 = np.clip(r0, -1, h) + 1, np.clip(r0 + 1, -1, h) + 1
    c0, c1 = np.clip(c0, -1, w) + 1, np.clip(c0 + 1, -1, w) + 1
    stride = w + 2

    def at(rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, rr * stride + cc, axis=1)

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return (top * (1 - fr) + bottom * fr).reshape(coords.shape[:3])


def make_augment(name: str) -> Augment | None:
    """The augmentation ``name`` (a key of AUGMENTS); None for "none"."""
    return AUGMENTS[name]


AUGMENTS = {
    "none": None,
    "affine": Augment(),
    "elastic": Augment(elastic_alpha=34.0),
    "affine-pen": Augment(pen=0.5),
    "affine-pen-junk": Augment(pen=0.5, junk=0.1),
    # the 1998 paper's distortions: translation, scaling, squeezing, horizontal shear; no rotation
    "lecun1998": Augment(shift=2.0, rotate_deg=0.0, scale=(0.9, 1.1), shear=0.2, squeeze=0.1),
    # for pictures of things, where a mirror image is the same thing (not for digits)
    "flip": Augment(shift=1.0, rotate_deg=0.0, scale=(1.0, 1.0), shear=0.0, flip=True),
}
# the paper's distortions drawn as from its pool of 60,000 originals and 540,000 distortions:
# one image in ten left as it is
AUGMENTS["lecun1998-pool"] = replace(AUGMENTS["lecun1998"], clean=0.1)
