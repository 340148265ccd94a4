"""report.md says what report.json says: each Markdown table of the host bench's memory section read
back cell by cell against the JSON it was rendered from (the report the suite's deploy wrote, and a
copy whose figures all differ, so that two columns swapped cannot match by chance)."""

from __future__ import annotations

import copy
from pathlib import Path

from mtz_mobile.bench import read_report, render_markdown
from mtz_mobile.bench.probe import METRIC_KEYS

STAGE = {"load": "after load", "all_tasks": "after all tasks"}


def tables(markdown: str) -> dict[tuple[str, ...], list[dict[str, str]]]:
    """header → rows as {column: cell}, for every table in ``markdown``."""
    out, lines = {}, markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            head = tuple(c.strip() for c in line.strip("|").split("|"))
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")))))
            out[head] = rows
    return out


def number(cell: str):
    """A cell as the number it shows: '12,345' → 12345, '1.234×' → 1.234, '–' → None."""
    if cell == "–":
        return None
    cell = cell.replace(",", "").rstrip("×")
    return float(cell) if "." in cell else int(cell)


def stage_of(m: dict) -> str:
    return STAGE.get(m["stage"]) or (f"after task {m['task']}" if m["stage"] == "task"
                                     else f"after joint signature {m['task']}")


def find(tabs: dict, *columns: str) -> list[dict[str, str]]:
    (rows,) = [rows for head, rows in tabs.items() if all(c in head for c in columns)]
    return rows


def check_memory_tables(report: dict, markdown: str) -> None:
    tabs, mem = tables(markdown), report["memory"]
    measured = find(tabs, "variant", "Pss Δ", "anonymous Δ")
    assert len(measured) == len(mem["measurements"])
    for row, m in zip(measured, mem["measurements"]):
        a, b = m["after"], m["before"]
        assert (row["variant"], row["stage"]) == (m["variant"], stage_of(m))
        for column, key in (("VmHWM (peak)", "VmHWM"), ("VmRSS", "VmRSS"), ("Pss", "Pss"), ("anonymous", "Anonymous"),
                            ("RssFile", "RssFile")):
            assert number(row[column]) == a[key], (column, m["variant"], m["stage"])
        for column, key in (("VmRSS Δ", "VmRSS"), ("Pss Δ", "Pss"), ("anonymous Δ", "Anonymous")):
            assert number(row[column]) == a[key] - b[key], (column, m["variant"], m["stage"])
        for column, keys in (("private", ("Private_Clean", "Private_Dirty")), ("shared", ("Shared_Clean", "Shared_Dirty"))):
            assert number(row[column]) == sum(a[k] for k in keys), (column, m["variant"], m["stage"])
        assert number(row["RssShmem"]) == a.get("RssShmem"), m["stage"]
    ratios = find(tabs, "stage", "metric", "zipped Δ", "baselines Δ")
    shown = {(r["stage"], r["metric"]): r for r in ratios}
    for q in mem["ratios"]:
        if not (q["zipped"] or q["baselines"]):
            continue
        row = shown.pop((stage_of(q), q["metric"]))
        for column, key in (("zipped", "zipped"), ("baselines", "baselines"), ("zipped Δ", "zipped_delta"),
                            ("baselines Δ", "baselines_delta")):
            assert number(row[column]) == q[key], (column, q["stage"], q["metric"])
        for column, key in (("ratio", "ratio"), ("ratio Δ", "ratio_delta")):
            assert (number(row[column]) is None) == (q[key] is None)
            if q[key] is not None:
                assert abs(number(row[column]) - q[key]) <= 5e-4, (column, q["stage"], q["metric"])
    assert not shown
    one = find(tabs, "metric", "one original", "original Δ")
    assert [r["metric"] for r in one] == [q["metric"] for q in mem["versus_one_original"]
                                          if q["zipped_all_tasks"] or q["one_original"]]
    for row, q in zip(one, (q for q in mem["versus_one_original"] if q["zipped_all_tasks"] or q["one_original"])):
        assert (number(row["zipped Δ"]), number(row["original Δ"])) == (q["zipped_delta"], q["one_original_delta"])
        assert (number(row["zipped, all tasks"]), number(row["one original"])) == (q["zipped_all_tasks"], q["one_original"])


def test_report_md_shows_report_json(deployed):
    # both files as written together (other tests may bench again into the session's deploy)
    report_dir = deployed.out_dir / "bench"
    check_memory_tables(read_report(report_dir / "report.json"), (report_dir / "report.md").read_text())


def test_every_memory_column_reads_its_own_figure(deployed):
    """Each figure of a copy of the report made distinct (after = k·1000 + i, before = k·7 + i, per
    measurement k and metric i): a column showing another column's figure cannot pass."""
    report = copy.deepcopy(deployed.report)
    keys = sorted({k for m in report["memory"]["measurements"] for k in (*m["after"], *m["before"])})
    for k, m in enumerate(report["memory"]["measurements"], start=1):
        m["after"] = {key: k * 100_000 + 1000 * i for i, key in enumerate(keys)}
        m["before"] = {key: k * 700 + 3 * i for i, key in enumerate(keys)}
    from mtz_mobile.bench.memory import memory_ratios, versus_one_original

    report["memory"]["ratios"] = memory_ratios(report["memory"]["measurements"])
    report["memory"]["versus_one_original"] = versus_one_original(report["memory"]["measurements"])
    assert {q["metric"] for q in report["memory"]["ratios"]} == set(METRIC_KEYS)
    check_memory_tables(report, render_markdown(report))


def test_weight_cache_rows_name_each_models_own_cache_file(deployed):
    """The cache table names the file beside each model (MODEL.xnnpack_cache), which exists, in
    report.json and report.md alike."""
    caches = deployed.report["memory"]["weight_cache_files"]
    models = {str(deployed.model), *map(str, deployed.baselines.values())}
    assert {c["model"] for c in caches} == models
    rows = find(tables((deployed.out_dir / "bench" / "report.md").read_text()), "cache file", "found", "rebuilt")
    assert [r["cache file"] for r in rows] == [f"`{c['cache_file']}`" for c in caches]
    for c in caches:
        assert c["cache_file"] == c["model"] + ".xnnpack_cache"
        assert Path(c["cache_file"]).stat().st_size == c["cache_bytes"]
