"""The "busy machine" table: `lenet5 bench` idle, then again while another process holds one core.

    python benchmarks/busy_bench.py                       # batch 64, a pure-Python busy loop
    python benchmarks/busy_bench.py --busy numpy --pin    # a NumPy loop, pinned to CPU 0
    python benchmarks/busy_bench.py --steps 5 --repeats 1 --infer-images 500 --out /tmp/smoke.txt  # a smoke run

On a user's laptop something else always runs (a browser, an editor, a build). This script
measures what that costs each engine: it runs `lenet5 bench --json` (benchmarks/bench.py, the
same code) on the idle machine, then starts one busy process — by default a pure-Python loop,
which holds one core and never lets go (``--busy numpy``: a single-threaded matrix-product
loop instead; ``--pin``: pinned to CPU 0, as the scheduler may otherwise move it) — and runs
the same benchmark again. The table gives images/s idle and busy per engine and their ratio,
and names the CPU, its vector extensions and the load averages seen.

The results file is benchmarks/results/bench_busy_<cpu>.txt unless --out says otherwise.
Nothing else may run meanwhile (the idle figures would not be idle): the load average before
the idle run is recorded so a reader can tell.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # a checkout, installed or not
from lenet5.bench import environment, vector_summary  # noqa: E402  (after the path is set)

BUSY = {
    # one core, pure Python: the interpreter never sleeps and never releases it
    "python": "while True:\n    pass\n",
    # one core of single-threaded BLAS work (OPENBLAS_NUM_THREADS=1 is set for it)
    "numpy": "import numpy as np\na = np.random.default_rng(0).random((256, 256))\nwhile True:\n    a @ a\n",
}


def cpu_slug(env: dict) -> str:
    """A file-name part for the CPU: 'intel-xeon-processor-avx512', 'amd-epyc'."""
    name = re.sub(r"\((r|tm)\)", "", env["cpu"].lower())
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cpu"
    return slug + ("-avx512" if "AVX-512F" in env.get("vector_extensions", []) else "")


def bench(args: argparse.Namespace) -> dict:
    """One `lenet5 bench --json` in a fresh process (so both runs start alike)."""
    cmd = [sys.executable, str(HERE / "bench.py"), "--preset", args.preset, "--batch-sizes", args.batch_sizes,
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--infer-images", str(args.infer_images),
           "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_busy(kind: str, pin: bool) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", BUSY[kind]], env=env)
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {0})
    return proc


def rates(result: dict) -> dict[tuple[str, str], float]:
    """(block, engine) -> images/s, e.g. ("train batch 64", "numpy")."""
    table = {}
    for block in result["train"]:
        for peer, entry in block["peers"].items():
            if "images_per_s" in entry:
                table[(f"training, batch {block['batch_size']}", peer)] = entry["images_per_s"]
    infer = result.get("infer") or {}
    for peer, entry in infer.get("peers", {}).items():
        if "images_per_s" in entry:
            table[(f"inference, chunks of {infer.get('chunk', '?')}", peer)] = entry["images_per_s"]
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed-tanh", help="network to benchmark (default seed-tanh)")
    p.add_argument("--batch-sizes", default="64", help="comma-separated training batch sizes (default 64)")
    p.add_argument("--steps", type=int, default=100, help="training steps per repetition (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per engine (default 5)")
    p.add_argument("--infer-images", type=int, default=10000, help="images per inference measurement")
    p.add_argument("--busy", choices=sorted(BUSY), default="python", help="what holds the core (default python)")
    p.add_argument("--pin", action="store_true", help="pin the busy process to CPU 0")
    p.add_argument("--settle", type=float, default=3.0, help="seconds the busy process runs before measuring")
    p.add_argument("--out", type=Path, help="results file (default benchmarks/results/bench_busy_<cpu>.txt)")
    args = p.parse_args()

    env = environment()
    load_idle = os.getloadavg()
    idle = bench(args)
    busy_proc = start_busy(args.busy, args.pin)
    try:
        time.sleep(args.settle)
        load_busy = os.getloadavg()
        busy = bench(args)
        load_after = os.getloadavg()
    finally:
        busy_proc.kill()
        busy_proc.wait()

    before, during = rates(idle), rates(busy)
    command = " ".join(["python benchmarks/busy_bench.py", *sys.argv[1:]])
    pinned = " pinned to CPU 0" if args.pin else ""
    lines = [f"# {command}",
             (f"# {date.today()} {env['cpu']} ({vector_summary(env['vector_extensions'])}), {env['cores']} cores; "
              f"numpy {env['numpy']}, torch {env['torch']}, jax {env['jax']}, onnxruntime {env['onnxruntime']}"),
             (f"# busy: one {args.busy} process{pinned} (started {args.settle:g} s before the busy run); "
              f"preset {args.preset}, {args.steps} steps x {args.repeats} repeats"),
             (f"# load average (1 min): {load_idle[0]:.2f} before the idle run, {load_busy[0]:.2f} before the busy "
              f"run, {load_after[0]:.2f} after it"),
             "", f"{'measurement':<26}{'engine':<15}{'idle img/s':>12}{'busy img/s':>12}{'busy/idle':>11}"]
    for key in before:
        if key in during:
            lines.append(f"{key[0]:<26}{key[1]:<15}{before[key]:>12.0f}{during[key]:>12.0f}"
                         f"{during[key] / before[key]:>11.2f}")
    text = "\n".join(lines) + "\n"
    out = args.out or HERE / "results" / f"bench_busy_{cpu_slug(env)}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
