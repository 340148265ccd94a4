"""The answer `deploy` ends with: per task the test error before and after zipping, the share of
parameters stored once, the file against the separate files, the headline latency and memory
ratios from the bench report, and where that report is. Printed as a table and written to
OUT/summary.md (atomically) beside the outputs it summarises.

The errors are measured here, on each task's whole test set (``zipper.evaluate``): the hold-out the
zip validated on is not the figure a user ships with.
"""

from __future__ import annotations

from pathlib import Path

from .fileio import write_atomic
from .markdown import markdown_table

SUMMARY_NAME = "summary.md"


def summarize(out: Path, model: Path, baselines: dict[str, Path], report: dict | None, datas=None,
              data_dir=None) -> dict:
    """The figures of the table (see the module docstring); ``datas``: the tasks' loaded data, if given so."""
    from .zipper.evaluate import evaluate_zip   # deferred: the zipped network's forward pass
    from .zipper.plan import load_zip_dir

    zipdir = load_zip_dir(out / "zip")
    evals = evaluate_zip(zipdir, datas=datas if isinstance(datas, dict) else None, data_dir=data_dir)
    separate = [p for p in baselines.values() if p.is_file()]
    return {"tasks": [{"task": e.task, "images": e.samples, "before": e.original_error, "after": e.zipped_error,
                       "change_pp": e.increase_pp} for e in evals],
            "shared_fraction": zipdir.plan.params["shared_fraction"],
            "file_bytes": model.stat().st_size,
            "separate_bytes": sum(p.stat().st_size for p in separate) if len(separate) == len(baselines) else None,
            "latency": _latency(report), "memory": _memory(report),
            "report": None if report is None else str(out / "bench" / "report.md")}


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
