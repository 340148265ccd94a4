"""CLI commands that make and read .tflite files: convert, inspect (a thin layer over converters)."""

from __future__ import annotations

import json

from mtz_mobile.contract import QUANTIZATIONS

from .options import add_data_dir, api_kwargs, command


def add_commands(sub) -> None:
    p = command(sub, "convert", "convert a zip directory to one .tflite: a signature per task, shared blocks "
                                "stored once, manifest embedded", _convert)
    p.add_argument("zip_path", metavar="zipdir", help="a directory written by zip")
    p.add_argument("--out", dest="out_path", metavar="OUT", required=True, help="output .tflite")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none", help="weight/activation quantization")
    p.add_argument("--joint", action="store_true", help="also an 'all' signature returning every task's output")
    p.add_argument("--baselines", action="store_true",
                   help="also export each original model as OUT_STEM.baseline_TASK.tflite")
    add_data_dir(p)

    p = command(sub, "inspect", "list a .tflite's signatures, buffers and who uses them, and its manifest",
                _inspect)
    p.add_argument("path", metavar="model", help="a .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _convert(args) -> int:
    from converters import convert_zip

    result = convert_zip(**api_kwargs(args))
    lay = result.layout
    print(f"wrote {result.path}: {lay.file_bytes:,} bytes, weights {lay.weight_bytes:,} bytes of which "
          f"{lay.shared_weight_bytes:,} shared by the task signatures; every shared block is one buffer")
    for task, path in result.baselines.items():
        print(f"baseline {task}: {path} ({path.stat().st_size:,} bytes)")
    if result.serving:
        print(result.serving)
    from mtz_mobile.web.samples import write_zip_samples

    print(f"samples for `mtz-mobile serve`: {write_zip_samples(result.path, args.zip_path, args.data_dir)} "
          "(test images of the zip's data)")
    return 0


def _inspect(args) -> int:
    from converters.inspection import format_inspection, inspect_model

    info = inspect_model(**api_kwargs(args, "json"))
    print(json.dumps(info, indent=1) if args.json else format_inspection(info))
    return 0
