"""CLI command that serves the browser page for a model: serve (a thin layer over mtz_mobile.web)."""

from __future__ import annotations

import socket
import sys

from .options import api_kwargs, command


def add_commands(sub) -> None:
    p = command(sub, "serve", "serve a page that runs the zipped .tflite in the browser with LiteRT.js: pick a "
                              "task, run it on sample or uploaded images (Python's http.server)", _serve)
    p.add_argument("model", help="a .tflite written by `mtz-mobile convert`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 lets a phone on the same network open the page")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--quiet", action="store_true", help="no line per request on stderr")


def _serve(args) -> int:
    from mtz_mobile.web import serve

    def ready(url: str, info: dict) -> None:
        print(f"serving {info['file']} at {url}", flush=True)
        if args.host in ("0.0.0.0", "::", ""):
            lan = _lan_address()
            if lan:
                print(f"on a phone on the same network: http://{lan}:{url.rsplit(':', 1)[1]}", flush=True)
        if info.get("error"):
            print(f"mtz-mobile: warning: the page will say: {info['error']}", file=sys.stderr, flush=True)

    try:
        serve(**api_kwargs(args), on_ready=ready)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def _lan_address() -> str | None:
    """This machine's address on the network that routes outwards (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            return None
