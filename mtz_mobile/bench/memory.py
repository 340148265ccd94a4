"""The host bench's memory comparisons: zipped against baselines per stage, and the zipped file
serving every task against one original serving its own; every metric of probe.METRIC_KEYS, as
absolute kB and as growth over the runtime's own set-up."""

from __future__ import annotations

from .core import ratio
from .probe import METRIC_KEYS


def memory_ratios(measurements: list[dict]) -> list[dict]:
    by = {(m["variant"], m["stage"], m["task"]): m for m in measurements}
    out = []
    for (variant, stage, task), z in by.items():
        if variant != "zipped" or stage == "joint":
            continue
        b = by.get(("baselines", stage, task))
        if b is None:
            continue
        for metric in METRIC_KEYS:
            zv, bv = z["after"].get(metric, 0), b["after"].get(metric, 0)
            zd, bd = zv - z["before"].get(metric, 0), bv - b["before"].get(metric, 0)
            out.append({"stage": stage, "task": task, "metric": metric, "zipped": zv, "baselines": bv,
                        "ratio": ratio(zv, bv) if bv > 0 else None, "zipped_delta": zd, "baselines_delta": bd,
                        "ratio_delta": ratio(zd, bd) if bd > 0 else None})
    return out


def versus_one_original(measurements: list[dict]) -> list[dict]:
    """The zipped file serving every task against the largest single original serving its own."""
    zipped = next((m for m in measurements if m["variant"] == "zipped" and m["stage"] == "all_tasks"), None)
    singles = [m for m in measurements if m["variant"] == "single"]
    if zipped is None or not singles:
        return []
    out = []
    for metric in METRIC_KEYS:
        largest = max(singles, key=lambda m: m["after"].get(metric, 0))
        zv, sv = zipped["after"].get(metric, 0), largest["after"].get(metric, 0)
        zd = zv - zipped["before"].get(metric, 0)
        sd = sv - largest["before"].get(metric, 0)
        out.append({"metric": metric, "zipped_all_tasks": zv, "one_original": sv, "original_task": largest["task"],
                    "ratio": ratio(zv, sv) if sv > 0 else None, "zipped_delta": zd, "one_original_delta": sd,
                    "ratio_delta": ratio(zd, sd) if sd > 0 else None})
    return out
