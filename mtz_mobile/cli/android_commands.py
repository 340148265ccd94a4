"""CLI: `mtz-mobile export-android`, a thin layer over mtz_mobile.android_assets."""

from __future__ import annotations

import argparse

from mtz_mobile.contract import ANDROID_ASSETS_DIR, DEMO_MODEL

from .options import command


def add_commands(sub) -> None:
    p = command(sub, "export-android", "bundle a converted model and labelled test images (with the host's "
                                       "LiteRT outputs) into the Android demo's assets", _export)
    p.add_argument("model", nargs="?", default=DEMO_MODEL, help="the .tflite")
    p.add_argument("--zip", dest="zip_dir", help="the zip directory the model came from (its plan.json names "
                                                 "each task's data)")
    p.add_argument("--data", action="append", type=_data_override, default=[], metavar="TASK=SPEC",
                   help="a task's data spec (as zip's --data)")
    p.add_argument("--data-dir", help="directory with Fashion-MNIST's *-idx?-ubyte.gz files")
    p.add_argument("--per-source", type=int, default=10, help="test images per image source")
    p.add_argument("--out-dir", default=ANDROID_ASSETS_DIR, help="the app's assets directory")


def _data_override(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"{text!r} is not TASK=SPEC")
    return name, spec


def _export(args) -> int:
    from mtz_mobile.android_assets import export_assets

    paths = export_assets(args.model, args.out_dir, args.zip_dir, dict(args.data), args.data_dir, args.per_source)
    for path in paths.values():
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
