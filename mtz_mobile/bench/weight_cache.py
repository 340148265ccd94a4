"""XNNPACK's weight cache as a FILE beside the model (``MODEL.xnnpack_cache``), and its stamp.

With the cache in a file, a warm load maps the packed weights from disk (file-backed, clean pages)
instead of packing them again into memory: one resident copy of the weights. But LiteRT
(ai-edge-litert 2.3.0) keys the packed buffers by their place in the model, not by their bytes:
given a model whose weights changed but not their layout, it serves the OLD packed weights without
a word, and a cache file whose packed bytes were damaged gives NaNs (tests/test_weight_cache.py
shows both). Only a truncated file is caught by LiteRT itself. So every cache file has a stamp,
``MODEL.xnnpack_cache.json``: the model's sha256, the cache file's size and sha256 and the LiteRT
version. A cache whose stamp does not match is deleted before use, so that the next load rebuilds
it; the stamp is written after a load that built the file.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from mtz_mobile.contract import XNNPACK_CACHE_SUFFIX, XNNPACK_STAMP_SUFFIX
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of, write_atomic


def cache_file(model_path) -> Path:
    return Path(str(model_path) + XNNPACK_CACHE_SUFFIX)


def stamp_file(model_path) -> Path:
    return Path(str(cache_file(model_path)) + XNNPACK_STAMP_SUFFIX)


def _litert_version() -> str | None:
    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return None


def _expected(model_path, model_sha256: str | None) -> dict:
    return {"model_sha256": model_sha256 or sha256_of(model_path), "litert": _litert_version()}


def check(model_path, model_sha256: str | None = None) -> str:
    """The state of ``model_path``'s cache file: 'absent', 'valid', or why it was deleted (so that the
    next load rebuilds it): 'no stamp', 'model changed', 'LiteRT changed', 'size changed (truncated?)',
    'contents changed (corrupted?)', 'stamp unreadable', or XNNPACK's own marks (STALE, UNFINISHED: the
    same words as the Android app's WeightCache)."""
    cache, stamp = cache_file(model_path), stamp_file(model_path)
    if not cache.exists():
        stamp.unlink(missing_ok=True)
        return "absent"
    reason = _stale_reason(cache, stamp, _expected(model_path, model_sha256))
    if reason is None:
        return "valid"
    cache.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    return reason


def _stale_reason(cache: Path, stamp: Path, expected: dict) -> str | None:
    if not stamp.exists():
        return "no stamp"
    try:
        recorded = json.loads(stamp.read_text())
        if not isinstance(recorded, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        return "stamp unreadable"
    if recorded.get("model_sha256") != expected["model_sha256"]:
        return "model changed"
    if recorded.get("litert") != expected["litert"]:
        return "LiteRT changed"
    mark = xnnpack_mark(cache)
    if mark is not None:   # XNNPACK's own words, not damage: say them as they are
        return mark
    if recorded.get("cache_bytes") != cache.stat().st_size:
        return "size changed (truncated?)"
    if recorded.get("cache_sha256") != sha256_of(cache):
        return "contents changed (corrupted?)"
    return None


# XNNPACK's XNNPackCacheHeader (LiteRT's tflite/delegates/xnnpack/weight_cache.h): uint64 version
# (0 until a build finishes, 4 when it has), uint64 buffer_list_offset, uint64 buffer_list_size, uint8
# stale (set when a run needed weights the cache lacked). The app reads it the same way.
XNNPACK_HEADER_VERSION = 4
XNNPACK_STALE_OFFSET = 24
STALE = "stale (XNNPACK marked it: weights missing from it)"
UNFINISHED = "unfinished (XNNPACK's build of it did not complete)"


def xnnpack_mark(cache: Path) -> str | None:
    """STALE or UNFINISHED when the cache's own header says so, else None."""
    with open(cache, "rb") as f:
        header = f.read(XNNPACK_STALE_OFFSET + 1)
    if len(header) < 8:
        return None
    version = int.from_bytes(header[:8], "little")
    if version == 0:
        return UNFINISHED
    if version == XNNPACK_HEADER_VERSION and len(header) > XNNPACK_STALE_OFFSET and header[XNNPACK_STALE_OFFSET]:
        return STALE
    return None


def stamp(model_path, model_sha256: str | None = None) -> dict:
    """Record the cache file a load just wrote beside ``model_path``."""
    cache = cache_file(model_path)
    record = dict(_expected(model_path, model_sha256), cache_bytes=cache.stat().st_size, cache_sha256=sha256_of(cache))
    write_atomic(stamp_file(model_path), json.dumps(record, indent=1) + "\n")
    return record


def prepare(files, cold_load) -> list[dict]:
    """--xnnpack-cache file: check each (path, sha256)'s cache against its stamp (a stale, truncated
    or corrupted one is deleted), build the missing ones with ``cold_load(path)`` (a fresh process that
    loads the file; returns its load seconds) and stamp them, so that every later load is warm."""
    out = []
    for path, sha in files:
        state, cold = check(path, sha), None
        if state != "valid":
            cold = cold_load(path)
            if not cache_file(path).is_file():
                raise MTZError(f"LiteRT wrote no weight cache beside {path}: make its directory writable, "
                               "or use --xnnpack-cache on")
            stamp(path, sha)
        out.append({"model": str(path), "cache_file": str(cache_file(path)), "found": state,
                    "rebuilt": state != "valid", "cold_load_seconds": cold, "cache_bytes": cache_file(path).stat().st_size})
    return out
