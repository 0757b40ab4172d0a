"""Tables of the modern preset's record runs (benchmarks/record.sh), as Markdown.

    python benchmarks/record_table.py runs/record > runs/record/tables.md

Validation runs (``val/NAME-seedS``): the final epoch's validation accuracy, averaged over the
seeds run (and each seed's), with the options that differ from the preset's recipe; runs with
``--ema`` also give their last step's weights (``live_val_acc``): the preset's recipe in the
same runs, a paired comparison. Final runs
(``final/NAME-seedS``): each seed's final-epoch test accuracy, their mean ± sample standard
deviation, the parameters and the seconds per epoch (training only; the machine is named).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _runs(root: Path) -> dict[str, list[tuple[int, dict, list[dict]]]]:
    """name -> [(seed, config.json, metrics rows)] for the complete runs under root."""
    out: dict[str, list] = defaultdict(list)
    for d in sorted(root.glob("*-seed*")):
        m = re.fullmatch(r"(.+)-seed(\d+)", d.name)
        try:
            config = json.loads((d / "config.json").read_text())
            rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        except (OSError, ValueError):
            continue
        if m and rows and len(rows) >= config["settings"]["epochs"]:
            out[m.group(1)].append((int(m.group(2)), config, rows))
    return out


def _options(config: dict) -> str:
    """The command's options beyond data, seed, output and flags that do not change the recipe."""
    skip = {"--data-dir", "--dataset", "--seed", "--out", "--val-split"}
    cmd, keep, i = config["command"][2:], [], 0
    while i < len(cmd):
        if cmd[i] in skip:
            i += 2
        elif cmd[i] in ("--force", "--quiet", "--no-plots", "--no-test", "--preset"):
            i += 2 if cmd[i] == "--preset" else 1
        else:
            keep.append(cmd[i])
            i += 1
    return " ".join(keep) or "(the preset's recipe)"


def _flip_accuracy(run: Path, config: dict) -> float:
    """Test accuracy of a run's final network with test-time flip averaging."""
    from lenet5.checkpoint import load_checkpoint
    from lenet5.datasets import load_dataset
    from lenet5.train import evaluate

    model, _ = load_checkpoint(run / "model.safetensors")
    data = load_dataset(config["settings"]["dataset"], config["settings"]["data_dir"], progress=False)
    return evaluate(model, data.test, tta="flip")["accuracy"]


def main(root: Path) -> None:
    from lenet5.bench import cpu_model

    val = _runs(root / "val")
    if val:
        print("Validation (final epoch; the test set plays no part in the choice)\n")
        print("| candidate | options | seeds | validation images | validation accuracy | per seed | "
              "last step's weights (--ema runs) |")
        print("|---|---|---|---|---|---|---|")
        for name, runs in val.items():
            runs = sorted(runs, key=lambda r: r[0])
            accs = [rows[-1]["val_acc"] for _, _, rows in runs]
            live = [rows[-1].get("live_val_acc") for _, _, rows in runs]
            n_val = runs[0][1].get("data", {}).get("val_size", "?")
            per_seed = ", ".join(f"{100 * a:.2f}" for a in accs) if len(accs) > 1 else ""
            live_text = ""
            if None not in live:
                live_text = f"{100 * statistics.mean(live):.2f}% ({', '.join(f'{100 * a:.2f}' for a in live)})"
            print(f"| {name} | `{_options(runs[0][1])}` | {len(runs)} | {n_val} | "
                  f"{100 * statistics.mean(accs):.2f}% | {per_seed} | {live_text} |")
        print()
    final = _runs(root / "final")
    if final:
        print(f"Final runs: whole training set, official test set, final epoch ({cpu_model()}, one thread per run)\n")
        print("| runs | options | test accuracy per seed | mean ± sd | epochs | s/epoch |")
        print("|---|---|---|---|---|---|")
        for name, runs in final.items():
            accs = [100 * rows[-1]["test_acc"] for _, _, rows in sorted(runs, key=lambda r: r[0])]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            secs = statistics.median(r["train_seconds"] for _, _, rows in runs for r in rows)
            per_seed = ", ".join(f"{a:.2f}" for a in accs)
            print(f"| {name} | `{_options(runs[0][1])}` | {per_seed} | {statistics.mean(accs):.2f} ± {sd:.2f}% "
                  f"({len(accs)} seeds) | {len(runs[0][2])} | {secs:.0f} |")
            live = [rows[-1].get("live_test_acc") for _, _, rows in sorted(runs, key=lambda r: r[0])]
            if None not in live:  # --ema: the same runs' last-step weights, reported apart
                print(f"| {name} (last step's weights, reported apart) | | "
                      f"{', '.join(f'{100 * a:.2f}' for a in live)} | {100 * statistics.mean(live):.2f} ± "
                      f"{100 * statistics.stdev(live) if len(live) > 1 else 0.0:.2f}% | | |")
        flip = {name: runs for name, runs in final.items() if runs[0][1]["settings"]["dataset"].startswith("fashion")}
        if flip:
            print("\nReported apart: the same Fashion-MNIST networks with test-time flip averaging (each test "
                  "image's outputs averaged with its mirror's: `lenet5 evaluate RUN/model.safetensors --tta flip`)\n")
            print("| runs | options | test accuracy per seed, --tta flip | mean ± sd |")
            print("|---|---|---|---|")
            for name, runs in flip.items():
                accs = [100 * _flip_accuracy(root / "final" / f"{name}-seed{seed}", config)
                        for seed, config, _ in sorted(runs, key=lambda r: r[0])]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                print(f"| {name} | `{_options(runs[0][1])}` | {', '.join(f'{a:.2f}' for a in accs)} | "
                      f"{statistics.mean(accs):.2f} ± {sd:.2f}% ({len(accs)} seeds) |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/record"))
