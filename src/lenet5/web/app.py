"""The web app: one page (static HTML, CSS, JavaScript) and a small JSON API.

    GET  /                       the page
    GET  /static/...             its assets (all shipped in the package: works offline)
    GET  /api/models             the models, by opaque id
    GET  /api/models/{id}        one model: stages, kernels, class names (and lecun1998's glyphs)
    POST /api/predict?model=ID   body: a picture (PNG, JPEG, ...: any Content-Type) or, with &w=W&h=H,
                                 the canvas as raw grey bytes (one per pixel) -> the digits found,
                                 left to right (box, 28×28 input, class shares, every stage's
                                 feature maps) and the named stages of finding them (the picture
                                 only for an upload: a canvas's page has it)
    GET  /api/train              the training state and the runs of this server
    POST /api/train/start        {"preset", "dataset", "epochs", "train_limit"?}
    POST /api/train/stop         {}
    POST /api/train/resume       {"run": RUN_ID, "epochs"?}
    GET  /api/train/events       server-sent events of the current run (?once=1: what there is, then close)

Every error is a JSON object {"error": "..."} with a 4xx status (5xx only for a bug, without
details); a picture the page cannot read adds "detail", the library's account. The browser
never names a file on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..data import check_dir
from ..errors import Lenet5Error, clip
from ..predict import ImageError, NotFiniteError
from . import prepare
from .models import ModelEntry, ModelRegistry, UnknownModel, analyse, load_path, model_details, rubbish_j
from .training import DATASETS, MAX_EPOCHS, TrainingError, TrainingManager

STATIC_DIR = Path(__file__).parent / "static"
MAX_JSON_BYTES = 16 * 1024
#: where runs started from the page go unless --runs-dir says otherwise: where `lenet5 train`
#: puts its runs by default, so the page lists those too
DEFAULT_RUNS_DIR = Path("runs")
LOG = logging.getLogger("lenet5.web")
#: the page may load nothing from anywhere but this server
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


#: pictures read and prepared at once; the memory they may take is about this many uploads
UPLOAD_SLOTS = 4


# --------------------------------------------------------------------------- helpers
def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload too large ({int(declared):,} bytes; the limit is {limit:,})")
    chunks, size = [], 0
    async for chunk in request.stream():  # ClientDisconnect if the client leaves: see client_left
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload too large (over {limit:,} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    """A small JSON object body; POSTs that change state must say application/json (no cross-site forms)."""
    if not request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        raise HTTPException(415, "send a JSON object with Content-Type: application/json")
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    except RecursionError:  # 16 kB of "[" is enough to exhaust the parser's stack
        raise HTTPException(400, "the body is not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return value


def int_field(body: dict, key: str, required: bool = True, default: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is None or value == "":
        if required:
            raise HTTPException(400, f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise HTTPException(400, f"{key} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{key} must be an integer, got {str(value)[:20]!r}") from None


def query_int(request: Request, key: str) -> int | None:
    text = request.query_params.get(key)
    if text is None:
        return None
    if not text.isdigit():
        raise HTTPException(400, f"{key} must be a non-negative integer")
    return int(text)


# --------------------------------------------------------------------------- the work of a prediction
def predict_picture(entry: ModelEntry, body: bytes, width: int | None, height: int | None) -> dict:
    """Decode, find the digits, run the network on all of them at once (in a worker thread).
    Times in milliseconds."""
    t0 = time.perf_counter()
    if width is not None or height is not None:
        if width is None or height is None:
            raise HTTPException(400, "raw grey pixels need both w and h query parameters")
        grey, name, skip = prepare.raw_pixels(body, width, height) / 255, "canvas", ("picture",)
    else:
        grey, name, skip = prepare.grey_from_bytes(body, "upload"), "upload", ()
    t1 = time.perf_counter()
    with entry.borrow() as (model, version):
        # the network judges where touching digits part, as `lenet5 predict` does
        found, stages = prepare.read_digits(grey, name, judge=model.predict)
        t2 = time.perf_counter()
        results = analyse(model, np.stack([d.image for d in found]), rubbish_j(model, entry.meta))
    t3 = time.perf_counter()
    for digit, result in zip(found, results):
        result.update(box=[int(v) for v in digit.box], input=prepare.encode_image(digit.image))
    return {"model": entry.id, "version": version, "size": [int(grey.shape[1]), int(grey.shape[0])],
            "digits": results, "steps": prepare.encode_steps(stages, skip),
            "timing": {"decode_ms": round(1000 * (t1 - t0), 2), "prepare_ms": round(1000 * (t2 - t1), 2),
                       "network_ms": round(1000 * (t3 - t2), 2)}}


# --------------------------------------------------------------------------- the app
def create_app(models: Sequence[str | Path] = (), *, pretrained: Sequence[str] = (),
               runs_dir: str | Path | None = None, data_dir: str | Path | None = None,
               allowed_hosts: Sequence[str] | None = None, train_nice: int = 10,
               list_pretrained: bool = True) -> Starlette:
    """The Starlette app serving ``models`` (checkpoint files or run directories) and ``pretrained`` names.

    Raises ``Lenet5Error`` with one line for a model that cannot be loaded. ``runs_dir``: where
    runs started from the page go (default ``./runs``, where ``lenet5 train`` puts its runs); runs
    already there are listed. ``data_dir``: MNIST's IDX files for live training (offline, full
    MNIST). ``allowed_hosts``: Host header values accepted (None: any; ``serve`` passes the
    loopback names when bound to loopback, against DNS rebinding).
    """
    registry = ModelRegistry()
    for path in models:
        model, meta, name = load_path(path)
        registry.add(name, model, meta, named=True)
    add_pretrained(registry, pretrained, list_pretrained)
    if runs_dir and os.path.lexists(runs_dir):
        check_dir(runs_dir, Lenet5Error, "--runs-dir")
    training = TrainingManager(Path(runs_dir) if runs_dir else DEFAULT_RUNS_DIR, registry, nice=train_nice,
                               data_dir=data_dir)
    training.discover()
    # predictions are CPU-bound: as many at once as there are cores (more only fight over the GIL)
    predict_slots = anyio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
    # uploads held in memory at once (each up to MAX_UPLOAD_BYTES, then decoded): with many
    # connections open, the rest wait for a slot instead of each holding 10 MB
    upload_slots = anyio.Semaphore(UPLOAD_SLOTS)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CSP,
                                                                "Cache-Control": "no-cache"})

    async def list_models(request: Request) -> Response:
        default = registry.default()
        return JSONResponse({"models": [e.summary() for e in registry.entries()],
                             "default": default.id if default else None})

    async def get_model(request: Request) -> Response:
        entry = registry.get(request.path_params["model_id"])
        return JSONResponse(await run_in_threadpool(model_details, entry))

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        model_id = request.query_params.get("model")
        if model_id is None:
            default = registry.default()
            if default is None:
                raise HTTPException(409, "no model loaded: train one first, or start the server with a checkpoint")
            model_id = default.id
        entry = registry.get(model_id)
        width, height = query_int(request, "w"), query_int(request, "h")
        async with upload_slots:
            body = await read_body(request, prepare.MAX_UPLOAD_BYTES)
            result = await anyio.to_thread.run_sync(predict_picture, entry, body, width, height,
                                                    limiter=predict_slots)
        result["timing"]["server_ms"] = round(1000 * (time.perf_counter() - started), 2)
        return JSONResponse(result, headers={"Server-Timing": f"app;dur={result['timing']['server_ms']}"})

    async def train_status(request: Request) -> Response:
        from ..model import PRESETS

        return JSONResponse({**training.status(), "presets": list(PRESETS), "datasets": list(DATASETS),
                             "max_epochs": MAX_EPOCHS})

    async def train_start(request: Request) -> Response:
        body = await read_json(request)
        preset, dataset = body.get("preset", "seed-tanh"), body.get("dataset", "mnist")
        if not isinstance(preset, str) or not isinstance(dataset, str):
            raise HTTPException(400, "preset and dataset must be strings")
        epochs = int_field(body, "epochs", default=3)
        limit = int_field(body, "train_limit", required=False)
        return JSONResponse(await run_in_threadpool(training.start, preset, dataset, epochs, limit))

    async def train_stop(request: Request) -> Response:
        await read_json(request)
        return JSONResponse(await run_in_threadpool(training.stop))

    async def train_resume(request: Request) -> Response:
        body = await read_json(request)
        run_id = body.get("run")
        if not isinstance(run_id, str):
            raise HTTPException(400, "run (a run id from /api/train) is required")
        epochs = int_field(body, "epochs", required=False)
        return JSONResponse(await run_in_threadpool(training.resume, run_id, epochs))

    async def train_events(request: Request) -> Response:
        after = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        last = int(after) if after.isdigit() and int(after) <= training.seq else 0
        once = request.query_params.get("once") == "1"

        async def stream() -> AsyncIterator[str]:
            nonlocal last
            yield "retry: 2000\n\n"
            quiet = 0.0
            while True:
                for e in training.events_after(last):
                    last = e["seq"]
                    quiet = 0.0
                    yield f"id: {e['seq']}\nevent: {e['event']}\ndata: {json.dumps(e['data'])}\n\n"
                if once or app.state.closing or await request.is_disconnected():
                    return
                await asyncio.sleep(0.15)
                quiet += 0.15
                if quiet > 15:  # a comment keeps proxies and the browser from timing out
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def lenet5_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, UnknownModel):
            return error(clip(exc), 404)
        if isinstance(exc, TrainingError):
            return error(clip(exc), exc.status)
        if isinstance(exc, prepare.PictureError):
            body = {"error": clip(exc), **({"detail": clip(exc.detail)} if exc.detail else {})}
            return JSONResponse(body, status_code=422)
        if isinstance(exc, (ImageError, NotFiniteError)):
            return error(clip(exc), 422)
        return error(clip(exc), 400)

    async def client_left(request: Request, exc: Exception) -> Response:
        # nobody is there to read an answer: one line in the log, no traceback
        LOG.warning("%s %s: the client disconnected before its request was read", request.method, request.url.path)
        return Response(status_code=400)

    async def server_error(request: Request, exc: Exception) -> Response:
        LOG.exception("error in %s %s", request.method, request.url.path, exc_info=exc)
        return error("internal server error (see the server's log)", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        stopped = await run_in_threadpool(training.shutdown)
        if stopped is not None and stopped.resumable():
            print(f"lenet5: stopped the training run {stopped.path}; the next `lenet5 serve` lists it (Resume), "
                  f"or: lenet5 train --resume {stopped.path}", file=sys.stderr)

    routes = [
        Route("/", index),
        Route("/api/models", list_models),
        Route("/api/models/{model_id}", get_model),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/train", train_status),
        Route("/api/train/start", train_start, methods=["POST"]),
        Route("/api/train/stop", train_stop, methods=["POST"]),
        Route("/api/train/resume", train_resume, methods=["POST"]),
        Route("/api/train/events", train_events),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Lenet5Error: lenet5_error,
                                        ClientDisconnect: client_left, Exception: server_error})
    app.state.registry = registry
    app.state.training = training
    app.state.closing = False  # set when the server shuts down: event streams then end at once
    return app


def add_pretrained(registry: ModelRegistry, names: Sequence[str], list_all: bool = True) -> None:
    """Pretrained models from ``lenet5.zoo``: ``names`` loaded now (errors are one line),
    the other available ones listed and loaded when first used."""
    from .. import zoo
    for name in names:
        try:
            model, meta = zoo.load(name)
        except Lenet5Error:
            raise
        except Exception as e:  # KeyError, ValueError, OSError: say which name
            raise Lenet5Error(f"--model {name}: {e}") from None
        registry.add(name, model, meta, source="pretrained", named=True)
    if not list_all:
        return
    try:  # the manifest describes each model, so the list can show it before it is loaded
        available, described = zoo.available(), zoo.manifest()
    except Lenet5Error:  # an unreadable manifest: no more models to list
        return
    def accuracy(name: str) -> float:
        value = described.get(name, {}).get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else -1.0

    for name in sorted(available, key=accuracy, reverse=True):  # the most accurate first
        if name not in names:
            entry = described.get(name, {})
            meta = {k: v for k, v in {"preset": entry.get("preset"), "test_acc": entry.get("test_accuracy")}.items()
                    if v is not None}
            if entry.get("dataset"):
                meta["data"] = {"dataset": entry["dataset"]}
            registry.add(name, None, meta, source="pretrained", loader=lambda n=name: zoo.load(n))
