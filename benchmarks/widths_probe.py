"""Probe (issue 13): the modern network with other channel widths, judged on a validation split.

    LENET5_THREADS=1 python benchmarks/widths_probe.py --widths 16,32,56 --dataset fashion-mnist

Trains the ``modern`` preset's recipe with C1, C3 and C5 widened or narrowed (the layout
C1-S2-C3-S4-C5-F6-OUTPUT, F6 = 84 and everything else unchanged) on the same seeded
``--val-split`` as ``benchmarks/record.sh val`` (10% of the training set), and appends the
final epoch's validation accuracy to ``benchmarks/results/widths_probe.jsonl``. The test set is
never evaluated (``test_each_epoch=False``): this only decides whether widths are worth making a
preset option.

The widened network is registered as a preset named modern-C1-C3-C5 in this process only (its
layers from ``lenet5.presets.modern_layers``); the package is not changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from lenet5 import presets
from lenet5.datasets import load_dataset
from lenet5.model import LeNet5
from lenet5.train import fit, prepare_data

RESULTS = Path(__file__).parent / "results" / "widths_probe.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", required=True, help="C1,C3,C5 channels, e.g. 16,32,56 (the preset: 6,16,120)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's recipe")
    args = ap.parse_args()
    c1, c3, c5 = (int(w) for w in args.widths.split(","))
    name = f"modern-{c1}-{c3}-{c5}"  # registered for this process only
    presets.PRESETS[name] = dataclasses.replace(presets.PRESETS["modern"], name=name,
                                                build=presets.modern_layers(c1, c3, c5))
    config = presets.resolve(name, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                             val_split=0.1, epochs=args.epochs, test_each_epoch=False)
    model = LeNet5.from_config(config)
    data, val = prepare_data(load_dataset(config.dataset, config.data_dir, progress=False), config)
    start = time.perf_counter()
    history = fit(model, data, config, val=val, progress=False)
    row = {"widths": [c1, c3, c5], "params": model.num_parameters(), "dataset": config.dataset,
           "seed": config.seed, "epochs": config.epochs, "val_images": len(val),
           "val_acc": history[-1]["val_acc"], "s_per_epoch": (time.perf_counter() - start) / config.epochs,
           "command": f"python benchmarks/widths_probe.py --widths {args.widths} --dataset {args.dataset} "
                      f"--seed {args.seed}" + (f" --epochs {args.epochs}" if args.epochs else "")}
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
