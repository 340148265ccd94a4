"""The bench charts read back from their matplotlib figures: every bar a figure of the report
(the joint 'all' signature's separate baseline included), and no legend over a bar or a title."""

from __future__ import annotations

import pytest

from mtz_mobile.bench.charts import latency_figure, memory_figure


def _bars(ax) -> dict[str, dict[str, float]]:
    """{series: {tick label: bar height}} as drawn."""
    import numpy as np

    ticks = {round(float(t), 6): label.get_text() for t, label in zip(ax.get_xticks(), ax.get_xticklabels())}
    width = {c.get_label(): c.patches[0].get_width() for c in ax.containers if hasattr(c, "patches") and c.patches}
    out = {}
    for c in ax.containers:
        if not getattr(c, "patches", None):
            continue
        name = c.get_label()
        offsets = sorted({round(float(p.get_x() + p.get_width() / 2 - np.round(p.get_x() + p.get_width() / 2)), 6)
                          for p in c.patches})
        assert len(offsets) == 1 and width[name] > 0
        out[name] = {ticks[round(float(np.round(p.get_x() + p.get_width() / 2)), 6)]: p.get_height() for p in c.patches}
    return out


def _no_overlap(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for patch in ax.patches:
            assert not box.overlaps(patch.get_window_extent(renderer)), (ax.get_title(loc="left"), patch)
        for title in (ax.title, ax._left_title, ax._right_title):
            if title.get_text():
                assert not box.overlaps(title.get_window_extent(renderer)), title.get_text()


def test_latency_chart_draws_every_figure_of_the_report_including_the_joint_baseline(deployed):
    r = deployed.report
    fig = latency_figure(r)
    bars = _bars(fig.axes[0])
    entries = {(e["variant"], e["signature"]): e["median_us"] for e in r["latency"]["entries"]}
    joint = next(q for q in r["latency"]["ratios"] if q["signature"] == "all")
    assert bars["zipped"] == pytest.approx({sig: us for (v, sig), us in entries.items() if v == "zipped"})
    assert bars["baselines"]["all"] == pytest.approx(joint["baselines_us"]) and joint["baselines_us"] > 0
    assert {k: v for k, v in bars["baselines"].items() if k != "all"} == pytest.approx(
        {sig: us for (v, sig), us in entries.items() if v == "baselines"})
    assert all(h > 0 for series in bars.values() for h in series.values())
    _no_overlap(fig)


def test_memory_chart_bars_are_the_reports_and_its_legend_covers_none(deployed):
    r = deployed.report
    fig = memory_figure(r)
    peak = _bars(fig.axes[0])
    by = {(m["variant"], m["stage"], m["task"]): m for m in r["memory"]["measurements"]}
    for (variant, stage, task), m in by.items():
        if variant in ("zipped", "baselines"):
            label = stage if not task else f"{stage} {task}"
            if label in peak[variant]:
                assert peak[variant][label] == pytest.approx(m["after"]["VmHWM"] / 1024)
    assert peak["zipped"] and peak["baselines"]
    _no_overlap(fig)
