"""`lenet5 serve` in a real browser: Chromium (headless, driven by Playwright) draws digits with
the mouse, reads the prediction, checks every feature map is drawn, then trains live and stops.

Skips where Chromium or Playwright is missing, except in CI (``$CI`` set), where it fails.
With ``LENET5_SAVE_SCREENSHOTS=1`` it also writes ``docs/images/web-draw.png`` and
``docs/images/web-train.png`` for the README.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LENET5_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = bool(os.environ.get("LENET5_SAVE_SCREENSHOTS"))


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None
try:
    import uvicorn
    from lenet5.web import bind
    from lenet5.web.app import create_app
except ImportError:  # pragma: no cover
    uvicorn = None


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A seed-tanh run trained for 3 epochs on the bundled MNIST sample (shared with test_web.py)."""
    base = tmp_path_factory.getbasetemp()
    run_dir = base / "web-trained-run"
    if not (run_dir / "model.safetensors").is_file():
        env = {**os.environ, "LENET5_DATA": str(base / "web-cache"), "LENET5_MIRRORS": "http://127.0.0.1:9/",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "lenet5.cli", "train", "--preset", "seed-tanh", "--epochs", "3",
                        "--out", str(run_dir), "--no-plots", "--quiet", "--force"],
                       check=True, env=env, capture_output=True, timeout=300)
    return run_dir


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """The app on uvicorn in a thread, on a free loopback port, with the trained model and an untrained lecun1998."""
    _need(uvicorn is not None, "the [web] extra (starlette, uvicorn) is not installed")
    from lenet5.checkpoint import save_checkpoint
    from lenet5.model import LeNet5

    base = tmp_path_factory.mktemp("web-browser")
    lecun = base / "lecun1998.safetensors"
    save_checkpoint(lecun, LeNet5("lecun1998", seed=0), {"data": {"dataset": "mnist"}})
    app = create_app([trained_run, lecun], runs_dir=base / "runs", allowed_hosts=["127.0.0.1", "localhost"])
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        threading.Event().wait(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", app
    app.state.closing = True  # the page's event stream ends, so the server can stop at once
    srv.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    _need(sync_playwright is not None, "Playwright is not installed (pip install playwright)")
    _need(Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (apt install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


# --------------------------------------------------------------------------- drawing with the mouse
def stroke(page: Page, points: list[tuple[float, float]]) -> None:
    """One pen stroke on the pad: mouse down at the first point, through the others, up."""
    box = page.locator("#pad").bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=2)
    page.mouse.up()


def draw_one(page: Page) -> None:
    stroke(page, [(150 - 0.08 * t, 45 + t) for t in range(0, 191, 10)])


def draw_zero(page: Page) -> None:
    stroke(page, [(140 + 60 * math.sin(a / 20 * 2 * math.pi), 140 - 95 * math.cos(a / 20 * 2 * math.pi))
                  for a in range(0, 22)])


def wait_prediction(page: Page, digit: int) -> None:
    """Wait until the page shows this prediction after the last stroke's request came back."""
    page.wait_for_function("(d) => document.querySelector('#predicted').dataset.prediction === String(d)",
                           arg=digit, timeout=15_000)


STEP_RANGE = """(id) => {
  const c = document.getElementById(id);
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < px.length; i += 4) { lo = Math.min(lo, px[i]); hi = Math.max(hi, px[i]); }
  return [lo, hi];
}"""

BLANK_MAPS = """() => [...document.querySelectorAll('#stages canvas.fmap')].filter((c) => {
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < px.length; i += 4) { lo = Math.min(lo, px[i + 1]); hi = Math.max(hi, px[i + 1]); }
  return hi - lo < 10 || px[3] === 0;
}).map((c) => `${c.dataset.stage}:${c.dataset.index ?? 'strip'}`)"""


def save_screenshot(page: Page, tmp: Path, name: str, selector: str | None = None) -> None:
    path = tmp / name
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    if SCREENSHOTS:
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "docs" / "images" / name)


def test_draw_predict_inspect_and_train(server, browser, tmp_path):
    url, app = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    failed_requests: list[str] = []
    page.on("requestfailed", lambda r: failed_requests.append(r.url))
    page.on("request", lambda r: None if r.url.startswith(url) else failed_requests.append(f"external: {r.url}"))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    assert page.locator("#stages canvas.fmap").count() == 6 + 6 + 16 + 16 + 2

    # a 1, drawn with the mouse
    draw_one(page)
    wait_prediction(page, 1)
    assert page.evaluate(BLANK_MAPS) == []
    for step in ("picture", "ink", "box", "input"):
        assert page.evaluate(f"document.getElementById('step-{step}').width") > 0
    # the picture step is the canvas the page sent (the server does not send it back): ink on white
    lo, hi = page.evaluate(STEP_RANGE, "step-picture")
    assert lo <= 40 and hi >= 250, (lo, hi)
    rtt = float(page.locator("#timing").get_attribute("data-median"))
    assert rtt < 500, f"prediction round trip {rtt} ms"
    page.locator("#stages canvas.fmap[data-stage='c3']").nth(3).hover()
    assert page.locator("#hover-kernels canvas").count() == 6  # C3 map 3 reads all six S2 maps

    # clear, then a 0
    page.click("#clear")
    assert page.locator("#predicted").inner_text() == ""
    draw_zero(page)
    wait_prediction(page, 0)
    assert page.evaluate(BLANK_MAPS) == []
    page.locator("#stages canvas.fmap[data-stage='c1']").nth(2).hover()
    assert page.locator("#hover-kernels canvas").count() == 1
    save_screenshot(page, tmp_path, "web-draw.png")

    # another model keeps the drawing: lecun1998 shows its RBF distances to the glyphs
    lecun = next(e.id for e in app.state.registry.entries() if e.model.preset.name == "lecun1998")
    page.select_option("#model-select", lecun)
    page.wait_for_selector("#rbf:not([hidden])")
    page.wait_for_function("() => /\\d/.test(document.querySelector('#glyphs figcaption').textContent)")
    page.wait_for_function("() => document.querySelector('#predicted').dataset.prediction !== ''")
    assert page.evaluate(BLANK_MAPS) == []
    page.select_option("#model-select", index=0)
    wait_prediction(page, 0)

    # live training on the bundled sample: the curve gains points, then stop
    page.select_option("#train-preset", "seed-tanh")
    page.select_option("#train-dataset", "mnist")
    page.fill("#train-epochs", "40")
    page.fill("#train-limit", "2000" if SCREENSHOTS else "500")
    page.click("#train-start")
    page.wait_for_function("() => Number(document.querySelector('#chart-loss').dataset.points) > 0", timeout=60_000)
    epochs = 6 if SCREENSHOTS else 1  # for the README, a run with a few epochs to show
    page.wait_for_function("(n) => Number(document.querySelector('#chart-acc').dataset.points) >= 2 * n",
                           arg=epochs, timeout=120_000)
    first = int(page.locator("#chart-loss").get_attribute("data-points"))
    page.wait_for_function("(n) => Number(document.querySelector('#chart-loss').dataset.points) > n", arg=first,
                           timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#train-use').disabled")
    page.click("#train-stop")
    page.wait_for_function("() => ['stopped', 'finished'].includes(document.querySelector('#train-status').dataset.state)",
                           timeout=60_000)
    assert "stopped" in page.locator("#train-status").inner_text()
    assert not page.locator("#train-resume").is_disabled()
    # the stopped run's model draws at once
    page.click("#train-use")
    page.wait_for_function("() => document.querySelector('#model-select').selectedOptions[0].text.includes('epoch')")
    page.wait_for_function("() => document.querySelector('#predicted').dataset.prediction !== ''")
    page.locator("#train-panel").scroll_into_view_if_needed()
    save_screenshot(page, tmp_path, "web-train.png", selector="#train-panel")
    assert failed_requests == [], failed_requests
    assert console_errors == [], console_errors
    page.close()

