"""``lenet5 serve``: draw a digit in the browser and watch the network think, and train.

The page (``static/``: plain HTML, CSS and JavaScript, nothing from elsewhere) talks to a small
Starlette app (``app.py``) run by uvicorn. Needs ``pip install 'lenet5[web]'``.

For the command line::

    from lenet5 import web
    web.configure_parser(subparser)   # arguments of `lenet5 serve`
    return web.run(args)              # serve until Ctrl-C; Lenet5Error for bad input

Without the ``lenet5`` command: ``python -m lenet5.web [CHECKPOINT|RUN_DIR ...]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Sequence

from ..errors import Lenet5Error

INSTALL_HINT = "lenet5 serve needs: pip install 'lenet5[web]'"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
#: the largest request head (request line and headers together) the server reads
MAX_HEADER_BYTES = 32 * 1024
#: connections served at once (each costs at most MAX_HEADER_BYTES of buffer before its request is
#: read): room for benchmarks/web_load.py's 64 clients and the page's event streams
MAX_CONNECTIONS = 128


def configure_parser(p: argparse.ArgumentParser) -> None:
    """The arguments of ``lenet5 serve``."""
    p.add_argument("models", nargs="*", metavar="CHECKPOINT|RUN_DIR",
                   help="models to offer: checkpoint files (.safetensors, .npz) or run directories")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="a pretrained model by name (repeatable)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every network)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--runs-dir", metavar="DIR",
                   help="where training runs started from the page go (default: ./runs, where `lenet5 train` "
                        "puts its runs); runs already there are listed and can be resumed")
    p.add_argument("--data-dir", metavar="DIR",
                   help="MNIST's four IDX files for training from the page (full MNIST, offline)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a web browser")
    p.add_argument("--train-nice", type=int, default=10, metavar="N",
                   help="CPU niceness added to training workers, so predictions stay quick (default 10)")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """``lenet5 serve``: load the models, bind, open the page, serve until Ctrl-C."""
    serve(args.models, host=args.host, port=args.port, pretrained=args.model, runs_dir=args.runs_dir,
          data_dir=args.data_dir, open_browser=not args.no_browser, train_nice=args.train_nice)
    return 0


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (port taken, no such address)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise Lenet5Error(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on connections of such a
    # socket, and without it every keep-alive response waited 40 ms for a delayed ACK
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise Lenet5Error(f"--host {host} --port {port}: cannot listen ({e.strerror or e})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(models: Sequence[str | Path] = (), host: str = "127.0.0.1", port: int = 8000, *,
          pretrained: Sequence[str] = (), runs_dir: str | Path | None = None,
          data_dir: str | Path | None = None, open_browser: bool = False,
          train_nice: int = 10, log_level: str = "warning", ready: threading.Event | None = None) -> None:
    """Serve the page with uvicorn until interrupted. Bind errors and bad models are ``Lenet5Error``."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise Lenet5Error(INSTALL_HINT) from None
    from .app import create_app

    loopback = is_loopback(host)
    # A page bound to loopback only answers requests addressed to loopback names, so that a web
    # site cannot reach it through a DNS name rebound to 127.0.0.1. (Starlette's host check cannot
    # parse IPv6 Host headers; an IPv6 loopback address goes without it.)
    hosts = LOOPBACK_HOSTS if loopback and ":" not in host else None
    if data_dir is not None:
        from ..data import load_dir

        try:  # a wrong directory is said now, not when the page's first run fails
            load_dir(data_dir, "mnist")
        except Lenet5Error as e:
            raise Lenet5Error(f"--data-dir {data_dir}: {e}") from None
    app = create_app(models, pretrained=pretrained, runs_dir=runs_dir, data_dir=data_dir, train_nice=train_nice,
                     allowed_hosts=hosts)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{actual}/"
    registry, training = app.state.registry, app.state.training
    names = ", ".join(e.name for e in registry.entries()) or "none (train one in the page)"
    print(f"lenet5: serving {url}  models: {names}; training runs go to {training.runs_dir}", file=sys.stderr)
    if not loopback:
        print(f"lenet5: warning: listening on {host}: anyone who can reach this machine can use the page "
              "and start training runs", file=sys.stderr)
    print("lenet5: press Ctrl-C to stop", file=sys.stderr)
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # Ctrl-C: end the event streams, then shut down
            app.state.closing = True
            super().handle_exit(sig, frame)

    # Bounded by construction: h11 (not httptools, which buffers headers without a limit) refuses
    # a request head over MAX_HEADER_BYTES (which also bounds how many header lines fit), bodies
    # are capped by the app (read_body), and at most MAX_CONNECTIONS connections are served at
    # once (uvicorn answers 503 beyond that).
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=3,
                            lifespan="on", http="h11", h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5)
    server = Server(config)
    if open_browser or ready is not None:
        def when_started() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if ready is not None:
                ready.set()
            if open_browser and server.started:
                webbrowser.open(url)
        threading.Thread(target=when_started, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        pass
    finally:
        sock.close()
    print("lenet5: server stopped", file=sys.stderr)
