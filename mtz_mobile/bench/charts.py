"""PNG charts of a bench report (matplotlib, Agg backend), each written atomically."""

from __future__ import annotations

from pathlib import Path

from mtz_mobile.png import pyplot as _plt, save_png as _save

COLORS = {"zipped": "#2b6cb0", "baselines": "#c05621", "floor": "#718096"}


def _grouped(ax, labels, series: dict, ylabel: str, errors: dict | None = None):
    """Bars per label, one per series; a missing value (None) is no bar at all, not an empty one.
    The legend sits in headroom above the tallest bar, where no bar can be."""
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        shown = [k for k, v in enumerate(values) if v is not None]
        vals = [values[k] for k in shown]
        yerr = None
        if errors and name in errors:
            yerr = [[0] * len(vals), [max(0, (errors[name][k] or values[k]) - values[k]) for k in shown]]
        ax.bar(x[shown] + (i - (len(series) - 1) / 2) * width, vals, width, label=name,
               color=COLORS.get(name.split()[0]), alpha=1.0 - 0.35 * (i // 2), yerr=yerr, capsize=3)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    tops = [v for values in series.values() for v in values if v is not None]
    tops += [e for values in (errors or {}).values() for e in values if e is not None]
    if tops:   # headroom above the tallest bar or whisker: the legend's row, in the axes but over no bar
        ax.set_ylim(0, 1.3 * max(tops))
    ax.legend(fontsize=8, loc="upper right", ncol=len(series))
    ax.grid(axis="y", alpha=0.3)


def storage_chart(r: dict, out: Path) -> str:
    plt = _plt()
    st = r["storage"]
    names, values, colors = ["zipped file", "unique weights"], [st["zipped_file_bytes"], st["unique_weight_bytes"]], \
        [COLORS["zipped"], COLORS["floor"]]
    if st["baselines_file_bytes"] is not None:
        names.insert(1, "baselines (sum)")
        values.insert(1, st["baselines_file_bytes"])
        colors.insert(1, COLORS["baselines"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, [v / 1e6 for v in values], color=colors)
    ax.set_ylabel("MB (10⁶ bytes)")
    ax.set_title("Storage")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "storage.png")


def memory_chart(r: dict, out: Path) -> str | None:
    fig = memory_figure(r)
    return None if fig is None else _save(fig, out / "memory.png")


def memory_figure(r: dict):
    """The memory chart as a matplotlib figure (None when the report has nothing to draw)."""
    plt = _plt()
    mem = r["memory"]
    if r["mode"] == "host":
        stages, z, b, zd, bd = [], [], [], [], []
        by = {(m["variant"], m["stage"], m["task"]): m for m in mem["measurements"]}
        for (variant, stage, task), m in by.items():
            if variant != "zipped":
                continue
            stages.append(stage if not task else f"{stage} {task}")
            z.append(m["after"]["VmHWM"] / 1024)
            zd.append((m["after"]["VmRSS"] - m["before"]["VmRSS"]) / 1024)
            other = by.get(("baselines", stage, task))
            b.append(None if other is None else other["after"]["VmHWM"] / 1024)
            bd.append(None if other is None else (other["after"]["VmRSS"] - other["before"]["VmRSS"]) / 1024)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        _grouped(ax1, stages, {"zipped": z, "baselines": b}, "VmHWM (MiB)")
        ax1.set_title("Peak RSS, fresh process per stage", loc="left")
        _grouped(ax2, stages, {"zipped": zd, "baselines": bd}, "VmRSS growth (MiB)")
        ax2.set_title("RSS growth over the runtime alone", loc="left")
        fig.tight_layout()
        return fig
    rows = [q for q in mem["ratios"] if q["metric"] in ("peak_mb", "overall_mb")]
    if not rows:
        return None
    labels = [f"{q['task']} {q['metric']} cache {q.get('xnnpack_cache')}" for q in rows]
    fig, ax = plt.subplots(figsize=(max(5, len(rows) * 1.2), 3.6))
    _grouped(ax, labels, {"zipped": [q["zipped"] for q in rows], "baselines": [q["baselines"] for q in rows]}, "MB")
    ax.set_title("benchmark_model memory footprint", loc="left")
    return fig


def latency_chart(r: dict, out: Path) -> str | None:
    fig = latency_figure(r)
    return None if fig is None else _save(fig, out / "latency.png")


def latency_figure(r: dict):
    """The latency chart as a matplotlib figure; the joint 'all' signature's baseline is every
    separate model called in turn (the report's ratio's ``baselines_us``), as its table says."""
    plt = _plt()
    entries = r["latency"]["entries"]
    if not entries:
        return None
    keys = []
    for e in entries:
        k = (e["signature"], e["xnnpack_cache"])
        if k not in keys:
            keys.append(k)
    caches = {c for _, c in keys}
    labels = [k if len(caches) == 1 else f"{k} (cache {c})" for k, c in keys]
    series, errors = {}, {}
    for variant in ("zipped", "baselines"):
        by = {(e["signature"], e["xnnpack_cache"]): e for e in entries if e["variant"] == variant}
        if not by:
            continue
        series[variant] = [None if k not in by else (by[k]["median_us"] if by[k]["median_us"] is not None
                                                     else by[k]["mean_us"]) for k in keys]
        errors[variant] = [None if k not in by else by[k]["p90_us"] for k in keys]
    joint = {(q["signature"], q["xnnpack_cache"]): q["baselines_us"] for q in r["latency"].get("ratios", [])
             if q.get("baselines_us") is not None}
    if "baselines" in series:
        series["baselines"] = [joint.get(k) if v is None else v for k, v in zip(keys, series["baselines"])]
    fig, ax = plt.subplots(figsize=(max(5, len(keys) * 1.3), 3.4))
    _grouped(ax, labels, series, "µs (median; whisker to p90)", errors)
    ax.set_title("Latency per signature", loc="left")
    return fig


def switching_chart(r: dict, out: Path) -> str | None:
    sw = r["switching"]
    if not sw:
        return None
    plt = _plt()
    names = ["zipped_switch_signature", "separate_both_resident", "separate_one_resident"]
    med = [sw["modes"][n]["median_us"] for n in names]
    p90 = [sw["modes"][n]["p90_us"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(["zipped:\nswitch signature", "separate:\nboth resident", "separate:\none resident"], med,
           yerr=[[0] * 3, [max(0, p - m) for p, m in zip(p90, med)]], capsize=4,
           color=[COLORS["zipped"], COLORS["baselines"], COLORS["baselines"]])
    ax.set_yscale("log")
    ax.set_ylabel("µs per step (median; whisker to p90)")
    ax.set_title(f"Task switching, {sw['steps']} steps")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "switching.png")


def write_charts(r: dict, out: Path) -> list[str]:
    names = []
    for chart in (storage_chart, memory_chart, latency_chart, switching_chart):
        name = chart(r, out)
        if name:
            names.append(name)
    return names
