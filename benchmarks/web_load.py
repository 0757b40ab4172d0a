"""A bounded load test of `lenet5 serve`, on loopback only.

Starts the server (``python -m lenet5.web``) on 127.0.0.1 at a free port with one model, lets
``--clients`` concurrent clients send drawn digits to /api/predict for ``--seconds``, and
reports throughput, latency percentiles and the server's memory (RSS) before and after. With
``--train`` a live training run (started through the API, on the bundled MNIST sample unless
MNIST is cached) goes on meanwhile, to check that it does not stall predictions (target: no
request over 200 ms).

    python benchmarks/web_load.py                      # 8 clients, 30 s
    python benchmarks/web_load.py --seconds 3          # a quick check
    python benchmarks/web_load.py --train --json

Targets (on a quiet 2-core machine): >= 200 predictions/s, p99 < 100 ms, memory flat.
Needs the [web] extra and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MAX_SECONDS = 600
MAX_CLIENTS = 64


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux /proc), else None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def digit_canvases(n: int = 8, size: int = 280) -> list[bytes]:
    """Raw grey canvases (what the page sends while drawing): strokes of a few digit-like shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        im = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(im)
        jitter = rng.integers(-15, 16, size=4)
        if k % 3 == 0:
            draw.line([(150 + jitter[0], 45), (135 + jitter[1], 235)], fill=0, width=20)
        elif k % 3 == 1:
            draw.ellipse([(80 + jitter[0], 40 + jitter[1]), (200 + jitter[2], 240 + jitter[3])], outline=0, width=20)
        else:
            draw.line([(70, 60 + jitter[0]), (210, 60), (120 + jitter[1], 240)], fill=0, width=20, joint="curve")
        out.append(im.tobytes())
    return out


def make_model(directory: Path) -> Path:
    """An untrained seed-tanh checkpoint: a prediction costs the same whatever the weights."""
    from lenet5.checkpoint import save_checkpoint
    from lenet5.model import LeNet5

    path = directory / "seed-tanh.safetensors"
    save_checkpoint(path, LeNet5("seed-tanh", seed=0))
    return path


def start_server(model: Path, port: int, runs_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lenet5.web", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--no-browser", "--runs-dir", str(runs_dir)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_ready(client, base: str, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            r = await client.get(f"{base}/api/models")
            if r.status_code == 200:
                return r.json()["default"]
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the server did not start")


async def load(client, url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` loops posting canvases until time or the request budget is up."""
    latencies: list[float] = []
    finished: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    budget = [max_requests]

    async def one_client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers={"content-type": "application/octet-stream"})
                ok = r.status_code == 200
                key = str(r.status_code)
            except Exception as e:  # a refused or reset connection counts as an error, not a crash
                ok, key = False, type(e).__name__
            end = time.perf_counter()
            if ok:
                latencies.append(end - start)
                finished.append(end)
            else:
                errors[key] = errors.get(key, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    elapsed = time.perf_counter() - began
    lat = np.asarray(latencies) * 1000
    gaps = np.diff(np.sort(np.asarray(finished))) * 1000 if len(finished) > 1 else np.zeros(1)
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "max_ms": round(float(lat.max()), 1) if len(lat) else None,
            "longest_gap_ms": round(float(gaps.max()), 1)}


async def main_async(args: argparse.Namespace) -> dict:
    import httpx

    with tempfile.TemporaryDirectory(prefix="lenet5-web-load-") as tmp:
        tmp_path = Path(tmp)
        model = Path(args.model) if args.model else make_model(tmp_path)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start_server(model, port, tmp_path / "runs")
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        try:
            async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
                model_id = await wait_ready(client, base, process)
                url = f"{base}/api/predict?model={model_id}&w=280&h=280"
                bodies = digit_canvases()
                await load(client, url, bodies, args.clients, min(2.0, args.seconds), 10_000)  # warm-up
                rss_before = rss_mib(process.pid)
                training = None
                if args.train:
                    r = await client.post(f"{base}/api/train/start", json={
                        "preset": "seed-tanh", "dataset": "mnist", "epochs": 50, "train_limit": args.train_limit})
                    r.raise_for_status()
                    for _ in range(300):  # until the worker really trains
                        if (await client.get(f"{base}/api/train")).json()["state"] != "starting":
                            break
                        await asyncio.sleep(0.1)
                cpu_before, client_before = cpu_seconds(process.pid), time.process_time()
                result = await load(client, url, bodies, args.clients, args.seconds, args.max_requests)
                cpu_after, client_after = cpu_seconds(process.pid), time.process_time()
                rss_after = rss_mib(process.pid)
                if cpu_before is not None and cpu_after is not None and result["requests"]:
                    # with --train this includes the server's own epoch work (confusion matrix), not the worker's
                    result["server_cpu_ms_per_request"] = round(1000 * (cpu_after - cpu_before) / result["requests"], 2)
                result["client_cpu_ms_per_request"] = round(1000 * (client_after - client_before)
                                                            / max(1, result["requests"]), 2)
                if args.train:
                    status = (await client.get(f"{base}/api/train")).json()
                    training = {"state": status["state"], "message": status["message"]}
                    if status["state"] in ("starting", "running"):
                        await client.post(f"{base}/api/train/stop", json={})
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        return {"clients": args.clients, **result, "rss_before_mib": rss_before, "rss_after_mib": rss_after,
                "training": training, "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint or run directory (default: an untrained seed-tanh checkpoint)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to send requests (default 30)")
    p.add_argument("--max-requests", type=int, default=200_000, help="stop after this many requests")
    p.add_argument("--train", action="store_true", help="with a live training run going on the server")
    p.add_argument("--train-limit", type=int, default=5000, help="training images for --train (default 5000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not 1 <= args.clients <= MAX_CLIENTS:
        p.error(f"--clients must be 1..{MAX_CLIENTS}")
    out = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['clients']} clients, {out['seconds']} s{' with a training run going' if args.train else ''} "
          f"({out['cpus']} CPUs)")
    print(f"  predictions: {out['requests']} ({out['per_second']}/s), errors: {out['errors'] or 'none'}")
    print(f"  latency: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, max {out['max_ms']} ms; "
          f"longest gap between answers {out['longest_gap_ms']} ms")
    if "server_cpu_ms_per_request" in out:
        print(f"  CPU per prediction: server {out['server_cpu_ms_per_request']} ms, "
              f"load client {out['client_cpu_ms_per_request']} ms")
    before, after = out["rss_before_mib"], out["rss_after_mib"]
    if before is not None and after is not None:
        print(f"  server memory (RSS): {before:.1f} MiB before, {after:.1f} MiB after ({after - before:+.1f} MiB)")
    if out["training"]:
        print(f"  training: {out['training']['state']} {out['training']['message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
