"""Digits in a picture: find each one, left to right, and prepare it MNIST-style.

``read_picture`` is the one entry point for ``lenet5 predict`` and the web page. It takes a grey
picture (a photo of paper, a scan, or a drawing, either polarity) and returns the digits it
finds, each with its box in the picture and the 28×28 image the network sees, plus the named
stages of the work, for showing them (``--show-input``, the web page).

A photo of paper goes through these stages:

1. ``paper``: the paper's own brightness, estimated locally (a grey closing, which wipes out
   strokes narrower than its window, then smoothed), so uneven light and soft shadows are part
   of the paper, not of the ink;
2. ``ink``: how much darker than its paper each pixel is, as a fraction of the paper (1 - picture
   / paper), so a stroke in a shadow is as strong as one in full light;
3. ``mask``: ink by a two-level (hysteresis) threshold relative to the strongest ink: pixels
   above the high level seed strokes, which grow over pixels above the low level; faint lines
   not touching the writing never seed;
4. ``lines``: ruled and squared lines and margins, found as ink that runs far straight across
   the page (a morphological opening by a long line) and removed, except where a stroke crosses
   them (ink that also runs thicker than a line the other way);
5. ``kept``: pieces with soft edges (a shadow's dark corner) and what is left of lines (a thin
   piece at the frame's edge; a long piece, straight or at the edge: the rest of a line, the
   paper's edge) dropped; connected strokes grouped into digits by their columns, specks
   dropped (pieces much smaller than the writing and away from it), and, in a number, marks off
   its row and dots beside it; a wide group of touching digits cut at the emptiest columns near
   where digits of the usual width would end: into as many pieces as the network (the optional
   ``judge``) reads most surely (a reading with a digit much wider than tall is unlikely
   however sure the network is), or without one, by the group's width; a group the network is
   unsure of is also tried cut in two at its emptiest columns anywhere (a narrow "1" touching
   a wide digit);
6. each digit: its ink scaled to full strength; strokes much thicker than MNIST's (a marker,
   a blurred blob: THICK of the digit's size) redrawn MNIST's width along their middles (the
   ridge of the distance transform), strokes much finer (FINE) widened to it; then MNIST's
   preparation as ``lenet5 predict`` always did (``predict.mnist_input``).

A clean drawing (a canvas of one background value, as the web page's or an MNIST-style picture)
skips stages 1-4 and the thinning: its ink is the difference from the background, as
``predict.prepare_steps`` takes it, so a drawing of one digit is read as before (only a pen
much finer than MNIST's is widened: shrunk to MNIST's box, its strokes would be faint slivers);
read as a number with a judge, neighbouring pieces that together are no wider than one digit
are joined where the network reads them as one digit (a digit drawn in strokes that do not
touch).

The image analysis is ``scipy.ndimage``: rank filters (minimum/maximum, van Herk's algorithm,
so a window of any length costs the same), Gaussian smoothing and connected-component labelling,
all in C, in a library that every scientific Python install already has and that changes
slowly. scikit-image would add skeletons and ready-made thresholds we do not need; OpenCV
would add a large binary for the same few operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .predict import MIN_INK_EXTENT, ImageError, check_grey, drawing_ink, mnist_input

CLEAN_SHARE = 0.5  # a drawing: at least this share of pixels is the background's very value (to
CLEAN_TOLERANCE = 0.6 / 255  # 8 bits); a photo's noise leaves few pixels exactly equal
DARK_PAPER = 0.35  # a photo darker than this overall is of a board (or dark paper), not of white paper
PAPER_WINDOW = 1 / 8  # the paper's local brightness: window (share of the picture's longer side)
HIGH, LOW = 0.5, 0.25  # hysteresis levels, as shares of the strongest ink
NOISE_FLOOR = 0.07  # ink weaker than this (paper grain, JPEG noise) is never ink
LINE_LENGTH = 0.45  # a ruled line runs straight at least this share of the picture's width (height);
# a digit is at most about a third of the picture's height
LINE_SLANT = 0.008  # a line may drift sideways by this share of the longer side within LINE_LENGTH
# (a page turned by a degree or two)
STROKE_WIDTH = 0.0075  # ink thicker than this share of the longer side, across a line, is a stroke
SPECK_AREA = 0.04  # pieces smaller than this share of the largest are specks unless they touch the writing
SHORT_GROUP = 0.35  # groups shorter than this share of the tallest are not digits
DOT_HEIGHT = 0.6  # nor are groups shorter than this share of the tallest whose ink is less than
DOT_INK = 0.2  # this share of the most inked group's (a colon, a full stop, a smudge)
DIGIT_WIDTH = 0.7  # the usual width of a handwritten digit, as a share of its height
WIDE = 1.25  # without a judge: a group wider than this times its height holds touching digits
JUDGE_ASPECT = 1.1  # with a judge: groups wider than this times their height may be touching digits;
PHOTO_JUDGE_ASPECT = 0.8  # in a photo of several groups (a number), two slanted digits that touch can
# be narrower than one is tall (alone, or in drawings, this cuts more single digits than it saves)
MIN_DIGIT_WIDTH = 0.3  # the narrowest digit considered when cutting (a "1"), a share of the height
UNSURE = 0.3  # in a photo of several groups, a group the network reads whole less surely than this
MAYBE_TWO = 0.5  # and at least this wide for its height may be two touching digits (a "1" beside
# another is narrower than PHOTO_JUDGE_ASPECT): it is also cut at its emptiest columns anywhere
FREE_CUTS, FREE_SPACING = 6, 0.08  # that many such cuts at most, this share of its width apart,
FREE_EDGE, MIN_PART = 0.15, 0.2  # none nearer its ends than this share of its width or this share
# of its height (narrower than MIN_DIGIT_WIDTH, which only bounds how many digits a group may hold:
# a slanted 1 against its neighbour leaves a narrower piece)
MERGE_ASPECT = 0.9  # with a judge, in drawings: neighbouring groups no wider together than this
MERGE_GAP = 0.15  # times their height, and apart by at most this share of it, may be one digit
WIDE_COST = 1.0  # in photos, a reading's score falls by this per unit of a digit's width beyond WIDE times its height
SPLIT_MARGIN = 0.1  # a cut must raise the mean log-probability by this much per extra digit
INK_LEVEL = 60  # a photo's ink is scaled so this percentile of the strokes' ink is full (1)
LONG_PIECE = 0.6  # a piece longer than this share of the picture's height or width, straight or at
LINE_BOX = 0.06  # its edge, is a line (straight: its box is this narrow for its length)
EDGE = 3  # a piece this close to the picture's edge (pixels) is at the edge
SHARP_EDGE = 0.025  # a stroke's edge changes its ink by at least this much per pixel
THICK = 0.25  # in photos, strokes wider than this share of the digit's longer side are thinned
THIN_TO = 0.13  # to this share: MNIST's strokes are 2-3 pixels of the 20-pixel box
FINE = 0.04  # strokes finer than this share of the digit's longer side are widened to THIN_TO
MIN_WIDEN = 56  # in digits at least this tall or wide (pixels); smaller ones shrink little into MNIST's box
WIDTH_SIDE = 256  # a fine stroke's width is measured on the digit shrunk to this size at most
SMOOTH = 0.02  # the outline is smoothed by this share of the digit's longer side to find stroke middles


@dataclass(frozen=True)
class Digit:
    """One digit found in a picture."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive) in the picture's pixels
    image: np.ndarray  # uint8 (28, 28): what the network sees, MNIST-style (bright ink on black)


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover
        raise ImageError("reading photos needs scipy: pip install 'lenet5[predict]'") from None
    return ndimage


def _border_median(grey: np.ndarray) -> float:
    return float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))


def is_clean(grey: np.ndarray) -> bool:
    """A drawing rather than a photo: nearly all pixels are the background's one value."""
    return float(np.mean(np.abs(grey - _border_median(grey)) <= CLEAN_TOLERANCE)) >= CLEAN_SHARE


def _shrink(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """The picture shrunk 4 times by block means (the paper's light changes slowly), and the factor."""
    h, w = grey.shape
    f = 4 if min(h, w) >= 64 else 1
    return grey[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), f


def _window(grey: np.ndarray, f: int) -> int:
    return max(3, round(PAPER_WINDOW * max(grey.shape) / f))


def dark_on_light(grey: np.ndarray) -> bool:
    """Is the writing darker than the paper? Paper, even in a shadow, is lighter than mid-grey
    (DARK_PAPER); a dark picture holds light writing if what strays furthest from the local
    median (the writing is the minority of any neighbourhood) is lighter, not darker."""
    if np.median(grey) >= DARK_PAPER:
        return True
    nd = _ndimage()
    small, f = _shrink(grey)
    footprint = np.zeros((2 * _window(grey, f) + 1,) * 2, bool)
    footprint[::3, ::3] = True  # a sparse window: the same median for a tenth of the work
    local = nd.median_filter(small, footprint=footprint, mode="nearest")
    return float(np.percentile(local - small, 99.9)) >= float(np.percentile(small - local, 99.9))


def paper_brightness(grey: np.ndarray) -> np.ndarray:
    """The paper's local brightness (H, W) under dark writing: a grey closing wider than any
    stroke (which keeps the edges of shadows), lightly smoothed; worked at 1/4 size."""
    nd = _ndimage()
    h, w = grey.shape
    small, f = _shrink(grey)
    closed = nd.grey_closing(small, size=(_window(grey, f),) * 2, mode="nearest")
    paper = nd.gaussian_filter(closed, 1.0, mode="nearest")
    big = nd.zoom(paper, (h / paper.shape[0], w / paper.shape[1]), order=1, mode="nearest", grid_mode=True)
    return np.maximum(big, 1e-3)


def photo_ink(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(paper brightness, ink) of a photo of paper, both (H, W); ink in [0, 1] is 1 - grey / paper."""
    paper = paper_brightness(grey)
    return paper, np.clip(1 - grey / paper, 0, 1)


def ink_mask(ink: np.ndarray) -> np.ndarray:
    """bool (H, W): ink above LOW connected to ink above HIGH (levels relative to the strongest ink)."""
    nd = _ndimage()
    strong = float(np.percentile(ink, 99.9))
    if strong < 2 * NOISE_FLOOR:
        return np.zeros(ink.shape, bool)
    low = ink > max(NOISE_FLOOR, LOW * strong)
    labels, n = nd.label(low, structure=np.ones((3, 3)))
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(labels[ink > max(NOISE_FLOOR, HIGH * strong)])] = True
    seeded[0] = False
    return seeded[labels]


def sharp_pieces(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """``mask`` without the pieces whose edges are soft: a pen or pencil stroke ends within a
    pixel or two, while the edge of a shadow fades over dozens, and where a shadow's dark part
    is narrower than the paper's window (a corner), it looks like ink, but soft ink."""
    nd = _ndimage()
    labels, n = nd.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    slope = np.hypot(nd.sobel(ink, 0), nd.sobel(ink, 1)) / 8  # ink change per pixel
    edge = mask & ~nd.binary_erosion(mask)
    sharpness = np.asarray(nd.mean(slope, np.where(edge, labels, 0), index=np.arange(1, n + 1)))
    keep = np.concatenate([[False], np.nan_to_num(sharpness) >= SHARP_EDGE])
    return keep[labels]


def _line_width(shape: tuple[int, int]) -> int:
    """Ink at least this many pixels thick across is a stroke, not a ruled line (STROKE_WIDTH)."""
    return max(3, round(STROKE_WIDTH * max(shape)))


def _without_line_ends(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool (H, W)) without what is left of lines once ``ruled_lines`` took them: a
    piece at the picture's edge (within EDGE pixels) thinner than a stroke (the end of a line
    the frame cuts off, too short to be found as one), and a piece longer than LONG_PIECE of the
    picture's height or width that is straight (its box no wider than LINE_BOX of its length)
    or at the edge (the rest of a line, the paper's edge, a shadow's rim). A digit, even
    photographed close up, is thicker than a line, not straight, and inside the frame."""
    labels, pieces = _components(mask)
    h, w = mask.shape
    line = _line_width(mask.shape)
    keep = np.zeros(len(pieces) + 1, bool)
    for label, box, _ in pieces:
        rows, cols = box[0].stop - box[0].start, box[1].stop - box[1].start
        at_edge = min(box[0].start, box[1].start, h - box[0].stop, w - box[1].stop) < EDGE
        straight = min(rows, cols) <= LINE_BOX * max(rows, cols)
        long = rows > LONG_PIECE * h or cols > LONG_PIECE * w
        keep[label] = not ((at_edge and min(rows, cols) < line) or (long and (at_edge or straight)))
    return keep[labels]


def _runs(mask: np.ndarray, length: int, axis: int, mode: str = "constant") -> np.ndarray:
    """Pixels of ``mask`` that lie on a straight run of at least ``length`` along ``axis``
    (a morphological opening by a line; minimum and maximum filters cost the same for any length).
    ``mode="nearest"``: a run that reaches the picture's edge goes on beyond it."""
    nd = _ndimage()
    eroded = nd.minimum_filter1d(mask.view(np.uint8), length, axis=axis, mode=mode)
    return nd.maximum_filter1d(eroded, length, axis=axis, mode="constant").astype(bool)


def ruled_lines(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels of ``mask`` that are ruled/squared lines or margins, not strokes.

    A line runs straight across a good part of the page: ink in a run of LINE_LENGTH of the
    picture's width (height), allowing LINE_SLANT pixels of drift for a page not quite square
    to the camera. Where a stroke crosses a line, the ink there is thicker than a line the
    other way (STROKE_WIDTH), and stays.
    """
    nd = _ndimage()
    h, w = mask.shape
    stroke = _line_width(mask.shape)
    slant = max(1, round(LINE_SLANT * max(h, w)))
    found = []
    for axis, length in ((1, w), (0, h)):  # horizontal lines, then vertical ones
        # lines go on beyond the picture (they do on the page)
        slack = nd.maximum_filter1d(mask.view(np.uint8), 2 * slant + 1, axis=1 - axis).astype(bool)
        found.append(_runs(slack, max(3, round(LINE_LENGTH * length)), axis, "nearest") & mask)
    # thin: no thicker than a line across; a stroke crossing a line is thicker across it
    thin = [found[0] & ~_runs(mask, stroke, 0), found[1] & ~_runs(mask, stroke, 1)]
    # where lines cross (squared paper), the other direction's line makes the ink thick: look
    # across once the thin lines of the other direction are set aside
    return ((found[0] & ~_runs(mask & ~thin[1], stroke, 0))
            | (found[1] & ~_runs(mask & ~thin[0], stroke, 1)))


def _components(mask: np.ndarray):
    """Connected pieces of ``mask``: (labels (H, W), list of (label, slice box, area))."""
    nd = _ndimage()
    labels, n = nd.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    return labels, [(i + 1, s, int(areas[i + 1])) for i, s in enumerate(nd.find_objects(labels)) if s is not None]


def _x_overlap(a, b) -> float:
    """How much two boxes (slices) share columns, as a share of the narrower one's width."""
    lo, hi = max(a[1].start, b[1].start), min(a[1].stop, b[1].stop)
    narrower = min(a[1].stop - a[1].start, b[1].stop - b[1].start)
    return max(0, hi - lo) / max(1, narrower)


def _union(a, b):
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))


def group_digits(mask: np.ndarray, single: bool = False, split: bool = True) -> list[np.ndarray]:
    """The strokes of ``mask`` as digits, left to right: one bool (H, W) mask per digit.

    Pieces (connected components) are grouped when they share columns; pieces much smaller than
    the largest (SPECK_AREA) join a group only if they lie within its box (a detached bar, a
    dot), else they are specks and dropped; groups much shorter than the tallest are dropped;
    read as a number, groups off the row of the most inked one and dots beside it are dropped
    (``_one_row``); a group much wider than tall is split into touching digits
    (``split_touching``) unless ``split`` is False. ``single``: all the writing is one digit.
    """
    labels, pieces = _components(mask)
    if not pieces:
        return []
    largest = max(p[2] for p in pieces)
    big = sorted((p for p in pieces if p[2] >= SPECK_AREA * largest), key=lambda p: p[1][1].start)
    groups: list[tuple[list[int], tuple]] = []
    for label, box, _ in big:
        if groups and (single or _x_overlap(groups[-1][1], box) > 0.3 or box[1].stop <= groups[-1][1][1].stop):
            groups[-1][0].append(label)
            groups[-1] = (groups[-1][0], _union(groups[-1][1], box))
        else:
            groups.append(([label], box))
    for label, box, area in pieces:
        if area >= SPECK_AREA * largest:
            continue
        cy, cx = (box[0].start + box[0].stop) / 2, (box[1].start + box[1].stop) / 2
        for members, gbox in groups:
            pad = 0.1 * (gbox[0].stop - gbox[0].start)
            if (gbox[0].start - pad <= cy <= gbox[0].stop + pad) and (gbox[1].start - pad <= cx <= gbox[1].stop + pad):
                members.append(label)
                break
    tallest = max(g[1][0].stop - g[1][0].start for g in groups)
    tall = [g for g in groups if g[1][0].stop - g[1][0].start >= SHORT_GROUP * tallest]
    if not single:
        tall = _one_row(tall, {label: area for label, _, area in pieces}, tallest)
    for members, gbox in groups:  # a short group sharing columns with a tall one is part of it
        if gbox[0].stop - gbox[0].start < SHORT_GROUP * tallest:  # (a 5's bar), else not a digit
            near = [g for g in tall if _x_overlap(g[1], gbox) > 0]
            if near:
                max(near, key=lambda g: _x_overlap(g[1], gbox))[0].extend(members)
    out = []
    for members, gbox in tall:
        digit = np.isin(labels, members)
        out.extend(split_touching(digit) if split and not single else [digit])
    return out


def _one_row(groups: list, areas: dict[int, int], tallest: int) -> list:
    """The groups (list of (piece labels, slice box)) that are digits of one number: on the row
    of the group with the most ink (sharing some of its rows: a mark above or below is not part
    of the number), and not both short and light (DOT_HEIGHT, DOT_INK: a colon, a smudge).
    ``areas``: each piece's pixels, by label."""
    ink = [sum(areas[label] for label in members) for members, _ in groups]
    main = groups[int(np.argmax(ink))][1][0]
    return [g for g, a in zip(groups, ink)
            if g[1][0].start < main.stop and main.start < g[1][0].stop
            and not (g[1][0].stop - g[1][0].start < DOT_HEIGHT * tallest and a < DOT_INK * max(ink))]


def _height(digit: np.ndarray) -> int:
    rows = np.nonzero(digit.any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1)


def _aspect(digit: np.ndarray) -> float:
    rows, cols = np.nonzero(digit.any(axis=1))[0], np.nonzero(digit.any(axis=0))[0]
    return (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)


def split_touching(digit: np.ndarray, k: int | None = None) -> list[np.ndarray]:
    """A group of strokes cut into ``k`` digits at the emptiest column near each expected
    border (k equal widths). ``k=None``: a group wider than WIDE times its height is split into
    as many digits of the usual width (DIGIT_WIDTH of the height) as fit, others are one digit."""
    cols, profile = _profile(digit)
    height, width = _height(digit), len(profile)
    if k is None:
        if width <= WIDE * height:
            return [digit]
        k = max(2, round(width / (DIGIT_WIDTH * height)))
    if k <= 1:
        return [digit]
    cuts = [0]
    for i in range(1, k):
        lo, hi = round((i - 0.4) * width / k), round((i + 0.4) * width / k)
        lo = max(lo, cuts[-1] + 1)
        window = profile[lo:hi]
        if window.size == 0:
            continue
        # the emptiest column, with a cost for straying from the expected border
        expected = i * width / k
        cost = window / max(1, profile.max()) + np.abs(np.arange(lo, lo + window.size) - expected) / (width / k)
        best = int(np.argmin(cost))
        cuts.append(lo + best)
    return _cut(digit, cols[0] + np.array(cuts[1:]))


def _profile(digit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the columns that hold ink, the ink per column from the first to the last of them) of
    ``digit`` (bool (H, W)): where a cut goes through least ink."""
    cols = np.nonzero(digit.any(axis=0))[0]
    return cols, digit[:, cols[0]:cols[-1] + 1].sum(axis=0)


def _cut(digit: np.ndarray, columns) -> list[np.ndarray]:
    """``digit`` (bool (H, W)) cut into the pieces between ``columns`` (each the first column of
    the next piece), left to right; empty pieces left out."""
    cols = np.nonzero(digit.any(axis=0))[0]
    edges = [cols[0], *columns, cols[-1] + 1]
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        part = np.zeros_like(digit)
        part[:, a:b] = digit[:, a:b]
        if part.any():
            parts.append(part)
    return parts


def free_cuts(digit: np.ndarray) -> list[list[np.ndarray]]:
    """Ways to cut ``digit`` (bool (H, W)) into two at its emptiest columns wherever they lie:
    up to FREE_CUTS, FREE_SPACING of its width apart, each piece at least MIN_PART of its height
    wide and no cut within FREE_EDGE of its width from its ends. For a narrow digit touching a
    wide one (a "1" against a "4"), where a cut between equal widths goes through the wide one."""
    cols, profile = _profile(digit)
    width, height = len(profile), _height(digit)
    lo = int(max(FREE_EDGE * width, MIN_PART * height))
    hi = int(min((1 - FREE_EDGE) * width, width - MIN_PART * height))
    chosen: list[int] = []
    for c in lo + np.argsort(profile[lo:hi], kind="stable"):
        if all(abs(c - d) > FREE_SPACING * width for d in chosen):
            chosen.append(int(c))
            if len(chosen) == FREE_CUTS:
                break
    return [_cut(digit, [cols[0] + c]) for c in chosen]


def _big_enough(member: np.ndarray) -> bool:
    """Is this ink more than a speck or a single line (as ``predict.prepare_steps`` asks)?"""
    rows, cols = np.nonzero(member.any(axis=1))[0], np.nonzero(member.any(axis=0))[0]
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    return min(h, w) >= 2 and max(h, w) >= MIN_INK_EXTENT


def _middles(member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the paper (H, W), bool (H, W) the strokes' middles) of ``member``: the ridge
    of the distance transform of the outline smoothed (so a ragged edge grows no ridge), and
    at least half as deep as the usual middle."""
    nd = _ndimage()

    def ridge_of(mask):
        dist = nd.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        return dist, mask & (dist >= nd.maximum_filter(dist, size=3) - 0.5)

    rows, cols = np.nonzero(member.any(axis=1))[0], np.nonzero(member.any(axis=0))[0]
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    dist, ridge = ridge_of(member)
    # smoothing by more than a third of the strokes' width would wipe them out
    sigma = min(SMOOTH * side, np.median(dist[ridge]) * 2 / 3)
    dist, ridge = ridge_of(nd.gaussian_filter(member.astype(np.float64), sigma) > 0.5)
    if ridge.any():
        ridge &= dist >= 0.5 * np.median(dist[ridge])
    return dist, ridge


def stroke_width(member: np.ndarray) -> float:
    """The usual width of the strokes of ``member`` (bool (H, W)), in pixels: twice the median
    distance to the paper along the strokes' middles."""
    dist, ridge = _middles(member)
    # a stroke w pixels wide has its middle (w + 1) / 2 from the paper's nearest pixel centre
    return 2 * float(np.median(dist[ridge])) - 1 if ridge.any() else 0.0


def thinned(member: np.ndarray) -> np.ndarray:
    """``member`` (bool (H, W)) with strokes wider than THICK of its longer side redrawn THIN_TO
    wide along their middles (a marker's strokes, a blurred blob), else unchanged."""
    rows, cols = np.nonzero(member.any(axis=1))[0], np.nonzero(member.any(axis=0))[0]
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    dist, ridge = _middles(member)
    if not ridge.any() or 2 * float(np.median(dist[ridge])) - 1 <= THICK * side:
        return member
    near = _ndimage().distance_transform_edt(~ridge) <= THIN_TO * side / 2
    return member & near if (member & near).any() else member


def widened(crop: np.ndarray, member: np.ndarray) -> np.ndarray:
    """A digit's ink ``crop`` (H, W) whose strokes (``member``, bool (H, W)) are finer than FINE of
    its longer side, drawn again THIN_TO wide: every pixel within the extra half-width of a
    stroke gets the strokes' usual ink (a distance transform, so any width costs the same) — the
    page's thin pen, a fine pen photographed large. Shrunk to MNIST's 20-pixel box such strokes
    would be under a pixel wide and faint, where MNIST's are 2-3 pixels. Returns the widened ink
    cropped to itself, (H + 2p, W + 2p) at most with p the added half-width; other ink (and any
    digit under MIN_WIDEN pixels, whose strokes shrink little) as it is."""
    side = max(member.shape)
    if side < MIN_WIDEN:
        return crop
    f = -(-side // WIDTH_SIDE)  # the width is measured on the strokes shrunk to WIDTH_SIDE at most
    h, w = member.shape
    small = np.pad(member, ((0, -h % f), (0, -w % f))).reshape(-(-h // f), f, -(-w // f), f).any(axis=(1, 3))
    width = stroke_width(small) * f
    if width <= 0 or width >= FINE * side:
        return crop
    r = (THIN_TO * side - width) / 2
    pad = int(np.ceil(r)) + 1
    distance = _ndimage().distance_transform_edt(~np.pad(member, pad))
    grown = np.maximum(np.pad(crop, pad), np.median(crop[member]) * np.clip(r + 0.5 - distance, 0, 1))
    rows, cols = np.nonzero(grown.any(axis=1))[0], np.nonzero(grown.any(axis=0))[0]
    return grown[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _digit(ink: np.ndarray, member: np.ndarray, name: str, thin: bool = False) -> tuple[Digit, dict[str, np.ndarray]]:
    """One digit's Digit and MNIST steps from the ink (H, W) and its pixels ``member`` (H, W);
    ``thin``: strokes much thicker than MNIST's are thinned first (``thinned``); strokes much
    finer than MNIST's are widened (``widened``), in drawings and photos alike."""
    rows, cols = np.nonzero(member.any(axis=1))[0], np.nonzero(member.any(axis=0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if min(y1 - y0, x1 - x0) < 2 or max(y1 - y0, x1 - x0) < MIN_INK_EXTENT:
        what = "a single line" if min(y1 - y0, x1 - x0) < 2 else "a speck"
        raise ImageError(f"{name}: no digit found (the ink is {what}, {x1 - x0}x{y1 - y0} pixels)")
    crop = np.where(member[y0:y1, x0:x1], ink[y0:y1, x0:x1], 0.0)
    core = member[y0:y1, x0:x1]
    if thin:  # MNIST's box is the ink's box: the thinned ink's
        core = thinned(core)
        rows, cols = np.nonzero(core.any(axis=1))[0], np.nonzero(core.any(axis=0))[0]
        crop = np.where(core, crop, 0.0)[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        core = core[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box, image = mnist_input(widened(crop, core))
    return Digit(box=(int(x0), int(y0), int(x1), int(y1)), image=image), {"ink": crop, "box": box, "input": image}


def _rejoined(ink: np.ndarray, groups: list[np.ndarray], judge, name: str) -> list[np.ndarray]:
    """Neighbouring groups (left to right) that together are no wider than MERGE_ASPECT times
    their height and no further apart than MERGE_GAP of it (a digit drawn in pieces side by
    side) become one group where the network reads them as one digit at least as surely as
    two (less SPLIT_MARGIN, as for cuts)."""
    out = list(groups)
    i = 0
    while i + 1 < len(out):
        a, b = out[i], out[i + 1]
        both = a | b
        gap = np.nonzero(b.any(axis=0))[0][0] - np.nonzero(a.any(axis=0))[0][-1] - 1
        if _aspect(both) <= MERGE_ASPECT and gap <= MERGE_GAP * _height(both) and _big_enough(a) and _big_enough(b):
            images = np.stack([_digit(ink, part, name)[0].image for part in (a, b, both)])
            top = np.log(np.clip(np.asarray(judge(images)).max(axis=1), 1e-9, 1))
            if top[2] >= top[:2].mean() - SPLIT_MARGIN:
                out[i:i + 2] = [both]
                continue
        i += 1
    return out


def _judged(ink: np.ndarray, groups: list[np.ndarray], judge, name: str, photo: bool) -> list[np.ndarray]:
    """Each group wider than JUDGE_ASPECT (in a ``photo`` of several: PHOTO_JUDGE_ASPECT) times its height
    read whole and cut into 2, 3, ... digits; the reading the network is surest of (geometric
    mean of each digit's top probability) wins, the fewer digits unless a cut is clearly surer
    (SPLIT_MARGIN); in a photo, readings with digits much wider than tall lose (WIDE_COST).
    In a photo of several, a group at least MAYBE_TWO times as wide as tall that the network
    reads whole less surely than UNSURE (a network trained on pictures that are not one digit
    is unsure of two touching) is also tried cut in two anywhere (``free_cuts``). The judge
    is asked twice at most per group: once for every group read whole, once for its cuts."""
    several = photo and len(groups) > 1
    wide = PHOTO_JUDGE_ASPECT if several else JUDGE_ASPECT
    aspects = [_aspect(g) for g in groups]
    asked = [i for i, (g, a) in enumerate(zip(groups, aspects))
             if (a >= wide or (several and a >= MAYBE_TWO)) and _big_enough(g)]
    if not asked:
        return groups
    wholes = np.stack([_digit(ink, groups[i], name, photo)[0].image for i in asked])
    sureness = dict(zip(asked, np.asarray(judge(wholes)).max(axis=1)))

    def score(option: list[np.ndarray], top: np.ndarray) -> float:
        """Mean log-probability of the option's readings ``top``, less its costs."""
        value = float(np.log(np.clip(top, 1e-9, 1)).mean()) - SPLIT_MARGIN * (len(option) - 1)
        if photo:  # handwriting on paper: a digit much wider than tall is unlikely, however sure the network
            value -= WIDE_COST * float(np.mean([max(0.0, _aspect(part) - WIDE) for part in option]))
        return value

    out = []
    for i, (group, aspect) in enumerate(zip(groups, aspects)):
        unsure = several and aspect >= MAYBE_TWO and i in sureness and sureness[i] < UNSURE
        if i not in sureness or (aspect < wide and not unsure):
            out.append(group)
            continue
        cuts = [split_touching(group, k) for k in range(2, 1 + min(4, int(aspect / MIN_DIGIT_WIDTH)))]
        cuts += free_cuts(group) if unsure else []
        height = _height(group)
        options, seen = [[group]], set()
        for cut in cuts:  # each way to cut once (a free cut can be an equal-width one)
            starts = tuple(int(np.nonzero(part.any(axis=0))[0][0]) for part in cut)
            if starts not in seen and all(_height(p) >= 0.6 * height and _big_enough(p) for p in cut):
                seen.add(starts)
                options.append(cut)
        scores = [score([group], sureness[i][None])]
        if len(options) > 1:
            images = np.stack([_digit(ink, part, name, photo)[0].image for option in options[1:] for part in option])
            top = np.asarray(judge(images)).max(axis=1)
            ends = np.cumsum([len(option) for option in options[1:]])
            scores += [score(option, t) for option, t in zip(options[1:], np.split(top, ends[:-1]))]
        out.extend(options[int(np.argmax(scores))])
    return out


def find_ink(grey: np.ndarray, name: str = "image") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Stages 1-4 (for a photo) or the drawing's ink: (ink (H, W) in [0, 1], mask bool (H, W) of
    the pixels that may be writing, the stages so far). ``grey`` as ``read_picture`` takes it."""
    grey = check_grey(grey, name)
    stages: dict[str, np.ndarray] = {"picture": grey}
    if is_clean(grey):
        ink = drawing_ink(grey, name)
        mask = ink > 0
    else:
        if not dark_on_light(grey):  # light writing on a dark board: the board is the "paper"
            grey = 1 - grey
        paper, ink = photo_ink(grey)
        mask = ink_mask(ink)
        if not mask.any():
            raise ImageError(f"{name}: no ink found (the picture is almost uniform)")
        # lines are sought in all the ink, faint parts too, so that they run unbroken
        lines = ruled_lines(ink > NOISE_FLOOR) & mask
        mask = sharp_pieces(mask & ~lines, ink)
        mask = _without_line_ends(mask)
        stages.update(paper=paper, lines=lines.astype(np.uint8) * 255)
    stages["ink"] = ink
    return ink, mask, stages


def read_picture(grey: np.ndarray, *, single: bool = False, name: str = "image",
                 judge=None) -> tuple[list[Digit], dict[str, np.ndarray]]:
    """The digits in a picture, left to right, and the named stages of finding them.

    ``grey``: float (H, W) in [0, 1] as ``predict.load_grey`` returns it (a photo of paper,
    a scan, or a drawing: either polarity). ``single=True``: all the writing is one digit.

    Returns the digits and the stages, 2-D arrays: ``picture`` (the input), for photos
    ``paper`` (its local brightness) and ``lines`` (uint8 0/255, the ruled lines removed),
    ``ink`` (float [0, 1], bright on black, the whole picture), ``kept`` (uint8 0/255, the
    strokes read as digits), and ``input`` (uint8 (28, 28 × digits): what the network sees,
    side by side). With one digit also ``box`` (the 20×20-at-most box, as ``prepare_steps``).
    Raises ``ImageError`` when no digit is found.

    ``judge`` (optional): a function from uint8 images (N, 28, 28) to class probabilities
    (N, C), e.g. ``model.predict``. With it, a wide group of strokes is cut into touching
    digits only where the network reads the pieces more surely than the whole; without it,
    by the group's width alone. A network trained to be unsure of what is not one digit (two
    touching, a piece of one: ``--augment affine-pen-junk``, as the shipped ``modern`` is)
    judges best: one that never saw two digits together reads a "14" as a sure 4.
    """
    ink, mask, stages = find_ink(grey, name)
    return read_ink(ink, mask, stages, single=single, name=name, judge=judge)


def read_ink(ink: np.ndarray, mask: np.ndarray, stages: dict[str, np.ndarray], *, single: bool = False,
             name: str = "image", judge=None) -> tuple[list[Digit], dict[str, np.ndarray]]:
    """Stages 5-6 of ``read_picture`` on what ``find_ink`` found."""
    photo = "paper" in stages  # a drawing's strokes are the page's pen: never thinned
    if "paper" in stages and mask.any():  # a pen's stroke is full ink across, as MNIST's are;
        ink = np.clip(ink / np.percentile(ink[mask], INK_LEVEL), 0, 1)  # pencil grain and light vary
    # a drawing read as one digit keeps all its ink, as prepare_steps reads it
    if single and "paper" not in stages:
        members = [mask]
    else:
        members = group_digits(mask, single, split=judge is None)
        if judge is not None and not single:
            if not photo:  # a drawing's pieces side by side (in photos this cost more numbers than it saved)
                members = _rejoined(ink, members, judge, name)
            members = _judged(ink, members, judge, name, photo)
    if len(members) == 1 and "paper" not in stages:  # a drawing of one digit: all its ink, as before
        members = [mask]
    if len(members) > 1:  # among several, a sliver is not a digit (alone, it is reported)
        members = [m for m in members if _big_enough(m)] or members[:1]
    if not members:
        raise ImageError(f"{name}: no digit found (only lines and specks)")
    kept = np.zeros(mask.shape, bool)
    digits = []
    for member in members:
        digit, steps = _digit(ink, member, name, photo)
        digits.append(digit)
        kept |= member
    stages["kept"] = kept.astype(np.uint8) * 255
    stages["input"] = np.concatenate([d.image for d in digits], axis=1)
    if len(digits) == 1:
        stages["box"] = steps["box"]
    return digits, stages


__all__ = ["Digit", "ImageError", "find_ink", "read_ink", "read_picture", "stroke_width", "thinned"]
