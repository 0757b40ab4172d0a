"""How long drawing the figures of a run takes: per figure, per savefig, and in total.

    python benchmarks/plots_time.py RUN_DIR [RUN_DIR ...] [--repeat 3] [--cpu] [--cli]

It calls ``lenet5.plots.plot_run`` in-process ``--repeat`` times (medians are printed), with
each figure function and ``Figure.savefig`` wrapped in a timer, so what it measures is exactly
what ``lenet5 plot RUN_DIR`` does; "setup" is the rest of ``plot_run`` (loading the run and the
test set, predicting it). ``--cpu`` measures this process's CPU time instead of wall-clock time,
which is steadier on a busy machine. With ``--cli`` it also times ``python -m lenet5.cli plot
RUN_DIR`` as a fresh process (interpreter, imports and matplotlib start-up included; wall-clock).
The PNGs are written into the run directory, as ``lenet5 plot`` does.

Make a run to measure offline from the bundled sample:

    LENET5_MIRRORS=http://127.0.0.1:9/ LENET5_DATA=/tmp/l5cache \\
        python -m lenet5.cli train --epochs 2 --out /tmp/plotrun --force --no-plots --quiet
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

FUNCTIONS = {"curves.png": "plot_curves", "confusion.png": "plot_confusion", "kernels.png": "plot_kernels",
             "feature_maps.png": "plot_feature_maps", "wrong.png": "plot_wrong"}


def time_plot_run(run_dir: str, sample: int = 0, clock=time.perf_counter) -> dict[str, float]:
    """One ``plot_run`` -> seconds of ``clock``: '<figure> draw', '<figure> savefig', 'setup', 'total'."""
    import matplotlib.figure

    from lenet5 import plots

    times: dict[str, float] = {}
    originals = {name: getattr(plots, fn) for name, fn in FUNCTIONS.items()}
    saved_figs: dict[int, str] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = clock()
            fig = fn(*args, **kwargs)
            times[f"{name} draw"] = clock() - t0
            saved_figs[id(fig)] = name
            return fig
        return wrapper

    original_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        t0 = clock()
        result = original_savefig(fig, *args, **kwargs)
        name = saved_figs.get(id(fig), Path(str(args[0])).name if args else "?")
        times[f"{name} savefig"] = clock() - t0
        return result

    for name, fn in FUNCTIONS.items():
        setattr(plots, fn, timed(name, originals[name]))
    matplotlib.figure.Figure.savefig = savefig
    try:
        t0 = clock()
        plots.plot_run(run_dir, sample)
        times["total"] = clock() - t0
    finally:
        for name, fn in FUNCTIONS.items():
            setattr(plots, fn, originals[name])
        matplotlib.figure.Figure.savefig = original_savefig
    times["setup"] = times["total"] - sum(v for k, v in times.items() if k != "total")
    return times


def time_cli(run_dir: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lenet5.cli", "plot", run_dir], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--repeat", type=int, default=3, help="runs per run dir; medians are printed (3)")
    parser.add_argument("--sample", type=int, default=0, help="test image of the feature-map figure (0)")
    parser.add_argument("--cpu", action="store_true",
                        help="measure this process's CPU time instead of wall-clock time (steadier on a busy machine)")
    parser.add_argument("--cli", action="store_true", help="also time `python -m lenet5.cli plot` (a fresh process)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        clock = time.process_time if args.cpu else time.perf_counter
        runs = [time_plot_run(run_dir, args.sample, clock) for _ in range(args.repeat)]
        kind = "CPU" if args.cpu else "wall-clock"
        print(f"{run_dir}: plot_run in-process, {kind} seconds, median of {args.repeat} (min-max)")
        rows = [f"{name} {part}" for name in FUNCTIONS for part in ("draw", "savefig")] + ["setup", "total"]
        for row in rows:
            values = [r.get(row, float("nan")) for r in runs]
            print(f"  {row:<22} {statistics.median(values):7.3f} s   ({min(values):.3f}-{max(values):.3f})")
        draw = [sum(r[f"{n} draw"] for n in FUNCTIONS) for r in runs]
        save = [sum(r[f"{n} savefig"] for n in FUNCTIONS) for r in runs]
        print(f"  {'all draws':<22} {statistics.median(draw):7.3f} s")
        print(f"  {'all savefigs':<22} {statistics.median(save):7.3f} s")
        if args.cli:
            cli = [time_cli(run_dir) for _ in range(args.repeat)]
            print(f"  {'lenet5 plot (process)':<22} {statistics.median(cli):7.3f} s   ({min(cli):.3f}-{max(cli):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
