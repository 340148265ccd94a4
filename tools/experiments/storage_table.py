#!/usr/bin/env python3
"""File sizes of zipped models in every quantization mode, beside the separate models.

For each zip directory and each mode: the zipped .tflite, the separate per-task files (same
converter, same mode), the unique-weight floor (weights and biases, each buffer once) and the
shared bytes every task signature references — all read back from the written files.

    python tools/experiments/storage_table.py results/zips/lenet300 results/zips/lenet5 --out results/storage
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from converters import QUANTIZATIONS, convert_zip
from mtz_mobile.fileio import write_atomic
from mtz_mobile.markdown import markdown_row, markdown_table


def measure(zip_dir: Path, out: Path, mode: str) -> dict:
    model = out / f"{zip_dir.name}_{mode}.tflite"
    result = convert_zip(zip_dir, model, quantize=mode, baselines=True)
    separate = sum(p.stat().st_size for p in result.baselines.values())
    return {"zip": zip_dir.name, "mode": mode, "zipped_bytes": result.layout.file_bytes,
            "separate_bytes": separate, "floor_bytes": result.layout.weight_bytes,
            "shared_bytes": result.layout.shared_weight_bytes, "duplicated_bytes": result.layout.duplicated_bytes,
            "task_bytes": result.layout.task_weight_bytes, "ratio_to_separate": result.layout.file_bytes / separate,
            "over_floor_bytes": result.layout.file_bytes - result.layout.weight_bytes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zips", nargs="+", type=Path)
    parser.add_argument("--modes", nargs="+", default=list(QUANTIZATIONS), choices=QUANTIZATIONS)
    parser.add_argument("--out", type=Path, default=Path("results/storage"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, table = [], []
    head = ["zip", "mode", "zipped file", "separate files (sum)", "zipped / separate", "unique-weight floor",
            "file − floor", "shared bytes (every task signature)", "task-only bytes", "int32 bias copies"]
    for zip_dir in args.zips:
        for mode in args.modes:
            print(f"converting {zip_dir} ({mode})", file=sys.stderr, flush=True)
            r = measure(zip_dir, args.out, mode)
            rows.append(r)
            task = ", ".join(f"{t} {n:,}" for t, n in r["task_bytes"].items())
            table.append([r["zip"], mode, f"{r['zipped_bytes']:,}", f"{r['separate_bytes']:,}",
                          f"{r['ratio_to_separate']:.3f}", f"{r['floor_bytes']:,}", f"{r['over_floor_bytes']:,}",
                          f"{r['shared_bytes']:,}", task, f"{r['duplicated_bytes']:,}"])
            print(markdown_row(table[-1]), flush=True)
    write_atomic(args.out / "storage.json", json.dumps(rows, indent=1) + "\n")
    write_atomic(args.out / "storage.md", markdown_table(head, table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
