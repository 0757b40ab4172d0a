"""Every preset on full MNIST (60,000 training images, the official 10,000 test images), as Markdown.

    python benchmarks/full_mnist_table.py          # the table in docs/results.md (benchmarks/results.sh)

Reads the runs that ``benchmarks/results.sh`` makes (each with its default recipe unless its
options say otherwise; the final epoch, never a best epoch):

- seed-tanh, seed-sigmoid: ``runs/results-full/<preset>-seedS`` (seed 0: a link to the shipped
  weights' run in ``runs/pretrained``)
- modern: ``runs/record/final/mnist*-seedS`` (``benchmarks/record.sh final``), one row per recipe
- lecun1998, plain and ``--distort``: ``runs/paper/{plain,distort}-seedS`` (``benchmarks/paper.sh``)
- the seed notebook's protocol: ``runs/results-full/notebook-protocol-seedS``

Each row: options beyond the preset's recipe, seeds, final test accuracy (mean ± sd over the
seeds), test error, trainable parameters, epochs, median training seconds per epoch and the
command (``--seed S`` where there are several seeds).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lenet5.model import LeNet5  # noqa: E402

GROUPS = [  # (glob under runs/, how the rows are labelled)
    ("results-full/seed-tanh-seed*", None),
    ("results-full/seed-sigmoid-seed*", None),
    ("record/final/mnist-seed*", None),
    ("record/final/mnist-*-seed*", None),  # other recipes (their options name the directory)
    ("paper/plain-seed*", None),
    ("paper/distort-seed*", "`--distort`"),
    ("results-full/notebook-protocol-seed*", "seed notebook's protocol"),
]
NOT_RECIPE = {"--data-dir", "--dataset", "--seed", "--out"}  # options with a value that do not change the recipe
FLAGS = {"--force", "--quiet", "--no-plots"}


def command(config: dict, seeds: int) -> str:
    """The run's ``lenet5 train`` command, without output flags; ``--seed S`` for several seeds."""
    args, out, i = config["command"][1:], ["lenet5"], 0
    while i < len(args):
        a = args[i]
        if a in FLAGS:
            i += 1
            continue
        if a == "--out":
            i += 2
            continue
        if a == "--data-dir":
            out += [a, "MNIST"]
            i += 2
            continue
        if a == "--seed" and seeds > 1:
            out += [a, "S"]
            i += 2
            continue
        out.append(a)
        i += 1
    return " ".join(out)


def options(config: dict) -> str:
    args, keep, i = config["command"][2:], [], 0
    while i < len(args):
        if args[i] in NOT_RECIPE or args[i] == "--preset":
            i += 2
        elif args[i] in FLAGS:
            i += 1
        else:
            keep.append(args[i])
            i += 1
    return " ".join(keep)


def main() -> None:
    runs = ROOT / "runs"
    print("| preset | options | seeds | test accuracy | test error | parameters | epochs | s/epoch | command |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pattern, label in GROUPS:
        by_recipe: dict[str, list[tuple[dict, list[dict]]]] = defaultdict(list)
        for d in sorted(runs.glob(pattern)):
            try:
                config = json.loads((d / "config.json").read_text())
                rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            except (OSError, ValueError):
                continue
            if config["data"].get("dataset") != "mnist" or not rows or len(rows) < config["settings"]["epochs"]:
                continue
            by_recipe[options(config)].append((config, rows))
        for opts, group in by_recipe.items():
            config = group[0][0]
            settings = config["settings"]
            accs = [100 * rows[-1]["test_acc"] for _, rows in group]
            mean = statistics.mean(accs)
            spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
            secs = statistics.median(r["train_seconds"] for _, rows in group for r in rows)
            params = LeNet5(settings["preset"], seed=None, widths=settings.get("widths")).num_parameters()
            train = config["data"].get("train_size")
            shown = label or (f"`{opts}`" if opts else "")
            if train != 60000:
                shown += f" ({train:,} training images)"
            print(f"| {settings['preset']} | {shown} | {len(accs)} | {mean:.2f}{spread}% | {100 - mean:.2f}% | "
                  f"{params:,} | {settings['epochs']} | {secs:.0f} | `{command(config, len(accs))}` |")


if __name__ == "__main__":
    main()
