"""`mtz-mobile serve`: a static page that runs a zipped .tflite in the browser with LiteRT.js.

Python's stdlib http.server serves, and nothing else runs on the server side:

    /                      static/index.html (pick a task, run it on sample or uploaded images)
    /bench.html            static/bench.html (zipped file vs its baselines: `bench --runtime web` drives it)
    /samples.json          the sample images: MODEL_STEM.samples.json beside the model (the zip's own test
                           data, written by deploy and convert), else static/samples.json (Fashion-MNIST)
    /<file>                the other files in static/ (app.js, runtime.js, style.css, ...)
    /manifest.json         {"file", "bytes", "sha256", "manifest", "baselines", "error"}: the embedded
                           manifest read here (converters.manifest), or why the file cannot be served
    /model.tflite          the model, byte for byte
    /baseline/TASK.tflite  a baseline the manifest names (convert --baselines), when it is beside the model
    /vendor/@litertjs/...  LiteRT.js from node_modules (npm ci in mtz_mobile/web): its ES modules and wasm

The model file is read again when it changes on disk (size or mtime), so a reconversion shows on reload.
A damaged or non-zipped file is served with the reason in /manifest.json, which the page shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from converters.flatbuffer import parse_model
from converters.manifest import read_manifest
from mtz_mobile.errors import MTZError

from .samples import samples_path

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
LITERT_PACKAGES = ("@litertjs/core", "@litertjs/wasm-utils")   # what /vendor/ may serve
INSTALL_HINT = "run tools/install.sh (npm ci in mtz_mobile/web)"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".wasm": "application/wasm", ".map": "application/json",
                 ".tflite": "application/octet-stream"}


def litert_missing(node_modules: Path = NODE_MODULES) -> str | None:
    """Why LiteRT.js cannot be served from ``node_modules``, or None."""
    for package in LITERT_PACKAGES:
        if not (node_modules / package / "package.json").is_file():
            return f"LiteRT.js is not installed ({node_modules / package} is missing): {INSTALL_HINT}"
    return None


@dataclass
class ModelSite:
    """The model file behind the page, re-read when it changes on disk."""

    path: Path
    _stamp: tuple | None = None
    _info: dict = field(default_factory=dict)
    _bytes: bytes = b""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[dict, bytes]:
        """(what /manifest.json says, the model's bytes); never raises for a bad file."""
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_size, st.st_mtime_ns)
            except OSError as exc:
                return {"file": self.path.name, "error": f"cannot read {self.path.name}: {exc.strerror}"}, b""
            if stamp != self._stamp:
                self._bytes = self.path.read_bytes()
                self._info = describe_model(self._bytes, self.path)
                self._stamp = stamp
            return self._info, self._bytes

    def baseline(self, task: str) -> Path | None:
        info, _ = self.current()
        name = (info.get("baselines") or {}).get(task)
        return None if name is None else self.path.with_name(name)


def describe_model(data: bytes, path: Path) -> dict:
    """/manifest.json's content: the manifest, or an ``error`` line saying why the page cannot run the file."""
    info = {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "manifest": None, "baselines": {}, "error": None}
    try:
        manifest = read_manifest(parse_model(data, path.name))
        if manifest is None:
            raise MTZError(f"{path.name} has no mtz-mobile manifest (metadata mtz_manifest): it is not a zipped "
                           f"model; make one with `mtz-mobile convert ZIPDIR --out {path.name}`")
    except MTZError as exc:
        info["error"] = str(exc)
        return info
    info["manifest"] = manifest
    recorded = manifest.get("baselines") or {}
    info["baselines"] = {task: entry["file"] for task, entry in recorded.items()
                         if path.with_name(entry["file"]).is_file()}
    return info


class PageHandler(BaseHTTPRequestHandler):
    """GET and HEAD only; every path is looked up in a fixed set of places (no directory listing)."""

    site: ModelSite
    node_modules: Path
    quiet: bool = False
    server_version = "mtz-mobile"

    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        route = unquote(urlsplit(self.path).path)
        if route == "/manifest.json":
            info, _ = self.site.current()
            return self._reply(json.dumps(info).encode(), ".json", send_body, cache=False)
        if route == "/model.tflite":
            info, data = self.site.current()
            if not data:
                return self._not_found(send_body)
            return self._reply(data, ".tflite", send_body, cache=False)
        if route.startswith("/baseline/") and route.endswith(".tflite"):
            path = self.site.baseline(route[len("/baseline/"):-len(".tflite")])
            return self._file(path, send_body, cache=False)
        if route == "/samples.json":
            own = samples_path(self.site.path)
            return self._file(own if own.is_file() else STATIC_DIR / "samples.json", send_body, cache=False)
        if route.startswith("/vendor/"):
            return self._file(self._vendor_path(route[len("/vendor/"):]), send_body)
        name = "index.html" if route == "/" else route.lstrip("/")
        return self._file(_inside(STATIC_DIR, name), send_body)

    def _vendor_path(self, rel: str) -> Path | None:
        for package in LITERT_PACKAGES:
            if rel.startswith(package + "/"):
                return _inside(self.node_modules / package, rel[len(package) + 1:])
        return None

    def _file(self, path: Path | None, send_body: bool, cache: bool = True) -> None:
        if path is None or not path.is_file():
            return self._not_found(send_body)
        self._reply(path.read_bytes(), path.suffix, send_body, cache)

    def _reply(self, data: bytes, suffix: str, send_body: bool, cache: bool = True,
               status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        # cross-origin isolation: finer performance.now() for the timings (on localhost; a phone on plain
        # http over the LAN is no secure context and gets the coarse clock)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def _not_found(self, send_body: bool) -> None:
        self._reply(b"not found\n", ".txt", send_body, cache=False, status=HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 — http.server's signature
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel when it stays inside root (no .., no absolute path), else None."""
    try:
        path = (root / rel).resolve()
    except (OSError, ValueError):
        return None
    return path if path.is_relative_to(root.resolve()) else None


def make_server(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                node_modules: str | os.PathLike | None = None, quiet: bool = False) -> ThreadingHTTPServer:
    """A bound, not yet serving server for ``model`` (``port`` 0: any free port, see server_address)."""
    model = Path(model)
    if not model.is_file():
        raise MTZError(f"{model} does not exist: give a .tflite written by `mtz-mobile convert`")
    node_modules = Path(node_modules) if node_modules is not None else NODE_MODULES
    missing = litert_missing(node_modules)
    if missing:
        raise MTZError(missing)
    handler = type("Handler", (PageHandler,), {"site": ModelSite(model), "node_modules": node_modules,
                                               "quiet": quiet})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise MTZError(f"cannot listen on {host}:{port} ({exc.strerror}): give another --port or --host") from exc


def serve(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          node_modules: str | os.PathLike | None = None, quiet: bool = False, on_ready=None) -> None:
    """Serve the page for ``model`` until interrupted; ``on_ready(url, info)`` is called once listening,
    with /manifest.json's content (its ``error`` says why the page will not run the file)."""
    server = make_server(model, host, port, node_modules, quiet)
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{'127.0.0.1' if bound_host in ('0.0.0.0', '') else bound_host}:{bound_port}/"
    try:
        if on_ready is not None:
            on_ready(url, server.RequestHandlerClass.site.current()[0])
        server.serve_forever()
    finally:
        server.server_close()
