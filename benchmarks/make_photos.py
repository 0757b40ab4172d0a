"""Make phone-photo-like pictures of handwritten digits on paper, with their true labels.

Real handwriting, made to look photographed, from three sources: MNIST test digits (writers the
shipped networks never saw in training; half the digits), the UCI handwritten digits bundled
with scikit-learn (other writers, 8x8 pictures upscaled smoothly; a quarter) and Debian's
handwriting fonts (fonts drawn from a person's handwriting; a quarter, slanted and turned a
little), inked in blue, black or pencil onto paper at phone-photo sizes (1.2-1.9 megapixels,
JPEG), one kind of paper per picture:

    plain     evenly lit paper
    uneven    light falling off across the page (a lamp to one side, vignetting)
    shadow    a soft shadow (a hand or a phone) over part of the page, often the digit
    ruled     ruled paper with a red margin line
    squared   squared (graph) paper
    specks    dust specks and pencil dots around the page

Single digits are 15-35 % of the frame's height and anywhere in it (off-centre); numbers are
four digits side by side, sometimes touching. The page may be turned a little (lines at up to
1.5 degrees). Seed 1 is for tuning, any other seed for measuring, and they never share a digit:
seed 1 draws the even-numbered digits of MNIST and UCI and the even-numbered fonts of FONTS,
every other seed the odd-numbered ones. Everything is drawn from the seed, so a set can be made
again exactly:

    python benchmarks/make_photos.py OUT_DIR --seed 2 --singles 60 --numbers 60

writes OUT_DIR/<kind>-<i>.jpg, OUT_DIR/number-<kind>-<i>.jpg and OUT_DIR/labels.json
({file: {"kind", "ink", "source", "label"}}; "label" is the digit, or the number as a string).
Needs numpy, Pillow, scipy, scikit-learn (the UCI digits: pip install scikit-learn) and the
fonts (apt-get install -y fonts-dkg-handwriting fonts-breip fonts-bwht fonts-humor-sans
fonts-rufscript fonts-sjfonts fonts-klee).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

MNIST_TEST = Path("/work/shared/data/mnist")
KINDS = ("plain", "uneven", "shadow", "ruled", "squared", "specks")
INKS = {"blue": (25, 45, 150), "black": (20, 20, 25), "pencil": (95, 95, 100)}
SIZES = ((1280, 960), (1600, 1200), (960, 1280), (1200, 1600), (1440, 1080))
#: Debian's fonts made from one person's handwriting with a pen (one face per writer; outline,
#: typeset and calligraphic faces left out): Debian package, then the file
FONTS = (
    ("fonts-dkg-handwriting", "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf"),
    ("fonts-breip", "/usr/share/fonts/truetype/breip/breipfont.ttf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeBuild-Regular.otf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeConnect-Regular.otf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeCreate-Regular.otf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeMentor-Regular.otf"),
    ("fonts-bwht", "/usr/share/fonts/opentype/bwht/BecauseWeOrganize-Regular.otf"),
    ("fonts-humor-sans", "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf"),
    ("fonts-rufscript", "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf"),
    ("fonts-sjfonts", "/usr/share/fonts/truetype/sjfonts/SteveHand.ttf"),
    ("fonts-sjfonts", "/usr/share/fonts/truetype/sjfonts/Delphine.ttf"),
    ("fonts-klee", "/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf"),
)
#: where the smooth upscaled shape counts as inked: one level for every source (a higher one
#: breaks the UCI digits' thin strokes: a 0 with a gap reads as 6)
LEVEL = 0.3


def mnist_test(directory: Path = MNIST_TEST) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits (uint8 (N, 28, 28), bright on black) and labels."""
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's UCI handwritten digits, upscaled from 8x8 (17 levels) to 32x32, [0, 255]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    big = ndimage.zoom(d.images / 16.0, (1, 4, 4), order=3, grid_mode=True, mode="grid-constant")
    return np.clip(big * 255, 0, 255).astype(np.uint8), d.target.astype(np.uint8)


def tuning_half(seed: int) -> int:
    """Which half of each source a seed draws from: 0 (even-numbered digits and fonts) for the
    tuning seed 1, 1 (odd-numbered) for every other seed."""
    return 0 if seed == 1 else 1


def font_digits() -> tuple[list[np.ndarray], np.ndarray]:
    """Every digit of every font in FONTS, white on black at about 150 pixels high, [0, 255]:
    (pictures in font order, digit by digit; their labels)."""
    from PIL import ImageDraw, ImageFont

    missing = sorted({package for package, path in FONTS if not Path(path).exists()})
    if missing:
        print(f"make_photos.py: handwriting fonts not installed: apt-get install -y {' '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    pictures, labels = [], []
    for _, path in FONTS:
        font = ImageFont.truetype(path, 160)
        for digit in range(10):
            canvas = Image.new("L", (320, 320), 0)
            ImageDraw.Draw(canvas).text((80, 40), str(digit), font=font, fill=255)
            pictures.append(np.asarray(canvas))
            labels.append(digit)
    return pictures, np.array(labels, np.uint8)


def slanted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A font's digit as one writer writes it again: slanted (shear ±0.2) and turned (±6°)."""
    shear, angle = rng.uniform(-0.2, 0.2), np.radians(rng.uniform(-6, 6))
    c, s = np.cos(angle), np.sin(angle)
    h, w = image.shape
    # PIL maps each output pixel to the input: centre, undo the turn and the shear, back
    a, b, d, e = c, -s, s, c
    a, b = a + shear * d, b + shear * e
    cx, cy = w / 2, h / 2
    coeffs = (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)
    return np.asarray(Image.fromarray(image).transform((w, h), Image.AFFINE, coeffs, Image.BICUBIC))


def _crop(alpha: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(alpha.max(1) > 0.1)[0], np.nonzero(alpha.max(0) > 0.1)[0]
    return alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def digit_alpha(image: np.ndarray, height: int, rng: np.random.Generator, level: float = LEVEL) -> np.ndarray:
    """A digit's ink coverage in [0, 1], cropped and scaled smoothly to ``height`` pixels, inked
    where the smooth shape is above ``level`` (higher: thinner strokes)."""
    alpha = _crop(image / 255.0)
    scale = height / alpha.shape[0]
    width = max(2, round(alpha.shape[1] * scale * rng.uniform(0.9, 1.1)))
    big = Image.fromarray((alpha * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    # a pen's edge is crisp: the smooth upscaled shape, inked where it is more than about half on
    return np.clip((np.asarray(big, np.float64) / 255 - level) / 0.3, 0, 1)


def _line_family(h: int, w: int, spacing: float, thickness: float, angle: float, offset: float,
                 vertical: bool) -> np.ndarray:
    """Coverage in [0, 1] of parallel lines (anti-aliased), turned by ``angle`` radians."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    d = (x * np.cos(angle) + y * np.sin(angle)) if vertical else (y * np.cos(angle) - x * np.sin(angle))
    d = np.abs((d - offset + spacing / 2) % spacing - spacing / 2)  # distance to the nearest line
    return np.clip(thickness / 2 + 0.5 - d, 0, 1)


def paper(kind: str, h: int, w: int, rng: np.random.Generator, keep_clear: tuple[int, int, int, int]):
    """(RGB paper (h, w, 3) in [0, 1], illumination (h, w)) for one kind of paper.

    ``keep_clear`` (x0, y0, x1, y1): where the writing is; specks stay away from it.
    """
    tint = np.array([rng.uniform(0.90, 0.98), rng.uniform(0.89, 0.97), rng.uniform(0.84, 0.95)])
    rgb = np.ones((h, w, 3)) * tint
    rgb *= 1 + ndimage.gaussian_filter(rng.normal(0, 0.03, (h, w)), 1.2)[..., None]  # paper grain
    angle = np.radians(rng.uniform(-1.5, 1.5))
    if kind == "ruled":
        spacing = rng.uniform(0.035, 0.06) * h
        lines = _line_family(h, w, spacing, rng.uniform(1.5, 3.5), angle, rng.uniform(0, spacing), False)
        rgb = rgb * (1 - lines[..., None]) + lines[..., None] * np.array([0.55, 0.68, 0.88])
        margin = _line_family(h, w, 10 * w, rng.uniform(2, 4), angle, rng.uniform(0.06, 0.14) * w, True)
        rgb = rgb * (1 - margin[..., None]) + margin[..., None] * np.array([0.85, 0.33, 0.35])
    elif kind == "squared":
        spacing = rng.uniform(0.03, 0.05) * h
        colour = np.array([0.55, 0.62, 0.75]) if rng.random() < 0.5 else np.array([0.6, 0.6, 0.6])
        t = rng.uniform(1.2, 2.5)
        for vertical in (False, True):
            lines = _line_family(h, w, spacing, t, angle, rng.uniform(0, spacing), vertical)
            rgb = rgb * (1 - lines[..., None]) + lines[..., None] * colour
    elif kind == "specks":
        x0, y0, x1, y1 = keep_clear
        pad = 0.1 * max(x1 - x0, y1 - y0)
        n = rng.integers(6, 25)
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(n):
            while True:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                if not (x0 - pad < cx < x1 + pad and y0 - pad < cy < y1 + pad):
                    break
            r = rng.uniform(1.0, 5.0) * max(h, w) / 1600
            s = int(3 * r + 3)
            ys, xs = slice(max(0, int(cy) - s), int(cy) + s), slice(max(0, int(cx) - s), int(cx) + s)
            d = np.hypot(yy[ys, xs] - cy, xx[ys, xs] - cx)
            a = np.clip(r + 0.5 - d, 0, 1)[..., None] * rng.uniform(0.5, 0.9)
            rgb[ys, xs] = rgb[ys, xs] * (1 - a) + a * 0.15
    light = np.ones((h, w))
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if kind == "uneven":
        theta = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(theta) + y * np.sin(theta)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        cx, cy = rng.uniform(0.2, 0.8) * w / max(h, w), rng.uniform(0.2, 0.8) * h / max(h, w)
        vignette = np.hypot(x - cx, y - cy)
        light = (1 - rng.uniform(0.35, 0.5) * ramp) * (1 - rng.uniform(0.2, 0.35) * vignette / vignette.max())
    elif kind == "shadow":
        theta = rng.uniform(0, 2 * np.pi)
        x0, y0, x1, y1 = keep_clear  # the shadow's edge passes near the writing
        px, py = (rng.uniform(x0, x1)) / max(h, w), (rng.uniform(y0, y1)) / max(h, w)
        side = (x - px) * np.cos(theta) + (y - py) * np.sin(theta)
        softness = rng.uniform(0.03, 0.1)
        light = 1 - rng.uniform(0.35, 0.55) / (1 + np.exp(-side / softness * 4))
    else:
        light = 1 - 0.08 * np.hypot(x - 0.5, y - 0.5)  # a phone's slight vignetting
    return rgb, light


def write_on(rgb: np.ndarray, alpha: np.ndarray, x: int, y: int, ink: str, rng: np.random.Generator) -> None:
    """Lay ink of coverage ``alpha`` onto ``rgb`` at (x, y), in place."""
    h, w = alpha.shape
    a = alpha.copy()
    if ink == "pencil":  # graphite: lighter and grainy
        a *= np.clip(rng.uniform(0.6, 0.85) + rng.normal(0, 0.12, a.shape), 0, 1)
    colour = np.array(INKS[ink]) / 255 * rng.uniform(0.9, 1.1)
    region = rgb[y:y + h, x:x + w]
    region[:] = region * (1 - a[..., None]) + a[..., None] * colour


def photo(rgb: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Lighting, a little lens blur and sensor noise: the picture a phone would take."""
    out = rgb * light[..., None]
    out = ndimage.gaussian_filter(out, (0.7, 0.7, 0))
    out += rng.normal(0, 0.012, out.shape)
    return Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))


def make_set(out: Path, seed: int, singles: int, numbers: int, quality: int = 80) -> dict:
    """Write ``singles`` one-digit and ``numbers`` four-digit pictures per kind of paper."""
    rng = np.random.default_rng(seed)
    half = tuning_half(seed)
    fonts, font_labels = font_digits()
    font_index = np.arange(len(fonts)) // 10  # the font each picture comes from
    sources = {"mnist": mnist_test(), "uci": uci_digits(), "fonts": (fonts, font_labels)}
    allowed = {"mnist": np.arange(half, len(sources["mnist"][1]), 2),
               "uci": np.arange(half, len(sources["uci"][1]), 2),
               "fonts": np.nonzero(font_index % 2 == half)[0]}
    out.mkdir(parents=True, exist_ok=True)
    labels = {}

    def pick():
        u = rng.random()
        source = "mnist" if u < 0.5 else "uci" if u < 0.75 else "fonts"
        images, targets = sources[source]
        i = int(rng.choice(allowed[source]))
        image = slanted(images[i], rng) if source == "fonts" else images[i]
        return source, image, int(targets[i])

    for kind in KINDS:
        for i in range(singles + numbers):
            w, h = SIZES[rng.integers(len(SIZES))]
            ink = list(INKS)[rng.integers(len(INKS))]
            if i < singles:
                source, image, label = pick()
                alpha = digit_alpha(image, int(rng.uniform(0.15, 0.35) * h), rng)
                x = int(rng.uniform(0.02, 0.98) * (w - alpha.shape[1]))
                y = int(rng.uniform(0.02, 0.98) * (h - alpha.shape[0]))
                placed = [(alpha, x, y)]
                name, sources_used = f"{kind}-{i:03d}.jpg", source
            else:
                height = int(rng.uniform(0.1, 0.2) * h)
                picks = [pick() for _ in range(4)]
                alphas = [digit_alpha(p[1], int(height * rng.uniform(0.9, 1.05)), rng) for p in picks]
                gaps = [int(rng.uniform(-0.02, 0.3) * height) for _ in range(3)] + [0]
                total = sum(a.shape[1] for a in alphas) + sum(gaps)
                if total > 0.95 * w:
                    continue
                x = int(rng.uniform(0.02, 0.98) * (w - total))
                y0 = int(rng.uniform(0.05, 0.9) * (h - 1.2 * height))
                placed = []
                for a, gap in zip(alphas, gaps):
                    placed.append((a, x, y0 + int(rng.uniform(0, 0.1) * height)))
                    x += a.shape[1] + gap
                label = "".join(str(p[2]) for p in picks)
                name, sources_used = f"number-{kind}-{i - singles:03d}.jpg", "+".join(sorted({p[0] for p in picks}))
            x0 = min(px for _, px, _ in placed)
            y0 = min(py for _, _, py in placed)
            x1 = max(px + a.shape[1] for a, px, _ in placed)
            y1 = max(py + a.shape[0] for a, _, py in placed)
            rgb, light = paper(kind, h, w, rng, (x0, y0, x1, y1))
            for a, px, py in placed:
                write_on(rgb, a, px, py, ink, rng)
            photo(rgb, light, rng).save(out / name, quality=quality)
            labels[name] = {"kind": kind, "ink": ink, "source": sources_used, "label": label,
                            "box": [x0, y0, x1, y1]}
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--singles", type=int, default=60, help="one-digit pictures per kind of paper")
    ap.add_argument("--numbers", type=int, default=10, help="four-digit pictures per kind of paper")
    ap.add_argument("--quality", type=int, default=80, help="JPEG quality")
    args = ap.parse_args()
    labels = make_set(args.out, args.seed, args.singles, args.numbers, args.quality)
    print(f"{len(labels)} pictures in {args.out}")


if __name__ == "__main__":
    main()
