"""`lenet5 serve` in a real browser: Chromium (headless, driven by Playwright) draws digits and
numbers with the mouse and with touch on a phone-sized page, reads what the page says, checks
every feature map is drawn, uploads pictures that cannot be read, then trains live and stops.

The drawings are strokes traced along simple templates of the ten digits, in several styles
(large, small, off-centre, thin pen, thick pen); the page's default model (the most accurate
shipped one) must read every one.

Skips where Chromium or Playwright is missing, except in CI (``$CI`` set), where it fails.
With ``LENET5_SAVE_SCREENSHOTS=1`` it also writes ``docs/images/web-draw.png`` and
``docs/images/web-train.png`` for the README.
"""

from __future__ import annotations

import io
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
#: where every screenshot the test takes is also left for a person to look at (optional)
SHOT_DIR = os.environ.get("LENET5_SCREENSHOT_DIR")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-extensions", "--no-first-run"]


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
    """The app on uvicorn in a thread, on a free loopback port: the shipped pretrained models
    (listed, loaded when first used) and, in the runs folder, an earlier run."""
    _need(uvicorn is not None, "the [web] extra (starlette, uvicorn) is not installed")
    base = tmp_path_factory.mktemp("web-browser")
    shutil.copytree(trained_run, base / "runs" / "earlier-run")
    app = create_app([], runs_dir=base / "runs", allowed_hosts=["127.0.0.1", "localhost"])
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
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# --------------------------------------------------------------------------- the digits, as strokes
def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> list[tuple[float, float]]:
    """Points along an elliptic arc from angle a0 to a1 (degrees; 0 is right, 90 is down)."""
    return [(cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
             cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n))) for i in range(n + 1)]


#: each digit as pen strokes in a box one unit tall (x right, y down; about 0.6 wide), the way a
#: person might write it
DIGITS: dict[int, list[list[tuple[float, float]]]] = {
    0: [arc(0.5, 0.5, 0.3, 0.48, -90, 275, 24)],
    1: [[(0.45, 0.12), (0.58, 0.0), (0.58, 1.0)]],
    2: [arc(0.5, 0.3, 0.3, 0.28, 190, 360, 10) + arc(0.5, 0.3, 0.3, 0.28, 0, 60, 5)[1:] + [(0.2, 1.0), (0.85, 1.0)]],
    3: [arc(0.48, 0.25, 0.28, 0.25, 200, 450, 14) + arc(0.48, 0.74, 0.32, 0.26, -90, 160, 14)[1:]],
    4: [[(0.55, 0.0), (0.18, 0.65), (0.85, 0.65)], [(0.62, 0.3), (0.62, 1.0)]],
    5: [[(0.8, 0.02), (0.3, 0.02), (0.25, 0.45)] + arc(0.5, 0.7, 0.32, 0.3, 220, 480, 16)[1:]],
    6: [[(0.72, 0.02), (0.45, 0.25)] + arc(0.5, 0.7, 0.3, 0.3, 200, 560, 24)],
    7: [[(0.15, 0.02), (0.85, 0.02), (0.4, 1.0)]],
    8: [[(0.5 + 0.32 * math.sin(4 * math.pi * t / 32), 0.5 - 0.49 * math.cos(2 * math.pi * t / 32)) for t in range(33)]],
    9: [arc(0.5, 0.3, 0.3, 0.28, 0, 370, 20), [(0.8, 0.3), (0.72, 1.0)]],
}

#: styles: (left, top, height) of the digit on the 280×280 pad, and the pen
STYLES = {
    "large": (60, 20, 230, "auto"),
    "small": (120, 110, 50, "auto"),
    "off-centre": (175, 10, 110, "auto"),
    "thin": (80, 40, 190, "thin"),
    "thick": (75, 40, 190, "thick"),
}


def placed(digit: int, left: float, top: float, height: float) -> list[list[tuple[float, float]]]:
    return [[(left + x * height, top + y * height) for x, y in stroke] for stroke in DIGITS[digit]]


def pad_box(page: Page) -> dict:
    return page.locator("#pad").bounding_box()


def mouse_strokes(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Pen strokes on the pad with the mouse: down at the first point, through the others, up."""
    box = pad_box(page)
    sx, sy = box["width"] / 280, box["height"] / 280
    for points in strokes:
        x0, y0 = points[0]
        page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy)
        page.mouse.up()


def touch_strokes(page: Page, cdp, strokes: list[list[tuple[float, float]]]) -> None:
    """The same with a finger: touch events, as a phone's browser sends them."""
    box = pad_box(page)
    sx, sy = box["width"] / 280, box["height"] / 280
    for points in strokes:
        for i, (x, y) in enumerate(points):
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
                {"x": box["x"] + x * sx, "y": box["y"] + y * sy, "radiusX": 2, "radiusY": 2, "force": 1}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def read_after_drawing(page: Page) -> str:
    """What the page reads once the answer about the finished drawing is shown."""
    page.wait_for_function("() => document.body.dataset.predicting === '0'", timeout=15_000)
    return page.locator("#predicted").get_attribute("data-prediction") or ""


def clear(page: Page) -> None:
    page.click("#clear")
    assert page.locator("#predicted").inner_text() == ""


def open_page(browser, url: str, **context) -> tuple[Page, list[str]]:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    problems: list[str] = []
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith(url) else problems.append(f"external: {r.url}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    return page, problems


def no_horizontal_scroll(page: Page) -> tuple[int, int]:
    return page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")


def save(page: Page, tmp: Path, name: str, selector: str | None = None, full: bool = False) -> None:
    path = tmp / name
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full)
    if SHOT_DIR:
        Path(SHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOT_DIR) / name)
    if SCREENSHOTS and name in ("web-draw.png", "web-train.png"):
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "docs" / "images" / name)


NUMBER = (2, 0, 2, 6)


def number_strokes(height: float = 80, left: float = 12, top: float = 100, step: float = 62):
    return [s for i, d in enumerate(NUMBER) for s in placed(d, left + i * step, top, height)]


# --------------------------------------------------------------------------- the tests
def test_desktop_reads_every_digit_in_every_style_and_a_number(server, browser, tmp_path):
    url, app = server
    page, problems = open_page(browser, url, viewport={"width": 1400, "height": 1000})
    default = page.locator("#model-select").input_value()
    assert app.state.registry.get(default).name == "modern"  # the most accurate shipped model comes first
    wrong = []
    for style, (left, top, height, pen) in STYLES.items():
        page.select_option("#pen", pen)
        for digit in range(10):
            clear(page)
            mouse_strokes(page, placed(digit, left, top, height))
            got = read_after_drawing(page)
            if got != str(digit):
                wrong.append(f"{style} {digit} -> {got!r}")
                save(page, tmp_path, f"wrong-{style}-{digit}.png", selector="#draw-panel")
    assert wrong == [], wrong
    # the auto pen followed the drawing: a small digit is drawn with a finer pen than a large one
    page.select_option("#pen", "auto")
    clear(page)
    mouse_strokes(page, placed(7, *STYLES["small"][:3]))
    small_pen = float(page.locator("#pad").get_attribute("data-pen"))
    assert read_after_drawing(page) == "7"
    clear(page)
    mouse_strokes(page, placed(7, *STYLES["large"][:3]))
    assert read_after_drawing(page) == "7" and float(page.locator("#pad").get_attribute("data-pen")) > 2 * small_pen
    # a four-digit number, read left to right, one card per digit
    clear(page)
    mouse_strokes(page, number_strokes())
    save(page, tmp_path, "web-number.png")
    assert read_after_drawing(page) == "".join(map(str, NUMBER))
    assert page.locator("#digits .digit-card").count() == len(NUMBER)
    page.locator("#digits .digit-card").nth(3).click()
    assert page.locator("#bars .bar-row.top").get_attribute("data-class") == str(NUMBER[3])
    save(page, tmp_path, "web-number.png")
    assert problems == [], problems
    page.context.close()


def test_phone_touch_drawing_without_sideways_scrolling(server, browser, tmp_path):
    url, _ = server
    page, problems = open_page(browser, url, viewport={"width": 390, "height": 844}, device_scale_factor=3,
                               is_mobile=True, has_touch=True)
    width, inner = no_horizontal_scroll(page)
    assert inner == 390 and width <= 390, f"the page is {width} px wide at a 390 px viewport"
    box = pad_box(page)
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] >= 250
    cdp = page.context.new_cdp_session(page)
    wrong = []
    for style in ("large", "small"):
        left, top, height, _ = STYLES[style]
        for digit in range(10):
            clear(page)
            touch_strokes(page, cdp, placed(digit, left, top, height))
            got = read_after_drawing(page)
            if got != str(digit):
                wrong.append(f"{style} {digit} -> {got!r}")
    assert wrong == [], wrong
    width, _ = no_horizontal_scroll(page)  # with every panel filled in
    assert width <= 390, f"the page is {width} px wide at a 390 px viewport once it shows a result"
    save(page, tmp_path, "web-phone.png", full=True)
    clear(page)
    touch_strokes(page, cdp, number_strokes())
    assert read_after_drawing(page) == "".join(map(str, NUMBER))
    save(page, tmp_path, "web-phone-number.png")
    assert problems == [], problems
    page.context.close()


def test_uploads_that_cannot_be_read_say_so_and_clear_the_result(server, browser, tmp_path):
    from PIL import Image

    url, _ = server
    page, _ = open_page(browser, url, viewport={"width": 1200, "height": 900})
    mouse_strokes(page, placed(3, *STYLES["large"][:3]))
    assert read_after_drawing(page) == "3"
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                          "buffer": b"not a picture at all"}])
    assert read_after_drawing(page) == ""
    error = page.locator("#predict-error").inner_text()
    assert "not a picture" in error and "object at" not in error and "BytesIO" not in error, error
    assert page.locator("#digits .digit-card").count() == 0 and page.locator("#steps canvas").count() == 0
    # a good photo, then a blank one: the blank one leaves no old answer on screen
    buf = io.BytesIO()
    clear(page)
    mouse_strokes(page, placed(5, *STYLES["large"][:3]))
    assert read_after_drawing(page) == "5"
    Image.new("L", (640, 480), 250).save(buf, "PNG")
    page.set_input_files("#file", files=[{"name": "blank.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    assert read_after_drawing(page) == ""
    assert "No digit found" in page.locator("#predict-error").inner_text()
    assert page.locator("#predicted").inner_text() == "" and page.locator("#digits .digit-card").count() == 0
    bars = page.evaluate("() => [...document.querySelectorAll('#bars .bar-value')].map((e) => e.textContent)")
    assert set(bars) == {""}
    page.context.close()


STEP_RANGE = """(selector) => {
  const c = document.querySelector(selector);
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


def test_inspect_lecun1998_and_train_live(server, browser, tmp_path):
    url, app = server
    page, problems = open_page(browser, url, viewport={"width": 1400, "height": 1000})
    assert page.locator("#stages canvas.fmap").count() == 6 + 6 + 16 + 16 + 2
    mouse_strokes(page, placed(1, *STYLES["large"][:3]))
    assert read_after_drawing(page) == "1"
    assert page.evaluate(BLANK_MAPS) == []
    # the picture step is the canvas the page sent (the server does not send it back): ink on white
    lo, hi = page.evaluate(STEP_RANGE, "#steps canvas[data-step='picture']")
    assert lo <= 40 and hi >= 250, (lo, hi)
    rtt = float(page.locator("#timing").get_attribute("data-median"))
    assert rtt < 1000, f"prediction round trip {rtt} ms"
    page.locator("#stages canvas.fmap[data-stage='c3']").nth(3).hover()
    assert page.locator("#hover-kernels canvas").count() > 0
    clear(page)
    mouse_strokes(page, placed(0, *STYLES["large"][:3]))
    assert read_after_drawing(page) == "0"
    page.locator("#stages canvas.fmap[data-stage='c1']").nth(2).hover()
    assert page.locator("#hover-kernels canvas").count() == 1
    save(page, tmp_path, "web-draw.png")

    # lecun1998 keeps the drawing; a clean digit is shown as the nearest centre, clearly ahead,
    # and the rubbish class's share is explained, not shown as doubt
    lecun = next(e.id for e in app.state.registry.entries() if e.name == "lecun1998")
    page.select_option("#model-select", lecun)
    page.wait_for_selector("#rbf:not([hidden])")
    page.wait_for_function("() => /d \\d/.test(document.querySelector('#glyphs figcaption').textContent)")
    assert read_after_drawing(page) == "0"
    top = page.locator("#bars .bar-row.top .bar-value").inner_text()
    assert float(top.split("%")[0]) > 90, top  # the bar of a clean 0
    note = page.locator("#output-note").inner_text()
    assert "nearest is 0" in note and "rubbish" in note and "not doubt" in note, note
    assert page.evaluate(BLANK_MAPS) == []
    save(page, tmp_path, "web-lecun1998.png", selector="#predict-panel")
    page.select_option("#model-select", index=0)
    assert read_after_drawing(page) == "0"

    # the runs folder's earlier run is listed; finished, it is not offered for resuming
    assert "earlier-run" in page.locator("#train-run").inner_text()
    page.select_option("#train-run", label=page.locator("#train-run option", has_text="earlier-run").inner_text())
    assert page.locator("#train-resume").is_disabled()
    assert "finished" in page.locator("#train-run-note").inner_text()

    # live training on the bundled sample: the curves gain points, then stop
    page.select_option("#train-preset", "seed-tanh")
    page.select_option("#train-dataset", "mnist")
    page.fill("#train-epochs", "40")
    page.fill("#train-limit", "2000" if SCREENSHOTS else "500")
    page.click("#train-start")
    epochs = 6 if SCREENSHOTS else 2  # for the README, a run with a few epochs to show
    page.wait_for_function("(n) => Number(document.querySelector('#chart-acc').dataset.points) >= 2 * n",
                           arg=epochs, timeout=120_000)
    assert int(page.locator("#chart-loss").get_attribute("data-points")) > epochs
    page.wait_for_function("() => !document.querySelector('#train-use').disabled")
    page.click("#train-stop")
    page.wait_for_function("() => ['stopped', 'finished'].includes(document.querySelector('#train-status').dataset.state)",
                           timeout=60_000)
    assert "stopped after epoch" in page.locator("#train-status").inner_text()
    page.wait_for_function("() => !document.querySelector('#train-resume').disabled")  # this run can go on
    # the stopped run's model draws at once
    page.click("#train-use")
    page.wait_for_function("() => document.querySelector('#model-select').selectedOptions[0].text.includes('epoch')")
    assert read_after_drawing(page) != ""
    page.locator("#train-panel").scroll_into_view_if_needed()
    save(page, tmp_path, "web-train.png", selector="#train-panel")
    assert problems == [], problems
    page.context.close()
