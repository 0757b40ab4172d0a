"""`lenet5 serve`'s app through Starlette's TestClient: predictions, models, errors, live training."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="lenet5 serve needs the [web] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")
PIL = pytest.importorskip("PIL", reason="drawing test digits needs Pillow")

from PIL import Image, ImageDraw  # noqa: E402

with warnings.catch_warnings():  # newer Starlette prefers httpx2 for its TestClient; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient  # noqa: E402

from lenet5.checkpoint import save_checkpoint  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from lenet5.model import LeNet5  # noqa: E402
from lenet5 import digits, predict  # noqa: E402
from lenet5.web import INSTALL_HINT, configure_parser, run, serve  # noqa: E402
from lenet5.web import prepare  # noqa: E402
from lenet5.web.app import create_app  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "lenet5" / "web" / "static"


# --------------------------------------------------------------------------- fixtures
def offline_env(cache: Path) -> dict[str, str]:
    """No download (the bundled sample is used), and one BLAS thread: on a shared, busy machine
    OpenBLAS's spinning threads made this tiny training 5x slower."""
    return {**os.environ, "LENET5_DATA": str(cache), "LENET5_MIRRORS": "http://127.0.0.1:9/",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A seed-tanh run trained for 3 epochs on the bundled MNIST sample (a few seconds, offline)."""
    base = tmp_path_factory.getbasetemp()
    run_dir = base / "web-trained-run"
    if not (run_dir / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "lenet5.cli", "train", "--preset", "seed-tanh", "--epochs", "3",
                        "--out", str(run_dir), "--no-plots", "--quiet", "--force"],
                       check=True, env=offline_env(base / "web-cache"), capture_output=True, timeout=300)
    return run_dir


@pytest.fixture(scope="session")
def lecun_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "web-lecun1998.safetensors"
    if not path.is_file():
        save_checkpoint(path, LeNet5("lecun1998", seed=0), {"data": {"dataset": "mnist"}})
    return path


@pytest.fixture(scope="session")
def modern_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "web-modern.safetensors"
    if not path.is_file():
        save_checkpoint(path, LeNet5("modern", seed=0), {"data": {"dataset": "fashion-mnist"}})
    return path


@pytest.fixture
def client(trained_run, tmp_path):
    app = create_app([trained_run], runs_dir=tmp_path / "runs")
    with TestClient(app) as c:
        yield c


def digit_picture(digit: int, size: int = 280) -> Image.Image:
    """A thick dark 1 or 0 on white, as drawn on the page's pad."""
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    s = size / 280
    if digit == 1:
        draw.line([(150 * s, 45 * s), (135 * s, 235 * s)], fill=0, width=round(20 * s))
    else:
        draw.ellipse([(80 * s, 40 * s), (200 * s, 240 * s)], outline=0, width=round(20 * s))
    return im


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def first_model(c: TestClient) -> str:
    return c.get("/api/models").json()["models"][0]["id"]


def read(response) -> list[int]:
    """The classes a prediction read, left to right."""
    assert response.status_code == 200, response.text
    return [d["prediction"] for d in response.json()["digits"]]


def decoded(image: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(image["data"]), np.uint8).reshape(image["h"], image["w"])


# --------------------------------------------------------------------------- predictions
def test_predict_drawn_digits(client):
    model_id = first_model(client)
    r = client.post(f"/api/predict?model={model_id}", content=png_bytes(digit_picture(1)),
                    headers={"content-type": "image/png"})
    assert read(r) == [1]
    one = r.json()["digits"][0]
    assert abs(sum(one["probs"]) - 1) < 1e-3 and len(one["probs"]) == 10
    # an upload's stages include the picture, shrunk for the page
    steps = {s["name"]: s for s in r.json()["steps"]}
    assert "picture" in steps
    assert max(steps["picture"]["w"], steps["picture"]["h"]) <= prepare.PREVIEW_SIDE
    assert min(steps["picture"]["w"], steps["picture"]["h"]) >= prepare.PREVIEW_SIDE // 2
    assert r.json()["size"] == [280, 280]
    raw = digit_picture(0).tobytes()  # the page sends its canvas as raw grey bytes
    r = client.post(f"/api/predict?model={model_id}&w=280&h=280", content=raw,
                    headers={"content-type": "application/octet-stream"})
    assert read(r) == [0]
    zero = r.json()["digits"][0]
    # the stages of lenet5 predict's reading (a canvas is not sent back: the page has it)
    assert "picture" not in {s["name"] for s in r.json()["steps"]} and r.json()["steps"]
    assert all(max(s["w"], s["h"]) <= prepare.PREVIEW_SIDE for s in r.json()["steps"])
    # the digit's box lies on the ink, and its input is what lenet5 predict's reading gives the network
    grey = np.asarray(digit_picture(0), dtype=np.float64) / 255
    x0, y0, x1, y1 = zero["box"]
    ink_rows, ink_cols = np.nonzero(grey < 0.5)
    assert x0 <= ink_cols.min() and ink_cols.max() < x1 and y0 <= ink_rows.min() and ink_rows.max() < y1
    found, _ = digits.read_picture(grey, name="canvas")
    assert np.array_equal(decoded(zero["input"]), found[0].image)
    # every stage's maps: C1..S4 as (C, H, W) uint8 grids, C5 and F6 as strips
    shapes = {k: v["shape"] for k, v in zero["maps"].items()}
    assert shapes == {"c1": [6, 28, 28], "s2": [6, 14, 14], "c3": [16, 10, 10], "s4": [16, 5, 5], "c5": [120],
                      "f6": [84]}
    c1 = zero["maps"]["c1"]
    assert c1["layer"] == "c1_act" and len(c1["min"]) == 6
    assert len(base64.b64decode(c1["data"])) == 6 * 28 * 28
    assert r.json()["timing"]["server_ms"] > 0 and r.headers["server-timing"].startswith("app;dur=")


def test_a_drawn_number_is_read_digit_by_digit(client):
    """Two digits side by side: two results, left to right, each with its own box and maps."""
    model_id = first_model(client)
    im = Image.new("L", (560, 280), 255)
    im.paste(digit_picture(1), (0, 0))
    im.paste(digit_picture(0), (280, 0))
    r = client.post(f"/api/predict?model={model_id}&w=560&h=280", content=im.tobytes())
    assert read(r) == [1, 0]
    first, second = r.json()["digits"]
    assert first["box"][2] <= second["box"][0]  # left to right, apart
    assert first["maps"]["c1"]["data"] != second["maps"]["c1"]["data"]


def test_model_details_and_switching_keeps_the_picture(trained_run, lecun_checkpoint, modern_checkpoint, tmp_path):
    app = create_app([trained_run, lecun_checkpoint, modern_checkpoint], runs_dir=tmp_path / "runs",
                     list_pretrained=False)  # only these three, whatever the package bundles
    with TestClient(app) as c:
        listing = c.get("/api/models").json()
        ids = {m["preset"]: m["id"] for m in listing["models"]}
        assert set(ids) == {"seed-tanh", "lecun1998", "modern"}
        assert listing["default"] == ids["seed-tanh"]  # the first model named on the command line
        assert str(trained_run) not in json.dumps(listing)  # no server path ever reaches the page
        picture = png_bytes(digit_picture(0))
        results = {}
        for preset, model_id in ids.items():
            details = c.get(f"/api/models/{model_id}").json()
            assert details["kernels"]["c1"]["shape"] == [6, 1, 5, 5]
            assert len(details["kernels"]["c3"]["values"]) == 16 * 6 * 25
            r = c.post(f"/api/predict?model={model_id}", content=picture)
            assert r.status_code == 200 and r.json()["model"] == model_id
            results[preset] = (details, r.json()["digits"][0])
        details, result = results["lecun1998"]
        assert details["output"] == "rbf" and len(details["glyphs"]) == 10 and len(details["glyphs"][0]) == 12
        from lenet5.lecun1998 import GLYPHS
        assert details["glyphs"] == [GLYPHS[d] for d in range(10)]  # read back from the RBF layer's centres
        assert len(details["c3_connections"]) == 16 and sum(map(sum, details["c3_connections"])) == 60
        assert "s2_coefficients" in details
        assert np.allclose(result["rbf_distances"], -np.asarray(result["outputs"]), atol=1e-2)
        assert result["prediction"] == int(np.argmin(result["rbf_distances"]))
        assert len(result["f6_values"]) == 84
        # the bars share the evidence among the ten digits; the MAP criterion's rubbish class is apart
        d = np.asarray(result["rbf_distances"])
        assert abs(sum(result["probs"]) - 1) < 1e-3
        assert np.allclose(result["probs"], np.exp(-(d - d.min())) / np.exp(-(d - d.min())).sum(), atol=1e-3)
        assert details["rubbish_j"] == 0.1
        j = details["rubbish_j"]
        assert abs(result["rubbish_share"] - np.exp(-j) / (np.exp(-j) + np.exp(-d).sum())) < 1e-3
        details, result = results["modern"]
        assert details["classes"][0] == "T-shirt/top"  # a Fashion-MNIST model says so
        assert result["maps"]["c1"]["layer"] == "c1_act" and min(result["maps"]["c1"]["min"]) >= 0  # after ReLU
        assert "BatchNorm2d" in next(s["kind"] for s in details["stages"] if s["stage"] == "c1")
        # the same picture through each model: the preparation does not depend on the model
        inputs = {p: r["input"]["data"] for p, (_, r) in results.items()}
        assert len(set(inputs.values())) == 1


def test_concurrent_predictions_use_private_model_copies(client):
    from concurrent.futures import ThreadPoolExecutor

    model_id = first_model(client)
    pictures = [digit_picture(d % 2).tobytes() for d in range(16)]

    def ask(raw: bytes) -> int:
        return read(client.post(f"/api/predict?model={model_id}&w=280&h=280", content=raw))[0]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, pictures)) == [d % 2 for d in range(16)]


def test_pretrained_models_load_when_first_used(trained_run, tmp_path, monkeypatch):
    import types

    import lenet5
    from lenet5.checkpoint import load_checkpoint

    loads = []

    def load(name):
        loads.append(name)
        if name == "broken":
            raise OSError("disk on fire")
        return load_checkpoint(trained_run / "model.safetensors")

    fake = types.ModuleType("lenet5.zoo")
    fake.available = lambda: ["seed-tanh", "broken"]
    fake.manifest = lambda: {"seed-tanh": {"preset": "seed-tanh", "dataset": "mnist", "test_accuracy": 0.99}}
    fake.load = load
    monkeypatch.setitem(sys.modules, "lenet5.zoo", fake)
    monkeypatch.setattr(lenet5, "zoo", fake, raising=False)
    with TestClient(create_app([], runs_dir=tmp_path / "runs")) as c:
        models = c.get("/api/models").json()["models"]
        assert [(m["name"], m["loaded"], m["preset"], m["test_acc"]) for m in models] == [
            ("seed-tanh", False, "seed-tanh", 0.99), ("broken", False, None, None)]
        assert loads == []  # nothing is loaded until the page uses it
        r = c.post(f"/api/predict?model={models[0]['id']}", content=png_bytes(digit_picture(1)))
        assert read(r) == [1] and loads == ["seed-tanh"]
        r = c.get(f"/api/models/{models[1]['id']}")
        assert r.status_code == 400 and r.json() == {"error": "broken: cannot load the model (OSError: disk on fire)"}
    app = create_app([], pretrained=["seed-tanh"], runs_dir=tmp_path / "runs2")  # --model NAME: loaded at once
    assert [e.model is not None for e in app.state.registry.entries()] == [True, False]


def test_the_first_model_shown_is_the_most_accurate_on_digits(trained_run, tmp_path, monkeypatch):
    """Chosen from the measured accuracies in the manifest, not by name: a Fashion-MNIST model's
    figure does not count, and a model named on the command line comes first."""
    import types

    import lenet5
    from lenet5.checkpoint import load_checkpoint

    fake = types.ModuleType("lenet5.zoo")
    fake.available = lambda: ["a", "b", "c", "d"]
    fake.manifest = lambda: {"a": {"preset": "seed-tanh", "dataset": "mnist", "test_accuracy": 0.97},
                             "b": {"preset": "seed-tanh", "dataset": "mnist", "test_accuracy": 0.992},
                             "c": {"preset": "seed-tanh", "dataset": "fashion-mnist", "test_accuracy": 0.999},
                             "d": {"preset": "seed-tanh", "dataset": "mnist"}}
    fake.load = lambda name: load_checkpoint(trained_run / "model.safetensors")
    monkeypatch.setitem(sys.modules, "lenet5.zoo", fake)
    monkeypatch.setattr(lenet5, "zoo", fake, raising=False)
    with TestClient(create_app([], runs_dir=tmp_path / "runs")) as c:
        listing = c.get("/api/models").json()
        names = {m["id"]: m["name"] for m in listing["models"]}
        assert names[listing["default"]] == "b"
        assert [m["name"] for m in listing["models"]][:2] == ["c", "b"]  # listed most accurate first
        r = c.post("/api/predict", content=png_bytes(digit_picture(1)))  # no model named: the default
        assert r.json()["model"] == listing["default"]
    with TestClient(create_app([trained_run], runs_dir=tmp_path / "runs")) as c:
        listing = c.get("/api/models").json()
        assert listing["models"][0]["name"] == trained_run.name and listing["default"] == listing["models"][0]["id"]


def test_the_real_manifest_puts_its_most_accurate_digit_model_first(tmp_path):
    from lenet5 import zoo

    described = zoo.manifest()
    best = max((n for n in zoo.available() if described[n]["dataset"] == "mnist"),
               key=lambda n: described[n]["test_accuracy"])
    with TestClient(create_app([], runs_dir=tmp_path / "runs")) as c:
        listing = c.get("/api/models").json()
        assert next(m["name"] for m in listing["models"] if m["id"] == listing["default"]) == best


# --------------------------------------------------------------------------- errors
def test_bad_requests_get_json_4xx(client):
    model_id = first_model(client)
    cases = [
        (client.post(f"/api/predict?model={model_id}", content=b"this is not a picture"), 422, "not a picture"),
        (client.post(f"/api/predict?model={model_id}", content=b""), 422, "empty"),
        (client.post(f"/api/predict?model={model_id}&w=10&h=10", content=b"\x00" * 99), 422, "needs 100 bytes"),
        (client.post(f"/api/predict?model={model_id}&w=10&h=10", content=b"\xff" * 100), 422, "No digit found"),
        (client.post(f"/api/predict?model={model_id}&w=10", content=b"\xff" * 100), 400, "both w and h"),
        (client.post(f"/api/predict?model={model_id}&w=ten&h=10", content=b"\xff" * 100), 400, "w must be"),
        (client.post(f"/api/predict?model={model_id}&w=9999&h=1", content=b"\xff" * 9999), 422, "per side"),
        (client.post("/api/predict?model=nope", content=png_bytes(digit_picture(1))), 404, "unknown model"),
        (client.get("/api/models/nope"), 404, "unknown model"),
        (client.get("/api/predict"), 405, ""),
        (client.get("/no/such/page"), 404, ""),
        (client.post("/api/train/start", json={"preset": "resnet"}), 400, "unknown preset"),
        (client.post("/api/train/start", json={"dataset": "imagenet"}), 400, "unknown dataset"),
        (client.post("/api/train/start", json={"epochs": 0}), 400, "epochs"),
        (client.post("/api/train/start", json={"epochs": "many"}), 400, "epochs"),
        (client.post("/api/train/start", json=[1, 2]), 400, "JSON object"),
        (client.post("/api/train/start", content=b"{bad", headers={"content-type": "application/json"}), 400, "JSON"),
        (client.post("/api/train/start", content=b"preset=modern",
                     headers={"content-type": "application/x-www-form-urlencoded"}), 415, "application/json"),
        (client.post("/api/train/stop", json={}), 409, "no training run"),
        (client.post("/api/train/resume", json={"run": "run99"}), 404, "unknown run"),
        (client.post("/api/train/resume", json={}), 400, "run"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert set(body) <= {"error", "detail"} and words in body["error"], body
        assert "Traceback" not in response.text
        # plain words: no Python repr, no command-line options
        assert not re.search(r"<[\w.]+ object at|BytesIO|--[a-z]", body["error"]), body


def test_pictures_that_cannot_be_read_are_said_in_plain_words(client):
    model_id = first_model(client)
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def png_header(w: int, h: int) -> bytes:  # a PNG that claims its size, and has no pixels
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))

    cases = {b"%PDF-1.4 a document": "not a picture", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40: "not a picture",
             png_header(9000, 9000): "too large", png_header(30000, 30000): "too large",
             png_header(300, 200): "could not be decoded",
             png_bytes(Image.new("L", (50, 50), 255)): "No digit found"}
    for body, words in cases.items():
        r = client.post(f"/api/predict?model={model_id}", content=body)
        assert r.status_code == 422 and words in r.json()["error"], r.text
        assert not re.search(r"object at 0x|Error\b|\(\)", r.json()["error"])


def test_uploads_are_size_limited(client):
    model_id = first_model(client)
    big = b"\x89PNG" + b"\x00" * prepare.MAX_UPLOAD_BYTES
    r = client.post(f"/api/predict?model={model_id}", content=big)
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: refused while reading
        for _ in range(11):
            yield b"\x00" * (1024 * 1024)

    r = client.post(f"/api/predict?model={model_id}", content=chunks())
    assert r.status_code == 413 and "too large" in r.json()["error"]
    # a picture over predict's pixel limit is refused before it is decoded
    huge = Image.new("1", (8000, 6000), 1)
    r = client.post(f"/api/predict?model={model_id}", content=png_bytes(huge))
    assert r.status_code == 422 and "too large" in r.json()["error"]


def test_the_browser_cannot_name_server_paths(client, trained_run):
    secret = str(trained_run / "model.safetensors")
    for model_id in [secret, "../../etc/passwd", "/etc/passwd", "m1/../m1"]:
        r = client.post("/api/predict", params={"model": model_id}, content=png_bytes(digit_picture(1)))
        assert r.status_code == 404 and "unknown model" in r.json()["error"]
    assert client.get("/api/models/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404
    r = client.post("/api/train/resume", json={"run": str(trained_run)})
    assert r.status_code == 404
    # a field the API does not know, such as a path, is ignored: runs go to the server's own directory
    r = client.post("/api/train/start", json={"preset": "seed-tanh", "epochs": 1, "train_limit": 64,
                                              "out": "/tmp/evil", "runs_dir": "/tmp/evil"})
    assert r.status_code == 200
    run_dir = client.app.state.training.job.run.dir
    assert run_dir.parent == client.app.state.training.runs_dir
    client.app.state.training.shutdown()
    for text in (client.get("/api/models").text, client.get("/api/train").text):
        assert str(trained_run) not in text and str(run_dir) not in text


def test_host_header_checked_when_bound_to_loopback(trained_run, tmp_path):
    app = create_app([trained_run], runs_dir=tmp_path / "runs", allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/models").status_code == 200
        assert c.get("/api/models", headers={"host": "rebound.example.com"}).status_code == 400


# --------------------------------------------------------------------------- the page ships offline
def test_page_and_assets_are_served_from_the_package(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas id=\"pad\"" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
    assert {"/static/app.js", "/static/style.css"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    for path in STATIC.iterdir():  # nothing is fetched from anywhere else
        text = path.read_text()
        assert not re.search(r"(?<!xmlns=\")https?://", text), path


def test_no_model_page_still_works(tmp_path):
    # no model at all (not even the package's bundled pretrained ones listed)
    with TestClient(create_app([], runs_dir=tmp_path / "runs", list_pretrained=False)) as c:
        assert c.get("/api/models").json() == {"models": [], "default": None}
        r = c.post("/api/predict", content=png_bytes(digit_picture(1)))
        assert r.status_code == 409 and "no model" in r.json()["error"]
        assert c.get("/api/train").json()["state"] == "idle"


# --------------------------------------------------------------------------- live training
def wait_for(condition, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


def sse_events(c: TestClient) -> list[tuple[str, dict]]:
    with c.stream("GET", "/api/train/events?once=1") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_training_runs_and_its_model_is_usable(client):
    training = client.app.state.training
    r = client.post("/api/train/start", json={"preset": "seed-tanh", "dataset": "mnist", "epochs": 1,
                                              "train_limit": 200})
    assert r.status_code == 200 and r.json()["state"] == "starting"
    assert client.post("/api/train/start", json={"epochs": 1}).status_code == 409  # one at a time
    wait_for(lambda: training.state in ("finished", "failed", "stopped"))
    assert training.state == "finished", (training.message, training.detail)
    events = sse_events(client)
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and "batches" in kinds and kinds[-1] == "state"
    # the state went to "running" when the run's config.json appeared, before its first epoch
    states = [d["state"] for k, d in events if k == "state"]
    assert states[:2] == ["starting", "running"] and kinds.index("epoch") > kinds.index("state", 2)
    epoch = next(d for k, d in events if k == "epoch")
    assert epoch["epoch"] == 1 and 0 <= epoch["test_acc"] <= 1
    # within the epoch, progress comes from the run's progress.json: its last word is the last step
    progress = [d for k, d in events if k == "progress"]
    assert progress and progress[-1]["epoch"] == 1 and progress[-1]["batch"] == progress[-1]["batches"] == 4  # 200 / 64
    assert np.asarray(epoch["confusion"]).shape == (10, 10)
    assert np.asarray(epoch["confusion"]).sum() in (2000, 10000)  # the bundled sample's test set, or MNIST's
    assert epoch["kernels"]["shape"] == [6, 1, 5, 5]
    # the finished run's model is on the list and predicts at once
    r = client.post(f"/api/predict?model={epoch['model_id']}", content=png_bytes(digit_picture(1)))
    assert r.status_code == 200
    # a finished run is not offered for resuming; asked anyway, the page's words say why
    run = client.get("/api/train").json()["runs"][0]
    assert (run["done"], run["resumable"]) == (1, False) and "finished" in run["note"]
    r = client.post("/api/train/resume", json={"run": run["id"]})
    assert r.status_code == 409 and "finished all its 1 epochs" in r.json()["error"]
    assert not re.search(r"--|lenet5 train", r.json()["error"])
    # more epochs than it has done: it trains further
    r = client.post("/api/train/resume", json={"run": run["id"], "epochs": 2})
    assert r.status_code == 200, r.text
    wait_for(lambda: training.state in ("finished", "failed", "stopped"))
    assert training.state == "finished" and client.get("/api/train").json()["runs"][0]["done"] == 2


def test_training_stops_and_resumes(client):
    training = client.app.state.training
    client.post("/api/train/start", json={"preset": "seed-tanh", "epochs": 100, "train_limit": 200})
    wait_for(lambda: any(e["event"] == "epoch" for e in training.events_after(0)) or training.state == "failed")
    r = client.post("/api/train/stop", json={})
    assert r.status_code == 200 and r.json()["state"] == "stopping"
    wait_for(lambda: training.state not in ("starting", "running", "stopping"))
    assert training.state == "stopped", training.message
    status = client.get("/api/train").json()
    run = status["run"]
    assert run["resumable"] and run["note"] == "" and "Resume" in status["message"]
    done = max(d["epoch"] for k, d in sse_events(client) if k == "epoch")
    assert done < 100 and run["done"] == done
    r = client.post("/api/train/resume", json={"run": run["id"], "epochs": done + 1})
    assert r.status_code == 200
    wait_for(lambda: training.state in ("finished", "failed", "stopped"))
    assert training.state == "finished", training.message
    epochs = [d["epoch"] for k, d in sse_events(client) if k == "epoch"]
    assert epochs[-1] == done + 1


def test_a_failing_worker_is_reported(client, tmp_path):
    training = client.app.state.training
    worker = tmp_path / "worker.sh"  # stands in for `python -m lenet5.cli train ...` that fails
    worker.write_text("#!/bin/sh\necho 'lenet5: error: fashion-mnist: not found and not downloadable' >&2\nexit 2\n")
    worker.chmod(0o755)
    training.python = str(worker)
    client.post("/api/train/start", json={"preset": "seed-tanh", "dataset": "fashion-mnist", "epochs": 1})
    wait_for(lambda: training.state in ("finished", "failed", "stopped"))
    assert training.state == "failed"
    assert training.message == "training stopped with an error"  # the page's words
    # the worker's own last line, passed on verbatim as the detail
    assert training.detail == "lenet5: error: fashion-mnist: not found and not downloadable"
    run = client.get("/api/train").json()["run"]
    assert not run["resumable"] and "nothing was saved" in run["note"]


def test_runs_persist_and_the_next_server_lists_them(trained_run, tmp_path, monkeypatch):
    """The default runs folder is ./runs (where `lenet5 train` puts runs), not a temporary one;
    a run there is listed by the next server, its model on the page's list."""
    import shutil

    from lenet5.web.app import DEFAULT_RUNS_DIR

    monkeypatch.chdir(tmp_path)
    app = create_app([], list_pretrained=False)
    assert app.state.training.runs_dir.resolve() == (tmp_path / DEFAULT_RUNS_DIR).resolve()
    assert DEFAULT_RUNS_DIR == Path("runs")
    shutil.copytree(trained_run, tmp_path / "runs" / "earlier-run")
    with TestClient(create_app([], list_pretrained=False)) as c:
        runs = c.get("/api/train").json()["runs"]
        assert [(r["name"], r["done"], r["resumable"]) for r in runs] == [("earlier-run", 3, False)]
        models = c.get("/api/models").json()["models"]
        assert [m["name"] for m in models] == ["earlier-run"]
        assert read(c.post(f"/api/predict?model={models[0]['id']}", content=png_bytes(digit_picture(1)))) == [1]


def test_data_dir_is_passed_to_mnist_runs(client, tmp_path):
    training = client.app.state.training
    argv_file = tmp_path / "argv"
    worker = tmp_path / "worker.sh"  # records the worker's arguments, then fails
    worker.write_text(f'#!/bin/sh\necho "$@" > {argv_file}\nexit 2\n')
    worker.chmod(0o755)
    training.python = str(worker)
    training.data_dir = Path("/data/mnist")
    for dataset, expected in [("mnist", True), ("fashion-mnist", False)]:
        client.post("/api/train/start", json={"preset": "seed-tanh", "dataset": dataset, "epochs": 1})
        wait_for(lambda: training.state == "failed")
        argv = argv_file.read_text().split()
        assert ("--data-dir" in argv and argv[argv.index("--data-dir") + 1] == "/data/mnist") == expected, argv
        training.state = "idle"


def test_serve_checks_its_data_dir(tmp_path):
    p = argparse.ArgumentParser()
    configure_parser(p)
    args = p.parse_args(["--data-dir", str(tmp_path / "nowhere"), "--no-browser", "--port", "0",
                         "--runs-dir", str(tmp_path / "runs")])
    with pytest.raises(Lenet5Error, match="--data-dir") as e:
        run(args)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- files written while read
def test_run_files_are_read_while_written(tmp_path):
    from lenet5.web.models import ModelRegistry
    from lenet5.web.training import Job, Run, TrainingManager

    training = TrainingManager(tmp_path / "runs", ModelRegistry())
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir()
    job = Job(Run("run1", run_dir, {}), process=None, epochs=2)  # type: ignore[arg-type]  # not used here
    training._read_files(job)  # nothing written yet
    epoch = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.4, "test_acc": 0.5, "seconds": 1.0,
             "new_key": [1]}
    (run_dir / "metrics.jsonl").write_text(json.dumps(epoch) + '\n{"epoch": 2, "test_')  # line 2 being written
    training._read_files(job)
    assert [(e["event"], e["data"]["epoch"], e["data"]["test_acc"]) for e in training.events] == [("epoch", 1, 0.5)]
    (run_dir / "metrics.jsonl").write_text(json.dumps(epoch) + "\nnot json\n")  # damaged: one warning, no path
    training._read_files(job)
    training._read_files(job)
    assert [e["data"] for e in training.events[1:]] == [
        {"level": "warning", "text": "r/metrics.jsonl: line 2 is not valid JSON (truncated?)"}]


def test_uploads_are_decoded_as_predict_decodes_them():
    assert prepare.to_uint8(np.array([[0.0, 1.0]])).tolist() == [[0, 255]]
    assert np.array_equal(prepare.grey_from_bytes(png_bytes(digit_picture(0)), "p"),
                          np.asarray(digit_picture(0), dtype=np.float64) / 255)
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))  # transparent: laid on white, as predict does
    assert prepare.grey_from_bytes(png_bytes(rgba)).min() == 1.0


def test_feature_maps_quantized_per_map():
    from lenet5.web.models import quantize_maps, quantize_strip

    a = np.stack([np.linspace(-1, 3, 25).reshape(5, 5), np.full((5, 5), 2.0)]).astype(np.float32)
    q = quantize_maps(a)
    data = np.frombuffer(__import__("base64").b64decode(q["data"]), np.uint8).reshape(2, 5, 5)
    assert q["shape"] == [2, 5, 5] and q["min"] == [-1.0, 2.0] and q["max"] == [3.0, 2.0]
    assert data[0].min() == 0 and data[0].max() == 255 and not data[1].any()  # a flat map: all 0
    restored = q["min"][0] + data[0] / 255 * (q["max"][0] - q["min"][0])
    assert np.abs(restored - a[0]).max() <= 4 / 255 / 2 + 1e-6  # within half a level
    s = quantize_strip(np.array([0.5, -0.5, 0.0]))
    assert (s["min"], s["max"]) == (-0.5, 0.5)
    assert list(__import__("base64").b64decode(s["data"])) == [255, 0, 128]


def test_large_canvas_predicts_like_the_page_canvas(client):
    model_id = first_model(client)
    im = digit_picture(0, size=600)
    r = client.post(f"/api/predict?model={model_id}&w=600&h=600", content=im.tobytes())
    assert read(r) == [0]
    found, _ = digits.read_picture(np.asarray(im, dtype=np.float64) / 255)
    assert np.array_equal(decoded(r.json()["digits"][0]["input"]), found[0].image)


# --------------------------------------------------------------------------- the command line's side
def test_parser_defaults_are_safe():
    p = argparse.ArgumentParser()
    configure_parser(p)
    args = p.parse_args([])
    assert (args.host, args.port, args.models, args.model, args.no_browser) == ("127.0.0.1", 8000, [], [], False)
    assert (args.runs_dir, args.data_dir) == (None, None)
    args = p.parse_args(["a.safetensors", "runs/x", "--model", "m", "--port", "0", "--no-browser"])
    assert args.models == ["a.safetensors", "runs/x"] and args.port == 0


def test_bad_model_paths_are_one_line_errors(tmp_path):
    p = argparse.ArgumentParser()
    configure_parser(p)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    for target, words in [(tmp_path / "missing.safetensors", "no such checkpoint"), (bad, "not a readable"),
                          (tmp_path, "without model.safetensors")]:
        with pytest.raises(Lenet5Error, match=words) as e:
            run(p.parse_args([str(target), "--no-browser", "--port", "0"]))
        assert "\n" not in str(e.value)


def test_missing_web_dependencies_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(Lenet5Error, match=re.escape(INSTALL_HINT)):
        serve([], port=0)


def test_unknown_pretrained_name_is_an_error(tmp_path):
    p = argparse.ArgumentParser()
    configure_parser(p)
    with pytest.raises(Lenet5Error, match="--model"):
        run(p.parse_args(["--model", "no-such-model-anywhere", "--no-browser", "--port", "0",
                          "--runs-dir", str(tmp_path)]))


def test_port_in_use_is_an_error():
    from lenet5.web import bind

    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(Lenet5Error, match=f"--port {port}"):
            bind("127.0.0.1", port)
    finally:
        taken.close()
