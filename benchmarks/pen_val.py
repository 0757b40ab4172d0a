"""Does training with other pens (``--augment affine-pen``), and with pictures that are not one
digit (``--augment affine-pen-junk``: the network then judges better where touching digits are
cut), help the modern network read other writers and their numbers, at no cost on MNIST?
Chosen on validation only:

    python benchmarks/pen_val.py --seeds 0 1 2     # writes benchmarks/results/pen_val.txt

For each augmentation and seed, ``lenet5 train --preset modern --val-split 0.1 --no-test`` (the
test set plays no part), unless runs/pen/<augment>-s<seed> holds the finished run. Each final
network is then measured on what was held out for tuning: the 6,000 MNIST validation images, the
even-numbered UCI digits and the even-numbered handwriting fonts of ``make_photos.py`` (the
ones seed 1 draws; the photo benchmark's seed 2 uses the odd-numbered ones), each written as a
clean picture and prepared as ``lenet5 predict`` prepares one digit; and, with ``--photos DIR``,
the photos of seed 1 (``make_photos.py DIR --seed 1 --singles 60 --numbers 20``: the pictures the
photo pipeline is tuned on) read as ``benchmarks/photos.py`` reads them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from lenet5.augment import AUGMENTS as TRAIN_AUGMENTS  # noqa: E402
from lenet5.bench import cpu_model  # noqa: E402
from lenet5.predict import mnist_input  # noqa: E402
from lenet5.runs import RunDir  # noqa: E402
from make_photos import digit_alpha, font_digits, slanted, tuning_half, uci_digits  # noqa: E402
from photos import photos  # noqa: E402

AUGMENTS = ("affine", "affine-pen", "affine-pen-junk")


def train(augment: str, seed: int, data_dir: str) -> RunDir:
    out = Path("runs/pen") / f"{augment}-s{seed}"
    if not (out / "model.safetensors").exists():
        done = subprocess.run(["lenet5", "train", "--preset", "modern", "--data-dir", data_dir, "--val-split", "0.1",
                               "--no-test", "--augment", augment, "--seed", str(seed), "--out", str(out), "--force",
                               "--quiet", "--no-plots"])
        if done.returncode:  # lenet5 train has said why, in one line
            raise SystemExit(2)
    return RunDir(out)


def other_writers(repeats: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seed 1's half of the UCI digits and of the fonts as clean 28x28 inputs (fonts slanted
    ``repeats`` times each), with their labels."""
    rng = np.random.default_rng(1)
    half = tuning_half(1)
    uci, uci_y = uci_digits()
    fonts, font_y = font_digits()
    tuning_fonts = [i for i in range(len(fonts)) if (i // 10) % 2 == half] * repeats
    return {
        "UCI (even)": (np.stack([mnist_input(digit_alpha(x, 200, rng))[1] for x in uci[half::2]]), uci_y[half::2]),
        "fonts (even)": (np.stack([mnist_input(digit_alpha(slanted(fonts[i], rng), 200, rng))[1]
                                   for i in tuning_fonts]), font_y[tuning_fonts]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=sorted(set(TRAIN_AUGMENTS) - {"none"}),
                    metavar="AUGMENT", help=f"the augmentations compared (default: {' '.join(AUGMENTS)})")
    ap.add_argument("--data-dir", default="../shared/data/mnist")
    ap.add_argument("--photos", type=Path, help="seed-1 pictures of make_photos.py (with labels.json)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "pen_val.txt")
    args = ap.parse_args()
    if args.photos and not (args.photos / "labels.json").is_file():
        ap.error(f"--photos {args.photos}: no labels.json there (make_photos.py DIR --seed 1 writes it)")
    start = time.perf_counter()
    writers = other_writers()
    columns = ["MNIST val", *writers] + (["photos: digits", "photos: numbers"] if args.photos else [])
    rows = {}
    for augment in args.augments:
        for seed in args.seeds:
            run = train(augment, seed, args.data_dir)
            model = run.load_model()[0].eval()
            scores = [run.history()[-1]["val_acc"]]
            scores += [float((model.predict(x).argmax(1) == y).mean()) for x, y in writers.values()]
            if args.photos:
                _, right = photos(model, args.photos)
                for what in ("digit", "number"):
                    scores.append(float(np.mean(sum((v for k, v in right.items()
                                                     if k[0] == what and ":" not in k[1]), []))))
            rows[(augment, seed)] = scores
    lines = [f"# python benchmarks/pen_val.py --seeds {' '.join(map(str, args.seeds))} --augments {' '.join(args.augments)}"
             + (f" --photos {args.photos}" if args.photos else ""),
             f"# CPU: {cpu_model()}; {time.strftime('%Y-%m-%d')}",
             "# lenet5 train --preset modern --val-split 0.1 --no-test --augment A --seed S; final epoch;",
             "# other writers: clean pictures of the halves make_photos.py keeps for tuning (seed 1)",
             "", f"{'augment':<16} {'seed':>4} " + " ".join(f"{c:>16}" for c in columns)]
    for (augment, seed), scores in rows.items():
        lines.append(f"{augment:<16} {seed:>4} " + " ".join(f"{100 * s:15.2f}%" for s in scores))
    lines.append("")
    for augment in args.augments:
        mean = np.mean([rows[(augment, s)] for s in args.seeds], axis=0)
        sd = np.std([rows[(augment, s)] for s in args.seeds], axis=0, ddof=min(1, len(args.seeds) - 1))
        lines.append(f"{augment:<16} mean " + " ".join(f"{100 * m:8.2f} ± {100 * d:4.2f}" for m, d in zip(mean, sd)))
    lines += ["", f"({time.perf_counter() - start:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
