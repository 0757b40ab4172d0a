"""Re-execute docs/tutorial.ipynb and save its outputs in place (never edit outputs by hand).

    python docs/run_notebook.py            # offline, as CI runs it: the bundled MNIST sample
    python docs/run_notebook.py --online   # whatever load_dataset finds (cache, download)

Offline mode points the downloader at a refused local port and at an empty data cache, so the
saved outputs are the ones tests/test_notebook.py reproduces. Like the test, the kernel runs
BLAS with one thread unless OPENBLAS_NUM_THREADS is set (OpenBLAS threads spin-wait and crawl
when the cores are shared with other jobs).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent / "tutorial.ipynb"


def execute(path: Path, cwd: Path, timeout: int = 300):
    """Run every cell of the notebook at ``path`` in a fresh python3 kernel; returns the notebook."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=timeout, record_timing=False,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if "--online" not in sys.argv[1:]:
            os.environ["LENET5_MIRRORS"] = "http://127.0.0.1:9/"
            os.environ["LENET5_DATA"] = tmp
        for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, "1")
        start = time.perf_counter()
        nb = execute(NOTEBOOK, Path(tmp))
        nbformat.write(nb, NOTEBOOK)
    print(f"{NOTEBOOK}: executed in {time.perf_counter() - start:.1f} s, "
          f"{NOTEBOOK.stat().st_size / 1e6:.2f} MB")
