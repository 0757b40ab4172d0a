"""How much of its own training data a shipped network gets right, clean and distorted.

    python benchmarks/fit_check.py [--model modern] [--data-dir ../shared/data/mnist] [--images 20000]

A network that misses its clean training images is near what it can fit: then heavier
augmentation is more likely to cost accuracy than to buy it (issue 13's record rounds). Each
augmentation distorts the first N training images once, with its own generator (seed 0).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lenet5 import evaluate, load_dir, zoo  # noqa: E402
from lenet5.augment import AUGMENTS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="modern", help="a pretrained model (lenet5 models)")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--images", type=int, default=20000, help="training images to distort per augmentation")
    p.add_argument("--augment", nargs="+", default=["affine", "lecun1998", "elastic"])
    args = p.parse_args()
    model, _ = zoo.load(args.model)
    train = load_dir(args.data_dir).train
    print(f"{args.model}: clean training images ({len(train)}): {evaluate(model, train)['accuracy']:.2%}")
    head = replace(train, images=train.images[:args.images], labels=train.labels[:args.images])
    for name in args.augment:
        distorted = replace(head, images=AUGMENTS[name](head.images, np.random.default_rng(0)))
        print(f"{args.model}: {name}-distorted training images ({len(head)}): {evaluate(model, distorted)['accuracy']:.2%}")


if __name__ == "__main__":
    main()
