"""The answer `deploy` ends with: per task the test error before and after zipping, the share of
parameters stored once, the file against the separate files, the headline latency and memory
ratios from the bench report, and where that report is. Printed as a table and written to
OUT/summary.md (atomically) beside the outputs it summarises.

The errors are measured here, on each task's whole test set (``zipper.evaluate``): the hold-out the
zip validated on is not the figure a user ships with. They are kept in OUT/summary.json with what
they were measured on (plan.json's digest, weights.npz's size and time, each task's data: the files
of a ``dir:`` folder or an npz by size and time, a built-in set by its spec and --data-dir), so a
deploy run again on the same zip and data reads them back instead of loading every test set and
model again (tens of seconds on two MobileNetV3Small read from image folders).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .fileio import write_atomic, write_json_atomic
from .markdown import markdown_table

SUMMARY_NAME = "summary.md"
ERRORS_NAME = "summary.json"   # the measured errors and the digest of what they were measured on


def summarize(out: Path, model: Path, baselines: dict[str, Path], report: dict | None, datas=None,
              data_dir=None) -> dict:
    """The figures of the table (see the module docstring); ``datas``: the tasks' loaded data, if given so."""
    from .zipper.plan import load_zip_dir

    zipdir = load_zip_dir(out / "zip")
    separate = [p for p in baselines.values() if p.is_file()]
    return {"tasks": _task_errors(out, zipdir, datas, data_dir),
            "shared_fraction": zipdir.plan.params["shared_fraction"],
            "file_bytes": model.stat().st_size,
            "separate_bytes": sum(p.stat().st_size for p in separate) if len(separate) == len(baselines) else None,
            "latency": _latency(report), "memory": _memory(report),
            "report": None if report is None else str(out / "bench" / "report.md")}


def _task_errors(out: Path, zipdir, datas, data_dir) -> list[dict]:
    """Each task's test error before and after, read back from summary.json when measured on the same
    inputs; loaded data (a dict of TaskData) has no cheap digest, so it is always measured."""
    from .zipper.evaluate import evaluate_zip   # deferred: the zipped network's forward pass

    key = None if isinstance(datas, dict) else inputs_digest(zipdir, data_dir)
    try:
        saved = json.loads((out / ERRORS_NAME).read_text())
        if key is not None and saved.get("inputs") == key:
            return saved["tasks"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass   # none yet, or unreadable: measure
    evals = evaluate_zip(zipdir, datas=datas if isinstance(datas, dict) else None, data_dir=data_dir)
    tasks = [{"task": e.task, "images": e.samples, "before": e.original_error, "after": e.zipped_error,
              "change_pp": e.increase_pp} for e in evals]
    if key is not None:
        write_json_atomic(out / ERRORS_NAME, {"inputs": key, "tasks": tasks})
    return tasks


def inputs_digest(zipdir, data_dir) -> str:
    """sha256 of what the test errors depend on (see the module docstring)."""
    weights = (zipdir.path / "weights.npz").stat()
    parts = {"plan": hashlib.sha256((zipdir.path / "plan.json").read_bytes()).hexdigest(),
             "weights": [weights.st_size, weights.st_mtime_ns], "data_dir": str(data_dir),
             "data": [data_fingerprint(t.data) for t in zipdir.plan.tasks]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def data_fingerprint(spec: str) -> list:
    """A spec and, for a file or folder it names, every file's relative path, size and time."""
    from .data_spec import parse_spec

    parsed = parse_spec(spec)
    found = [spec]
    if parsed.path is None:
        return found
    root = Path(parsed.path)
    if root.is_file():
        return found + [[root.stat().st_size, root.stat().st_mtime_ns]]
    for folder, _, files in sorted(os.walk(root), key=lambda item: item[0]):
        for name in sorted(files):
            stat = (Path(folder) / name).stat()
            found.append([os.path.relpath(Path(folder) / name, root), stat.st_size, stat.st_mtime_ns])
    return found


def _latency(report: dict | None) -> list[tuple[str, float]]:
    """(signature, zipped / separate median) per signature; 'all' is one joint call vs every baseline."""
    if not report:
        return []
    return [(q["signature"], q["ratio"]) for q in report["latency"]["ratios"] if q.get("ratio") is not None]


def _memory(report: dict | None) -> tuple[float, float | None] | None:
    """Peak RSS with every task served, zipped / separate, and the same for the growth over the runtime."""
    if not report or report.get("mode") != "host":
        return None
    for q in report["memory"]["ratios"]:
        if q["stage"] == "all_tasks" and q["metric"] == "VmHWM" and q.get("ratio") is not None:
            return q["ratio"], q.get("ratio_delta")
    return None


def summary_markdown(s: dict) -> str:
    rows = [[f"task {t['task']}: test error ({t['images']} images)",
             f"{100 * t['before']:.2f} % → {100 * t['after']:.2f} % ({t['change_pp']:+.2f} pp)"] for t in s["tasks"]]
    rows.append(["parameters stored once, shared by the tasks", f"{100 * s['shared_fraction']:.1f} %"])
    size = f"{s['file_bytes']:,} bytes"
    if s["separate_bytes"]:
        size += f" vs {s['separate_bytes']:,} in separate files (× {s['file_bytes'] / s['separate_bytes']:.3f})"
    rows.append(["model file", size])
    for signature, ratio in s["latency"]:
        what = "one joint call vs every separate model" if signature == "all" else "vs its separate model"
        rows.append([f"latency '{signature}', {what}", f"× {ratio:.3f}"])
    if s["memory"] is not None:
        peak, growth = s["memory"]
        rows.append(["peak memory serving every task, vs separate models",
                     f"× {peak:.3f}" + ("" if growth is None else f" (growth over the runtime × {growth:.3f})")])
    rows.append(["bench report", s["report"] or "not run (--no-bench)"])
    return markdown_table(["", "zipped (× = zipped / separate)"], rows)


def write_summary(out: Path, s: dict) -> Path:
    path = out / SUMMARY_NAME
    write_atomic(path, markdown_table_doc(s).encode())
    return path


def markdown_table_doc(s: dict) -> str:
    return "# What deploy made\n\n" + summary_markdown(s) + "\n"
