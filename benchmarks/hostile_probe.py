"""Re-run issue 28's hostile inputs (the files around a run, sizes, the web server) as a new user would.

    python benchmarks/hostile_probe.py [--out benchmarks/results/hostile_probe.txt]

Each case builds its input in a fresh temporary directory, runs ``lenet5`` as a subprocess and
records: the exit status (for the web cases, the HTTP status), how many lines it wrote to stderr
and how long the first one is, the peak resident memory of the process (its own VmHWM), and a
check of what must hold (files outside the run left as they were, no RuntimeWarning, no
traceback, ...). A case passes when the command exits 2 with
one short stderr line, or gives a correct result, and its check holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MINI = ROOT / "tests" / "fixtures" / "mnist-mini"
sys.path.insert(0, str(SRC))
from safetensors.numpy import load_file, save_file  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(SRC), "LENET5_MIRRORS": "http://127.0.0.1:9/"}
LONG = "x" * 300  # a file name over the 255 bytes a file system allows


class Result:
    def __init__(self, status, stderr: str, rss_mb: float, check: str | None) -> None:
        self.status, self.stderr, self.rss_mb, self.check = status, stderr, rss_mb, check


#: runs ``lenet5.cli`` as ``python -m`` would, then writes its own peak RSS (VmHWM) to a file: the
#: rusage of a child is no good here, as Linux carries the parent's peak into it across exec
WRAPPER = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as f, open(os.environ["PROBE_PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["lenet5", *sys.argv[1:]]
runpy.run_module("lenet5.cli", run_name="__main__", alter_sys=True)
"""


def lenet5(*args, cwd: Path | None = None, timeout: float = 120) -> tuple[int | str, str, str, float]:
    """(exit status or 'hung', stdout, stderr, peak RSS in MB) of ``python -m lenet5.cli args``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        p = subprocess.Popen([sys.executable, "-c", WRAPPER, *map(str, args)], stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, cwd=cwd, env={**ENV, "PROBE_PEAK_FILE": peak.name})
        deadline, status, usage = time.monotonic() + timeout, None, None
        while status is None:
            pid, raw, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline:
                p.kill()
                _, _, usage = os.wait4(p.pid, 0)
                status = "hung"
            else:
                time.sleep(0.02)
        p.returncode = 0  # reaped by wait4 above
        out.seek(0)
        err.seek(0)
        peak_kb = peak.read().strip()  # none if it was killed: then rusage, an upper bound
        rss = int(peak_kb) / 1024 if peak_kb else usage.ru_maxrss / 1024
        return status, out.read().decode(errors="replace"), err.read().decode(errors="replace"), rss


# --------------------------------------------------------------------------- shared inputs
def trained_run(base: Path, preset: str = "seed-tanh") -> Path:
    """A finished one-epoch run on the committed MNIST slice."""
    run = base / f"run-{preset}"
    # the slice matches no published checksum: it is named (--dataset), so auto augmentation can follow
    status, _, err, _ = lenet5("train", "--preset", preset, "--epochs", 1, "--train-limit", 64, "--data-dir", MINI,
                               "--dataset", "mnist", "--out", run, "--quiet", "--no-plots")
    assert status == 0, err
    return run


def chardev(path: Path) -> bool:
    """A character device node like /dev/null at path (needs root); False where not permitted."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return True
    except OSError:
        return False


def snapshot(*paths: Path) -> dict:
    return {str(p): (p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink()
                     else "dir" if p.is_dir() else stat.S_IFMT(os.lstat(p).st_mode) if os.path.lexists(p) else None)
            for p in paths}


# --------------------------------------------------------------------------- the cases
CASES: list[tuple[str, Callable[[Path, dict], Result]]] = []


def case(name: str):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


def cli_case(tmp: Path, args: list, check: Callable[[], str | None] = lambda: None, timeout: float = 60) -> Result:
    status, _, err, rss = lenet5(*args, cwd=tmp, timeout=timeout)
    problem = check()
    if "RuntimeWarning" in err or "Traceback" in err:
        problem = (problem + "; " if problem else "") + "warning or traceback on stderr"
    return Result(status, err, rss, problem)


def unchanged(before: dict, *paths: Path) -> Callable[[], str | None]:
    return lambda: None if snapshot(*paths) == before else "files outside the run changed"


@case("train --out FOREIGN_DIR --force (photo.png, config.json, metrics.jsonl, notes.txt)")
def _(tmp, shared):
    d = tmp / "my-project"
    d.mkdir()
    files = [d / n for n in ("photo.png", "config.json", "metrics.jsonl", "notes.txt")]
    for f in files:
        f.write_text(f"the user's {f.name}\n")
    before = snapshot(*files)
    return cli_case(tmp, ["train", "--data-dir", MINI, "--epochs", 1, "--train-limit", 32, "--out", d, "--force",
                          "--quiet", "--no-plots"], unchanged(before, *files))


@case("train --out EARLIER_RUN --force (a real run, plus the user's notes.txt)")
def _(tmp, shared):
    run = trained_run(tmp)
    (run / "notes.txt").write_text("keep me\n")
    r = cli_case(tmp, ["train", "--data-dir", MINI, "--epochs", 1, "--train-limit", 32, "--out", run, "--force",
                       "--quiet", "--no-plots"],
                 lambda: None if (run / "notes.txt").read_text() == "keep me\n" else "notes.txt lost")
    r.expect_ok = True
    return r


for label, make in [("export CKPT -o CHARDEV", lambda run, node: ["export", run / "model.safetensors", "-o", node]),
                    ("compare RUN --output CHARDEV", lambda run, node: ["compare", run, "--output", node])]:
    @case(label)
    def _(tmp, shared, make=make):
        node = tmp / "node"
        if not chardev(node):
            return Result("skip", "mknod not permitted", 0, None)
        return cli_case(tmp, make(shared["run"], node),
                        lambda: None if stat.S_ISCHR(os.lstat(node).st_mode) else "device node replaced")


def copy_run(tmp: Path, shared) -> Path:
    import shutil

    run = tmp / "run"
    shutil.copytree(shared["run"], run, symlinks=True)
    return run


@case("train --resume RUN whose .lock is a symlink to a file outside")
def _(tmp, shared):
    run = copy_run(tmp, shared)
    outside = tmp / "precious.txt"
    outside.write_text("precious\n")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(outside)
    return cli_case(tmp, ["train", "--resume", run, "--epochs", 2, "--quiet", "--no-plots"],
                    unchanged(snapshot(outside), outside))


@case("plot RUN whose curves.png is a symlink to a file outside")
def _(tmp, shared):
    run = copy_run(tmp, shared)
    outside = tmp / "precious.png"
    outside.write_text("precious\n")
    (run / "curves.png").symlink_to(outside)
    return cli_case(tmp, ["plot", run], unchanged(snapshot(outside), outside))


@case("train --resume RUN --out OTHER")
def _(tmp, shared):
    run = copy_run(tmp, shared)
    return cli_case(tmp, ["train", "--resume", run, "--out", tmp / "other", "--epochs", 2, "--quiet", "--no-plots"],
                    lambda: "OTHER created" if (tmp / "other").exists() else None)


for verb in ("resume", "compare", "plot"):
    @case(f"{verb} RUN whose config.json is a FIFO")
    def _(tmp, shared, verb=verb):
        run = copy_run(tmp, shared)
        (run / "config.json").unlink()
        os.mkfifo(run / "config.json")
        args = {"resume": ["train", "--resume", run, "--epochs", 2, "--quiet", "--no-plots"],
                "compare": ["compare", run], "plot": ["plot", run]}[verb]
        return cli_case(tmp, args, timeout=20)

for name in ("metrics.jsonl", "batch_metrics.jsonl"):
    @case(f"compare/plot RUN whose {name} links to /dev/zero")
    def _(tmp, shared, name=name):
        run = copy_run(tmp, shared)
        (run / name).unlink()
        (run / name).symlink_to("/dev/zero")
        return cli_case(tmp, ["plot" if name.startswith("batch") else "compare", run], timeout=30)


@case("predict on a modern checkpoint whose metadata says widths [1024, 1024, 1024]")
def _(tmp, shared):
    src = shared["modern"] / "model.safetensors"
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), "np") as f:
        meta = dict(f.metadata())
    settings = json.loads(meta["settings"])
    meta["settings"] = json.dumps({**settings, "widths": [1024, 1024, 1024]})
    if "model" in meta:  # where a checkpoint records its network (its model spec)
        meta["model"] = json.dumps({**json.loads(meta["model"]), "widths": [1024, 1024, 1024]})
    save_file(tensors, str(tmp / "wide.safetensors"), metadata=meta)
    return cli_case(tmp, ["predict", tmp / "wide.safetensors", shared["digit"]])


for label, extra in [("bench --infer-images 1000000000000", ["--infer-images", "1000000000000"]),
                     ("bench --batch-sizes 1000000000", ["--batch-sizes", "1000000000"])]:
    @case(label)
    def _(tmp, shared, extra=extra):
        return cli_case(tmp, ["bench", "--steps", 1, "--repeats", 1, *extra])


def scaled_checkpoint(tmp: Path, shared, value: float, dtype=np.float32) -> Path:
    src = shared["run"] / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(src), "np") as f:
        meta = dict(f.metadata())
    tensors = {k: np.full_like(v, value, dtype=dtype) if v.dtype.kind == "f" else v
               for k, v in load_file(str(src)).items()}
    path = tmp / f"huge-{value:g}.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


@case("predict with finite but huge weights (3e38)")
def _(tmp, shared):
    return cli_case(tmp, ["predict", scaled_checkpoint(tmp, shared, 3e38), shared["digit"]])


@case("predict with float64 weights beyond float32's range (1e300)")
def _(tmp, shared):
    return cli_case(tmp, ["predict", scaled_checkpoint(tmp, shared, 1e300, np.float64), shared["digit"]])


def damaged(tmp: Path, shared, name: str, change: Callable[[dict], None]) -> Path:
    run = copy_run(tmp, shared)
    if name == "config.json":
        config = json.loads((run / name).read_text())
        change(config)
        (run / name).write_text(json.dumps(config))
        return run
    lines = [json.loads(x) for x in (run / name).read_text().splitlines()]
    for rec in lines:
        change(rec)
    (run / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


for verb in ("compare", "plot"):
    for label, name, change in [
            ('config.json without "data"', "config.json", lambda r: r.pop("data")),
            ('config.json "data": {"train_size": "many"}', "config.json",
             lambda r: r["data"].update(train_size="many")),
            ('config.json "settings": {"preset": 7}', "config.json", lambda r: r["settings"].update(preset=7)),
            ('metrics.jsonl "seconds": "3"', "metrics.jsonl", lambda r: r.update(seconds="3")),
            ('metrics.jsonl "test_acc": "high"', "metrics.jsonl", lambda r: r.update(test_acc="high")),
            ('metrics.jsonl "train_loss": []', "metrics.jsonl", lambda r: r.update(train_loss=[])),
            ('batch_metrics.jsonl "loss": ["x"]', "batch_metrics.jsonl", lambda r: r.update(loss=["x"]))]:
        if verb == "compare" and name == "batch_metrics.jsonl":
            continue

        @case(f"{verb} RUN with {label}")
        def _(tmp, shared, verb=verb, name=name, change=change):
            return cli_case(tmp, [verb, damaged(tmp, shared, name, change)])


@case("compare RUN --output DIRECTORY")
def _(tmp, shared):
    (tmp / "d").mkdir()
    return cli_case(tmp, ["compare", shared["run"], "--output", tmp / "d"])


@case("train --resume RUN whose state is another preset's")
def _(tmp, shared):
    run = copy_run(tmp, shared)
    import shutil

    shutil.copy(shared["modern"] / "train_state.safetensors", run / "train_state.safetensors")
    return cli_case(tmp, ["train", "--resume", run, "--epochs", 2, "--quiet", "--no-plots"])


@case("train --resume RUN whose config.json is another preset's")
def _(tmp, shared):
    run = damaged(tmp, shared, "config.json", lambda r: r["settings"].update(preset="modern"))
    return cli_case(tmp, ["train", "--resume", run, "--epochs", 2, "--quiet", "--no-plots", "--force-data"])


@case("serve --runs-dir FILE")
def _(tmp, shared):
    (tmp / "file").write_text("x")
    return cli_case(tmp, ["serve", "--runs-dir", tmp / "file", "--port", 0, "--no-browser"], timeout=30)


for label, make in [("train --out LONG_NAME", lambda tmp, s: ["train", "--data-dir", MINI, "--out", tmp / LONG,
                                                              "--quiet", "--no-plots", "--epochs", 1]),
                    ("train --resume LONG_NAME", lambda tmp, s: ["train", "--resume", tmp / LONG]),
                    ("export -o LONG_NAME", lambda tmp, s: ["export", s["run"] / "model.safetensors", "-o",
                                                            tmp / LONG]),
                    ("compare --output LONG_NAME", lambda tmp, s: ["compare", s["run"], "--output", tmp / LONG]),
                    ("predict --show-input LONG_NAME", lambda tmp, s: ["predict", s["run"] / "model.safetensors",
                                                                      s["digit"], "--show-input", tmp / LONG])]:
    @case(label)
    def _(tmp, shared, make=make):
        return cli_case(tmp, make(tmp, shared))


for preset in ("seed-tanh", "modern"):
    @case(f"train --preset {preset} --lr 1e308")
    def _(tmp, shared, preset=preset):
        r = cli_case(tmp, ["train", "--preset", preset, "--data-dir", MINI, "--dataset", "mnist", "--epochs", 1,
                           "--train-limit", 64, "--lr", "1e308", "--out", tmp / "r", "--quiet", "--no-plots"])
        r.expect_ok = r.status == 0  # a run that stays finite is a correct result; else one line
        return r


@case("train --augment none --distort")
def _(tmp, shared):
    return cli_case(tmp, ["train", "--data-dir", MINI, "--augment", "none", "--distort", "--out", tmp / "r"])


@case("predict on a checkpoint whose header holds a 2,000,000-character dtype")
def _(tmp, shared):
    header = json.dumps({"w": {"dtype": "F" * 2_000_000, "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp / "h.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return cli_case(tmp, ["predict", tmp / "h.safetensors", shared["digit"]])


# --------------------------------------------------------------------------- the web server
class Server:
    def __init__(self, tmp: Path, *args) -> None:
        self.err = open(tmp / "server.log", "w+")
        self.p = subprocess.Popen([sys.executable, "-m", "lenet5.cli", "serve", "--port", "0", "--no-browser",
                                   *map(str, args)], stdout=subprocess.DEVNULL, stderr=self.err, env=ENV)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.err.seek(0)
            text = self.err.read()
            if "serving http" in text:
                self.port = int(text.split("serving http://127.0.0.1:")[1].split("/")[0])
                return
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {text}")

    def request(self, head: bytes, body: bytes = b"") -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(head + body)
            data = s.recv(65536)
        return int(data.split()[1]) if data else 0

    def hwm_mb(self) -> float:
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> str:
        rss = self.hwm_mb()
        self.p.terminate()
        self.p.wait(timeout=20)
        self.err.seek(0)
        log = self.err.read()
        self.err.close()
        self.rss = rss
        # the start-up and shutdown lines are the server's own; what is left is what the case caused
        return "\n".join(x for x in log.splitlines() if not x.startswith(("lenet5: serving", "lenet5: press",
                                                                          "lenet5: server stopped",
                                                                          "lenet5: stopped the training")))


def web_case(tmp: Path, shared, act: Callable[[Server], tuple[int, str | None]]) -> Result:
    server = Server(tmp, shared["run"], "--runs-dir", tmp / "runs")
    try:
        status, problem = act(server)
    finally:
        log = server.stop()
    if "Traceback" in log:
        problem = (problem + "; " if problem else "") + "traceback in the server log"
    return Result(status, log, server.rss, problem)


def post(path: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


@case("web: JSON body of 16,000 '['")
def _(tmp, shared):
    body = b"[" * 16000
    return web_case(tmp, shared, lambda s: (s.request(post("/api/train/stop", body), body), None))


@case("web: client disconnects mid-upload")
def _(tmp, shared):
    def act(s: Server):
        with socket.create_connection(("127.0.0.1", s.port)) as c:
            c.sendall(post("/api/predict", b"", "image/png").replace(b"Content-Length: 0", b"Content-Length: 100000")
                      + b"\x89PNG" + b"\0" * 1000)
            time.sleep(0.3)
        time.sleep(1)
        return "-", None
    return web_case(tmp, shared, act)


@case("web: never-ending request headers from 8 clients (5 s)")
def _(tmp, shared):
    def act(s: Server):
        conns = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(8)]
        for c in conns:
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        end, closed = time.monotonic() + 5, set()
        line = b"X-Filler: " + b"a" * 4000 + b"\r\n"
        while time.monotonic() < end and len(closed) < len(conns):
            for i, c in enumerate(conns):
                if i not in closed:
                    try:
                        c.sendall(line)
                    except OSError:
                        closed.add(i)
        for c in conns:
            c.close()
        return f"{len(closed)}/8 cut off", None
    return web_case(tmp, shared, act)


@case("web: 64 clients uploading 9 MB pictures at once")
def _(tmp, shared):
    def act(s: Server):
        body = np.random.default_rng(0).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes()  # not a picture
        head = post("/api/predict", body, "image/png")
        codes: list[str] = []

        def client() -> None:
            with socket.create_connection(("127.0.0.1", s.port)) as c:
                c.sendall(head)
                for i in range(0, len(body), 1 << 20):
                    c.sendall(body[i:i + (1 << 20)])
                    time.sleep(0.1)
                c.settimeout(120)
                with contextlib.suppress(OSError):
                    codes.append(c.recv(100).split(b" ")[1].decode())

        threads = [threading.Thread(target=client) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answers = sorted(set(codes))
        if len(codes) == 64 and answers == ["422"]:  # each answered "not a picture", in bounded memory
            return 422, None
        return f"{len(codes)} answered: {answers}", "not every client got its 422"
    return web_case(tmp, shared, act)


@case("web: predict with finite but huge weights (3e38)")
def _(tmp, shared):
    huge = scaled_checkpoint(tmp, shared, 3e38)
    server = Server(tmp, huge, "--runs-dir", tmp / "runs")
    try:
        body = bytes(range(256)) * (28 * 28 // 256) + bytes(28 * 28 % 256)
        status = server.request(post("/api/predict?w=28&h=28", body, "application/octet-stream"), body)
    finally:
        log = server.stop()
    return Result(status, log, server.rss, "traceback in the server log" if "Traceback" in log else None)


# --------------------------------------------------------------------------- run them all
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.add_argument("-k", default="", help="only the cases whose name contains this")
    p.add_argument("--src", type=Path, default=SRC,
                   help="the lenet5 sources to probe (e.g. an export of an earlier commit; default: this checkout's)")
    args = p.parse_args()
    ENV["PYTHONPATH"] = str(args.src.resolve())
    rows = []
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        from PIL import Image

        digit = base / "seven.png"
        img = np.zeros((28, 28), np.uint8)
        img[6:9, 6:22] = 255
        img[8:24, 17:20] = 255
        Image.fromarray(img).save(digit)
        shared = {"run": trained_run(base), "modern": trained_run(base, "modern"), "digit": digit}
        for name, fn in CASES:
            if args.k not in name:
                continue
            tmp = Path(tempfile.mkdtemp(dir=base))
            r = fn(tmp, shared)
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            expect_ok = getattr(r, "expect_ok", False)
            good_exit = r.status in (0,) if expect_ok else (r.status == 2 or isinstance(r.status, int) and
                                                             400 <= r.status < 500 or r.status in ("-", "skip")
                                                             or "cut off" in str(r.status))
            one_line = expect_ok or len(lines) <= 1 or name.startswith("web")
            short = all(len(x) <= 400 for x in lines)
            if any("rerun with --debug" in x for x in lines):  # the CLI's last-resort handler: a bug by its own word
                r.check = (r.check + "; " if r.check else "") + "only the last-resort handler caught it"
            ok = good_exit and one_line and short and r.rss_mb < 300 and r.check is None
            rows.append((name, str(r.status), len(lines), len(lines[0]) if lines else 0, f"{r.rss_mb:.0f}",
                         "ok" if ok else f"FAIL {r.check or ''}".strip(), lines[0][:150] if lines else ""))
            print(" | ".join(map(str, rows[-1])), flush=True)
    head = ("case", "exit", "stderr lines", "1st line chars", "peak RSS MB", "check", "stderr (first 150 chars)")
    table = [head, *rows]
    text = "\n".join("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in table[:1])
    text += "\n|" + "---|" * len(head) + "\n"
    text += "\n".join("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows) + "\n"
    from lenet5.bench import cpu_model

    cpu = cpu_model()
    failed = sum(1 for r in rows if r[5] != "ok")
    header = (f"# hostile_probe.py: {len(rows)} cases, {failed} failing\n"
              f"# command: python benchmarks/hostile_probe.py --out {args.out}"
              + (f" --src {args.src}" if args.src != SRC else "") + "\n"
              f"# CPU: {cpu}; Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}\n"
              "# peak RSS: the lenet5 process's own VmHWM (read at its exit; web cases: the server's)\n\n")
    if args.out:
        args.out.write_text(header + text)
    print(header + text)


if __name__ == "__main__":
    main()
