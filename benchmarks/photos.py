"""How well ``lenet5 predict`` reads photos of handwriting on paper: the table per kind of paper.

    python benchmarks/photos.py --model modern            # writes benchmarks/results/photos.txt

The pictures are made by ``make_photos.py`` from a seed (default 2: the test seed; the
pipeline's parameters in ``lenet5/digits.py`` were chosen on pictures of seed 1 only), into
``--dir`` (default a temporary folder), unless ``--dir`` already holds them. Each picture is read
as ``lenet5 predict`` reads it: ``load_grey``, then ``digits.read_picture`` with the network as
the judge of touching digits; a one-digit picture is right when exactly its digit is read
(the default, number-reading mode; ``--single`` mode is reported too), a four-digit picture
when the number is read exactly.

It also checks that nothing is lost on clean pictures: every MNIST test digit as a picture
(28×28, white on black, and as a drawing: 10× larger, dark strokes on a white canvas) is read
through the picture path and compared with ``lenet5 evaluate``'s accuracy (the network on the
test set's own images) and with what ``predict.prepare_steps`` (the one-digit path of before)
gives.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import lenet5  # noqa: E402
from lenet5.bench import cpu_model  # noqa: E402
from lenet5.digits import read_picture  # noqa: E402
from lenet5.predict import ImageError, load_grey, prepare_steps  # noqa: E402


def read(model, path: Path, single: bool) -> str:
    try:
        found, _ = read_picture(load_grey(path), single=single, name=str(path), judge=model.predict)
    except ImageError:
        return "?"
    return "".join(str(c) for c in model.predict(np.stack([d.image for d in found])).argmax(1))


def photos(model, directory: Path) -> tuple[list[str], dict]:
    labels = json.loads((directory / "labels.json").read_text())
    right = collections.defaultdict(list)
    wrong = []
    for name, info in labels.items():
        number = name.startswith("number-")
        truth = str(info["label"])
        got = read(model, directory / name, single=False)
        right[("number" if number else "digit", info["kind"])].append(got == truth)
        right[("number" if number else "digit", "ink: " + info["ink"])].append(got == truth)
        if not number:
            right[("digit", "source: " + info["source"])].append(got == truth)
            right[("single", info["kind"])].append(read(model, directory / name, single=True) == truth)
        if got != truth:
            wrong.append(f"{name} ({info['ink']}, {info['source']}): {truth} read as {got}")
    return wrong, right


def pct(values: list[bool]) -> str:
    return f"{100 * np.mean(values):5.1f}% ({sum(values)}/{len(values)})" if values else "-"


def clean(model, limit: int) -> list[str]:
    """MNIST test digits as clean pictures through the picture path, against evaluate and the old path."""
    from make_photos import mnist_test
    from PIL import Image

    images, labels = mnist_test()
    images, labels = images[:limit], labels[:limit]
    evaluate = float((model.predict(images).argmax(1) == labels).mean())
    rows = [f"MNIST test set ({len(labels)} images) as pictures, {model_name}:",
            f"  lenet5 evaluate (the network on the test images):        {100 * evaluate:.2f}%"]
    for what in ("28x28 white on black", "280x280 drawing, dark on white"):
        new, single, old, same = [], [], [], 0
        for image in images:
            if what.startswith("28x28"):
                grey = image / 255.0
            else:
                big = Image.fromarray(255 - image).resize((280, 280), Image.BICUBIC)
                grey = np.asarray(big, np.float64) / 255
            try:
                found, _ = read_picture(grey, judge=model.predict)
                new.append("".join(str(c) for c in model.predict(np.stack([d.image for d in found])).argmax(1)))
            except ImageError:
                new.append("?")
            one, _ = read_picture(grey, single=True)
            single.append(one[0].image)
            old.append(prepare_steps(grey)["input"])
            same += int(np.array_equal(one[0].image, old[-1]))
        new_acc = float(np.mean([n == str(t) for n, t in zip(new, labels)]))
        single_acc = float((model.predict(np.stack(single)).argmax(1) == labels).mean())
        old_acc = float((model.predict(np.stack(old)).argmax(1) == labels).mean())
        rows += [f"  {what}:",
                 f"    read as a number (default):                            {100 * new_acc:.2f}%  "
                 f"({100 * (new_acc - evaluate):+.2f} points from evaluate)",
                 f"    --single:                                              {100 * single_acc:.2f}%",
                 f"    the one-digit path before (predict.prepare_steps):     {100 * old_acc:.2f}%  "
                 f"(--single gives the identical 28x28 input for {same}/{len(labels)})"]
    return rows


def main() -> None:
    global model_name
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="modern", help="pretrained model or checkpoint file (default modern)")
    ap.add_argument("--seed", type=int, default=2, help="pictures' seed (2: test; parameters were tuned on 1)")
    ap.add_argument("--singles", type=int, default=60, help="one-digit pictures per kind of paper")
    ap.add_argument("--numbers", type=int, default=20, help="four-digit pictures per kind of paper")
    ap.add_argument("--dir", type=Path, help="pictures made earlier (with labels.json), or where to make them")
    ap.add_argument("--mnist", type=int, default=10000, help="MNIST test images for the clean-picture check")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "photos.txt")
    args = ap.parse_args()
    model_name = args.model
    try:
        model = (lenet5.load_checkpoint(args.model)[0].eval() if Path(args.model).is_file()
                 else lenet5.pretrained(args.model))
    except lenet5.Lenet5Error as e:
        print(f"photos.py: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    start = time.perf_counter()
    made_here = not (args.dir and (args.dir / "labels.json").exists())
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp)
        if made_here:
            from make_photos import make_set

            make_set(directory, args.seed, args.singles, args.numbers)
        wrong, right = photos(model, directory)
    kinds = sorted({k for _, k in right if ":" not in k}, key=lambda k: ["plain", "uneven", "shadow", "ruled",
                                                                         "squared", "specks"].index(k))
    digits_all = sum((right[("digit", k)] for k in kinds), [])
    numbers_all = sum((right[("number", k)] for k in kinds), [])
    single_all = sum((right[("single", k)] for k in kinds), [])
    made = (f"--seed {args.seed} --singles {args.singles} --numbers {args.numbers}" if made_here
            else f"--dir {args.dir} (pictures made earlier: the seed is theirs)")
    lines = [f"# python benchmarks/photos.py --model {args.model} {made} --mnist {args.mnist}",
             f"# CPU: {cpu_model()}; {time.strftime('%Y-%m-%d')}",
             f"# pictures: benchmarks/make_photos.py seed {args.seed} (1.2-1.9 MP JPEG, quality 80): MNIST test "
             "digits (1/2), scikit-learn's UCI digits (1/4), Debian's handwriting fonts (1/4)",
             "# the pipeline's parameters (lenet5/digits.py) were chosen on pictures of seed 1 only; "
             + ("these are those pictures (the tuning set)" if args.seed == 1 else
                f"these figures are from seed {args.seed}, not looked at while tuning"),
             "",
             f"{'paper':<10} {'one digit right':>22} {'with --single':>22} {'4-digit numbers exact':>24}"]
    for k in kinds:
        lines.append(f"{k:<10} {pct(right[('digit', k)]):>22} {pct(right[('single', k)]):>22} "
                     f"{pct(right[('number', k)]):>24}")
    lines.append(f"{'all':<10} {pct(digits_all):>22} {pct(single_all):>22} {pct(numbers_all):>24}")
    lines += ["", "by ink and source (one-digit pictures; numbers by ink):"]
    for key in sorted(k for k in right if ":" in k[1]):
        lines.append(f"  {key[0]:<7} {key[1]:<16} {pct(right[key])}")
    lines += ["", *clean(model, args.mnist), "", f"misread ({len(wrong)}):", *[f"  {w}" for w in wrong],
              "", f"({time.perf_counter() - start:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


model_name = "modern"

if __name__ == "__main__":
    main()
