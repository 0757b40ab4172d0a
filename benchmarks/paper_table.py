"""The 1998 paper's LeNet-5 table against ours, from the runs of benchmarks/paper.sh.

    python benchmarks/paper_table.py runs/paper        # writes its block of docs/paper.md and docs/images/paper_errors_*.png

For each variant (plain, --distort) and seed: the final pass's test error, the training error
of the final network on the whole training set (measured here, as the paper reports it), the
running training error of the last pass, passes and seconds per pass; then the mean over seeds.
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lenet5.datasets import load_dataset  # noqa: E402
from lenet5.plots import _plt, plot_errors  # noqa: E402
from lenet5.runs import RunDir  # noqa: E402
from lenet5.train import evaluate  # noqa: E402

PAPER = {"plain": {"test": 0.95, "training": 0.35}, "distort": {"test": 0.80}}


def main(root: str) -> None:
    rows, curves = [], {}
    for path in sorted(Path(root).glob("*-seed*")):
        run = RunDir.open(path)
        history = run.history()
        settings = run.read_config()["settings"]
        if len(history) < settings["epochs"]:
            continue  # still training (or stopped): only complete runs count
        model, _ = run.load_model()
        data = load_dataset(settings["dataset"], settings.get("data_dir"), progress=False)
        train_error = 1 - evaluate(model.eval(), data.train)["accuracy"]
        variant = path.name.split("-seed")[0]
        rows.append({"variant": variant, "seed": settings["seed"], "passes": len(history),
                     "test_error": 1 - history[-1]["test_acc"], "train_error": train_error,
                     "running_train_error": 1 - history[-1]["train_acc"],
                     "seconds_per_pass": statistics.median(h["train_seconds"] for h in history)})
        curves.setdefault(variant, (history, path.name))
    lines = ["| variant | seed | passes | test error | training error (final network) | training error (last pass, running) | s/pass |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['passes']} | {100 * r['test_error']:.2f}% | "
                     f"{100 * r['train_error']:.2f}% | {100 * r['running_train_error']:.2f}% | {r['seconds_per_pass']:.0f} |")
    summary = ["", "| variant | seeds | test error, mean ± sd | paper |", "|---|---|---|---|"]
    for variant in sorted({r["variant"] for r in rows}):
        errs = [100 * r["test_error"] for r in rows if r["variant"] == variant]
        sd = statistics.stdev(errs) if len(errs) > 1 else float("nan")
        summary.append(f"| {variant} | {len(errs)} | {statistics.mean(errs):.2f}%"
                       + (f" ± {sd:.2f}" if len(errs) > 1 else " (one seed)")
                       + f" | {PAPER.get(variant, {}).get('test', float('nan')):.2f}% |")
    text = "\n".join(lines + summary) + "\n"
    block = "`MNIST=... benchmarks/paper.sh; python benchmarks/paper_table.py runs/paper`\n\n" + text
    page = Path("docs/paper.md")
    start, end = "<!-- paper_table.py", "<!-- end paper_table.py -->"
    if page.exists() and start in page.read_text():  # the generated block of the page, between its markers
        before, rest = page.read_text().split(start, 1)
        head, after = rest.split(end, 1)
        page.write_text(before + start + head.split("\n", 1)[0] + "\n" + block + end + after)
    else:
        page.parent.mkdir(exist_ok=True)
        page.write_text("# The 1998 paper's LeNet-5 on full MNIST, measured\n\n" + block)
    print(text, end="")
    plt = _plt()
    for variant, (history, name) in curves.items():
        fig = plot_errors(history, f"{name} | lecun1998 | full MNIST", PAPER.get(variant))
        fig.savefig(f"docs/images/paper_errors_{variant}.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    main(*sys.argv[1:])
