"""The data spec grammar: how a task's data is named on the command line and in plan.json.

    KIND[@HxWxC[:pad|:resize]][:raw][:PATH]

| part | meaning |
|---|---|
| ``fashion-mnist``, ``fashion-mnist-coarse`` | built in (no PATH): the 10 item types, or their 5 coarse groups |
| ``npz:PATH`` | ``x_train, y_train, x_test, y_test`` (optional ``x_val, y_val``, ``labels``) |
| ``dir:PATH`` | ``PATH/train/CLASS/*``, ``PATH/test/CLASS/*`` (optional ``PATH/validation/CLASS/*``), or ``PATH/CLASS/*`` |
| ``@HxWxC`` | fit every image to H×W×C: a model's input that differs from the images' |
| ``:pad`` (default) | zero-padding around the unchanged image, centred; H and W at least the image's |
| ``:resize`` | bilinear resizing to any H×W |
| ``:raw`` | 8-bit pixels as they are, 0–255; without it they are divided by 255, to [0, 1] |

Grey images become colour by repeating the grey channel (C = 3); colour never becomes grey.
Float arrays in an npz are taken as stored (no scaling either way). The modifiers sit between the
kind and the path, so everything after them is the path, verbatim; a path that itself begins with
``raw:`` is written ``./raw:…``, and after a shape one that begins with ``pad:`` or ``resize:`` is
preceded by its rule (``npz@32x32x3:pad:pad:x.npz``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MTZError

KINDS = ("fashion-mnist", "fashion-mnist-coarse", "npz", "dir")
FIT_RULES = ("pad", "resize")
GRAMMAR = "KIND[@HxWxC[:pad|:resize]][:raw][:PATH]"
# one line for --help and for errors
SUMMARY = (f"{GRAMMAR}: KIND is fashion-mnist, fashion-mnist-coarse, npz (PATH to a .npz) or dir (PATH to an "
           "image folder); @HxWxC fits the images to a model's input by :pad (zero-padding, the default) or "
           ":resize, grey repeated into 3 channels; :raw keeps 8-bit pixels 0-255 (default: divided by 255, "
           "to [0, 1]); e.g. dir@32x32x3:resize:photos/")
_SPEC = re.compile(r"(?P<kind>[a-z][a-z-]*)"
                   r"(?:@(?P<h>\d+)x(?P<w>\d+)x(?P<c>\d+)(?::(?P<rule>pad|resize)(?=:|$))?)?"
                   r"(?::(?P<raw>raw)(?=:|$))?"
                   r"(?::(?P<path>.*))?", re.S)
# modifiers written after the path, the natural guess (dir:photos@32x32x3:resize)
_TRAILING = re.compile(r"(?P<path>.*?)(?P<shape>@\d+x\d+x\d+)?(?::(?P<rule>pad|resize))?(?::(?P<raw>raw))?", re.S)


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec; ``str()`` writes it back in a form that parses to the same thing."""

    kind: str
    path: str | None = None
    shape: tuple[int, int, int] | None = None
    rule: str = "pad"
    raw: bool = False

    def __str__(self) -> str:
        text = self.kind
        path = self.path
        if self.shape is not None:
            text += "@" + "x".join(str(d) for d in self.shape)
            if self.rule != "pad" or (path is not None and re.match(r"(pad|resize)(:|$)", path)):
                text += ":" + self.rule
        if self.raw:
            text += ":raw"
        if path is not None and re.match(r"raw(:|$)", path):
            path = "./" + path   # the same file, not read as the modifier
        return text if path is None else f"{text}:{path}"


def parse_spec(spec: str) -> DataSpec:
    """The parts of a spec string (grammar in the module docstring); MTZError when malformed."""
    m = _SPEC.fullmatch(spec)
    if m is None or m["kind"] not in KINDS:
        raise MTZError(f"unknown data spec {spec!r}: {_help_for(spec)}")
    kind, path = m["kind"], m["path"]
    if kind in ("npz", "dir") and not path:
        raise MTZError(f"data spec {spec!r} names no file: give {kind}:PATH (or {kind}@HxWxC:PATH)")
    if kind not in ("npz", "dir") and path is not None:
        raise MTZError(f"data spec {spec!r}: {kind} takes no path; {_help_for(spec)}")
    shape = None
    if m["h"] is not None:
        shape = (int(m["h"]), int(m["w"]), int(m["c"]))
        if min(shape[:2]) < 1 or shape[2] not in (1, 3):
            raise MTZError(f"data spec {spec!r} asks for {shape[0]}x{shape[1]}x{shape[2]}: "
                           "height and width must be positive and channels 1 (grey) or 3 (colour)")
    parsed = DataSpec(kind, path, shape, m["rule"] or "pad", m["raw"] is not None)
    _refuse_trailing_modifiers(spec, parsed)
    return parsed


def _refuse_trailing_modifiers(spec: str, parsed: DataSpec) -> None:
    """``dir:photos@32x32x3:resize`` would read as a folder of that name: say how to write it."""
    if parsed.path is None:
        return
    tail = _TRAILING.fullmatch(parsed.path)
    if not tail or not (tail["shape"] or tail["rule"] or tail["raw"]) or not tail["path"]:
        return
    if tail["rule"] and not (tail["shape"] or parsed.shape):
        right = f"{parsed.kind}@HxWxC:{tail['rule']}{':raw' if tail['raw'] or parsed.raw else ''}:{tail['path']}"
    else:
        shape = tuple(int(d) for d in tail["shape"][1:].split("x")) if tail["shape"] else parsed.shape
        right = str(DataSpec(parsed.kind, tail["path"], shape, tail["rule"] or parsed.rule,
                             bool(tail["raw"]) or parsed.raw))
    raise MTZError(f"data spec {spec!r} puts modifiers after the path: write {right} "
                   f"(modifiers go between the kind and the path: {GRAMMAR})")


def _help_for(spec: str) -> str:
    shape = re.match(r"[a-z-]*@([^:]*)", spec)
    if shape and not re.fullmatch(r"\d+x\d+x\d+", shape[1]):
        return f"the shape is @HxWxC, height x width x channels, e.g. @32x32x3 ({GRAMMAR})"
    return f"use {GRAMMAR} with KIND fashion-mnist, fashion-mnist-coarse, npz or dir (e.g. fashion-mnist@32x32x3)"


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
