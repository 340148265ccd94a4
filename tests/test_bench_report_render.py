"""The bench's pure parts without a bench run: report.md read back cell by cell against the report
it was rendered from (the host reports kept in docs/bench, and copies given memory figures that all
differ, an Android section and weight-cache rows), the memory arithmetic against sums done here,
the staleness of a saved report against real files, and the weight cache's stamp and XNNPACK marks
on real files. Seconds: tests/test_report_columns.py and test_staleness.py do the same on the
suite's deploy."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from mtz_mobile.bench import read_report, render_markdown, weight_cache
from mtz_mobile.bench.report import new_report, write_report
from mtz_mobile.bench.memory import memory_ratios, versus_one_original
from mtz_mobile.bench.probe import METRIC_KEYS
from mtz_mobile.bench.settings import HostSettings
from mtz_mobile.bench.staleness import SETTING_KEYS, bench_staleness
from mtz_mobile.errors import MTZError
from test_report_columns import check_memory_tables, find, number, tables

DOCS = sorted((Path(__file__).parents[1] / "docs" / "bench").glob("*/report.json"))


def microseconds(cell: str) -> tuple[float, float]:
    """A latency cell as (µs, half its last digit): '1,234.5 µs', '12.34 ms', '–'."""
    value, unit = cell.replace(",", "").split()
    return (float(value) * 1000, 5.0) if unit == "ms" else (float(value), 0.05)


def close(cell: str, value) -> bool:
    if value is None:
        return cell == "–"
    got, half = microseconds(cell)
    return abs(got - value) <= half + 1e-9


def ratio_cell(cell: str, value) -> bool:
    return cell == "–" if value is None else abs(number(cell) - value) <= 5e-4 + 1e-12


def measurement(variant, stage, task, base: int) -> dict:
    """Figures that differ in every metric, process and stage, so that no two columns match by chance."""
    before = {k: base + 7 * i for i, k in enumerate(METRIC_KEYS)}
    after = {k: base * 3 + 1000 + 131 * i for i, k in enumerate(METRIC_KEYS)}
    for extra, n in (("Private_Clean", 11), ("Private_Dirty", 13), ("Shared_Clean", 17), ("Shared_Dirty", 19)):
        after[extra] = base + n
    return {"variant": variant, "stage": stage, "task": task, "xnnpack_cache": "on", "load_seconds": base / 1e6,
            "before": before, "after_load": dict(after), "after": after, "benchmark_model": None}


MEASUREMENTS = [measurement("zipped", "load", None, 1000), measurement("baselines", "load", None, 2100),
                measurement("zipped", "task", "a", 3300), measurement("baselines", "task", "a", 4600),
                measurement("zipped", "task", "b", 5200), measurement("baselines", "task", "b", 6900),
                measurement("zipped", "joint", "all", 7700), measurement("zipped", "all_tasks", None, 8400),
                measurement("baselines", "all_tasks", None, 9100), measurement("single", "task", "a", 9900),
                measurement("single", "task", "b", 700)]


def test_memory_ratios_pair_each_zipped_stage_with_its_baselines():
    rows = memory_ratios(MEASUREMENTS)
    by = {(m["variant"], m["stage"], m["task"]): m for m in MEASUREMENTS}
    pairs = [(s, t) for (v, s, t) in by if v == "zipped" and s != "joint"]
    assert [(r["stage"], r["task"], r["metric"]) for r in rows] == [(s, t, k) for s, t in pairs for k in METRIC_KEYS]
    for r in rows:
        z, b = by[("zipped", r["stage"], r["task"])], by[("baselines", r["stage"], r["task"])]
        k = r["metric"]
        assert (r["zipped"], r["baselines"]) == (z["after"][k], b["after"][k])
        assert (r["zipped_delta"], r["baselines_delta"]) == (z["after"][k] - z["before"][k], b["after"][k] - b["before"][k])
        assert r["ratio"] == pytest.approx(z["after"][k] / b["after"][k], rel=1e-12)
        assert r["ratio_delta"] == pytest.approx(r["zipped_delta"] / r["baselines_delta"], rel=1e-12)
    # a metric the baselines lack (0) has no ratio; one the zipped process lacks counts as 0
    z, b = copy.deepcopy(by[("zipped", "load", None)]), copy.deepcopy(by[("baselines", "load", None)])
    del b["after"]["Pss"], b["before"]["Pss"], z["after"]["VmRSS"], z["before"]["VmRSS"]
    got = {r["metric"]: r for r in memory_ratios([z, b])}
    assert got["Pss"]["ratio"] is None and got["Pss"]["ratio_delta"] is None and got["Pss"]["baselines"] == 0
    assert got["VmRSS"]["zipped"] == 0 and got["VmRSS"]["ratio"] == 0.0 and got["VmRSS"]["zipped_delta"] == 0
    assert memory_ratios([by[("zipped", "load", None)]]) == []   # no partner: no row


def test_the_zipped_file_against_the_largest_original_per_metric():
    rows = {r["metric"]: r for r in versus_one_original(MEASUREMENTS)}
    zipped = next(m for m in MEASUREMENTS if (m["variant"], m["stage"]) == ("zipped", "all_tasks"))
    singles = [m for m in MEASUREMENTS if m["variant"] == "single"]
    single_b = copy.deepcopy(singles[1])
    single_b["after"]["Pss"] = 10 ** 6   # the largest original differs by metric
    rows_b = {r["metric"]: r for r in versus_one_original([*MEASUREMENTS[:-1], single_b])}
    assert rows_b["Pss"]["original_task"] == "b" and rows_b["VmRSS"]["original_task"] == "a"
    assert rows_b["Pss"]["one_original"] == 10 ** 6 and rows_b["Pss"]["one_original_delta"] == 10 ** 6 - single_b["before"]["Pss"]
    assert list(rows) == list(METRIC_KEYS)
    for k, r in rows.items():
        largest = max(singles, key=lambda m: m["after"][k])
        assert (r["zipped_all_tasks"], r["one_original"], r["original_task"]) == (zipped["after"][k], largest["after"][k], "a")
        assert (r["zipped_delta"], r["one_original_delta"]) == (zipped["after"][k] - zipped["before"][k],
                                                                largest["after"][k] - largest["before"][k])
        assert r["ratio"] == pytest.approx(zipped["after"][k] / largest["after"][k], rel=1e-12)
        assert r["ratio_delta"] == pytest.approx(r["zipped_delta"] / r["one_original_delta"], rel=1e-12)
    assert versus_one_original(MEASUREMENTS[:-2]) == [] and versus_one_original(MEASUREMENTS[-2:]) == []
    # a metric one original's process did not report counts as 0: the other, with 0, is named
    a, b = copy.deepcopy(singles)
    a["after"]["RssShmem"], a["before"]["RssShmem"] = 0, 0
    del b["after"]["RssShmem"], b["before"]["RssShmem"]
    shm = next(r for r in versus_one_original([zipped, a, b]) if r["metric"] == "RssShmem")
    assert (shm["original_task"], shm["one_original"], shm["ratio"]) == ("a", 0, None)


def with_memory(report: dict) -> dict:
    r = copy.deepcopy(report)
    r["memory"] = {"method": r["memory"]["method"], "units": "kB", "measurements": MEASUREMENTS,
                   "ratios": memory_ratios(MEASUREMENTS), "versus_one_original": versus_one_original(MEASUREMENTS),
                   "weight_cache_files": [
                       {"model": "z.tflite", "cache_file": "z.tflite.xnnpack_cache", "found": "absent", "rebuilt": True,
                        "cold_load_seconds": 0.01234, "cache_bytes": 123456},
                       {"model": "a.tflite", "cache_file": "a.tflite.xnnpack_cache", "found": "valid", "rebuilt": False,
                        "cold_load_seconds": None, "cache_bytes": 7890}]}
    return r


@pytest.mark.parametrize("path", DOCS, ids=[p.parent.name for p in DOCS])
def test_report_md_shows_what_each_saved_report_says(path):
    report = with_memory(read_report(path))
    md = render_markdown(report)
    check_memory_tables(report, md)
    tabs = tables(md)
    caches = find(tabs, "cache file", "found", "rebuilt")
    assert [(c["cache file"], c["found"], c["rebuilt"], c["cold load ms"], number(c["bytes"])) for c in caches] == [
        ("`z.tflite.xnnpack_cache`", "absent", "yes", "12.3", 123456), ("`a.tflite.xnnpack_cache`", "valid", "no", "–", 7890)]
    loads = [number(r["load ms"]) for r in find(tabs, "variant", "Pss Δ", "anonymous Δ")]
    assert loads == [round(m["load_seconds"] * 1000, 1) for m in MEASUREMENTS]
    _check_header(report, md)
    _check_storage(report["storage"], find(tabs, "bytes", "baselines (sum)"), md)
    _check_latency(report["latency"], tabs)
    _check_switching(report["switching"], find(tabs, "mode", "what a step does"), md)
    assert md.count("## Charts") == 1 and all(f"![{c}]({c})" in md for c in report["files"]["charts"])


def _check_header(r, md):
    lines = md.splitlines()
    s, env = r["settings"], r["environment"]
    assert lines[0] == f"# Bench: {Path(r['model']['path']).name} vs separate models (host)"
    assert f"mtz-mobile {r['tool_version']} on {r['created']}" in md
    where = next(l for l in lines if l.startswith("- Where: "))
    assert all(str(env[k]) in where for k in ("platform", "machine", "cpu_count", "python", "litert"))
    assert f"**{s['runtime']}** — {s['runtime_detail']}" in md
    where_cache = f" ({s['xnnpack_cache_path']})" if s.get("xnnpack_cache_path") else ""
    assert f"weight cache **{s['xnnpack_cache']}{where_cache}** (chosen by {s['xnnpack_cache_chosen_by']})" in md
    assert f"- Threads {s['threads']}, timed runs {s['runs']} per signature after {s['warmup']} warm-up runs" in lines
    files = next(l for l in lines if l.startswith("Files: "))
    assert files.startswith(f"Files: zipped `{r['model']['path']}`; baselines ")
    assert all(f"`{b['path']}` ({b['task']})" in files for b in r["baselines"])
    assert "transient indirection" not in md
    flagged = copy.deepcopy(r)
    flagged["settings"]["xnnpack_transient_indirection"] = True
    flagged["baselines"] = []
    other = render_markdown(flagged)
    assert "**transient indirection buffers** (XNNPACK flags 0x" in other and "; no baselines given" in other


def _check_storage(st, rows, md):
    (f, w) = rows
    assert f["bytes"] == "zipped file" and w["bytes"] == "weights + biases"
    assert (number(f["zipped"]), number(f["baselines (sum)"])) == (st["zipped_file_bytes"], st["baselines_file_bytes"])
    assert ratio_cell(f["ratio"], st["file_ratio"])
    assert (number(w["zipped"]), number(w["baselines (sum)"])) == (st["unique_weight_bytes"], st["baselines_weight_bytes"])
    assert ratio_cell(w["ratio"], st["unique_weight_bytes"] / st["baselines_weight_bytes"])
    floor = re.search(r"Unique-weight floor ([\d,]+) bytes \(from the (\w+)\); the zipped file is ([\d,]+) bytes above "
                      r"it \(([\d.]+)× the floor\)\. Saving vs the baselines: ([\d,]+) bytes \(([\d.]+) %\)\.", md)
    assert floor, md
    assert (number(floor[1]), floor[2], number(floor[3])) == (st["unique_weight_bytes"], st["weight_bytes_source"],
                                                              st["zipped_over_floor_bytes"])
    assert abs(float(floor[4]) - st["floor_ratio"]) <= 5e-4 and number(floor[5]) == st["saving_bytes"]
    assert abs(float(floor[6]) - 100 * st["saving_fraction"]) <= 0.05


def _check_latency(lat, tabs):
    ratios = find(tabs, "signature", "statistic", "compared")
    assert len(ratios) == len(lat["ratios"])
    for row, q in zip(ratios, lat["ratios"]):
        assert (row["signature"], row["weight cache"], row["statistic"], row["compared"]) == (
            q["signature"], q["xnnpack_cache"], q["statistic"], q["note"])
        assert close(row["zipped"], q["zipped_us"]) and close(row["baselines"], q["baselines_us"])
        assert ratio_cell(row["ratio"], q["ratio"])
    entries = find(tabs, "variant", "median", "p90", "source")
    assert len(entries) == len(lat["entries"])
    for row, e in zip(entries, lat["entries"]):
        assert (row["variant"], row["signature"], row["weight cache"], row["runs"], row["source"]) == (
            e["variant"], e["signature"], e["xnnpack_cache"], str(e["runs"]), e["source"])
        assert close(row["median"], e["median_us"]) and close(row["p90"], e["p90_us"]) and close(row["mean"], e["mean_us"])


def _check_switching(sw, rows, md):
    assert f"{sw['steps']} steps alternating {sw['sequence'][:40]}…;" in md
    z = sw["modes"]["zipped_switch_signature"]["median_us"]
    assert [r["mode"] for r in rows] == ["zipped_switch_signature", "separate_one_resident", "separate_both_resident"]
    for row in rows:
        m = sw["modes"][row["mode"]]
        assert row["what a step does"] == sw["definitions"][row["mode"]]
        assert close(row["median"], m["median_us"]) and close(row["p90"], m["p90_us"])
        assert ratio_cell(row["ratio to zipped"], m["median_us"] / z)


def test_latency_cells_switch_to_milliseconds_at_ten_thousand_microseconds():
    r = read_report(DOCS[0])
    r["latency"]["entries"] = [dict(r["latency"]["entries"][0], median_us=9999.94, p90_us=10000.0, mean_us=None)]
    r["switching"]["sequence"] = "a,b"
    (row,) = find(tables(render_markdown(r)), "variant", "median", "p90", "source")
    assert (row["median"], row["p90"], row["mean"]) == ("9,999.9 µs", "10.00 ms", "–")
    assert "steps alternating a,b; each step" in render_markdown(r)


def android_report() -> dict:
    """An Android report's sections (as bench/android.py writes them) on a saved report's frame."""
    r = read_report(DOCS[0])
    r["mode"] = "android"
    r["environment"] = {"kind": "android", "model": "Pixel 7", "serial": "R5CT1234ABC", "abi": "arm64-v8a",
                        "soc": None, "board_platform": "gs201", "benchmark_binary": {"path": "/data/local/tmp/bm"}}
    r["memory"] = {"ratios": [{"task": "a", "xnnpack_cache": "on", "metric": "peak_mb", "zipped": 12.345,
                               "baselines": 10.5, "ratio": 1.17571},
                              {"task": None, "xnnpack_cache": None, "metric": "overall_mb", "zipped": 1234.5,
                               "baselines": 1000.0, "ratio": None}]}
    r["switching"] = None
    r["android"] = {"listed_signatures": ["a", "b", "all"], "runs": [
        {"variant": "zipped", "signature": "a", "xnnpack_cache": "file", "phase": "cold",
         "parsed": {"init_us": 12345.6, "inference_avg_us": 432.1, "median_us": None, "peak_mb": 20.5,
                    "overall_mb": 30.25, "format": "current"}},
        {"variant": "a", "signature": "serving_default", "xnnpack_cache": "off",
         "parsed": {"inference_avg_us": 50000.0, "format": "older"}}],
        "cache_loads": [{"variant": "zipped", "signature": "b", "cache_file": "/data/local/tmp/z.xnnpack_cache",
                         "cold_init_us": 20000.0, "warm_init_us": 800.0, "ratio": 25.0}]}
    return r


def test_android_sections_show_what_the_report_says():
    r = android_report()
    md = render_markdown(r)
    tabs = tables(md)
    assert md.splitlines()[0].endswith("vs separate models (android)")
    assert ("- Where: Android device Pixel 7 (serial R5CT1234ABC, ABI arm64-v8a, SoC ?, platform gs201), "
            "benchmark_model /data/local/tmp/bm") in md.splitlines()
    mem = find(tabs, "signature", "weight cache", "metric", "baseline")
    assert [list(row.values()) for row in mem] == [["a", "on", "peak_mb", "12.35", "10.50", "1.176×"],
                                                   ["", "", "overall_mb", "1,234.50", "1,000.00", "–"]]
    assert "Signatures listed by `--list_signatures`: a, b, all" in md
    assert md.index("## Latency per signature") < md.index("## benchmark_model runs") < md.index("Signatures listed")
    assert [list(t[0]) for t in (mem, find(tabs, "file", "phase", "Init", "output format"), find(tabs, "cold Init"))] == [
        ["signature", "weight cache", "metric", "zipped", "baseline", "ratio"],
        ["file", "signature", "weight cache", "phase", "Init", "Inference (avg)", "median", "peak MB", "overall MB",
         "output format"],
        ["file", "signature", "cache file", "cold Init", "warm Init", "cold / warm"]]
    runs = find(tabs, "file", "phase", "Init", "output format")
    assert [list(row.values()) for row in runs] == [
        ["zipped", "a", "file", "cold", "12.35 ms", "432.1 µs", "–", "20.50", "30.25", "current"],
        ["a", "serving_default", "off", "measured", "–", "50.00 ms", "–", "–", "–", "older"]]
    loads = find(tabs, "cache file", "cold Init", "warm Init")
    assert [list(row.values()) for row in loads] == [
        ["zipped", "b", "`/data/local/tmp/z.xnnpack_cache`", "20.00 ms", "800.0 µs", "25.000×"]]
    assert "## Task switching" not in md
    r["android"] = dict(r["android"], listed_signatures=None, cache_loads=[])
    md = render_markdown(r)
    assert "--list_signatures" not in md and "cold Init" not in md and "## benchmark_model runs" in md
    r["android"], r["memory"]["ratios"] = None, []
    md = render_markdown(r)
    assert "## benchmark_model runs" not in md and "peak_mb" not in md


# ---------------------------------------------------------------- staleness of a saved report


@pytest.fixture
def saved(tmp_path):
    """A saved host report (docs/bench's, settings as these options give) for real files written here."""
    model, a, b = (tmp_path / n for n in ("z.tflite", "a.tflite", "b.tflite"))
    for path in (model, a, b):
        path.write_bytes(path.name.encode() * 100)
    report = read_report(DOCS[0])
    options = dict(runtime="compiled", runs=20, threads=2, switch_steps=20)
    report["settings"] = HostSettings(**options).to_json()
    report["model"]["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    for entry, path in zip(report["baselines"], (a, b)):
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "bench"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(report))
    for name in [report["files"]["markdown"], *report["files"]["charts"]]:
        (out / name).write_text("")
    return out, model, [a, b], options, report


def test_a_saved_report_is_current_until_a_file_or_setting_changes(saved):
    out, model, baselines, options, report = saved
    assert bench_staleness(out, model, baselines, options) is None
    assert bench_staleness(out, model, baselines, HostSettings(**options)) is None
    assert bench_staleness(out, model, baselines[::-1], options) is None   # baselines in any order
    assert bench_staleness(out, baselines[0], baselines, options) == "model changed"
    assert bench_staleness(out, model, [baselines[0], model], options) == "baselines changed"
    assert bench_staleness(out, model, baselines[:1], options) == "baselines changed"
    assert bench_staleness(out, model, [*baselines, out / "nope.tflite"], options) == "baselines missing"
    assert bench_staleness(out.parent / "elsewhere", model, baselines, options) == "missing"
    assert bench_staleness(out, model, baselines, dict(options, runs=21)) == "bench settings changed (runs 20 → 21)"
    assert bench_staleness(out, model, baselines, dict(options, threads=1)) == "bench settings changed (threads 2 → 1)"
    defaults = bench_staleness(out, model, baselines)   # every changed setting named, in SETTING_KEYS' order
    assert defaults.startswith("bench settings changed (runtime compiled → interpreter, ") and defaults.endswith(")")
    assert all(part in defaults for part in ("threads 2 → 1, runs 20 → 50, warmup 4 → 10", "switch_steps 20 → 50"))
    (out / report["files"]["charts"][-1]).unlink()
    assert bench_staleness(out, model, baselines, options) == "report files missing"


def test_a_report_written_before_a_setting_existed_measured_without_it(saved):
    out, model, baselines, options, report = saved
    del report["settings"]["xnnpack_transient_indirection"]
    (out / "report.json").write_text(json.dumps(report))
    assert bench_staleness(out, model, baselines, options) is None
    assert bench_staleness(out, model, baselines, dict(options, transient_indirection=True)) == (
        "bench settings changed (xnnpack_transient_indirection False → True)")
    assert set(SETTING_KEYS) <= set(HostSettings().to_json())


@pytest.mark.parametrize("change, reason", [
    (lambda r: dict(r, mode="android"), "not a host report"),
    (lambda r: dict(r, format="something else"), "report.json damaged"),
    (lambda r: "{not json", "report.json damaged"),
])
def test_a_report_that_is_not_a_host_report_of_ours_is_stale(saved, change, reason):
    out, model, baselines, options, report = saved
    changed = change(report)
    (out / "report.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    assert bench_staleness(out, model, baselines, options) == reason


def test_read_report_says_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(MTZError, match=f"^cannot read {tmp_path / 'none.json'}: No such file or directory$"):
        read_report(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MTZError, match=r"bad.json is not JSON \(Expecting property name enclosed in double quotes\): "
                                       "run the bench again$"):
        read_report(tmp_path / "bad.json")


# ---------------------------------------------------------------- the weight cache's stamp and marks


def header(version: int, stale: int = 0, size: int = 64) -> bytes:
    """XNNPACK's cache header: uint64 version, two uint64 offsets, uint8 stale flag, then data."""
    return version.to_bytes(8, "little") + bytes(16) + bytes([stale]) + bytes(size - 25)


@pytest.mark.parametrize("contents, mark", [
    (header(4), None), (header(4, stale=1), weight_cache.STALE), (header(0), weight_cache.UNFINISHED),
    (header(0, stale=1), weight_cache.UNFINISHED), (header(3, stale=1), None), (header(4, stale=1)[:24], None),
    (header(4, stale=1)[:25], weight_cache.STALE), (b"\0" * 8, weight_cache.UNFINISHED), (b"\0" * 7, None),
    (b"", None),
])
def test_xnnpacks_own_marks_in_the_cache_header(tmp_path, contents, mark):
    path = tmp_path / "c.xnnpack_cache"
    path.write_bytes(contents)
    assert weight_cache.xnnpack_mark(path) == mark


def test_prepare_builds_stamps_and_then_trusts_each_cache(tmp_path):
    models = [tmp_path / "z.tflite", tmp_path / "a.tflite"]
    for m in models:
        m.write_bytes(m.name.encode() * 10)
    built = []

    def cold_load(path):
        built.append(Path(path).name)
        weight_cache.cache_file(path).write_bytes(header(4) + Path(path).name.encode())
        return 0.25

    files = [(m, hashlib.sha256(m.read_bytes()).hexdigest()) for m in models]
    first = weight_cache.prepare(files, cold_load)
    assert built == ["z.tflite", "a.tflite"]
    assert [(f["found"], f["rebuilt"], f["cold_load_seconds"]) for f in first] == [("absent", True, 0.25)] * 2
    assert [f["cache_bytes"] for f in first] == [len(header(4)) + 8] * 2
    assert [f["cache_file"] for f in first] == [str(m) + ".xnnpack_cache" for m in models]
    stamp = json.loads(weight_cache.stamp_file(models[0]).read_text())
    assert stamp == {"model_sha256": files[0][1], "litert": weight_cache._litert_version(),
                     "cache_bytes": len(header(4)) + 8,
                     "cache_sha256": hashlib.sha256(weight_cache.cache_file(models[0]).read_bytes()).hexdigest()}
    again = weight_cache.prepare(files, cold_load)
    assert len(built) == 2 and [(f["found"], f["rebuilt"], f["cold_load_seconds"]) for f in again] == [("valid", False, None)] * 2
    with open(weight_cache.cache_file(models[1]), "r+b") as f:   # XNNPACK marked it stale on a run
        f.seek(24)
        f.write(b"\1")
    third = weight_cache.prepare(files, cold_load)
    assert built[2:] == ["a.tflite"] and third[1]["found"] == weight_cache.STALE and third[0]["found"] == "valid"
    with pytest.raises(MTZError, match="^LiteRT wrote no weight cache beside .*z.tflite: make its directory writable"):
        weight_cache.prepare([(models[0], "0" * 64)], lambda path: 0.1)


@pytest.mark.parametrize("stamp_text, reason", [(None, "no stamp"), ("[1, 2]", "stamp unreadable"),
                                                ("{", "stamp unreadable")])
def test_a_cache_without_a_readable_stamp_is_deleted(tmp_path, stamp_text, reason):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"m")
    weight_cache.cache_file(model).write_bytes(header(4))
    if stamp_text is not None:
        weight_cache.stamp_file(model).write_text(stamp_text)
    assert weight_cache.check(model) == reason
    assert not weight_cache.cache_file(model).exists() and not weight_cache.stamp_file(model).exists()
    weight_cache.stamp_file(model).write_text("{}")   # a stamp left without its cache goes too
    assert weight_cache.check(model) == "absent" and not weight_cache.stamp_file(model).exists()


def test_a_written_report_reads_back_with_its_markdown_and_charts(tmp_path):
    """new_report's frame filled with a saved report's sections, written: report.json reads back the
    same, report.md is its rendering, each chart is a PNG, and a file of the user's in --out stays."""
    import datetime

    saved = with_memory(read_report(DOCS[0]))
    model = dict(saved["model"], extra="not kept")
    report = new_report("host", saved["settings"], saved["environment"], model, saved["baselines"])
    created = datetime.datetime.strptime(report["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 600
    assert report["model"] == saved["model"] and report["mode"] == "host"
    assert all(report[k] is None for k in ("storage", "memory", "latency", "switching", "android"))
    for key in ("storage", "memory", "latency", "switching"):
        report[key] = saved[key]
    out = tmp_path / "bench"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    write_report(report, out)
    back = read_report(out / "report.json")
    assert back == json.loads(json.dumps(report)) and (out / "notes.txt").read_text() == "the user's"
    assert (out / "report.md").read_text() == render_markdown(back)
    assert back["files"]["charts"] and all((out / c).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for c in back["files"]["charts"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]   # no .partial left
